"""Truncation genetic algorithm over masked networks (``docs/es_ga.md``).

One generation (:meth:`TruncationGA.step`), pure and jittable, population ``P``, elites
``E = round(elite_fraction * P)`` (the best half by default)::

    order    = argsort(-fitness)                       elites = population[order[:E]]
    parents  = elites[i % E] for the P - E children    (a second, random elite with crossover)
    children = mutate(crossover(parent, other))        # synprune_jax.variation.mutate
    result   = task.evaluate(children)                 # elites keep their fitness
    population = elites ++ children

Crossover (optional): ``"uniform"`` (:func:`uniform_crossover`) or ``"layer"``
(:func:`layer_mask_crossover`). The initial population is random Beta-pruned networks
(``init="beta"``) or given elites, best first (``init="archive"``). Static structure is
:class:`GAConfig` (plus the elites' content); the numeric knobs are :class:`GAHyper`.

Example (kinematic arm):
    >>> import jax
    >>> from synprune_jax.tasks import KinematicArm
    >>> task = KinematicArm(num_joints=4, genotype="mlp")
    >>> algorithm = TruncationGA(GAConfig(population_size=8), task)
    >>> hyper = algorithm.default_hyper.replace(crossover_rate=0.3)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> int(state.generation), state.fitness.shape
    (1, (8,))
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from synprune_jax import masks as masks_lib
from synprune_jax import trees, variation
from synprune_jax.tasks.base import Task
from synprune_jax.types import Population
from synprune_jax.variation import MutationConfig, MutationHyper, mutate

CROSSOVERS = ("none", "uniform", "layer")
INITS = ("beta", "archive")


@dataclasses.dataclass(frozen=True)
class GAConfig:
    """Static configuration of :class:`TruncationGA` (its numeric knobs are :class:`GAHyper`;
    ``init_beta_a`` / ``init_beta_b`` stay static, see ``docs/es_ga.md``).

    Attributes:
        population_size: ``P`` (>= 2).
        elite_fraction: fraction kept each generation (``E = round(fraction * P)``, 1..P-1).
        mutation: static structure of the core mutation (self-adaptive rates, forward pruning).
        crossover: ``"none"``, ``"uniform"`` or ``"layer"``.
        init: ``"beta"`` (randomly pruned networks) or ``"archive"`` (given elites).
        init_beta_a: ``a`` of the Beta distribution of initial densities.
        init_beta_b: ``b`` of that distribution.
        init_per_layer: each layer draws its own density (else one per network).
        exact_init_density: initial masks keep exactly ``round(d * size)`` connections.

    Raises:
        ValueError: ``population_size`` < 2, an ``elite_fraction`` that keeps no elite or the
            whole population, an unknown ``crossover`` or ``init``, or a Beta parameter <= 0.

    Examples:
        >>> GAConfig(population_size=8).num_elites  # the best half
        4
        >>> GAConfig(population_size=10, elite_fraction=0.2, crossover="uniform").num_elites
        2
        >>> GAConfig(population_size=8, elite_fraction=0.05)
        Traceback (most recent call last):
        ...
        ValueError: elite_fraction 0.05 keeps 0 of 8; it must keep between 1 and P - 1
    """

    population_size: int = 128
    elite_fraction: float = 0.5
    mutation: MutationConfig = MutationConfig()
    crossover: str = "none"
    init: str = "beta"
    init_beta_a: float = 1.0
    init_beta_b: float = 1.0
    init_per_layer: bool = True
    exact_init_density: bool = True

    def __post_init__(self):
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")
        if not 1 <= self.num_elites <= self.population_size - 1:
            raise ValueError(
                f"elite_fraction {self.elite_fraction} keeps {self.num_elites} of "
                f"{self.population_size}; it must keep between 1 and P - 1"
            )
        if self.crossover not in CROSSOVERS:
            raise ValueError(f"crossover must be one of {list(CROSSOVERS)}, got {self.crossover!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if self.init_beta_a <= 0 or self.init_beta_b <= 0:
            raise ValueError("init_beta_a and init_beta_b must be > 0")

    @property
    def num_elites(self) -> int:
        """``E = round(elite_fraction * population_size)``."""
        return int(round(self.elite_fraction * self.population_size))


class GAHyper(struct.PyTreeNode):
    """Numeric knobs of :class:`TruncationGA` (scalars; a sweep stacks them on a run axis).

    A ``flax.struct`` pytree whose leaves are the mutation's knobs, then ``crossover_rate``.
    Nothing is checked here: :func:`validate_hyper` (called by :meth:`TruncationGA.init`)
    checks a concrete ``crossover_rate``.

    Attributes:
        mutation: :class:`~synprune_jax.variation.MutationHyper` of the core mutation.
        crossover_rate: probability that a child is produced by crossover (in [0, 1]; unused
            with ``crossover="none"``).

    Examples:
        >>> hyper = GAHyper(crossover_rate=0.3)
        >>> jax.tree.leaves(hyper)  # mutation's sigma, p_disconnect, ..., then crossover_rate
        [0.05, 0.02, 0.01, 0.1, 0.0001, 0.2, 0.3]
        >>> runs = jax.tree.map(lambda *v: jnp.stack(v), GAHyper(), hyper)  # two runs stacked
        >>> runs.crossover_rate.shape, runs.mutation.sigma.shape
        ((2,), (2,))
        >>> validate_hyper(GAHyper(crossover_rate=1.5))
        Traceback (most recent call last):
        ...
        ValueError: crossover_rate must be in [0, 1], got 1.5
    """

    mutation: MutationHyper = dataclasses.field(default_factory=MutationHyper)
    crossover_rate: float = 0.5


def validate_hyper(hyper: GAHyper) -> None:
    """Raises ValueError for a concrete ``crossover_rate`` outside [0, 1] (traced values are
    skipped; the builders check ``hyper.mutation``)."""
    try:
        rate = float(hyper.crossover_rate)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"crossover_rate must be in [0, 1], got {hyper.crossover_rate}")


class GAState(struct.PyTreeNode):
    """GA state (no PRNG keys; :meth:`TruncationGA.init` makes it, :meth:`TruncationGA.step`
    advances it).

    Attributes:
        population: ``P`` individuals (:class:`~synprune_jax.types.Population`: params and
            bool masks with leaves ``[P, ...]``, float32 rates ``[P, 2]``); after a step the
            ``E`` elites come first, best first, then the children.
        fitness: ``[P]`` float32 (non-finite = invalid, ranked last).
        evaluated_at: ``[P]`` int32, the generation whose evaluation gave each member its
            fitness (0: the initial population; an elite keeps its own; -1 for members of a
            checkpoint written before this field existed): with the run's seed, each member's
            evaluation key (:meth:`TruncationGA.evaluation`).
        generation: int32 scalar.
        num_evaluations: int32 scalar (``P`` after init, plus ``P - E`` per step).

    Examples:
        >>> from synprune_jax.tasks import KinematicArm
        >>> config = GAConfig(population_size=4, mutation=MutationConfig(forward_prune=False))
        >>> algorithm = TruncationGA(config, KinematicArm(num_joints=3))  # genes {"angles": [3]}
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> jax.tree.map(jnp.shape, state)  # doctest: +NORMALIZE_WHITESPACE
        GAState(population=Population(params={'angles': (4, 3)}, masks={'angles': (4, 3)},
                                      rates=(4, 2)),
                fitness=(4,), evaluated_at=(4,), generation=(), num_evaluations=())
        >>> state.population.masks["angles"].dtype, state.fitness.dtype
        (dtype('bool'), dtype('float32'))
    """

    population: Population
    fitness: jax.Array
    evaluated_at: jax.Array
    generation: jax.Array
    num_evaluations: jax.Array


def uniform_crossover(key: jax.Array, first: Population, second: Population) -> Population:
    """Each coordinate (weight with its mask bit) from ``first`` or ``second`` with prob. 1/2;
    rates from ``first``. One individual."""
    leaves, treedef = jax.tree_util.tree_flatten(first.params)
    keys = jax.random.split(key, len(leaves))
    picks = [jax.random.bernoulli(k, 0.5, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    pick = jax.tree_util.tree_unflatten(treedef, picks)
    choose = lambda a, b, p: jnp.where(p, b, a)
    return Population(
        params=jax.tree_util.tree_map(choose, first.params, second.params, pick),
        masks=jax.tree_util.tree_map(choose, first.masks, second.masks, pick),
        rates=first.rates,
    )


def layer_mask_crossover(
    key: jax.Array, first: Population, second: Population, maskable
) -> Population:
    """Each maskable leaf's mask from ``first`` or ``second`` (prob. 1/2); weights, unmasked
    leaves and rates from ``first``. One individual."""
    leaves, treedef = jax.tree_util.tree_flatten(first.masks)
    other = jax.tree_util.tree_leaves(second.masks)
    flags = jax.tree_util.tree_leaves(maskable)
    keys = jax.random.split(key, len(leaves))
    out = [
        jnp.where(jax.random.bernoulli(k, 0.5), b, a) if flag else a
        for a, b, flag, k in zip(leaves, other, flags, keys, strict=True)
    ]
    return first.replace(masks=jax.tree_util.tree_unflatten(treedef, out))


@dataclasses.dataclass(frozen=True)
class TruncationGA:
    """Truncation GA on a task (the runner's ``Algorithm`` protocol).

    Holds only static structure and compares by value (``config``, ``task`` and the digest of
    the elites), so runs that differ only in their :class:`GAHyper` share one compiled program.

    ``init(key, hyper)`` returns a :class:`GAState`; ``step(key, state, hyper)`` returns
    ``(state, metrics)``, the metrics being scalars ``max_fitness``, ``mean_fitness``,
    ``children_max_fitness``, ``best_density``, ``mean_density``, ``num_invalid`` (int32) and
    ``num_evaluations`` (int32, after the step).

    Args:
        config: :class:`GAConfig`.
        task: evaluation task.
        elites: ``init="archive"`` only: ``{"params": [K, ...], "masks": [K, ...],
            "rates": [K, 2]}`` arrays, best first (other keys are ignored; e.g. the dict of
            :func:`synprune_jax.experiments.es.load_archive_elites`). Its networks must match
            the task's. Ignored with ``init="beta"``.

    Raises:
        ValueError: ``forward_prune`` on a direct genotype; ``init="archive"`` without elites,
            or elites whose networks differ from the task's.

    Examples:
        >>> from synprune_jax.tasks import KinematicArm
        >>> task = KinematicArm(num_joints=3)  # a direct genotype: no forward pruning
        >>> TruncationGA(GAConfig(population_size=4), task)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: mutation.forward_prune needs an MLP network; this task has a direct genotype
        (set forward_prune=False)
        >>> config = GAConfig(population_size=4, mutation=MutationConfig(forward_prune=False))
        >>> algorithm = TruncationGA(config, task)
        >>> algorithm.default_hyper.crossover_rate, config.num_elites
        (0.5, 2)
        >>> key, hyper = jax.random.key(0), algorithm.default_hyper
        >>> state = jax.eval_shape(algorithm.init, key, hyper)  # shapes only, nothing runs
        >>> _, metrics = jax.eval_shape(algorithm.step, key, state, hyper)
        >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
        ['best_density', 'children_max_fitness', 'max_fitness', 'mean_density', 'mean_fitness',
         'num_evaluations', 'num_invalid']
    """

    config: GAConfig
    task: Task
    elites: dict | None = dataclasses.field(default=None, compare=False, repr=False)
    elites_digest: str | None = dataclasses.field(init=False)
    maskable: object = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        config, task = self.config, self.task
        config.mutation.check_task(task)
        elites = None
        if config.init == "archive":
            if self.elites is None:
                raise ValueError(
                    "init='archive' needs elites (params, masks, rates of a finished "
                    "MAP-Elites run)"
                )
            template = jax.eval_shape(task.init_params, jax.random.key(0))
            expected = [leaf.shape for leaf in jax.tree_util.tree_leaves(template)]
            found = [
                tuple(leaf.shape[1:]) for leaf in jax.tree_util.tree_leaves(self.elites["params"])
            ]
            if expected != found:
                raise ValueError(
                    f"the archive's networks {found} do not match the task's {expected}"
                )
            elites = {k: self.elites[k] for k in ("params", "masks", "rates")}
        object.__setattr__(self, "elites", elites)
        object.__setattr__(
            self, "elites_digest", None if elites is None else trees.fingerprint(elites)
        )
        object.__setattr__(self, "maskable", task.maskable())

    @property
    def default_hyper(self) -> GAHyper:
        """``GAHyper()``: the library's default mutation and crossover rate."""
        return GAHyper()

    # ----- initial population ------------------------------------------------------------------
    def initial_population(self, key: jax.Array, hyper: GAHyper) -> Population:
        """``P`` networks: Beta-pruned random ones, or archive elites best first (cycled when the
        archive holds fewer than ``P``; the copies are mutated so they differ)."""
        config, size = self.config, self.config.population_size
        if config.init == "archive":
            assert self.elites is not None  # required with init="archive" (__post_init__)
            count = self.elites["rates"].shape[0]
            index = np.arange(size) % count
            taken = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[index]), self.elites)
            population = Population(
                params=taken["params"],
                masks=taken["masks"],
                rates=taken["rates"].astype(jnp.float32),
            )
            copies = jnp.asarray(np.arange(size) >= count)
            mutated = self._mutate_all(key, population, hyper.mutation)
            return trees.select(copies, mutated, population)

        return variation.random_population(
            key,
            self.task,
            size,
            jnp.stack([hyper.mutation.p_disconnect, hyper.mutation.p_connect]),
            beta_a=config.init_beta_a,
            beta_b=config.init_beta_b,
            exact=config.exact_init_density,
            per_layer=config.init_per_layer,
            forward_prune=config.mutation.forward_prune,
        )

    def _mutate_all(
        self, key: jax.Array, population: Population, mutation: MutationHyper
    ) -> Population:
        mutate_one = lambda k, individual: mutate(
            k, individual, self.maskable, self.config.mutation, mutation, self.task.spec
        )
        return jax.vmap(mutate_one)(jax.random.split(key, population.size), population)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array, hyper: GAHyper) -> GAState:
        """Initial population (:meth:`initial_population`), evaluated.

        Raises:
            ValueError: a concrete ``crossover_rate`` outside [0, 1].
        """
        validate_hyper(hyper)
        key_population, key_eval = jax.random.split(key)  # evaluation() mirrors this split
        population = self.initial_population(key_population, hyper)
        fitness = self.task.evaluate(key_eval, population).fitness
        return GAState(
            population=population,
            fitness=fitness.astype(jnp.float32),
            evaluated_at=jnp.zeros((self.config.population_size,), jnp.int32),
            generation=jnp.zeros((), jnp.int32),
            num_evaluations=jnp.asarray(self.config.population_size, jnp.int32),
        )

    def reproduce(self, key: jax.Array, elites: Population, hyper: GAHyper) -> Population:
        """``P - E`` children of ``elites`` (``E`` individuals, best first)."""
        config = self.config
        num_elites = config.num_elites
        num_children = config.population_size - num_elites
        key_other, key_cross, key_do, key_mutate = jax.random.split(key, 4)
        parents = elites[jnp.arange(num_children) % num_elites]
        if config.crossover != "none":
            others = elites[jax.random.randint(key_other, (num_children,), 0, num_elites)]
            cross_keys = jax.random.split(key_cross, num_children)
            if config.crossover == "uniform":
                crossed = jax.vmap(uniform_crossover)(cross_keys, parents, others)
            else:
                crossed = jax.vmap(lambda k, a, b: layer_mask_crossover(k, a, b, self.maskable))(
                    cross_keys, parents, others
                )
            do = jax.random.bernoulli(key_do, hyper.crossover_rate, (num_children,))
            parents = trees.select(do, crossed, parents)
        return self._mutate_all(key_mutate, parents, hyper.mutation)

    def step(
        self, key: jax.Array, state: GAState, hyper: GAHyper
    ) -> tuple[GAState, dict[str, jax.Array]]:
        """One generation: keep the ``E`` best, reproduce them into ``P - E`` children,
        evaluate the children. Pure; the caller jits / scans it."""
        config = self.config
        key_children, key_eval = jax.random.split(key)  # evaluation() mirrors this split
        ranked = jnp.where(jnp.isfinite(state.fitness), state.fitness, -jnp.inf)
        order = jnp.argsort(-ranked, stable=True)
        elites = state.population[order[: config.num_elites]]
        elite_fitness = state.fitness[order[: config.num_elites]]
        elite_evaluated_at = state.evaluated_at[order[: config.num_elites]]
        children = self.reproduce(key_children, elites, hyper)
        result = self.task.evaluate(key_eval, children)
        population = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), elites, children)
        fitness = jnp.concatenate([elite_fitness, result.fitness.astype(jnp.float32)])
        num_children = config.population_size - config.num_elites
        evaluated_at = jnp.concatenate(
            [elite_evaluated_at, jnp.full((num_children,), state.generation + 1, jnp.int32)]
        )
        state = GAState(
            population=population,
            fitness=fitness,
            evaluated_at=evaluated_at,
            generation=state.generation + 1,
            num_evaluations=state.num_evaluations + num_children,
        )
        finite = jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)
        best = jnp.argmax(finite)
        density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks, self.maskable)
        metrics = {
            "max_fitness": finite[best],
            "mean_fitness": jnp.nanmean(jnp.where(jnp.isfinite(fitness), fitness, jnp.nan)),
            "children_max_fitness": jnp.max(
                jnp.where(jnp.isfinite(result.fitness), result.fitness, -jnp.inf)
            ),
            "best_density": density[best],
            "mean_density": jnp.mean(density),
            "num_invalid": jnp.sum(~jnp.isfinite(result.fitness), dtype=jnp.int32),
            "num_evaluations": state.num_evaluations,
        }
        return state, metrics

    def evaluation(self, key: jax.Array, generation: int) -> tuple[jax.Array, int]:
        """How the members evaluated at ``generation`` were evaluated, for replaying them.

        Args:
            key: the key :meth:`init` got (``generation == 0``) or the key of the step into
                ``generation`` (the runner's ``generation_key(seed, generation - 1)``).
            generation: a value of :attr:`GAState.evaluated_at` (>= 0).

        Returns:
            ``(key_eval, batch_size)``: the key passed to ``task.evaluate`` and that batch's
            size (``P`` at generation 0, else the ``P - E`` children).

        Examples:
            >>> from synprune_jax.tasks import KinematicArm
            >>> config = GAConfig(population_size=6, elite_fraction=1 / 3,  # 2 elites
            ...                   mutation=MutationConfig(forward_prune=False))
            >>> algorithm = TruncationGA(config, KinematicArm(num_joints=3))
            >>> [algorithm.evaluation(jax.random.key(0), g)[1] for g in (0, 1)]
            [6, 4]
        """
        config = self.config
        children = config.population_size - config.num_elites
        return jax.random.split(key)[1], config.population_size if generation == 0 else children
