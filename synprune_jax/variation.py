"""Variation operators for one masked individual (vmap for a population).

:func:`mutate` is the composite operator of the MAP-Elites emitter:

1. self-adaptive rates only: each of the individual's ``(p_disconnect, p_connect)`` is redrawn
   with probability ``rate_redraw_probability``, log-uniformly in ``[rate_min, rate_max]``;
2. prune / reconnect flips with the individual's rates (:func:`pruning.flip_mutation`);
3. optional forward pruning (a unit with no incoming connection loses its outgoing ones);
4. Gaussian mutation of every *active* parameter (masked weights are not mutated; unmasked
   leaves such as biases are).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax import masks as masks_lib
from synprune_jax import pruning
from synprune_jax.networks import MLPSpec
from synprune_jax.types import Masks, Params, Population, PyTree


def gaussian_mutation(key: jax.Array, params: Params, masks: Masks, sigma) -> Params:
    """Adds ``N(0, sigma^2)`` noise to every parameter whose mask is True.

    Args:
        key: PRNG key (split into one key per leaf).
        params: one individual's parameters (float leaves).
        masks: bool pytree with the structure and shapes of ``params``; non-maskable leaves
            (all True) are mutated too.
        sigma: noise standard deviation (float scalar, may be traced).

    Returns:
        Params of the same structure, shapes and dtypes; masked-out entries unchanged.

    Raises:
        ValueError: ``masks`` and ``params`` have different numbers of leaves or mismatched
            shapes.

    Examples:
        >>> params = {"w": jnp.zeros(4)}
        >>> masks = {"w": jnp.array([True, True, False, False])}
        >>> out = gaussian_mutation(jax.random.key(0), params, masks, 0.1)
        >>> bool(jnp.all(out["w"][2:] == 0.0)), bool(jnp.all(out["w"][:2] != 0.0))  # masked: kept
        (True, True)
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    mask_leaves = jax.tree_util.tree_leaves(masks)
    keys = jax.random.split(key, len(leaves))
    out = [
        jnp.where(m, p + sigma * jax.random.normal(k, p.shape, p.dtype), p)
        for p, m, k in zip(leaves, mask_leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def redraw_rates(
    key: jax.Array, rates: jax.Array, redraw_probability, rate_min, rate_max
) -> jax.Array:
    """Redraws each rate with probability ``redraw_probability``, log-uniform in [min, max].

    Args:
        key: PRNG key.
        rates: ``[2]`` the individual's ``(p_disconnect, p_connect)``.
    """
    key_redraw, key_value = jax.random.split(key)
    redraw = jax.random.bernoulli(key_redraw, redraw_probability, rates.shape)
    log_min, log_max = jnp.log(rate_min), jnp.log(rate_max)
    fresh = jnp.exp(jax.random.uniform(key_value, rates.shape, minval=log_min, maxval=log_max))
    return jnp.where(redraw, fresh, rates).astype(rates.dtype)


def random_population(
    key: jax.Array,
    task,
    size: int,
    rates,
    *,
    beta_a=1.0,
    beta_b=1.0,
    exact: bool = True,
    per_layer: bool = True,
    forward_prune: bool = True,
    rate_range=None,
) -> Population:
    """``size`` random pruned networks: the starting population of MAP-Elites, the GA and the
    learning-speed study.

    Individual ``i`` uses ``k = jax.random.split(key, size)[i]`` split into ``(params, masks,
    rates)`` keys: weights from ``task.init_params``, masks of density ~ ``Beta(beta_a,
    beta_b)`` (:func:`synprune_jax.masks.init_masks_beta`; per layer or per network, exact
    counts or Bernoulli), optionally forward-pruned (MLP tasks), and the rates ``(p_disconnect,
    p_connect)`` (``rates``, or log-uniform in ``rate_range = (low, high)`` when given).

    Example:
        >>> from synprune_jax.tasks.arm import KinematicArm
        >>> task = KinematicArm(genotype="mlp")
        >>> random_population(jax.random.key(0), task, 64, jnp.zeros(2)).rates.shape
        (64, 2)
    """
    maskable = task.maskable()

    def one(k):
        key_params, key_masks, key_rates = jax.random.split(k, 3)
        params = task.init_params(key_params)
        masks = masks_lib.init_masks_beta(
            key_masks, params, maskable, beta_a, beta_b, exact=exact, per_layer=per_layer
        )
        if forward_prune:
            masks = masks_lib.forward_prune(task.spec, masks)
        drawn = jnp.asarray(rates, jnp.float32)
        if rate_range is not None:
            low, high = jnp.log(rate_range[0]), jnp.log(rate_range[1])
            drawn = jnp.exp(jax.random.uniform(key_rates, (2,), minval=low, maxval=high))
        return Population(params=params, masks=masks, rates=drawn)

    return jax.vmap(one)(jax.random.split(key, size))


@dataclasses.dataclass(frozen=True)
class MutationConfig:
    """Static structure of the composite mutation.

    Attributes:
        self_adaptive: each individual carries and passes on its own prune / reconnect rates.
        forward_prune: cut the outgoing connections of units left without inputs (MLPs only).
        flips: prune / reconnect flips on (the default). ``False`` skips them and their random
            draw (one uniform per maskable weight): the offspring equal those of
            ``p_disconnect = p_connect = 0`` at less cost (:meth:`check_hyper` refuses nonzero
            rates). Gaussian mutation only (e.g. a direct genotype, or weight search on fixed
            masks).

    Raises:
        ValueError: ``self_adaptive=True`` with ``flips=False``.

    Examples:
        >>> config = MutationConfig(forward_prune=False)  # e.g. a direct genotype
        >>> config.self_adaptive, config.flips
        (False, True)
        >>> MutationConfig(flips=False).check_hyper(MutationHyper())  # default rates are not 0
        Traceback (most recent call last):
            ...
        ValueError: flips=False skips the prune / reconnect flips: set p_disconnect and
        p_connect to 0 (got 0.02 and 0.01)
        >>> MutationConfig(self_adaptive=True, flips=False)
        Traceback (most recent call last):
            ...
        ValueError: mutation: self-adaptive rates drive the prune / reconnect flips;
        flips=False needs self_adaptive=False
    """

    self_adaptive: bool = False
    forward_prune: bool = True
    flips: bool = True

    def __post_init__(self):
        if self.self_adaptive and not self.flips:
            raise ValueError(
                "mutation: self-adaptive rates drive the prune / reconnect flips; "
                "flips=False needs self_adaptive=False"
            )

    def check_hyper(self, hyper: MutationHyper) -> None:
        """Raises ValueError when ``flips=False`` meets nonzero flip rates (they would be
        silently ignored). Host side: ``hyper`` holds concrete numbers."""
        if not self.flips and (float(hyper.p_disconnect) != 0.0 or float(hyper.p_connect) != 0.0):
            raise ValueError(
                f"flips=False skips the prune / reconnect flips: set p_disconnect "
                f"and p_connect to 0 (got {float(hyper.p_disconnect)} and "
                f"{float(hyper.p_connect)})"
            )

    def check_task(self, task) -> None:
        """Raises ValueError when ``forward_prune`` meets a task without an MLP network."""
        if self.forward_prune and task.spec is None:
            raise ValueError(
                "mutation.forward_prune needs an MLP network; this task has a "
                "direct genotype (set forward_prune=False)"
            )


class MutationHyper(struct.PyTreeNode):
    """Traced numeric knobs of the composite mutation (a sweep may vmap over them).

    Attributes:
        sigma: standard deviation of the Gaussian weight mutation.
        p_disconnect: probability of cutting an active connection (fixed-rate mode, and the
            initial rate in self-adaptive mode).
        p_connect: probability of restoring a cut connection (likewise).
        rate_redraw_probability: self-adaptive mode: chance each rate is redrawn at reproduction.
        rate_min: lower end of the log-uniform redraw range.
        rate_max: upper end of the log-uniform redraw range.

    Examples:
        >>> hyper = MutationHyper(sigma=0.1).replace(p_connect=0.0)  # a pytree of scalars
        >>> hyper.sigma, hyper.p_disconnect, hyper.p_connect
        (0.1, 0.02, 0.0)
    """

    sigma: float = 0.05
    p_disconnect: float = 0.02
    p_connect: float = 0.01
    rate_redraw_probability: float = 0.1
    rate_min: float = 1e-4
    rate_max: float = 0.2


def mutate(
    key: jax.Array,
    individual: Population,
    maskable: PyTree,
    config: MutationConfig,
    hyper: MutationHyper,
    spec: MLPSpec | None = None,
) -> Population:
    """Composite mutation of one individual; see the module docstring for the steps.

    For a batch of offspring, ``jax.vmap`` a closure over ``(key, individual)`` that fixes the
    other arguments (as the emitters do).

    Args:
        key: PRNG key.
        individual: ONE individual: params and masks without a population axis, ``rates`` of
            shape ``[2]`` float32.
        maskable: pytree of Python bools with the structure of the params (the task's
            ``maskable()``): which leaves the flips touch.
        config: the static structure (:class:`MutationConfig`).
        hyper: the numeric knobs (:class:`MutationHyper`; traced is fine).
        spec: the network, needed by ``config.forward_prune``.

    Returns:
        The child, a :class:`~synprune_jax.types.Population` of one individual with the
        parent's shapes: mutated params and masks, and ``rates`` ``[2]`` float32, either the
        redrawn parent's (self-adaptive) or ``(hyper.p_disconnect, hyper.p_connect)``.

    Raises:
        ValueError: ``config.forward_prune`` without ``spec`` (at trace time).

    Examples:
        >>> parent = Population(params={"w": jnp.zeros(4)}, rates=jnp.zeros(2),
        ...                     masks={"w": jnp.array([True, True, False, False])})
        >>> config = MutationConfig(forward_prune=False)  # static: closed over
        >>> child_of = jax.jit(lambda key, parent, hyper: mutate(key, parent, {"w": True},
        ...                                                      config, hyper))
        >>> hyper = MutationHyper(sigma=0.1, p_disconnect=0.0, p_connect=0.0)  # no flips
        >>> child = child_of(jax.random.key(0), parent, hyper)
        >>> child.masks["w"].tolist()
        [True, True, False, False]
        >>> (child.params["w"] != 0.0).tolist()  # only the active weights got noise
        [True, True, False, False]
        >>> child.rates.tolist()  # fixed rates: (hyper.p_disconnect, hyper.p_connect)
        [0.0, 0.0]
    """
    key_rates, key_flip, key_gauss = jax.random.split(key, 3)
    if config.self_adaptive:
        rates = redraw_rates(
            key_rates,
            individual.rates,
            hyper.rate_redraw_probability,
            hyper.rate_min,
            hyper.rate_max,
        )
    else:
        rates = jnp.stack(
            [
                jnp.asarray(hyper.p_disconnect, jnp.float32),
                jnp.asarray(hyper.p_connect, jnp.float32),
            ]
        )
    masks = individual.masks
    if config.flips:
        masks = pruning.flip_mutation(key_flip, masks, maskable, rates[0], rates[1])
    if config.forward_prune:
        if spec is None:
            raise ValueError("forward_prune needs an MLP network (the task has no MLPSpec)")
        masks = masks_lib.forward_prune(spec, masks)
    params = gaussian_mutation(key_gauss, individual.params, masks, hyper.sigma)
    return Population(params=params, masks=masks, rates=rates)
