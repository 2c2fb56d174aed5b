"""Evolution strategies over masked networks, through evosax (any strategy by name).

* :class:`MaskedStrategy` wraps one evosax strategy for one network template: the search vector
  is the raveled parameter vector ``[N]``, masks a float vector ``m [N]``; fitness is maximised
  (negated at the evosax boundary). Search space ``"all"`` applies masks only at evaluation;
  ``"unmasked"`` projects samples and the mean (or every member) onto the mask, so masked
  coordinates stay at exactly 0.
* :class:`MaskedES` is a runner algorithm: an ES on one masked network, pruned every
  ``prune_every`` generations toward a scheduled density (:mod:`synprune_jax.pruning`). Static
  structure is :class:`ESConfig`; the numeric knobs are :class:`ESHyper`.

See ``docs/es_ga.md`` for the search spaces, the per-coordinate std and the pruning schedules.

Example (kinematic arm):
    >>> import jax
    >>> from synprune_jax.tasks import KinematicArm
    >>> task = KinematicArm(num_joints=4, genotype="mlp")
    >>> algorithm = MaskedES(ESConfig(strategy="open_es", population_size=8), task)
    >>> hyper = algorithm.default_hyper.replace(sigma_init=0.1)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> int(state.generation)
    1
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import flatten_util

from synprune_jax import masks as masks_lib
from synprune_jax import trees
from synprune_jax.pruning import (
    SCHEDULES,
    SCOPES,
    Scope,
    prune_to_density_by_score,
    scheduled_density,
)
from synprune_jax.types import Masks, Params, Population, PyTree

SEARCH_SPACES = ("all", "unmasked")
PRUNE_CRITERIA = ("magnitude", "random", "snr")
PRUNE_SCHEDULES = SCHEDULES
OPTIMIZERS = ("sgd", "adam")

# Short names -> evosax class names (any other evosax name works too, case / "_" insensitive).
_ALIASES = {
    "openes": "Open_ES",
    "cmaes": "CMA_ES",
    "sepcmaes": "Sep_CMA_ES",
    "de": "DifferentialEvolution",
    "ga": "SimpleGA",
}


def _ALLOW_RANK_PROMOTION():
    """evosax broadcasts implicitly (``mean + std * z``); allow it inside its calls only."""
    return jax.numpy_rank_promotion("allow")


def _normalise(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def strategy_class(name: str) -> type:
    """The evosax strategy class for ``name`` (``"open_es"``, ``"CMA_ES"``, ``"de"``, ...).

    Raises:
        ValueError: unknown name; the message lists the valid evosax names.
    """
    from evosax.algorithms import algorithms

    by_name = {_normalise(key): value for key, value in algorithms.items()}
    key = _normalise(_ALIASES.get(_normalise(name), name))
    if key not in by_name:
        raise ValueError(
            f"unknown evosax strategy {name!r}; valid: {sorted(algorithms)} "
            f"(aliases: {sorted(_ALIASES)})"
        )
    return by_name[key]


def check_population_size(name: str, population_size: int) -> None:
    """Refuses, in one line, a ``population_size`` that evosax's strategy ``name`` would assert
    against when built (OpenES, PGPE, ARS and the other antithetic strategies need an even one):
    the strategy is built once on a 2-dimensional problem and its assertion becomes the message.

    Raises:
        ValueError: the strategy refuses the size (the message is evosax's reason).

    Examples:
        >>> check_population_size("snes", 5)  # SNES takes any size
        >>> check_population_size("open_es", 5)
        Traceback (most recent call last):
        ...
        ValueError: evosax's Open_ES refuses population_size=5: Population size must be even.
    """
    cls = strategy_class(name)
    try:
        cls(population_size=int(population_size), solution=jnp.zeros((2,), jnp.float32))
    except AssertionError as error:
        raise ValueError(
            f"evosax's {cls.__name__} refuses population_size={population_size}: {error}"
        ) from None
    except TypeError:  # a strategy with other required arguments: checked when it is built
        return


def is_population_based(name: str) -> bool:
    """True for evosax's population-based strategies (GA, DE, PSO, ...)."""
    from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

    return issubclass(strategy_class(name), PopulationBasedAlgorithm)


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``"sgd"`` or ``"adam"`` with a constant learning rate."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
    return optax.sgd(learning_rate) if name == "sgd" else optax.adam(learning_rate)


def make_std_schedule(
    sigma_init: float, sigma_decay: float = 1.0, sigma_min: float = 0.0
) -> optax.Schedule:
    """``sigma_init * sigma_decay ** g``, floored at ``sigma_min`` (constant when decay is 1)."""
    if sigma_decay == 1.0:
        return optax.constant_schedule(sigma_init)
    return optax.exponential_decay(
        sigma_init, transition_steps=1, decay_rate=sigma_decay, end_value=sigma_min
    )


def _flat_mask(masks: Masks) -> jax.Array:
    """``[N]`` float32, 1 where the parameter is active (masks raveled like the params)."""
    flat, _ = flatten_util.ravel_pytree(
        jax.tree_util.tree_map(lambda m: m.astype(jnp.float32), masks)
    )
    return flat


def _shaped_loss(fitness: jax.Array) -> jax.Array:
    """Maximised fitness ``[P]`` -> evosax loss ``[P]``; non-finite values become the worst."""
    finite = jnp.isfinite(fitness)
    loss = -jnp.where(finite, fitness, 0.0)
    worst = jnp.max(jnp.where(finite, loss, -jnp.inf))
    worst = jnp.where(jnp.isfinite(worst), worst, 0.0)
    return jnp.where(finite, loss, worst + 1.0).astype(jnp.float32)


class MaskedStrategy:
    """An evosax strategy on the raveled parameters of one masked network (see module docstring).

    Holds only static structure (the evosax instance is built once here and reused, so its jitted
    methods compile once). Every method is pure; masks are passed in explicitly.

    Args:
        strategy: evosax name (:func:`strategy_class`).
        population_size: ``P``.
        template: one network's params (shapes only matter).
        search_space: ``"all"`` or ``"unmasked"``.
        sigma_init: initial search std (``std_schedule`` and/or ``params.std_init``).
        sigma_decay: per-generation multiplicative std decay (strategies with ``std_schedule``).
        sigma_min: floor of the decayed std.
        optimizer: ``"sgd"`` / ``"adam"`` (strategies with an ``optimizer`` argument), or an
            ``optax.GradientTransformation``.
        learning_rate: optimizer learning rate.
        strategy_kwargs: extra constructor arguments passed to evosax unchanged (they override
            the ones above, e.g. ``{"std_schedule": my_schedule}``).
        params_overrides: fields of the strategy's ``default_params`` to replace.

    Attributes:
        name: the ``strategy`` name as given.
        search_space: ``"all"`` or ``"unmasked"``.
        population_size: ``P`` (int).
        population_based: True for evosax's population-based strategies (GA, DE, PSO, ...):
            :meth:`init` then needs an evaluated initial population.
        num_dims: ``N``, the number of parameters of one network.
        unravel: ``[N]`` -> one network's params (the inverse of :meth:`ravel`).
        es: the evosax instance.
        params: its params (``default_params`` with ``std_init`` and the overrides).

    Raises:
        ValueError: an unknown ``strategy``, ``search_space`` or ``optimizer`` name,
            ``population_size`` < 2, ``strategy_kwargs`` the evosax class does not accept, or
            ``params_overrides`` naming fields its params lack.

    Examples:
        >>> strategy = MaskedStrategy("open_es", 4, {"w": jnp.zeros(3)})  # P = 4, N = 3
        >>> strategy.num_dims, strategy.population_based, strategy.search_space
        (3, False, 'unmasked')
        >>> masks = {"w": jnp.array([True, False, True])}
        >>> state = strategy.init(jax.random.key(0), {"w": jnp.ones(3)}, masks)
        >>> strategy.mean(state)  # centred on the network, projected onto its mask
        {'w': Array([1., 0., 1.], dtype=float32)}
        >>> samples, _ = jax.eval_shape(strategy.ask, jax.random.key(1), state, masks)
        >>> samples.shape  # [P, N], masked coordinates 0 (shapes only, nothing runs)
        (4, 3)
        >>> MaskedStrategy("open_es", 4, {"w": jnp.zeros(3)}, search_space="masked")
        Traceback (most recent call last):
        ...
        ValueError: unknown search_space 'masked'; valid: ['all', 'unmasked']
    """

    def __init__(
        self,
        strategy: str,
        population_size: int,
        template: Params,
        *,
        search_space: str = "unmasked",
        sigma_init: float = 0.05,
        sigma_decay: float = 1.0,
        sigma_min: float = 0.0,
        optimizer: Any = "adam",
        learning_rate: float = 0.01,
        strategy_kwargs: dict | None = None,
        params_overrides: dict | None = None,
    ):
        if search_space not in SEARCH_SPACES:
            raise ValueError(f"unknown search_space {search_space!r}; valid: {list(SEARCH_SPACES)}")
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        self._cls = strategy_class(strategy)
        self.name = strategy
        self.search_space = search_space
        self.population_size = int(population_size)
        self.population_based = is_population_based(strategy)
        flat, self.unravel = flatten_util.ravel_pytree(template)  # [N] -> one network's params
        self.num_dims = int(flat.size)
        self._optimizer = optimizer
        self._sigma_decay = sigma_decay
        self._strategy_kwargs = dict(strategy_kwargs or {})
        self._params_overrides = dict(params_overrides or {})
        self._hyper = (sigma_init, sigma_min, learning_rate)
        self.es, self.params = self._build(sigma_init, sigma_min, learning_rate)
        self.sigma_init = float(sigma_init)

    def _build(self, sigma_init, sigma_min, learning_rate):
        """The evosax instance and its params for these (possibly traced) values."""
        cls = self._cls
        accepted = inspect.signature(cls).parameters  # the constructor's arguments
        kwargs: dict[str, Any] = {}
        if "optimizer" in accepted:
            kwargs["optimizer"] = (
                make_optimizer(self._optimizer, learning_rate)
                if isinstance(self._optimizer, str)
                else self._optimizer
            )
        if "std_schedule" in accepted:
            kwargs["std_schedule"] = make_std_schedule(sigma_init, self._sigma_decay, sigma_min)
        kwargs.update(self._strategy_kwargs)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"{cls.__name__} does not accept {unknown}; it takes "
                f"{sorted(set(accepted) - {'self'})}"
            )
        es = cls(
            population_size=self.population_size,
            solution=jnp.zeros((self.num_dims,), jnp.float32),
            **kwargs,
        )
        params = es.default_params
        if hasattr(params, "std_init"):
            params = params.replace(std_init=jnp.asarray(sigma_init, jnp.float32))
        if self._params_overrides:
            bad = sorted(k for k in self._params_overrides if not hasattr(params, k))
            if bad:
                raise ValueError(f"{cls.__name__} params have no fields {bad}")
            params = params.replace(**self._params_overrides)
        return es, params

    def with_hyper(self, sigma_init, sigma_min, learning_rate) -> MaskedStrategy:
        """This strategy with another (possibly traced) initial std, std floor and learning rate.

        ``self`` when the values are the Python numbers it was built with; otherwise a copy with
        an evosax instance built (at trace time) from them, so a sweep can vmap runs whose values
        differ. ``sigma_decay``, the optimizer's kind and ``strategy_kwargs`` stay.
        """
        values = (sigma_init, sigma_min, learning_rate)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and tuple(
            float(v) for v in values
        ) == tuple(float(v) for v in self._hyper):
            return self
        bound = copy.copy(self)
        bound.es, bound.params = self._build(sigma_init, sigma_min, learning_rate)
        bound.sigma_init = sigma_init
        bound._hyper = values
        return bound

    # ----- conversions -------------------------------------------------------------------------
    def ravel(self, params: Params) -> jax.Array:
        """One network's params -> ``[N]``."""
        return flatten_util.ravel_pytree(params)[0]

    def unravel_population(self, flat: jax.Array) -> Params:
        """``[P, N]`` -> params with a leading ``[P]`` axis."""
        return jax.vmap(self.unravel)(flat)

    def _project(self, flat: jax.Array, masks: Masks) -> jax.Array:
        if self.search_space == "all":
            return flat
        return jnp.where(_flat_mask(masks) > 0, flat, jnp.zeros_like(flat))

    # ----- strategy ----------------------------------------------------------------------------
    def init(
        self,
        key: jax.Array,
        mean: Params,
        masks: Masks,
        population: jax.Array | None = None,
        fitness: jax.Array | None = None,
    ):
        """Initial evosax state: distribution-based strategies centre on the network ``mean``
        (with its ``masks``); population-based ones need ``population [P, N]``, evaluated initial
        members, and ``fitness [P]``, their maximised fitness."""
        if self.population_based:
            if population is None or fitness is None:
                raise ValueError(
                    f"{self.name} is population-based: init needs an evaluated "
                    "initial population and its fitness (see initial_population)"
                )
            population = jax.vmap(lambda x: self._project(x, masks))(population)
            with _ALLOW_RANK_PROMOTION():
                return self.es.init(key, population, _shaped_loss(fitness), self.params)
        with _ALLOW_RANK_PROMOTION():
            return self.es.init(key, self._project(self.ravel(mean), masks), self.params)

    def initial_population(self, key: jax.Array, mean: Params, masks: Masks) -> jax.Array:
        """``[P, N]``: ``mean + sigma_init * N(0, I)`` (projected), to seed population-based
        strategies; the first member is ``mean`` itself."""
        flat = self.ravel(mean)
        noise = jax.random.normal(key, (self.population_size, self.num_dims), flat.dtype)
        population = flat[None, :] + self.sigma_init * noise
        population = population.at[0].set(flat)
        return jax.vmap(lambda x: self._project(x, masks))(population)

    def ask(self, key: jax.Array, state, masks: Masks) -> tuple[jax.Array, Any]:
        """Samples ``[P, N]`` (projected in the ``"unmasked"`` space) and the new state."""
        with _ALLOW_RANK_PROMOTION():
            population, state = self.es.ask(key, state, self.params)
        return jax.vmap(lambda x: self._project(x, masks))(population), state

    def tell(self, key: jax.Array, population: jax.Array, fitness: jax.Array, state, masks: Masks):
        """Updates with maximised ``fitness [P]`` for ``population [P, N]``; returns
        ``(state, evosax metrics)``. The state is projected onto the mask afterwards."""
        with _ALLOW_RANK_PROMOTION():
            state, metrics = self.es.tell(
                key, population, _shaped_loss(fitness), state, self.params
            )
        return self.project(state, masks), metrics

    def project(self, state, masks: Masks):
        """Puts a state onto ``masks`` (call after changing them): in the ``"unmasked"`` space
        masked coordinates of the mean / of every member become 0. Identity for ``"all"``."""
        if self.search_space == "all":
            return state
        if self.population_based:
            return state.replace(
                population=jax.vmap(lambda x: self._project(x, masks))(state.population)
            )
        return state.replace(mean=self._project(state.mean, masks))

    def mean_flat(self, state) -> jax.Array:
        """``[N]``: the distribution mean, or the population mean (population-based)."""
        if self.population_based:
            return jnp.mean(state.population, axis=0)
        return state.mean

    def mean(self, state) -> Params:
        """The search centre as a network's params."""
        return self.unravel(self.mean_flat(state))

    def coordinate_std_flat(self, state) -> jax.Array:
        """``[N]`` per-coordinate std of the search distribution: ``std * sqrt(diag C)``
        (CMA-type), the std vector (SNES, PGPE), the scalar std broadcast (OpenES, ARS), or the
        population's spread (population-based)."""
        if self.population_based:
            return jnp.std(state.population, axis=0)
        std = jnp.asarray(state.std, jnp.float32)
        if hasattr(state, "C"):
            diagonal = jnp.diagonal(state.C) if state.C.ndim == 2 else state.C
            std = std * jnp.sqrt(jnp.maximum(diagonal, 0.0))
        return jnp.broadcast_to(std, (self.num_dims,))

    def best(self, state) -> tuple[jax.Array, jax.Array]:
        """``(best flat solution [N], best fitness)`` seen by evosax (maximised)."""
        return state.best_solution, -state.best_fitness


# ----- the runner algorithm -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ESConfig:
    """Static configuration of :class:`MaskedES` (its numeric knobs are :class:`ESHyper`).

    Attributes:
        strategy: evosax strategy name (any of ``evosax.algorithms``; aliases ``open_es``,
            ``cma_es``, ``sep_cma_es``, ``snes``, ``pgpe``, ``ars``, ``simple_ga``, ``de``).
        population_size: samples per generation ``P`` (even for OpenES).
        search_space: ``"unmasked"`` (only active weights are searched) or ``"all"``.
        sigma_decay: multiplicative std decay per generation (strategies with a std schedule).
        optimizer: ``"adam"`` or ``"sgd"`` (strategies that take an optax optimizer).
        prune_criterion: ``"magnitude"`` (|mean|), ``"random"`` or ``"snr"`` (|mean| / std).
        prune_every: prune after every ``prune_every`` generations (0: never prune).
        prune_schedule: ``"constant"``, ``"linear"`` or ``"cubic"``
            (:func:`~synprune_jax.pruning.scheduled_density`).
        prune_start: generation at which the schedules start (and before which no prune happens).
        prune_end: generation at which linear / cubic schedules reach ``target_density``.
        prune_scope: ``"layer"`` or ``"global"``.
        evaluate_mean: also evaluate the mean network every generation (one more individual).

    Raises:
        ValueError: an unknown strategy or option name, or a value out of range
            (``population_size`` < 2, odd with OpenES; ``sigma_decay`` outside (0, 1];
            ``prune_every`` < 0; not ``0 <= prune_start < prune_end``).

    Examples:
        >>> config = ESConfig(strategy="cma_es", population_size=6, prune_every=5)
        >>> strategy_class(config.strategy).__name__, config.prune_schedule, config.evaluate_mean
        ('CMA_ES', 'constant', True)
        >>> ESConfig(population_size=5)
        Traceback (most recent call last):
        ...
        ValueError: evosax's Open_ES refuses population_size=5: Population size must be even.
    """

    strategy: str = "open_es"
    population_size: int = 64
    search_space: str = "unmasked"
    sigma_decay: float = 1.0
    optimizer: str = "adam"
    prune_criterion: str = "magnitude"
    prune_every: int = 0
    prune_schedule: str = "constant"
    prune_start: int = 0
    prune_end: int = 100
    prune_scope: Scope = "layer"
    evaluate_mean: bool = True

    def __post_init__(self):
        strategy_class(self.strategy)  # raises with the valid names
        for name, valid in (
            ("search_space", SEARCH_SPACES),
            ("optimizer", OPTIMIZERS),
            ("prune_criterion", PRUNE_CRITERIA),
            ("prune_schedule", PRUNE_SCHEDULES),
            ("prune_scope", SCOPES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {list(valid)}, got {getattr(self, name)!r}"
                )
        checks = [
            (
                self.population_size >= 2,
                f"population_size must be >= 2, got {self.population_size}",
            ),
            (0 < self.sigma_decay <= 1, f"sigma_decay must be in (0, 1], got {self.sigma_decay}"),
            (self.prune_every >= 0, f"prune_every must be >= 0, got {self.prune_every}"),
            (
                0 <= self.prune_start < self.prune_end,
                f"need 0 <= prune_start < prune_end, got {self.prune_start}, {self.prune_end}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_population_size(self.strategy, self.population_size)


class ESHyper(struct.PyTreeNode):
    """Numeric knobs of :class:`MaskedES` (scalars; a sweep stacks them on a run axis; check
    values with :func:`validate_hyper`).

    Attributes:
        sigma_init: initial search std (> 0).
        sigma_min: floor of the decayed std (>= 0).
        learning_rate: optimizer learning rate (> 0).
        init_density: density of the initial mask, exact per layer (in (0, 1]; 1.0 = dense).
        prune_amount: ``"constant"`` schedule: fraction of active weights removed per prune.
        target_density: density never pruned below (end of the schedules).

    Examples:
        >>> hyper = ESHyper(sigma_init=0.1)
        >>> jax.tree.leaves(hyper)  # in field order
        [0.1, 0.0, 0.01, 1.0, 0.1, 0.1]
        >>> runs = jax.tree.map(lambda *v: jnp.stack(v), ESHyper(), hyper)  # two runs stacked
        >>> runs.sigma_init.shape
        (2,)
        >>> validate_hyper(runs)  # stacked (or traced) values are not checked here
        >>> validate_hyper(hyper.replace(init_density=0.0))
        Traceback (most recent call last):
        ...
        ValueError: init_density must be in (0, 1], got 0.0
    """

    sigma_init: float = 0.05
    sigma_min: float = 0.0
    learning_rate: float = 0.01
    init_density: float = 1.0
    prune_amount: float = 0.1
    target_density: float = 0.1


def _concrete(value) -> float | None:
    """``float(value)`` for a concrete scalar; ``None`` for a tracer or a stacked array."""
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def validate_hyper(hyper: ESHyper) -> None:
    """Raises ValueError for an out-of-range :class:`ESHyper` value (traced values are skipped).

    Example:
        >>> validate_hyper(ESHyper(sigma_init=0.0))
        Traceback (most recent call last):
        ...
        ValueError: sigma_init must be > 0, got 0.0
    """
    rules = [
        ("sigma_init", lambda v: v > 0, "must be > 0"),
        ("sigma_min", lambda v: v >= 0, "must be >= 0"),
        ("learning_rate", lambda v: v > 0, "must be > 0"),
        ("init_density", lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("prune_amount", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        ("target_density", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ]
    for name, ok, rule in rules:
        value = _concrete(getattr(hyper, name))
        if value is not None and not ok(value):
            raise ValueError(f"{name} {rule}, got {getattr(hyper, name)}")


def _hashable(value):
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


class ESState(struct.PyTreeNode):
    """State of :class:`MaskedES` (no PRNG keys).

    Attributes:
        strategy: the evosax state (flat vectors of size ``N``).
        masks: boolean masks of the searched network (shaped like one network's params).
        best_params: best network evaluated so far (params of one network).
        best_masks: its masks.
        best_fitness: its fitness (float32 scalar, ``-inf`` before the first evaluation).
        best_evaluated_at: int32 scalar, the generation whose evaluation found the best (-1
            before the first, or in a checkpoint written before this field existed): with the
            run's seed, its evaluation key (:meth:`MaskedES.evaluation`).
        generation: int32 scalar.
        num_evaluations: int32 scalar (``P``, plus one with ``evaluate_mean``, per generation;
            population-based strategies also count their ``P`` initial members).

    Examples:
        >>> from synprune_jax.tasks import KinematicArm
        >>> algorithm = MaskedES(ESConfig(population_size=4), KinematicArm(num_joints=3))
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> jax.tree.map(jnp.shape, state.replace(strategy=None))  # doctest: +NORMALIZE_WHITESPACE
        ESState(strategy=None, masks={'angles': (3,)}, best_params={'angles': (3,)},
                best_masks={'angles': (3,)}, best_fitness=(), best_evaluated_at=(), generation=(),
                num_evaluations=())
        >>> state.strategy.mean.shape, state.masks["angles"].dtype  # evosax's state: [N] vectors
        ((3,), dtype('bool'))
    """

    strategy: Any
    masks: Masks
    best_params: Params
    best_masks: Masks
    best_fitness: jax.Array
    best_evaluated_at: jax.Array
    generation: jax.Array
    num_evaluations: jax.Array


@dataclasses.dataclass(frozen=True)
class MaskedES:
    """ES with pruning on one masked network (the runner's ``Algorithm`` protocol).

    Every generation: ask ``P`` samples, evaluate them (plus the mean if ``evaluate_mean``), tell
    evosax the maximised fitness; on prune generations, prune the mask toward the scheduled
    density and project the strategy state onto it (:meth:`MaskedStrategy.project`). Compares by
    value (``config``, ``task``, the extra evosax arguments): runs that differ only in their
    :class:`ESHyper` share one compiled program.

    ``init(key, hyper)`` returns an :class:`ESState`; ``step(key, state, hyper)`` returns
    ``(state, metrics)``, a dict of scalars: ``max_fitness``, ``mean_fitness`` (of the ``P``
    samples), ``best_fitness``, ``density``, ``active_weights``, ``mean_std``,
    ``num_evaluations`` (after the step) and, with ``evaluate_mean``, ``mean_network_fitness``.

    Args:
        config: :class:`ESConfig`.
        task: the evaluation task.
        strategy_kwargs: extra evosax constructor arguments (see :class:`MaskedStrategy`).
        params_overrides: fields of the strategy's ``default_params`` to replace.

    Attributes:
        adapter: the :class:`MaskedStrategy`, built with :attr:`default_hyper`'s values;
            :meth:`strategy_for` binds it to a run's hyper-parameters.
        maskable: the task's maskable-leaf flags.

    Raises:
        ValueError: ``strategy_kwargs`` the evosax class does not accept, or
            ``params_overrides`` naming fields its params lack (:class:`MaskedStrategy`).

    Examples:
        >>> from synprune_jax.tasks import KinematicArm
        >>> algorithm = MaskedES(ESConfig(population_size=4), KinematicArm(num_joints=3))
        >>> algorithm.adapter.num_dims, algorithm.default_hyper.sigma_init
        (3, 0.05)
        >>> algorithm.strategy_for(algorithm.default_hyper) is algorithm.adapter  # nothing rebuilt
        True
        >>> key, hyper = jax.random.key(0), algorithm.default_hyper
        >>> state = jax.eval_shape(algorithm.init, key, hyper)  # shapes only, nothing runs
        >>> _, metrics = jax.eval_shape(algorithm.step, key, state, hyper)
        >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
        ['active_weights', 'best_fitness', 'density', 'max_fitness', 'mean_fitness',
         'mean_network_fitness', 'mean_std', 'num_evaluations']
        >>> algorithm.init(key, hyper.replace(sigma_init=0.0))  # checked before anything runs
        Traceback (most recent call last):
        ...
        ValueError: sigma_init must be > 0, got 0.0
    """

    config: ESConfig
    task: Any
    strategy_kwargs: dict | None = dataclasses.field(default=None, compare=False)
    params_overrides: dict | None = dataclasses.field(default=None, compare=False)
    _extra: tuple = dataclasses.field(init=False, repr=False)
    maskable: PyTree = dataclasses.field(init=False, repr=False, compare=False)
    adapter: MaskedStrategy = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        config, task = self.config, self.task
        extra = (
            tuple(sorted((k, _hashable(v)) for k, v in (self.strategy_kwargs or {}).items())),
            tuple(sorted((k, _hashable(v)) for k, v in (self.params_overrides or {}).items())),
        )
        template = jax.eval_shape(task.init_params, jax.random.key(0))
        template = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        defaults = ESHyper()
        adapter = MaskedStrategy(
            config.strategy,
            config.population_size,
            template,
            search_space=config.search_space,
            sigma_init=defaults.sigma_init,
            sigma_decay=config.sigma_decay,
            sigma_min=defaults.sigma_min,
            optimizer=config.optimizer,
            learning_rate=defaults.learning_rate,
            strategy_kwargs=self.strategy_kwargs,
            params_overrides=self.params_overrides,
        )
        object.__setattr__(self, "_extra", extra)
        object.__setattr__(self, "maskable", task.maskable())
        object.__setattr__(self, "adapter", adapter)

    @property
    def default_hyper(self) -> ESHyper:
        """``ESHyper()``: the library's default knobs."""
        return ESHyper()

    def strategy_for(self, hyper: ESHyper) -> MaskedStrategy:
        """:attr:`adapter` with ``hyper``'s ``sigma_init``, ``sigma_min`` and ``learning_rate``."""
        return self.adapter.with_hyper(hyper.sigma_init, hyper.sigma_min, hyper.learning_rate)

    # ----- helpers -----------------------------------------------------------------------------
    def evaluate_flat(self, key: jax.Array, flat: jax.Array, masks: Masks):
        """Evaluates ``flat [B, N]`` networks sharing ``masks``; returns the ``EvalResult``."""
        size = flat.shape[0]
        batched = jax.tree_util.tree_map(lambda m: jnp.broadcast_to(m, (size, *m.shape)), masks)
        return self.task.evaluate(
            key,
            Population(
                params=self.adapter.unravel_population(flat),
                masks=batched,
                rates=jnp.zeros((size, 2), jnp.float32),
            ),
        )

    def initial_network(self, key: jax.Array, hyper: ESHyper) -> tuple[Params, Masks]:
        """A random network of the task and its masks (``hyper.init_density``, exact per layer)."""
        key_params, key_masks = jax.random.split(key)
        params = self.task.init_params(key_params)
        masks = masks_lib.init_masks(
            key_masks, params, self.maskable, hyper.init_density, exact=True
        )
        return params, masks

    def prune_scores(self, key: jax.Array, state) -> PyTree:
        """Per-weight scores (low = pruned first) of the chosen criterion, shaped like params."""
        criterion = self.config.prune_criterion
        mean = self.adapter.mean_flat(state)
        if criterion == "magnitude":
            flat = jnp.abs(mean)
        elif criterion == "snr":
            flat = jnp.abs(mean) / jnp.maximum(self.adapter.coordinate_std_flat(state), 1e-12)
        else:
            flat = jax.random.uniform(key, mean.shape)
        return self.adapter.unravel(flat)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array, hyper: ESHyper) -> ESState:
        """A random network (:meth:`initial_network`) and the strategy centred on it.

        Raises:
            ValueError: a concrete ``hyper`` value out of range (:func:`validate_hyper`).
        """
        validate_hyper(hyper)
        key_network, key_rest = jax.random.split(key)
        params, masks = self.initial_network(key_network, hyper)
        return self.init_from(key_rest, params, masks, hyper)

    def init_from(self, key: jax.Array, params: Params, masks: Masks, hyper: ESHyper) -> ESState:
        """Initial state centred on a given network (one individual's params and masks)."""
        key_population, key_eval, key_init = jax.random.split(key, 3)
        adapter = self.strategy_for(hyper)
        num_evaluations = 0
        if adapter.population_based:
            population = adapter.initial_population(key_population, params, masks)
            fitness = self.evaluate_flat(key_eval, population, masks).fitness
            strategy = adapter.init(key_init, params, masks, population, fitness)
            num_evaluations = adapter.population_size
        else:
            strategy = adapter.init(key_init, params, masks)
        strategy = trees.strong_types(strategy)  # evosax leaves Python scalars (weak types) in it
        mean = adapter.mean(strategy)
        return ESState(
            strategy=strategy,
            masks=masks,
            best_params=mean,
            best_masks=masks,
            best_fitness=jnp.asarray(-jnp.inf, jnp.float32),
            best_evaluated_at=jnp.asarray(-1, jnp.int32),
            generation=jnp.zeros((), jnp.int32),
            num_evaluations=jnp.asarray(num_evaluations, jnp.int32),
        )

    def step(
        self, key: jax.Array, state: ESState, hyper: ESHyper
    ) -> tuple[ESState, dict[str, jax.Array]]:
        """One generation: ask, evaluate, tell, and prune on prune generations. Pure."""
        config, adapter = self.config, self.strategy_for(hyper)
        # evaluation() mirrors this split
        key_ask, key_eval, key_tell, key_prune = jax.random.split(key, 4)
        masks = state.masks
        population, strategy = adapter.ask(key_ask, state.strategy, masks)
        candidates = population
        if config.evaluate_mean:
            candidates = jnp.concatenate([population, adapter.mean_flat(strategy)[None]], axis=0)
        result = self.evaluate_flat(key_eval, candidates, masks)
        fitness = result.fitness[: config.population_size]
        strategy, _ = adapter.tell(key_tell, population, fitness, strategy, masks)

        finite = jnp.where(jnp.isfinite(result.fitness), result.fitness, -jnp.inf)
        index = jnp.argmax(finite)
        improved = finite[index] > state.best_fitness
        best_params = trees.select(improved, adapter.unravel(candidates[index]), state.best_params)
        best_masks = trees.select(improved, masks, state.best_masks)
        best_fitness = jnp.where(improved, finite[index], state.best_fitness)

        generation = state.generation + 1
        if config.prune_every > 0:
            current = masks_lib.density(masks, self.maskable)
            goal = scheduled_density(
                generation,
                schedule=config.prune_schedule,
                current_density=current,
                target_density=hyper.target_density,
                prune_amount=hyper.prune_amount,
                start=config.prune_start,
                end=config.prune_end,
            )
            pruned = prune_to_density_by_score(
                self.prune_scores(key_prune, strategy),
                masks,
                self.maskable,
                goal,
                scope=config.prune_scope,
            )
            due = (generation % config.prune_every == 0) & (generation >= config.prune_start)
            masks = trees.select(due, pruned, masks)
            strategy = adapter.project(strategy, masks)

        state = ESState(
            strategy=trees.strong_types(strategy),
            masks=masks,
            best_params=best_params,
            best_masks=best_masks,
            best_fitness=best_fitness,
            best_evaluated_at=jnp.where(improved, generation, state.best_evaluated_at),
            generation=generation,
            num_evaluations=state.num_evaluations + candidates.shape[0],
        )
        metrics = {
            "max_fitness": jnp.max(finite[: config.population_size]),
            "mean_fitness": jnp.nanmean(jnp.where(jnp.isfinite(fitness), fitness, jnp.nan)),
            "best_fitness": best_fitness,
            "density": masks_lib.density(masks, self.maskable),
            "active_weights": masks_lib.count_active(masks, self.maskable),
            "mean_std": jnp.mean(adapter.coordinate_std_flat(strategy)),
            "num_evaluations": state.num_evaluations,
        }
        if config.evaluate_mean:
            metrics["mean_network_fitness"] = result.fitness[-1]
        return state, metrics

    def evaluation(self, key: jax.Array, generation: int) -> tuple[jax.Array, int]:
        """How the networks evaluated at ``generation >= 1`` were evaluated, for replaying the
        best (:attr:`ESState.best_evaluated_at`).

        Args:
            key: the key of the step into ``generation`` (the runner's
                ``generation_key(seed, generation - 1)``).
            generation: the generation (>= 1: the best is never taken from :meth:`init`).

        Returns:
            ``(key_eval, batch_size)``: the key passed to ``task.evaluate`` and that batch's
            size (``P``, plus one with ``evaluate_mean``).

        Examples:
            >>> from synprune_jax.tasks import KinematicArm
            >>> algorithm = MaskedES(ESConfig(population_size=4), KinematicArm(num_joints=3))
            >>> algorithm.evaluation(jax.random.key(0), 3)[1]  # 4 samples and the mean
            5
        """
        if generation < 1:
            raise ValueError(f"MaskedES evaluates its best from generation 1 on, got {generation}")
        config = self.config
        return jax.random.split(key, 4)[1], config.population_size + int(config.evaluate_mean)
