"""The :class:`Task` protocol: what every evaluation task provides.

A task is a frozen, hashable description (a dataclass) with pure, batched evaluation. It never
holds mutable state, so it can be closed over by a jitted step or passed as a static argument.

Example:
    >>> from synprune_jax.tasks import KinematicArm
    >>> task = KinematicArm(num_joints=4)
    >>> isinstance(task, Task)
    True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import numpy as np

from synprune_jax.networks import MLPSpec
from synprune_jax.types import EvalResult, Params, Population, PyTree


@runtime_checkable
class Task(Protocol):
    """Structural interface of an evaluation task.

    Attributes:
        spec: the network evaluated by the task, or ``None`` for a direct genotype (e.g. the
            kinematic arm's joint angles).
        descriptor_names: one name per descriptor column (``D`` names).
        env_steps_per_individual: environment steps one evaluation of one individual costs
            (episode length x episodes); 0 for tasks without an environment. Used for throughput
            accounting.
    """

    @property
    def spec(self) -> MLPSpec | None: ...

    @property
    def descriptor_names(self) -> tuple[str, ...]: ...

    @property
    def env_steps_per_individual(self) -> int: ...

    def maskable(self) -> PyTree:
        """Pytree of Python bools shaped like one individual's params: leaves with real masks."""
        ...

    def init_params(self, key: jax.Array) -> Params:
        """Initial parameters of one individual (no population axis)."""
        ...

    def descriptor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lower [D], upper [D])`` float32 numpy arrays; every descriptor lies inside."""
        ...

    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates a population (pure and jittable).

        Args:
            key: PRNG key.
            population: params and masks with a leading ``[P]`` axis.

        Returns:
            :class:`EvalResult` with ``fitness [P]`` (maximised), ``descriptors [P, D]`` and
            ``extras`` holding at least ``"density" [P]`` (:func:`synprune_jax.masks.density`
            over the maskable leaves).
        """
        ...
