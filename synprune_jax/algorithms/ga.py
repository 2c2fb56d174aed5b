"""Truncation genetic algorithm over masked networks.

One generation (:meth:`TruncationGA.step`), pure and jittable, population ``P``, elites
``E = round(elite_fraction * P)`` (the best half by default)::

    order    = argsort(-fitness)                       elites = population[order[:E]]
    parents  = elites[i % E] for the P - E children    (a second, random elite with crossover)
    children = mutate(crossover(parent, other))        # core operators: prune / reconnect flips,
                                                       # forward pruning, Gaussian on active weights
    result   = task.evaluate(children)                 # elites keep their fitness
    population = elites ++ children

Crossover (optional): ``"uniform"`` takes every coordinate (weight and its mask bit together) from
one of the two parents with probability 1/2; ``"layer"`` takes each maskable leaf's *mask* from one
parent or the other (weights from the first parent: masked weights keep their stored value, so a
restored connection gets a meaningful weight back).

The initial population is either random networks with Beta-distributed per-layer densities
(``init="beta"``) or the best elites of a finished MAP-Elites run directory (``init="archive"``,
loaded on the host with :func:`load_archive_elites`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from synprune_jax import masks as masks_lib
from synprune_jax.types import Population
from synprune_jax.variation import MutationConfig, MutationHyper, mutate

# GAConfig fields that are traced in :class:`GAHyper`. (``init_beta_a`` / ``init_beta_b`` stay
# static: at a = b = 1 the initial densities are drawn with ``uniform``, traced values would switch
# to ``jax.random.beta`` and change the numbers; see masks.sample_layer_densities.)
TRACED_CONFIG_FIELDS = ("crossover_rate",)

CROSSOVERS = ("none", "uniform", "layer")
INITS = ("beta", "archive")


@dataclasses.dataclass(frozen=True)
class GAConfig:
    """Static configuration of :class:`TruncationGA`.

    Attributes:
        population_size: ``P`` (>= 2).
        elite_fraction: fraction kept each generation (``E = round(fraction * P)``, 1..P-1).
        mutation: static structure of the core mutation (self-adaptive rates, forward pruning).
        crossover: ``"none"``, ``"uniform"`` or ``"layer"``.
        crossover_rate: probability that a child is produced by crossover before mutation.
        init: ``"beta"`` (randomly pruned networks) or ``"archive"`` (elites of a run directory).
        init_beta_a: ``a`` of the Beta distribution of initial densities.
        init_beta_b: ``b`` of that distribution.
        init_per_layer: each layer draws its own density (else one per network).
        exact_init_density: initial masks keep exactly ``round(d * size)`` connections.
        archive_dir: MAP-Elites run directory (``init="archive"``).
    """

    population_size: int = 128
    elite_fraction: float = 0.5
    mutation: MutationConfig = MutationConfig()
    crossover: str = "none"
    crossover_rate: float = 0.5
    init: str = "beta"
    init_beta_a: float = 1.0
    init_beta_b: float = 1.0
    init_per_layer: bool = True
    exact_init_density: bool = True
    archive_dir: str | None = None

    def __post_init__(self):
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")
        if not 1 <= self.num_elites <= self.population_size - 1:
            raise ValueError(f"elite_fraction {self.elite_fraction} keeps {self.num_elites} of "
                             f"{self.population_size}; it must keep between 1 and P - 1")
        if self.crossover not in CROSSOVERS:
            raise ValueError(f"crossover must be one of {list(CROSSOVERS)}, got {self.crossover!r}")
        if not 0.0 <= self.crossover_rate <= 1.0:
            raise ValueError(f"crossover_rate must be in [0, 1], got {self.crossover_rate}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if self.init_beta_a <= 0 or self.init_beta_b <= 0:
            raise ValueError("init_beta_a and init_beta_b must be > 0")
        if self.init == "archive" and not self.archive_dir:
            raise ValueError("init='archive' needs archive_dir (a finished MAP-Elites run)")

    @property
    def num_elites(self) -> int:
        return int(round(self.elite_fraction * self.population_size))


@struct.dataclass
class GAHyper:
    """Traced numeric knobs of :class:`TruncationGA` (a sweep stacks them on a run axis).

    Attributes:
        mutation: :class:`~synprune_jax.variation.MutationHyper` of the core mutation.
        crossover_rate: probability that a child is produced by crossover.
    """

    mutation: MutationHyper
    crossover_rate: float = 0.5


@struct.dataclass
class GAState:
    """GA state (no PRNG keys).

    Attributes:
        population: ``P`` individuals (params, masks, rates ``[P, 2]``).
        fitness: ``[P]`` float32 (non-finite = invalid, ranked last).
        generation: int32 scalar.
        num_evaluations: int32 scalar.
    """

    population: Population
    fitness: jax.Array
    generation: jax.Array
    num_evaluations: jax.Array


def uniform_crossover(key: jax.Array, first: Population, second: Population) -> Population:
    """Each coordinate (weight with its mask bit) from ``first`` or ``second`` with prob. 1/2;
    rates from ``first``. One individual."""
    leaves, treedef = jax.tree_util.tree_flatten(first.params)
    keys = jax.random.split(key, len(leaves))
    picks = [jax.random.bernoulli(k, 0.5, leaf.shape) for k, leaf in zip(keys, leaves)]
    pick = jax.tree_util.tree_unflatten(treedef, picks)
    choose = lambda a, b, p: jnp.where(p, b, a)
    return Population(params=jax.tree_util.tree_map(choose, first.params, second.params, pick),
                      masks=jax.tree_util.tree_map(choose, first.masks, second.masks, pick),
                      rates=first.rates)


def layer_mask_crossover(key: jax.Array, first: Population, second: Population,
                         maskable) -> Population:
    """Each maskable leaf's mask from ``first`` or ``second`` (prob. 1/2); weights, unmasked
    leaves and rates from ``first``. One individual."""
    leaves, treedef = jax.tree_util.tree_flatten(first.masks)
    other = jax.tree_util.tree_leaves(second.masks)
    flags = jax.tree_util.tree_leaves(maskable)
    keys = jax.random.split(key, len(leaves))
    out = [jnp.where(jax.random.bernoulli(k, 0.5), b, a) if flag else a
           for a, b, flag, k in zip(leaves, other, flags, keys)]
    return first.replace(masks=jax.tree_util.tree_unflatten(treedef, out))


def load_archive_elites(run_dir: str | os.PathLike, count: int | None = None) -> dict:
    """Elites of a finished MAP-Elites run directory, best first (host side).

    Rebuilds the run's algorithm from ``run_dir/config.json``, restores the latest checkpoint
    with :mod:`synprune_jax.checkpoint` and returns the filled cells sorted by fitness.

    Returns:
        ``{"params": [K, ...], "masks": [K, ...], "rates": [K, 2], "fitness": [K]}`` numpy
        pytrees (``K`` = filled cells, or ``count`` of them).

    Raises:
        FileNotFoundError: no config or checkpoint. ValueError: the state has no archive, or
            it is empty.
    """
    from synprune_jax import checkpoint
    from synprune_jax.config import load
    from synprune_jax.experiments import get_experiment
    from synprune_jax.runner import init_key

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"no config.json in {run_dir}: not a run directory")
    config = load(config_path)
    if isinstance(config.get("task"), dict):  # only shapes are needed: no devices to claim
        config["task"]["devices"] = 1
    built = get_experiment(config["experiment"]).build(config)
    abstract = jax.eval_shape(built.algorithm.init, init_key(built.run_config.seed))
    if not hasattr(abstract, "archive"):
        raise ValueError(f"the run in {run_dir} ({config['experiment']}) has no archive")
    state = checkpoint.restore(os.path.join(run_dir, "checkpoints"), None, abstract)
    archive = jax.device_get(state.archive)
    fitness = np.asarray(archive.fitness)
    filled = np.nonzero(np.isfinite(fitness))[0]
    if filled.size == 0:
        raise ValueError(f"the archive of {run_dir} is empty")
    order = filled[np.argsort(-fitness[filled], kind="stable")]
    if count is not None:
        order = order[:count]
    genomes = archive.genomes
    take = lambda tree: jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[order], tree)
    return {"params": take(genomes.params), "masks": take(genomes.masks),
            "rates": np.asarray(genomes.rates, np.float32)[order],
            "fitness": fitness[order], "experiment": config["experiment"]}


class TruncationGA:
    """Truncation GA bound to a task and mutation hyper-parameters (runner protocol).

    Args:
        config: :class:`GAConfig`.
        task: evaluation task.
        hyper: traced numeric knobs of the core mutation.
        elites: ``init="archive"``: the dict of :func:`load_archive_elites` (loaded from
            ``config.archive_dir`` when omitted). Its networks must match the task's.

    ``init(key)`` / ``step(key, state)`` are :meth:`init_with` / :meth:`step_with` with the
    algorithm's own :attr:`sweep_hyper` (a :class:`GAHyper`); a sweep passes other, traced,
    values (:mod:`synprune_jax.sweeps`) and groups runs by :meth:`sweep_static`.
    """

    def __init__(self, config: GAConfig, task, hyper: MutationHyper | None = None,
                 elites: dict | None = None):
        if config.mutation.forward_prune and task.spec is None:
            raise ValueError("mutation.forward_prune needs an MLP network; this task has a direct "
                             "genotype (set forward_prune=False)")
        self.config = config
        self.task = task
        self.hyper = hyper if hyper is not None else MutationHyper()
        self.maskable = task.maskable()
        self.elites = None
        if config.init == "archive":
            elites = elites if elites is not None else load_archive_elites(config.archive_dir)
            template = jax.eval_shape(task.init_params, jax.random.key(0))
            expected = [leaf.shape for leaf in jax.tree_util.tree_leaves(template)]
            found = [tuple(leaf.shape[1:]) for leaf in jax.tree_util.tree_leaves(elites["params"])]
            if expected != found:
                raise ValueError(f"the archive's networks {found} do not match the task's "
                                 f"{expected}")
            self.elites = {k: elites[k] for k in ("params", "masks", "rates")}

    # ----- sweeps ------------------------------------------------------------------------------
    @property
    def sweep_hyper(self) -> GAHyper:
        """The algorithm's own traced hyper-parameters."""
        config = self.config
        return GAHyper(mutation=self.hyper, crossover_rate=config.crossover_rate)

    def sweep_static(self):
        """Hashable key of everything that fixes the compiled program (not :class:`GAHyper`)."""
        config = tuple((f.name, getattr(self.config, f.name))
                       for f in dataclasses.fields(self.config)
                       if f.name not in TRACED_CONFIG_FIELDS)
        elites = None
        if self.elites is not None:
            digest = hashlib.sha1()
            for leaf in jax.tree_util.tree_leaves(self.elites):
                leaf = np.ascontiguousarray(np.asarray(leaf))
                digest.update(str((leaf.shape, leaf.dtype)).encode())
                digest.update(leaf.tobytes())
            elites = digest.hexdigest()
        return ("truncation_ga", config, self.task, elites)

    # ----- initial population ------------------------------------------------------------------
    def initial_population(self, key: jax.Array, hyper: GAHyper | None = None) -> Population:
        """``P`` networks: Beta-pruned random ones, or archive elites best first (cycled when the
        archive holds fewer than ``P``; the copies are mutated so they differ)."""
        hyper = self.sweep_hyper if hyper is None else hyper
        config, size = self.config, self.config.population_size
        if config.init == "archive":
            count = self.elites["rates"].shape[0]
            index = np.arange(size) % count
            population = Population(
                params=jax.tree_util.tree_map(lambda l: jnp.asarray(l[index]), self.elites["params"]),
                masks=jax.tree_util.tree_map(lambda l: jnp.asarray(l[index]), self.elites["masks"]),
                rates=jnp.asarray(self.elites["rates"][index], jnp.float32))
            copies = jnp.asarray(np.arange(size) >= count)
            mutated = self._mutate_all(key, population, hyper.mutation)
            return jax.tree_util.tree_map(
                lambda new, old: jnp.where(copies.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                mutated, population)

        def one(k):
            key_params, key_masks = jax.random.split(k)
            params = self.task.init_params(key_params)
            masks = masks_lib.init_masks_beta(key_masks, params, self.maskable, config.init_beta_a,
                                              config.init_beta_b, exact=config.exact_init_density,
                                              per_layer=config.init_per_layer)
            if config.mutation.forward_prune:
                masks = masks_lib.forward_prune(self.task.spec, masks)
            rates = jnp.stack([jnp.asarray(hyper.mutation.p_disconnect, jnp.float32),
                               jnp.asarray(hyper.mutation.p_connect, jnp.float32)])
            return Population(params=params, masks=masks, rates=rates)

        return jax.vmap(one)(jax.random.split(key, size))

    def _mutate_all(self, key: jax.Array, population: Population,
                    mutation: MutationHyper) -> Population:
        mutate_one = lambda k, individual: mutate(k, individual, self.maskable,
                                                  self.config.mutation, mutation, self.task.spec)
        return jax.vmap(mutate_one)(jax.random.split(key, population.size), population)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array) -> GAState:
        return self.init_with(key, self.sweep_hyper)

    def init_with(self, key: jax.Array, hyper: GAHyper) -> GAState:
        """:meth:`init` with the given (possibly traced) hyper-parameters."""
        key_population, key_eval = jax.random.split(key)
        population = self.initial_population(key_population, hyper)
        fitness = self.task.evaluate(key_eval, population).fitness
        return GAState(population=population, fitness=fitness.astype(jnp.float32),
                       generation=jnp.zeros((), jnp.int32),
                       num_evaluations=jnp.asarray(self.config.population_size, jnp.int32))

    def reproduce(self, key: jax.Array, elites: Population,
                  hyper: GAHyper | None = None) -> Population:
        """``P - E`` children of ``elites`` (``E`` individuals, best first)."""
        hyper = self.sweep_hyper if hyper is None else hyper
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
                    cross_keys, parents, others)
            do = jax.random.bernoulli(key_do, hyper.crossover_rate, (num_children,))
            parents = jax.tree_util.tree_map(
                lambda new, old: jnp.where(do.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                crossed, parents)
        return self._mutate_all(key_mutate, parents, hyper.mutation)

    def step(self, key: jax.Array, state: GAState) -> tuple[GAState, dict[str, jax.Array]]:
        return self.step_with(key, state, self.sweep_hyper)

    def step_with(self, key: jax.Array, state: GAState,
                  hyper: GAHyper) -> tuple[GAState, dict[str, jax.Array]]:
        """:meth:`step` with the given (possibly traced) hyper-parameters."""
        config = self.config
        key_children, key_eval = jax.random.split(key)
        ranked = jnp.where(jnp.isfinite(state.fitness), state.fitness, -jnp.inf)
        order = jnp.argsort(-ranked, stable=True)
        elites = state.population[order[:config.num_elites]]
        elite_fitness = state.fitness[order[:config.num_elites]]
        children = self.reproduce(key_children, elites, hyper)
        result = self.task.evaluate(key_eval, children)
        population = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), elites,
                                            children)
        fitness = jnp.concatenate([elite_fitness, result.fitness.astype(jnp.float32)])
        num_children = config.population_size - config.num_elites
        state = GAState(population=population, fitness=fitness, generation=state.generation + 1,
                        num_evaluations=state.num_evaluations + num_children)
        finite = jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)
        best = jnp.argmax(finite)
        density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks, self.maskable)
        metrics = {
            "max_fitness": finite[best],
            "mean_fitness": jnp.nanmean(jnp.where(jnp.isfinite(fitness), fitness, jnp.nan)),
            "children_max_fitness": jnp.max(jnp.where(jnp.isfinite(result.fitness),
                                                      result.fitness, -jnp.inf)),
            "best_density": density[best],
            "mean_density": jnp.mean(density),
            "num_invalid": jnp.sum(~jnp.isfinite(result.fitness), dtype=jnp.int32),
            "num_evaluations": state.num_evaluations,
        }
        return state, metrics
