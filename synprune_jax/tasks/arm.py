"""Planar kinematic arm: the standard quick quality-diversity benchmark, in pure JAX.

An arm of ``n`` links (each ``1 / n`` long, total length 1) is anchored at the origin. Joint
``i`` turns by ``angle_i`` relative to link ``i - 1``, so link ``k`` points at the cumulative angle
``sum_{i <= k} angle_i``. Fitness is ``-var(angles)`` (radians): smooth, evenly bent arms are best.
The default descriptor is the tip position mapped from ``[-1, 1]^2`` to ``[0, 1]^2``.

Two genotypes:

* ``"angles"``: params ``{"angles": [n]}`` (initially uniform in [-1, 1]); joint angle
  ``pi * clip(a, -1, 1)``. Every gene is maskable, and a masked gene reads 0: a straight joint.
* ``"mlp"``: an :class:`~synprune_jax.networks.MLPSpec` (tanh hidden and output) applied to a
  constant input of ones produces ``a`` (``[n]``). Mask-based descriptors (``sparsity``, ...) are
  then available too.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from synprune_jax.types import Population
    >>> task = KinematicArm(num_joints=3)
    >>> params = {"angles": jnp.zeros((1, 3))}
    >>> masks = {"angles": jnp.ones((1, 3), bool)}
    >>> result = task.evaluate(jax.random.key(0), Population(params, masks, jnp.zeros((1, 2))))
    >>> [round(float(v), 4) for v in result.descriptors[0]]
    [1.0, 0.5]
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import masks as masks_lib
from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.types import EvalResult, Params, Population, PyTree

GENOTYPES = ("angles", "mlp")


def forward_kinematics(angles: jax.Array) -> jax.Array:
    """Tip position ``[2]`` of an arm with total length 1 for joint angles ``[n]`` (radians)."""
    n = angles.shape[-1]
    cumulative = jnp.cumsum(angles, axis=-1)
    return (
        jnp.stack(
            [jnp.sum(jnp.cos(cumulative), axis=-1), jnp.sum(jnp.sin(cumulative), axis=-1)], axis=-1
        )
        / n
    )


@dataclasses.dataclass(frozen=True)
class KinematicArm:
    """Planar arm task (see module docstring).

    Attributes:
        num_joints: number of joints / links ``n``.
        genotype: ``"angles"`` (direct) or ``"mlp"`` (a network produces the angles).
        descriptors: descriptor names; ``("end_effector",)`` by default (2 columns). The
            ``"mlp"`` genotype also accepts the mask-based ones (``sparsity``,
            ``disconnected_fraction``, ``layer_density``).
        input_size: width of the constant all-ones input (``"mlp"`` only).
        hidden_sizes: hidden widths (``"mlp"`` only).

    Examples:
        >>> task = KinematicArm(num_joints=4)  # one gene per joint, no network
        >>> task.descriptor_names, task.spec is None
        (('end_effector_x', 'end_effector_y'), True)
    """

    num_joints: int = 8
    genotype: str = "angles"
    descriptors: tuple[str, ...] = ("end_effector",)
    input_size: int = 4
    hidden_sizes: tuple[int, ...] = (16,)

    def __post_init__(self):
        if self.genotype not in GENOTYPES:
            raise ValueError(f"unknown genotype {self.genotype!r}; valid: {list(GENOTYPES)}")
        if int(self.num_joints) < 1:
            raise ValueError(f"num_joints must be >= 1, got {self.num_joints}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(
            self.descriptors, self._context, f"KinematicArm(genotype={self.genotype!r})"
        )
        object.__setattr__(self, "descriptors", names)

    # ----- static structure ----------------------------------------------------------------------
    @property
    def spec(self) -> MLPSpec | None:
        if self.genotype == "angles":
            return None
        return _arm_spec(self.input_size, self.num_joints, self.hidden_sizes)

    @property
    def _network(self) -> MLPSpec:
        """The policy network of the ``"mlp"`` genotype."""
        spec = self.spec
        if spec is None:
            raise ValueError('the "angles" genotype has no network')
        return spec

    @property
    def _context(self) -> descriptors_lib.DescriptorContext:
        capabilities = {descriptors_lib.END_EFFECTOR}
        if self.genotype == "mlp":
            capabilities.add(descriptors_lib.SPEC)
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset(capabilities), spec=self.spec
        )

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return descriptors_lib.column_names(self.descriptors, self._context)

    @property
    def env_steps_per_individual(self) -> int:
        return 0

    def descriptor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return descriptors_lib.bounds(self.descriptors, self._context)

    def maskable(self) -> PyTree:
        if self.genotype == "angles":
            return {"angles": True}
        return self._network.maskable()

    def init_params(self, key: jax.Array) -> Params:
        if self.genotype == "angles":
            return {"angles": jax.random.uniform(key, (self.num_joints,), jnp.float32, -1.0, 1.0)}
        return self._network.init(key)

    # ----- evaluation (per individual, then vmapped) --------------------------------------------
    def joint_angles(self, params: Params, masks) -> jax.Array:
        """Joint angles ``[n]`` in radians of one individual."""
        if self.genotype == "angles":
            genes = masks_lib.apply_masks(params, masks)["angles"]
        else:
            genes = self._network.apply(params, masks, jnp.ones((self.input_size,), jnp.float32))
        return math.pi * jnp.clip(genes, -1.0, 1.0)

    def _evaluate_one(self, params: Params, masks) -> tuple[jax.Array, jax.Array, jax.Array]:
        angles = self.joint_angles(params, masks)
        fitness = -jnp.var(angles)
        tip = (forward_kinematics(angles) + 1.0) / 2.0
        inputs = {"masks": masks, "end_effector": tip}
        descriptors = descriptors_lib.compute(self.descriptors, self._context, inputs)
        density = masks_lib.density(masks, self.maskable())
        return fitness.astype(jnp.float32), descriptors, density

    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates a population (deterministic: ``key`` is unused). See :class:`Task`."""
        del key
        fitness, descriptors, density = jax.vmap(self._evaluate_one)(
            population.params, population.masks
        )
        return EvalResult(fitness=fitness, descriptors=descriptors, extras={"density": density})


@functools.cache
def _arm_spec(input_size: int, num_joints: int, hidden_sizes: tuple[int, ...]) -> MLPSpec:
    return MLPSpec(
        input_size=input_size,
        output_size=num_joints,
        hidden_sizes=hidden_sizes,
        activation="tanh",
        output_activation="tanh",
    )
