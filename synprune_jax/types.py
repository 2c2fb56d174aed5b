"""Core data types shared by every part of the engine.

All containers are ``flax.struct`` dataclasses, so they are pytrees: they pass through
``jax.jit``, ``jax.vmap``, ``lax.scan`` and orbax checkpoints unchanged.

Shapes use ``P`` for the population (batch) axis, ``D`` for descriptor dimensions and ``C`` for
archive cells.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

PyTree = Any
Params = PyTree
Masks = PyTree


class Population(struct.PyTreeNode):
    """A batch of masked networks.

    Attributes:
        params: network parameters; every leaf has a leading population axis ``[P, ...]``.
            Masked-out weights keep their last value (so a reconnected synapse gets it back), but
            they never influence outputs (see :func:`synprune_jax.masks.apply_masks`).
        masks: boolean pytree with exactly the structure and shapes of ``params``. Leaves that are
            not maskable (biases, by default) are all ``True``.
        rates: ``[P, 2]`` float32, each individual's own ``(p_disconnect, p_connect)`` for the
            prune / reconnect flip mutation. With fixed rates every row equals the configured pair;
            with self-adaptive rates each individual carries and passes on its own.

    One individual is the same container without the population axis (``rates`` ``[2]``):
    ``population[i]`` indexes every leaf, and the variation operators work on one individual
    (``jax.vmap`` them over a population).

    Examples:
        >>> population = Population(
        ...     params={"w": jnp.zeros((4, 3))},  # P = 4 networks of 3 weights
        ...     masks={"w": jnp.ones((4, 3), bool)},
        ...     rates=jnp.full((4, 2), 0.5),
        ... )
        >>> population.size
        4
        >>> one = population[0]  # one individual: every leaf without its first axis
        >>> one.params["w"].shape, one.masks["w"].dtype, one.rates.tolist()
        ((3,), dtype('bool'), [0.5, 0.5])
    """

    params: PyTree
    masks: PyTree
    rates: jax.Array

    @property
    def size(self) -> int:
        """Number of individuals ``P`` (static)."""
        return int(self.rates.shape[0])

    def __getitem__(self, index) -> Population:
        return jax.tree_util.tree_map(lambda leaf: leaf[index], self)


class EvalResult(struct.PyTreeNode):
    """What a task returns for a batch.

    Attributes:
        fitness: ``[P]`` float32, to be maximised. NaN/inf marks an invalid evaluation; it never
            enters an archive.
        descriptors: ``[P, D]`` float32 behaviour descriptors.
        extras: dict of ``[P, ...]`` arrays (e.g. ``"density"``, ``"episode_length"``).
            :func:`~synprune_jax.archives.add` reads ``extras["density"]``.

    Examples:
        >>> result = EvalResult(
        ...     fitness=jnp.array([1.5, jnp.nan]),  # the second evaluation failed
        ...     descriptors=jnp.array([[0.1, 0.2], [0.3, 0.4]]),
        ...     extras={"density": jnp.array([0.5, 0.25])},
        ... )
        >>> result.fitness.shape, result.descriptors.shape, sorted(result.extras)
        ((2,), (2, 2), ['density'])
        >>> jnp.isfinite(result.fitness).tolist()  # only the first may enter an archive
        [True, False]
    """

    fitness: jax.Array
    descriptors: jax.Array
    extras: dict = struct.field(default_factory=dict)
