"""PPO with gradient-based pruning on the engine's masked MLP policies.

Proximal policy optimisation (Schulman et al. 2017) as Brax's trainer does it
(``brax/training/agents/ppo``), on any environment task of the engine
(:class:`~synprune_jax.tasks.rollout.EpisodeTask`: Brax, MuJoCo Playground, gymnax, the reach
arm), with the task's own policy network and masks, so a trained policy is a network of the same
shape as the evolved ones and evaluates, exports and replays like them. One iteration (one
runner generation)::

    collect  batch_size * num_minibatches trajectories of unroll_length steps
             (num_envs environments in parallel, auto-reset; the policy samples)
    update   the observation normaliser with the collected observations
    repeat num_updates_per_batch times:
        shuffle the trajectories into num_minibatches minibatches; one Adam step on each
        (clipped surrogate + value loss + entropy bonus, GAE targets)
    prune    the gradient-pruning method's mask update, when due (sparse_training)
    evaluate the deterministic policy tanh(loc) with the task's evaluate (its episodes)

Policy: the task's MLP (``task.spec``; masked kernels) gives the location ``loc`` of a Gaussian
over pre-tanh actions (the spec's hidden activation, no output activation); its scale is
``softplus(scale) + 0.001`` with one state-independent parameter per action dimension, starting
at 1 (Brax 0.14's default ``noise_std_type="scalar"``, ``init_noise_std=1``), so the network
stays the evolved one's shape. Actions are
``tanh`` of a sample, passed to the task's ``_action``. The deterministic policy ``tanh(loc)`` is
exactly ``task.spec`` applied to normalised observations, and :meth:`PPO.policy_network` folds
the normaliser into the first layer, so the trained network *is* a network of ``task.spec``.
The value function is a separate dense MLP (``value_hidden_sizes``).

Losses as in Brax: ``policy = -mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))`` with
``r = exp(log pi - log pi_old)`` and advantages ``A`` from :func:`compute_gae` (normalised per
minibatch with ``normalize_advantage``); ``value = 0.25 * mean((V - v_target) ** 2)`` (or, with
``clip_value``, the larger of that and the clipped value's error); ``entropy = -entropy_cost *
mean(H)`` with Brax's one-sample estimate of the tanh-Normal's entropy.

Pruning (:mod:`synprune_jax.sparse_training`): the policy's kernels only (the critic is not
deployed and stays dense). A pruned weight is zero and gets no update: the forward pass masks
the weights, and the optimiser's update is masked before it is applied.

Examples:
    >>> from synprune_jax.tasks import ReachAvoidArm
    >>> algorithm = PPO(PPOConfig(pruning="rigl"), ReachAvoidArm(num_joints=2))
    >>> hyper = algorithm.default_hyper.replace(density=0.25)
    >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), hyper)  # shapes only
    >>> _, metrics = jax.eval_shape(algorithm.step, jax.random.key(1), state, hyper)
    >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
    ['active_weights', 'density', 'entropy', 'env_steps', 'eval_fitness', 'policy_loss', 'std',
     'train_return', 'value_loss']
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from synprune_jax import masks as masks_lib
from synprune_jax import sparse_training, trees
from synprune_jax.networks import MLPSpec
from synprune_jax.types import Masks, Params, Population

MIN_STD = 0.001  # Brax's NormalTanhDistribution: scale = softplus(x) + 0.001
INIT_SCALE = 1.0  # Brax 0.14's init_noise_std: the scale parameter starts at 1 (std 1.31)


# ----- configuration -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static structure of PPO (shapes, loops, the pruning method and its schedule).

    Attributes:
        num_envs: environments stepped in parallel.
        unroll_length: steps of each collected trajectory.
        batch_size: trajectories per minibatch.
        num_minibatches: minibatches per pass; an iteration collects ``batch_size *
            num_minibatches`` trajectories (a multiple of ``num_envs``), that is
            :attr:`env_steps_per_iteration` environment steps.
        num_updates_per_batch: passes over the collected data per iteration.
        value_hidden_sizes: hidden widths of the (dense, tanh) value MLP.
        normalize_observations: running mean / std normalisation of observations (Brax's).
        normalize_advantage: normalise the advantages of each minibatch.
        clip_value: also clip the value function's change (PPO2's value clipping).
        max_grad_norm: clip the global gradient norm (``None``: no clipping).
        pruning: one of :data:`~synprune_jax.sparse_training.METHODS` (``"none"``: dense).
        distribution: per-layer densities, ``"uniform"`` or ``"erk"``.
        prune_start: GMP's first pruning iteration ...
        prune_end: ... and the iteration at which it reaches the target density (the schedule is
            in iterations, like the ES's, so a resumed or extended run keeps it).
        update_every: iterations between mask updates (GMP, SET, RigL).
        update_end: SET / RigL change the mask before this iteration only (the drop fraction's
            cosine decays to 0 there).

    Examples:
        >>> PPOConfig().env_steps_per_iteration  # 32 * 8 trajectories of 20 steps
        5120
    """

    num_envs: int = 64
    unroll_length: int = 20
    batch_size: int = 32
    num_minibatches: int = 8
    num_updates_per_batch: int = 4
    value_hidden_sizes: tuple[int, ...] = (64, 64)
    normalize_observations: bool = True
    normalize_advantage: bool = True
    clip_value: bool = False
    max_grad_norm: float | None = None
    pruning: str = "none"
    distribution: str = "uniform"
    prune_start: int = 40
    prune_end: int = 160
    update_every: int = 10
    update_end: int = 150

    def __post_init__(self):
        object.__setattr__(
            self, "value_hidden_sizes", tuple(int(h) for h in self.value_hidden_sizes)
        )
        for name in (
            "num_envs",
            "unroll_length",
            "batch_size",
            "num_minibatches",
            "num_updates_per_batch",
            "update_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ppo.{name} must be an integer >= 1, got {value!r}")
        for name in ("prune_start", "prune_end", "update_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ppo.{name} must be an integer >= 0, got {value!r}")
        if (self.batch_size * self.num_minibatches) % self.num_envs:
            raise ValueError(
                f"ppo.batch_size * ppo.num_minibatches ({self.batch_size * self.num_minibatches})"
                f" must be a multiple of ppo.num_envs ({self.num_envs})"
            )
        if self.pruning not in sparse_training.METHODS:
            raise ValueError(
                f"unknown ppo.pruning {self.pruning!r}; valid: {list(sparse_training.METHODS)}"
            )
        if self.distribution not in sparse_training.DISTRIBUTIONS:
            raise ValueError(
                f"unknown ppo.distribution {self.distribution!r}; "
                f"valid: {list(sparse_training.DISTRIBUTIONS)}"
            )
        if self.prune_end <= self.prune_start:
            raise ValueError(
                f"ppo.prune_end ({self.prune_end}) must be after ppo.prune_start "
                f"({self.prune_start})"
            )
        if any(h < 1 for h in self.value_hidden_sizes):
            raise ValueError(f"ppo.value_hidden_sizes must be >= 1, got {self.value_hidden_sizes}")
        if self.max_grad_norm is not None and not float(self.max_grad_norm) > 0:
            raise ValueError(f"ppo.max_grad_norm must be > 0 or null, got {self.max_grad_norm!r}")

    @property
    def trajectories_per_iteration(self) -> int:
        return self.batch_size * self.num_minibatches

    @property
    def env_steps_per_iteration(self) -> int:
        """Environment steps one iteration collects."""
        return self.trajectories_per_iteration * self.unroll_length


class PPOHyper(struct.PyTreeNode):
    """Traced knobs of PPO (a sweep vmaps over them; ``density`` included, so runs of one
    pruning method at several densities share one compiled program).

    Attributes:
        learning_rate: Adam's step size.
        entropy_cost: weight of the entropy bonus.
        discounting: discount factor ``gamma``.
        gae_lambda: GAE's ``lambda``.
        clipping_epsilon: PPO's ratio clip ``eps`` (also the value clip with ``clip_value``).
        reward_scaling: rewards are multiplied by this in the loss.
        density: the pruning method's target density of the policy's kernels (1: dense).
        drop_fraction: SET / RigL's initial drop fraction (cosine-decayed).
    """

    learning_rate: Any = 3e-4
    entropy_cost: Any = 1e-2
    discounting: Any = 0.97
    gae_lambda: Any = 0.95
    clipping_epsilon: Any = 0.3
    reward_scaling: Any = 1.0
    density: Any = 1.0
    drop_fraction: Any = 0.3


def validate_hyper(hyper: PPOHyper) -> None:
    """Raises ``ValueError`` for an out-of-range :class:`PPOHyper` value (traced values are
    skipped; non-finite values are refused).

    Examples:
        >>> validate_hyper(PPOHyper(density=0.0))
        Traceback (most recent call last):
        ...
        ValueError: ppo.density must be in (0, 1], got 0.0
    """
    from synprune_jax.algorithms.es import _concrete

    rules = [
        ("learning_rate", lambda v: v > 0, "> 0"),
        ("entropy_cost", lambda v: v >= 0, ">= 0"),
        ("discounting", lambda v: 0 <= v <= 1, "in [0, 1]"),
        ("gae_lambda", lambda v: 0 <= v <= 1, "in [0, 1]"),
        ("clipping_epsilon", lambda v: v > 0, "> 0"),
        ("reward_scaling", lambda v: v > 0, "> 0"),
        ("density", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("drop_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ]
    for name, ok, rule in rules:
        value = _concrete(getattr(hyper, name))
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise ValueError(f"ppo.{name} must be {rule}, got {value}")


# ----- pieces ----------------------------------------------------------------------------------
class Normalizer(struct.PyTreeNode):
    """Running observation statistics (Brax's ``running_statistics``): ``count`` scalar,
    ``mean [obs]``, ``summed_variance [obs]``."""

    count: jax.Array
    mean: jax.Array
    summed_variance: jax.Array

    @classmethod
    def create(cls, size: int) -> Normalizer:
        return cls(
            count=jnp.zeros((), jnp.float32),
            mean=jnp.zeros((size,), jnp.float32),
            summed_variance=jnp.zeros((size,), jnp.float32),
        )

    def update(self, observations: jax.Array) -> Normalizer:
        """Merges a batch ``[..., obs]`` (Welford's parallel update)."""
        batch = observations.reshape(-1, observations.shape[-1]).astype(jnp.float32)
        count = self.count + batch.shape[0]
        to_old = batch - self.mean[None]
        mean = self.mean + jnp.sum(to_old, axis=0) / count
        summed = self.summed_variance + jnp.sum(to_old * (batch - mean[None]), axis=0)
        return Normalizer(count=count, mean=mean, summed_variance=summed)

    @property
    def std(self) -> jax.Array:
        """``[obs]``: ``sqrt(summed_variance / count)`` clipped to ``[1e-6, 1e6]`` (1 before any
        data)."""
        variance = jnp.maximum(self.summed_variance, 0.0) / jnp.maximum(self.count, 1.0)
        std = jnp.clip(jnp.sqrt(variance), 1e-6, 1e6)
        return jnp.where(self.count > 0, std, 1.0)

    def apply(self, observations: jax.Array) -> jax.Array:
        """``(observations - mean) / std`` for observations ``[..., obs]``."""
        return (observations - _like(self.mean, observations)) / _like(self.std, observations)


def compute_gae(
    truncation: jax.Array,
    termination: jax.Array,
    rewards: jax.Array,
    values: jax.Array,
    bootstrap_value: jax.Array,
    lambda_,
    discount,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation as Brax computes it (time-major ``[T, B]`` inputs,
    ``bootstrap_value [B]``); a truncated step contributes nothing and cuts the recursion, a
    terminal one does not bootstrap.

    Returns:
        ``(value_targets [T, B], advantages [T, B])`` (no gradient).

    Examples:
        >>> ones = jnp.ones((2, 1))
        >>> targets, advantages = compute_gae(0 * ones, 0 * ones, ones, 0 * ones, jnp.zeros(1),
        ...                                   lambda_=1.0, discount=0.5)
        >>> targets[:, 0].tolist(), advantages[:, 0].tolist()  # 1 + 0.5 * 1, then 1
        ([1.5, 1.0], [1.5, 1.0])
    """
    truncation_mask = 1.0 - truncation
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = (rewards + discount * (1.0 - termination) * next_values - values) * truncation_mask

    def backward(accumulated, inputs):
        mask, delta, terminal = inputs
        accumulated = delta + discount * (1.0 - terminal) * mask * lambda_ * accumulated
        return accumulated, accumulated

    _, differences = jax.lax.scan(
        backward,
        jnp.zeros_like(bootstrap_value),
        (truncation_mask, deltas, termination),
        reverse=True,
    )
    targets = differences + values
    next_targets = jnp.concatenate([targets[1:], bootstrap_value[None]], axis=0)
    advantages = (
        rewards + discount * (1.0 - termination) * next_targets - values
    ) * truncation_mask
    return jax.lax.stop_gradient(targets), jax.lax.stop_gradient(advantages)


def clipped_surrogate(log_ratio: jax.Array, advantages: jax.Array, epsilon) -> jax.Array:
    """PPO's policy loss ``-mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))``, ``r =
    exp(log_ratio)``.

    Examples:
        >>> ratio = jnp.array([0.5, 1.0, 2.0])  # min(r, clip(r, 0.8, 1.2)) = 0.5, 1, 1.2
        >>> round(float(clipped_surrogate(jnp.log(ratio), jnp.ones(3), 0.2)), 6)
        -0.9
    """
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantages
    return -jnp.mean(jnp.minimum(unclipped, clipped))


def _like(vector: jax.Array, array: jax.Array) -> jax.Array:
    """A ``[d]`` vector broadcast to ``array``'s shape ``[..., d]`` (explicitly: the suite runs
    with ``jax_numpy_rank_promotion="raise"``)."""
    return jnp.broadcast_to(vector, array.shape)


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _key_data(tree):
    """``tree`` with its typed PRNG-key leaves replaced by their raw ``uint32`` data."""
    return jax.tree_util.tree_map(
        lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, tree
    )


def _typed_keys(tree, template):
    """Undoes :func:`_key_data`: the leaves that are keys in ``template`` (an
    ``eval_shape`` of the same tree) wrapped back into typed keys of its implementation."""
    return jax.tree_util.tree_map(
        lambda leaf, like: (
            jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(jax.random.key(0)))
            if _is_key(like)
            else leaf
        ),
        tree,
        template,
    )


def _tanh_log_det(raw: jax.Array) -> jax.Array:
    """``log |d tanh(u) / du|`` per element (stable form, as Brax's bijector)."""
    return 2.0 * (jnp.log(2.0) - raw - jax.nn.softplus(-2.0 * raw))


def normal_log_prob(raw: jax.Array, loc: jax.Array, std: jax.Array) -> jax.Array:
    """Log-density of the tanh-Normal at ``tanh(raw)``, summed over the last axis."""
    std = _like(std, raw)
    log_normal = -0.5 * ((raw - loc) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.sum(log_normal - _tanh_log_det(raw), axis=-1)


def tanh_normal_entropy(key: jax.Array, loc: jax.Array, std: jax.Array) -> jax.Array:
    """Brax's estimate: the Normal's entropy plus the log-determinant at one sample ``[...]``."""
    std = _like(std, loc)
    entropy = 0.5 + 0.5 * jnp.log(2.0 * jnp.pi) + jnp.log(std)
    sample = loc + std * jax.random.normal(key, loc.shape)
    return jnp.sum(entropy + _tanh_log_det(sample), axis=-1)


def value_spec(observation_size: int, hidden_sizes: tuple[int, ...]) -> MLPSpec:
    """The dense tanh value MLP: ``[obs] -> [1]``."""
    return MLPSpec(
        input_size=observation_size,
        output_size=1,
        hidden_sizes=hidden_sizes,
        activation="tanh",
        output_activation="linear",
    )


def fold_normalizer(spec: MLPSpec, params: Params, normalizer: Normalizer) -> Params:
    """Params of ``spec`` that compute on raw observations what ``params`` compute on normalised
    ones: ``W' = W / std[:, None]``, ``b' = b - (mean / std) @ W`` in the first layer (a zero
    weight stays zero)."""
    kernels = spec.kernels(params)
    first = kernels[0]
    inverse = 1.0 / normalizer.std
    layers = dict(params["params"])
    name = spec.layer_names()[0]
    layers[name] = {
        "kernel": first * inverse[:, None],
        "bias": layers[name]["bias"] - (normalizer.mean * inverse) @ first,
    }
    return {**params, "params": layers}


# ----- state -----------------------------------------------------------------------------------
class PPOState(struct.PyTreeNode):
    """State of :class:`PPO` (no PRNG keys).

    Attributes:
        params: the policy network's params (``task.spec``'s layout; pruned weights are zero).
        masks: its boolean masks.
        scale: ``[act]`` pre-softplus scale of the action distribution.
        value_params: the value MLP's params.
        optimizer: Adam's state over ``(params, scale, value_params)``.
        normalizer: the :class:`Normalizer`.
        envs: ``num_envs`` running episodes: ``{"state": ..., "steps": [N] int32,
            "return": [N] float32}``.
        fitness: the last evaluation's fitness of the deterministic policy (``-inf`` before the
            first iteration).
        evaluated_at: int32, the generation of that evaluation (-1 before): with the run's seed,
            its evaluation key (:meth:`PPO.evaluation`).
        generation: int32 scalar.
    """

    params: Params
    masks: Masks
    scale: jax.Array
    value_params: Params
    optimizer: Any
    normalizer: Normalizer
    envs: Any
    fitness: jax.Array
    evaluated_at: jax.Array
    generation: jax.Array


@dataclasses.dataclass(frozen=True)
class PPO:
    """PPO on an environment task with a gradient-pruning method (module docstring); the
    runner's ``Algorithm`` protocol, one iteration per generation.

    ``step`` returns the scalar metrics ``eval_fitness`` (deterministic policy, the task's
    episodes), ``train_return`` (mean return of the training episodes that ended in the
    iteration; NaN if none did), ``density``, ``active_weights``, ``policy_loss``,
    ``value_loss``, ``entropy``, ``std`` (mean action scale) and ``env_steps`` (collected so
    far, float32).

    Args:
        config: :class:`PPOConfig`.
        task: an :class:`~synprune_jax.tasks.rollout.EpisodeTask`.

    Raises:
        TypeError: ``task`` is not an environment task.

    Examples:
        >>> from synprune_jax.tasks import ReachAvoidArm
        >>> algorithm = PPO(PPOConfig(num_envs=4, batch_size=4, num_minibatches=2,
        ...                 unroll_length=5), ReachAvoidArm(num_joints=2, episode_length=10))
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> state.scale.shape, state.masks["params"]["Dense_0"]["kernel"].dtype
        ((2,), dtype('bool'))
    """

    config: PPOConfig
    task: Any

    def __post_init__(self):
        from synprune_jax.tasks.rollout import EpisodeTask

        if not isinstance(self.task, EpisodeTask):
            raise TypeError(
                f"PPO needs an environment task (Brax, Playground, gymnax, reach), got "
                f"{type(self.task).__name__}"
            )

    # ----- structure ---------------------------------------------------------------------------
    @property
    def default_hyper(self) -> PPOHyper:
        return PPOHyper()

    @property
    def spec(self) -> MLPSpec:
        return self.task.spec

    @property
    def loc_spec(self) -> MLPSpec:
        """``task.spec`` without its output activation: the location of the pre-tanh Gaussian."""
        return dataclasses.replace(self.spec, output_activation="linear")

    @property
    def value_spec(self) -> MLPSpec:
        return value_spec(self.spec.input_size, self.config.value_hidden_sizes)

    def _optimizer(self, hyper: PPOHyper) -> optax.GradientTransformation:
        adam = optax.adam(hyper.learning_rate)
        if self.config.max_grad_norm is None:
            return adam
        return optax.chain(optax.clip_by_global_norm(float(self.config.max_grad_norm)), adam)

    def _with_rank_promotion(self, function, *args):
        mode = getattr(self.task, "rank_promotion", None)
        if mode is None:
            return function(*args)
        with jax.numpy_rank_promotion(mode):
            return function(*args)

    # ----- the policy --------------------------------------------------------------------------
    def _loc(self, params: Params, masks: Masks | None, observations: jax.Array) -> jax.Array:
        dense = params if masks is None else masks_lib.apply_masks(params, masks)
        return self.loc_spec.apply_dense(dense, observations)

    def _value(self, value_params: Params, observations: jax.Array) -> jax.Array:
        return self.value_spec.apply_dense(value_params, observations)[..., 0]

    def policy_network(self, state: PPOState) -> tuple[Params, Masks]:
        """``(params, masks)`` of ``task.spec`` computing the deterministic policy on raw
        observations (the normaliser folded in: :func:`fold_normalizer`)."""
        params = masks_lib.apply_masks(state.params, state.masks)
        if self.config.normalize_observations:
            params = fold_normalizer(self.spec, params, state.normalizer)
        return params, state.masks

    def evaluate_policy(self, key: jax.Array, state: PPOState):
        """The task's ``evaluate`` of the deterministic policy (a population of one)."""
        params, masks = self.policy_network(state)
        population = Population(
            params=jax.tree_util.tree_map(lambda leaf: leaf[None], params),
            masks=jax.tree_util.tree_map(lambda leaf: leaf[None], masks),
            rates=jnp.zeros((1, 2), jnp.float32),
        )
        return self.task.evaluate(key, population)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array, hyper: PPOHyper) -> PPOState:
        """Random policy and value networks, the method's initial masks, fresh environments.

        Raises:
            ValueError: a concrete ``hyper`` value out of range (:func:`validate_hyper`).
        """
        validate_hyper(hyper)
        config = self.config
        key_policy, key_value, key_masks, key_envs = jax.random.split(key, 4)
        params = self.spec.init(key_policy)
        if config.pruning in ("static", "set", "rigl"):
            counts = sparse_training.layer_counts(self.spec, hyper.density, config.distribution)
            masks = sparse_training.random_masks(key_masks, self.spec, params, counts)
        else:
            masks = self.spec.full_masks(params)
        params = masks_lib.apply_masks(params, masks)
        value_params = self.value_spec.init(key_value)
        scale = jnp.full((self.spec.output_size,), INIT_SCALE, jnp.float32)
        optimizer = self._optimizer(hyper).init((params, scale, value_params))
        envs = self._with_rank_promotion(
            jax.vmap(self._fresh_env), jax.random.split(key_envs, config.num_envs)
        )
        return PPOState(
            params=params,
            masks=masks,
            scale=scale,
            value_params=value_params,
            optimizer=trees.strong_types(optimizer),
            normalizer=Normalizer.create(self.spec.input_size),
            envs=envs,
            fitness=jnp.asarray(-jnp.inf, jnp.float32),
            evaluated_at=jnp.asarray(-1, jnp.int32),
            generation=jnp.zeros((), jnp.int32),
        )

    def _reset(self, key: jax.Array):
        """The task's reset, its PRNG-key leaves stored as raw key data (a state holds no typed
        keys: checkpoints and the runner's size checks read plain arrays; MuJoCo Playground
        keeps keys in its env state)."""
        return _key_data(self.task._reset(key))

    def _fresh_env(self, key: jax.Array) -> dict:
        return {
            "state": self._reset(key),
            "steps": jnp.zeros((), jnp.int32),
            "return": jnp.zeros((), jnp.float32),
        }

    def step(
        self, key: jax.Array, state: PPOState, hyper: PPOHyper
    ) -> tuple[PPOState, dict[str, jax.Array]]:
        """One iteration: collect, normalise, update, prune when due, evaluate. Pure."""
        return self._with_rank_promotion(self._step, key, state, hyper)

    def _step(self, key, state: PPOState, hyper: PPOHyper):
        config = self.config
        # evaluation() mirrors this split
        key_collect, key_update, key_prune, key_eval = jax.random.split(key, 4)
        envs, data, finished = self._collect(key_collect, state)
        normalizer = state.normalizer
        if config.normalize_observations:
            normalizer = normalizer.update(data["observations"])
        params, scale, value_params, optimizer, losses = self._update(
            key_update, state, normalizer, data, hyper
        )
        iteration = state.generation + 1
        masks = self._prune(
            key_prune,
            iteration,
            (params, scale, value_params),
            state.masks,
            normalizer,
            data,
            hyper,
        )
        params = masks_lib.apply_masks(params, masks)
        state = state.replace(
            params=params,
            masks=masks,
            scale=scale,
            value_params=value_params,
            optimizer=trees.strong_types(optimizer),
            normalizer=normalizer,
            envs=envs,
        )
        fitness = self.evaluate_policy(key_eval, state).fitness[0]
        state = state.replace(
            fitness=jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf),
            evaluated_at=iteration,
            generation=iteration,
        )
        maskable = self.spec.maskable()
        metrics = {
            "eval_fitness": fitness,
            "train_return": finished["return"] / finished["count"],
            "density": masks_lib.density(masks, maskable),
            "active_weights": masks_lib.count_active(masks, maskable),
            **losses,
            "std": jnp.mean(jax.nn.softplus(scale) + MIN_STD),
            "env_steps": iteration.astype(jnp.float32) * config.env_steps_per_iteration,
        }
        return state, metrics

    def evaluation(self, key: jax.Array, generation: int) -> tuple[jax.Array, int]:
        """How the policy of ``generation >= 1`` was evaluated (:attr:`PPOState.evaluated_at`).

        Args:
            key: the key of the step into ``generation``.
            generation: >= 1.

        Returns:
            ``(key_eval, 1)``: the key passed to ``task.evaluate`` and the batch size.
        """
        if generation < 1:
            raise ValueError(f"PPO evaluates its policy from generation 1 on, got {generation}")
        return jax.random.split(key, 4)[3], 1

    # ----- collection --------------------------------------------------------------------------
    def _collect(self, key: jax.Array, state: PPOState):
        """``batch_size * num_minibatches`` trajectories: data leaves ``[B, T, ...]``."""
        config, task = self.config, self.task
        num_unrolls = config.trajectories_per_iteration // config.num_envs
        std = jax.nn.softplus(state.scale) + MIN_STD
        template = jax.eval_shape(task._reset, jax.random.key(0))  # where the typed keys are

        def observe(env_state):
            return task._observation(_typed_keys(env_state, template))

        def env_step(env, raw_action, reset_state, step_key):
            typed = _typed_keys(env["state"], template)
            next_state = _key_data(task._step(typed, task._action(jnp.tanh(raw_action)), step_key))
            reward = jnp.asarray(task._reward(next_state), jnp.float32)
            ended = task._done(next_state)
            steps = env["steps"] + 1
            truncated = (steps >= task.episode_length) & ~ended
            done = ended | truncated
            episode_return = env["return"] + reward
            new_env = {
                "state": trees.select(done, reset_state, next_state),
                "steps": jnp.where(done, 0, steps),
                "return": jnp.where(done, 0.0, episode_return),
            }
            out = {
                "reward": reward,
                "termination": ended.astype(jnp.float32),
                "truncation": truncated.astype(jnp.float32),
                "finished_return": jnp.where(done, episode_return, 0.0),
                "finished": done.astype(jnp.float32),
            }
            return new_env, out

        def unroll(envs, unroll_key):
            key_reset, key_steps = jax.random.split(unroll_key)
            # one fresh reset per env and unroll: an episode that ends starts from it
            resets = jax.vmap(self._reset)(jax.random.split(key_reset, config.num_envs))

            def time_step(envs, step_key):
                key_action, key_env = jax.random.split(step_key)
                observations = jax.vmap(observe)(envs["state"])
                normalized = self._normalized(state.normalizer, observations)
                loc = self._loc(state.params, state.masks, normalized)
                raw = loc + _like(std, loc) * jax.random.normal(key_action, loc.shape)
                log_prob = normal_log_prob(raw, loc, std)
                value = self._value(state.value_params, normalized)
                step_keys = jax.random.split(key_env, config.num_envs) if task.step_keys else None
                envs, out = jax.vmap(env_step, in_axes=(0, 0, 0, 0 if task.step_keys else None))(
                    envs, raw, resets, step_keys
                )
                out.update(
                    observations=observations, raw_actions=raw, log_probs=log_prob, values=value
                )
                return envs, out

            envs, trace = jax.lax.scan(
                time_step, envs, jax.random.split(key_steps, config.unroll_length)
            )
            last = jax.vmap(observe)(envs["state"])
            return envs, (trace, last)

        envs, (trace, last) = jax.lax.scan(unroll, state.envs, jax.random.split(key, num_unrolls))
        # trace leaves [U, T, N, ...] -> [U * N, T, ...]; last [U, N, obs] -> [U * N, obs]
        data = jax.tree_util.tree_map(
            lambda leaf: jnp.swapaxes(leaf, 1, 2).reshape(
                num_unrolls * config.num_envs, config.unroll_length, *leaf.shape[3:]
            ),
            trace,
        )
        data["last_observations"] = last.reshape(num_unrolls * config.num_envs, -1)
        finished = {
            "return": jnp.sum(data.pop("finished_return")),
            "count": jnp.sum(data.pop("finished")),
        }
        return envs, data, finished

    def _normalized(self, normalizer: Normalizer, observations: jax.Array) -> jax.Array:
        if not self.config.normalize_observations:
            return observations
        return normalizer.apply(observations)

    # ----- learning ----------------------------------------------------------------------------
    def loss(
        self,
        trainable: tuple,
        masks: Masks | None,
        normalizer: Normalizer,
        batch: dict,
        key: jax.Array,
        hyper: PPOHyper,
    ) -> tuple[jax.Array, dict]:
        """PPO's loss on a minibatch (leaves ``[B, T, ...]``) for ``trainable = (params, scale,
        value_params)``; ``masks=None`` evaluates the policy with ``params`` as they are (RigL's
        gradient with respect to the dense weights). Returns ``(loss, parts)``."""
        params, scale, value_params = trainable
        time_major = jax.tree_util.tree_map(lambda leaf: jnp.swapaxes(leaf, 0, 1), batch)
        observations = self._normalized(normalizer, time_major["observations"])
        loc = self._loc(params, masks, observations)
        std = jax.nn.softplus(scale) + MIN_STD
        log_prob = normal_log_prob(time_major["raw_actions"], loc, std)
        values = self._value(value_params, observations)
        bootstrap = self._value(
            value_params, self._normalized(normalizer, batch["last_observations"])
        )
        rewards = time_major["reward"] * hyper.reward_scaling
        targets, advantages = compute_gae(
            time_major["truncation"],
            time_major["termination"],
            rewards,
            values,
            bootstrap,
            hyper.gae_lambda,
            hyper.discounting,
        )
        if self.config.normalize_advantage:
            advantages = (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + 1e-8)
        policy_loss = clipped_surrogate(
            log_prob - time_major["log_probs"], advantages, hyper.clipping_epsilon
        )
        errors = (targets - values) ** 2
        if self.config.clip_value:
            old = time_major["values"]
            clipped = old + jnp.clip(values - old, -hyper.clipping_epsilon, hyper.clipping_epsilon)
            errors = jnp.maximum(errors, (targets - clipped) ** 2)
        value_loss = jnp.mean(errors) * 0.25
        entropy = jnp.mean(tanh_normal_entropy(key, loc, std))
        total = policy_loss + value_loss - hyper.entropy_cost * entropy
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def _update(self, key, state: PPOState, normalizer: Normalizer, data: dict, hyper: PPOHyper):
        config = self.config
        optimizer = self._optimizer(hyper)
        masks = state.masks
        zero_scale = jnp.zeros_like(state.scale)
        update_masks = (
            masks,
            jnp.ones(zero_scale.shape, jnp.bool_),
            jax.tree_util.tree_map(lambda p: jnp.ones(p.shape, jnp.bool_), state.value_params),
        )
        grad = jax.grad(self.loss, has_aux=True)

        def minibatch_step(carry, inputs):
            trainable, opt_state = carry
            batch, step_key = inputs
            grads, parts = grad(trainable, masks, normalizer, batch, step_key, hyper)
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            updates = masks_lib.apply_masks(updates, update_masks)  # pruned: no update
            trainable = optax.apply_updates(trainable, updates)
            return (trainable, opt_state), parts

        def epoch(carry, epoch_key):
            key_shuffle, key_steps = jax.random.split(epoch_key)
            order = jax.random.permutation(key_shuffle, config.trajectories_per_iteration)
            batches = jax.tree_util.tree_map(
                lambda leaf: leaf[order].reshape(
                    config.num_minibatches, config.batch_size, *leaf.shape[1:]
                ),
                data,
            )
            keys = jax.random.split(key_steps, config.num_minibatches)
            return jax.lax.scan(minibatch_step, carry, (batches, keys))

        trainable = (state.params, state.scale, state.value_params)
        (trainable, opt_state), parts = jax.lax.scan(
            epoch,
            (trainable, state.optimizer),
            jax.random.split(key, config.num_updates_per_batch),
        )
        losses = {name: jnp.mean(value) for name, value in parts.items()}
        return (*trainable, opt_state, losses)

    def _prune(
        self, key, iteration, trainable: tuple, masks, normalizer, data, hyper: PPOHyper
    ) -> Masks:
        """The pruning method's mask after ``iteration`` (unchanged when no update is due);
        ``trainable = (params, scale, value_params)`` after the iteration's updates."""
        config, spec = self.config, self.spec
        params = trainable[0]
        method = config.pruning
        if method in ("none", "static"):
            return masks
        every = config.update_every
        if method == "gmp":
            start, end = config.prune_start, config.prune_end
            densities = sparse_training.gmp_densities(
                spec, hyper.density, config.distribution, iteration, start, end
            )
            pruned = sparse_training.keep_largest(
                spec,
                jax.tree_util.tree_map(jnp.abs, params),
                masks,
                sparse_training.counts_of(spec, densities),
            )
            due = (
                (iteration >= start)
                & (iteration <= end)
                & (((iteration - start) % every == 0) | (iteration == end))
            )
            return trees.select(due, pruned, masks)
        update_end = config.update_end
        fraction = sparse_training.drop_fraction_at(hyper.drop_fraction, iteration, update_end)
        grow_scores = None
        if method == "rigl":
            key_loss, key = jax.random.split(key)
            dense = masks_lib.apply_masks(params, masks)
            batch = jax.tree_util.tree_map(lambda leaf: leaf[: config.batch_size], data)

            def loss_of(weights):  # the loss as a function of the dense effective weights
                return self.loss(
                    (weights, *trainable[1:]), None, normalizer, batch, key_loss, hyper
                )[0]

            grow_scores = jax.grad(loss_of)(dense)
        updated = sparse_training.drop_and_grow(key, spec, params, masks, fraction, grow_scores)
        due = (iteration % every == 0) & (iteration < update_end)
        return trees.select(due, updated, masks)


__all__ = [
    "PPO",
    "PPOConfig",
    "PPOHyper",
    "PPOState",
    "Normalizer",
    "clipped_surrogate",
    "compute_gae",
    "fold_normalizer",
    "normal_log_prob",
    "tanh_normal_entropy",
    "validate_hyper",
    "value_spec",
]
