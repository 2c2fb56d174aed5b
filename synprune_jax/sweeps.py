"""Sweeps: many seeds and hyper-parameter settings in one compiled program per shape group.

    result = sweep("me-arm", seeds=range(8), grid={"mutation.sigma": [0.02, 0.1]},
                   out="runs/arm-sweep", overrides=["run.num_generations=100"])
    result.table            # pandas DataFrame: one row per run and generation

How runs are grouped. Every run (one grid point x one seed) is built from its own config by the
experiment's ``build``. An :class:`SweepAdapter` splits the built algorithm into a hashable
*static* part (shapes and structure: task, archive geometry, batch sizes) and a *traced*
hyper-parameter pytree (for MAP-Elites: :class:`~synprune_jax.variation.MutationHyper`; every
other method has its own: ``ESHyper``, ``GAHyper``, ``NSGA2Hyper``, ``SteadyStateGAHyper``,
``MapElitesESHyper``, ``TrainingHyper``, ``SynthesisHyper``; ``docs/sweeps.md`` lists the keys
per method). Runs with
equal static parts and equal run settings (``num_generations``, ``chunk_size``,
``checkpoint_every``, ``metrics_format``) form a group: their seeds and hyper-parameters are
stacked on a leading run axis ``[R]`` and the group runs as ``jit(vmap(chunk))``, compiled once
(plus once more for a shorter final chunk). Sweeping a structural key (``map_elites.batch_size``,
``task.hidden_sizes``) simply makes more groups.

Exactness. A vmapped run follows the same key schedule as :func:`synprune_jax.runner.run`
(:func:`~synprune_jax.runner.scan_generations` with ``seed`` on the run axis), so it produces the
same numbers as the run done alone, up to floating-point reassociation in batched kernels
(tested within float tolerance).

Devices. The run axis is split over the local devices (``devices=None``: all of them; a group of
``R`` runs uses the first ``min(R, devices)`` of them and is padded with copies of its first run
up to a multiple of that count, the copies' outputs dropped). Each device then holds the archives
of its own runs; nothing is exchanged between devices during a chunk.

Files under ``out``:

* ``sweep.json``: the sweep's definition (experiment, seeds, grid, overrides); a second call with
  the same definition **resumes** (finished runs are skipped, unfinished ones restart from their
  last checkpoint), a different definition is refused.
* ``runs.csv``: one row per run (``run_id``, ``group``, ``seed``, one column per swept key).
* ``runs/<run_id>/``: an ordinary run directory (``config.json``, ``run_config.json``,
  ``metrics.csv``, ``checkpoints/``, and with ``report=True`` the experiment's summary and
  plots), so ``synprune resume`` and ``synprune plot`` work on a single run.
* ``results.csv`` and ``results.parquet``: the tidy table (one row per run and generation).
* ``timing.json``: per group, runs, compile seconds and steady-state seconds per generation.
* ``plots/``: final metric versus each swept value (mean and spread over seeds) and metric curves.

Other algorithms join by having ``sweep_static()``, ``sweep_hyper``, ``init_with(key, hyper)``
and ``step_with(key, state, hyper)`` (:class:`HyperAdapter`; every built-in method but MAP-Elites, which has
:class:`MapElitesAdapter`, and the ``es-info`` study do), or by registering an adapter
(:func:`register_adapter`) for their algorithm class; without either, runs are still grouped
(static key: the algorithm object itself, which must then be hashable) and vmapped over seeds only.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import checkpoint as checkpoint_lib
from synprune_jax import config as config_lib
from synprune_jax import runner as runner_lib
from synprune_jax.config import ConfigError, requested_devices

PyTree = Any
SWEEP_FILE = "sweep.json"
SUMMARY_METRICS = ("qd_score", "max_fitness", "coverage")
# Headline metrics of the other methods, used when a sweep's table has none of SUMMARY_METRICS:
# NSGA-II (max of each objective, front size), autoencoders (L1, kept parameters), cluster
# synthesis (accuracy and reductions).
FALLBACK_METRICS = ("max_accuracy", "max_auroc", "max_sparsity", "front_size", "l1_train",
                    "l1_test", "kept_fraction", "test_accuracy", "synapse_reduction",
                    "cluster_reduction")
_BOOKKEEPING = ("run_id", "group", "seed", "generation")


def summary_metrics(table, swept_keys: Sequence[str] = ()) -> list[str]:
    """The metrics a sweep summary reports for ``table``: those of :data:`SUMMARY_METRICS` it
    has; else those of :data:`FALLBACK_METRICS`; else its first three numeric metric columns."""
    columns = list(getattr(table, "columns", ()))
    chosen = [name for name in SUMMARY_METRICS if name in columns]
    if not chosen:
        chosen = [name for name in FALLBACK_METRICS if name in columns]
    if not chosen:
        skip = set(_BOOKKEEPING) | set(swept_keys)
        chosen = [name for name in columns if name not in skip
                  and np.issubdtype(np.asarray(table[name]).dtype, np.number)][:3]
    return chosen


# --------------------------------------------------------------------------------------------
# Adapters: how an algorithm splits into static structure and traced hyper-parameters.


class SweepAdapter(Protocol):
    """Splits an algorithm into a static part and a traced hyper-parameter pytree.

    ``split(algorithm) -> (static_key, hyper)``: runs whose ``static_key`` compare equal share
    one compiled program; ``hyper`` is a pytree of numeric scalars (stacked on the run axis).
    ``init(algorithm, key, hyper) -> state`` and ``step(algorithm, key, state, hyper) -> (state,
    metrics)`` must be pure and must equal ``algorithm.init(key)`` / ``algorithm.step(key,
    state)`` when ``hyper`` is the algorithm's own.
    """

    def split(self, algorithm) -> tuple[Hashable, PyTree]: ...

    def init(self, algorithm, key: jax.Array, hyper: PyTree): ...

    def step(self, algorithm, key: jax.Array, state, hyper: PyTree): ...


class SeedOnlyAdapter:
    """Fallback: no traced hyper-parameters; runs group when their algorithms compare equal."""

    def split(self, algorithm):
        try:
            hash(algorithm)
        except TypeError:
            return ("unhashable", id(algorithm)), None
        return algorithm, None

    def init(self, algorithm, key, hyper):
        del hyper
        return algorithm.init(key)

    def step(self, algorithm, key, state, hyper):
        del hyper
        return algorithm.step(key, state)


class MapElitesAdapter:
    """MAP-Elites: static ``(config, task)``, traced :class:`MutationHyper`."""

    def split(self, algorithm):
        return ("map_elites", algorithm.config, algorithm.task), algorithm.hyper

    def init(self, algorithm, key, hyper):
        from synprune_jax.algorithms import map_elites

        return map_elites.init(key, algorithm.task, algorithm.config, hyper)

    def step(self, algorithm, key, state, hyper):
        from synprune_jax.algorithms import map_elites

        return map_elites.step(key, state, algorithm.task, algorithm.config, hyper)


class HyperAdapter:
    """Algorithms that carry their own split: ``sweep_static()`` (hashable), ``sweep_hyper``
    (pytree of numeric scalars), ``init_with(key, hyper)`` and ``step_with(key, state, hyper)``
    (``init(key)`` / ``step(key, state)`` being these with ``sweep_hyper``).

    Used for :class:`~synprune_jax.algorithms.es.MaskedES` (``ESHyper``),
    :class:`~synprune_jax.algorithms.ga.TruncationGA` (``GAHyper``),
    :class:`~synprune_jax.algorithms.nsga2.NSGA2` / ``SteadyStateGA`` and the transfer
    experiments' algorithm (their hyper carries the transfer problem's ``ProblemHyper``),
    :class:`~synprune_jax.algorithms.map_elites.MapElitesES` (``MapElitesESHyper``), the
    autoencoder loops (``TrainingHyper``), :class:`~synprune_jax.synthesis.ClusterSynthesis`
    (``SynthesisHyper``), and any algorithm with these four members.
    """

    def split(self, algorithm):
        return algorithm.sweep_static(), algorithm.sweep_hyper

    def init(self, algorithm, key, hyper):
        return algorithm.init_with(key, hyper)

    def step(self, algorithm, key, state, hyper):
        return algorithm.step_with(key, state, hyper)


_ADAPTERS: dict[type, SweepAdapter] = {}
_BUILTINS_REGISTERED = False
_HYPER_MEMBERS = ("sweep_static", "sweep_hyper", "init_with", "step_with")


def register_adapter(algorithm_type: type, adapter: SweepAdapter) -> None:
    """Makes :func:`sweep` use ``adapter`` for algorithms of ``algorithm_type`` (or subclasses)."""
    _ADAPTERS[algorithm_type] = adapter


def _register_builtins() -> None:
    global _BUILTINS_REGISTERED
    if _BUILTINS_REGISTERED:
        return
    _BUILTINS_REGISTERED = True
    from synprune_jax.algorithms.map_elites import MapElites

    _ADAPTERS.setdefault(MapElites, MapElitesAdapter())


def adapter_for(algorithm) -> SweepAdapter:
    """The adapter for ``algorithm``: its own ``sweep_adapter``, else the registered adapter for
    ``type(algorithm)`` (nearest in the MRO), else :class:`HyperAdapter` when the algorithm has
    ``sweep_static`` / ``sweep_hyper`` / ``init_with`` / ``step_with``, else seed-only."""
    _register_builtins()
    own = getattr(algorithm, "sweep_adapter", None)
    if own is not None:
        return own
    for cls in type(algorithm).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    if all(hasattr(type(algorithm), name) for name in _HYPER_MEMBERS):
        return HyperAdapter()
    return SeedOnlyAdapter()


# --------------------------------------------------------------------------------------------
# The plan: runs, groups.


@dataclasses.dataclass
class RunSpec:
    """One run of a sweep.

    Attributes:
        run_id: ``run-000``, ``run-001``, ... in grid-major, seed-minor order.
        seed: the run's seed (``run.seed`` of its config).
        values: ``{swept key: value}``.
        config: the run's full config (resolved by ``build``).
    """

    run_id: str
    seed: int
    values: dict
    config: dict


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> ``[0, ..., 7]``; ``"1,3,10-12"`` -> ``[1, 3, 10, 11, 12]``.

    Raises:
        ConfigError: malformed text, a negative seed or a repeated one.
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
                low, high = int(low), int(high)
                if high < low:
                    raise ValueError
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"bad seed list {text!r}: use e.g. 0-7 or 0,3,5-6") from None
    return _check_seeds(seeds)


def _check_seeds(seeds: Iterable[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 2**32:
            raise ConfigError(f"seeds must be ints in [0, 2**32), got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"repeated seeds in {seeds}")
    return [int(seed) for seed in seeds]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["mutation.sigma=0.05,0.1"]`` -> ``{"mutation.sigma": ["0.05", "0.1"]}`` (strings).

    Values are typed later against the experiment's default config. A list-valued key takes
    JSON lists separated by ``;``: ``task.hidden_sizes=[8,8];[16,16]``.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"grid entry {item!r} is not of the form key.path=v1,v2")
        key, text = item.split("=", 1)
        key = key.strip()
        separator = ";" if text.strip().startswith("[") else ","
        values = [value.strip() for value in text.split(separator) if value.strip()]
        if not values:
            raise ConfigError(f"grid entry {item!r} has no values")
        if key in grid:
            raise ConfigError(f"grid key {key!r} given twice")
        grid[key] = values
    return grid


def _override_text(key: str, value) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def plan_runs(experiment: str, seeds: Iterable[int], grid: Mapping[str, Sequence] | None = None,
              overrides: Sequence[str] = (), config: dict | None = None) -> list[RunSpec]:
    """Expands a sweep into runs (grid points in row-major order, seeds fastest).

    Args:
        experiment: a registered experiment name.
        seeds: the seeds every grid point is run with.
        grid: ``{"dotted.key": [values]}``; values may be typed or strings (parsed against the
            default config's type, like ``--set``).
        overrides: ``key=value`` overrides applied to every run first.
        config: start from this config instead of the experiment's default.

    Raises:
        ConfigError: unknown experiment or key, a value of the wrong type, ``run.seed`` in the
            grid, or an invalid resulting config (every run is built, hence validated, here).
    """
    from synprune_jax.experiments import get_experiment

    seeds = _check_seeds(seeds)
    grid = dict(grid or {})
    if "run.seed" in grid:
        raise ConfigError("sweep seeds with seeds=... (--seeds), not with the grid key run.seed")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    entry = get_experiment(experiment)
    base = config_lib.apply_overrides(config or entry.default_config(), overrides)
    base["experiment"] = experiment
    runs = []
    for point in itertools.product(*grid.values()):
        point_overrides = [_override_text(key, value) for key, value in zip(grid, point)]
        point_config = config_lib.apply_overrides(base, point_overrides)
        values = {key: _lookup(point_config, key) for key in grid}
        for seed in seeds:
            run_config = config_lib.apply_overrides(point_config, [f"run.seed={seed}"])
            runs.append(RunSpec(run_id=f"run-{len(runs):03d}", seed=seed, values=values,
                                config=run_config))
    return runs


@dataclasses.dataclass
class _Member:
    spec: RunSpec
    built: Any
    static_key: Hashable
    hyper: PyTree
    run_dir: Path


def _group_key(member: _Member) -> tuple:
    run_config = member.built.run_config
    return (member.static_key, run_config.num_generations, run_config.chunk_size,
            run_config.checkpoint_every, run_config.metrics_format,
            jax.tree_util.tree_structure(member.hyper))


def _stack(trees: Sequence[PyTree]) -> PyTree:
    """Stacks pytrees of scalars / arrays on a new leading axis (float64 -> float32)."""

    def stack(*leaves):
        array = np.stack([np.asarray(leaf) for leaf in leaves])
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64:
            array = array.astype(np.int32)
        return array

    return jax.tree_util.tree_map(stack, *trees)


def build_members(experiment: str, runs: Sequence[RunSpec], out: str | os.PathLike) -> list:
    """Builds (and so validates) every run and splits its algorithm with its adapter."""
    from synprune_jax.experiments import get_experiment

    entry = get_experiment(experiment)
    members = []
    for spec in runs:
        option, devices = requested_devices(spec.config)
        if devices != 1:
            raise ConfigError(f"run {spec.run_id}: {option}={devices!r}, but a sweep "
                              "places whole runs on devices itself (`--devices`); leave "
                              f"{option} at 1")
        built = entry.build(spec.config)  # validates; resolves defaults in spec.config
        static_key, hyper = adapter_for(built.algorithm).split(built.algorithm)
        members.append(_Member(spec=spec, built=built, static_key=static_key, hyper=hyper,
                               run_dir=Path(out) / "runs" / spec.run_id))
    return members


def group_members(members: Sequence) -> list[list]:
    """Members with equal static parts and run settings, in first-appearance order."""
    groups: dict[tuple, list] = {}
    for member in members:
        groups.setdefault(_group_key(member), []).append(member)
    return list(groups.values())


def plan_groups(experiment: str, seeds: Iterable[int],
                grid: Mapping[str, Sequence] | None = None, overrides: Sequence[str] = (),
                config: dict | None = None) -> list[list[str]]:
    """The run ids of each compiled group a sweep would make (builds, compiles nothing)."""
    runs = plan_runs(experiment, seeds, grid, overrides, config)
    return [[m.spec.run_id for m in group]
            for group in group_members(build_members(experiment, runs, "."))]


# --------------------------------------------------------------------------------------------
# Running a group.


def _pad(tree: PyTree, count: int) -> PyTree:
    """Appends ``count`` copies of row 0 to every leaf."""
    if count == 0:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: np.concatenate([np.asarray(leaf)] + [np.asarray(leaf)[:1]] * count), tree)


def _completed_generation(run_dir: Path) -> int | None:
    return checkpoint_lib.latest_step(run_dir / "checkpoints")


def _save_run_files(member: _Member) -> None:
    member.run_dir.mkdir(parents=True, exist_ok=True)
    config_path = member.run_dir / "config.json"
    if not config_path.exists():
        config_lib.save(member.spec.config, config_path)
    runner_lib._write_json(member.run_dir / "run_config.json",
                           dataclasses.asdict(member.built.run_config))


def run_group(members: Sequence[_Member], *, mesh=None, progress: bool = False,
              log: Callable[[str], None] | None = None) -> dict:
    """Runs runs of one shape group together (``jit(vmap(...))`` over the run axis).

    Every member must be at the same starting point: all fresh, or all restored from a checkpoint
    at the same generation (:func:`sweep` arranges this). Writes each member's metrics and
    checkpoints into its run directory as :func:`synprune_jax.runner.run` would.

    Returns:
        ``(timing, states)``: timing dict (``runs``, ``padded_runs``, ``num_devices``,
        ``init_compile_s``, ``chunk_compile_s`` per chunk length, ``seconds_per_generation``:
        median over full chunks after the first, ``wall_s``) and the final states, every leaf
        ``[R + padding, ...]``.
    """
    first = members[0]
    algorithm = first.built.algorithm
    adapter = adapter_for(algorithm)
    run_config = first.built.run_config
    num_devices = 1 if mesh is None else int(mesh.devices.size)
    padding = (-len(members)) % num_devices
    seeds = _pad(np.asarray([m.spec.seed for m in members], np.uint32), padding)
    hypers = _pad(_stack([m.hyper for m in members]), padding) \
        if first.hyper is not None else None

    if mesh is None:
        lead = None
        put = jax.device_put
    else:
        from synprune_jax import sharding

        lead = sharding.leading_axis_sharding(mesh)  # every leaf split along the run axis
        put = lambda tree: sharding.shard_leading_axis(tree, mesh)

    def jit(function):
        if lead is None:
            return jax.jit(function)
        return jax.jit(function, in_shardings=lead, out_shardings=lead)

    seeds, hypers = put(seeds), put(hypers)

    def init_one(seed, hyper):
        return runner_lib._strong_types(adapter.init(algorithm, runner_lib.init_key(seed), hyper))

    abstract_one = jax.eval_shape(init_one, jax.ShapeDtypeStruct((), jnp.uint32),
                                  jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(
                                      x.shape[1:], x.dtype), hypers))
    runner_lib._check_state(abstract_one)
    timing: dict[str, Any] = {"runs": [m.spec.run_id for m in members], "padded_runs": padding,
                              "num_devices": num_devices, "init_compile_s": None,
                              "chunk_compile_s": {}}
    started_group = time.perf_counter()

    restored = [_completed_generation(m.run_dir) for m in members]
    if restored[0] is not None:
        if len(set(restored)) != 1:
            raise ValueError(f"run_group: members restored at different generations {restored}")
        states = [checkpoint_lib.restore(m.run_dir / "checkpoints", restored[0], abstract_one)
                  for m in members]
        states = put(_pad(jax.device_get(_stack(states)), padding))
        columns = []
        for member in members:
            columns.append(runner_lib._truncate_metrics(
                runner_lib._metrics_path(member.run_dir, run_config.metrics_format),
                restored[0]))
    else:
        for member in members:
            metrics_path = runner_lib._metrics_path(member.run_dir, run_config.metrics_format)
            if metrics_path.exists():
                metrics_path.unlink()
        started = time.perf_counter()
        compiled_init = jit(jax.vmap(init_one)).lower(seeds, hypers).compile()
        timing["init_compile_s"] = time.perf_counter() - started
        states = compiled_init(seeds, hypers)
        columns = [None] * len(members)
    for member in members:
        _save_run_files(member)

    writers = [runner_lib._MetricsWriter(runner_lib._metrics_path(m.run_dir,
                                                                  run_config.metrics_format),
                                         run_config.metrics_format, cols)
               for m, cols in zip(members, columns)]
    abstract_states = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), states)
    generation = int(np.asarray(jax.device_get(states.generation))[0])
    end_generation = run_config.num_generations
    interval = run_config.checkpoint_interval
    compiled_chunks: dict[int, Callable] = {}
    per_generation: list[float] = []
    checkpoints = [checkpoint_lib.CheckpointWriter(m.run_dir / "checkpoints",
                                                   max_to_keep=runner_lib.CHECKPOINTS_TO_KEEP)
                   for m in members]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=end_generation, initial=generation, unit="gen", dynamic_ncols=True,
                   desc=f"{len(members)} runs", disable=None)
    try:
        while generation < end_generation:
            length = min(run_config.chunk_size, end_generation - generation)
            if length not in compiled_chunks:
                def chunk(seed, hyper, state, length=length):
                    step = lambda key, state: adapter.step(algorithm, key, state, hyper)
                    return runner_lib.scan_generations(step, seed, state, length)

                started = time.perf_counter()
                compiled_chunks[length] = jit(jax.vmap(chunk)).lower(
                    seeds, hypers, abstract_states).compile()
                timing["chunk_compile_s"][str(length)] = time.perf_counter() - started
            started = time.perf_counter()
            states, (generations, metrics) = compiled_chunks[length](seeds, hypers, states)
            generations, metrics = jax.device_get((generations, metrics))
            elapsed = time.perf_counter() - started
            if length == run_config.chunk_size:
                per_generation.append(elapsed / length)
            new_generation = generation + length
            save = (new_generation // interval > generation // interval
                    or new_generation >= end_generation)
            host_states = jax.device_get(states) if save else None
            for index, writer in enumerate(writers):
                rows = {"generation": np.asarray(generations[index], np.int64)}
                rows.update((name, np.asarray(metrics[name][index])) for name in sorted(metrics))
                writer.append(rows)
                if save:
                    checkpoints[index].save(new_generation, jax.tree_util.tree_map(
                        lambda leaf: leaf[index], host_states))
            if bar is not None:
                bar.update(length)
            generation = new_generation
    finally:
        for writer in checkpoints:
            writer.close()
        if bar is not None:
            bar.close()
    steady = per_generation[1:] or per_generation
    timing.update(start_generation=restored[0] or 0, end_generation=generation,
                  seconds_per_generation=statistics.median(steady) if steady else None,
                  wall_s=time.perf_counter() - started_group)
    if log is not None:
        log(f"group of {len(members)} runs done in {timing['wall_s']:.1f} s")
    return timing, states


# --------------------------------------------------------------------------------------------
# The sweep.


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes:
        out: the sweep directory.
        runs: one :class:`RunSpec` per run.
        table: the tidy ``pandas.DataFrame`` (columns ``run_id``, ``group``, ``seed``, each
            swept key, ``generation`` and every metric).
        timing: per group timing dicts (empty for groups that were already finished).
        skipped: run ids that were already finished and not run again.
    """

    out: Path
    runs: list[RunSpec]
    table: Any
    timing: list[dict]
    skipped: list[str]


def _definition(experiment, seeds, grid, overrides, config) -> dict:
    return {"experiment": experiment, "seeds": list(seeds),
            "grid": {key: list(values) for key, values in (grid or {}).items()},
            "overrides": list(overrides), "config": config}


def sweep(experiment: str, seeds: Iterable[int] = (0,), grid: Mapping[str, Sequence] | None = None,
          *, out: str | os.PathLike, overrides: Sequence[str] = (), config: dict | None = None,
          devices: int | None = None, report: bool = True, plots: bool = True,
          progress: bool = False, log: Callable[[str], None] | None = None) -> SweepResult:
    """Runs (or resumes) a sweep; see the module docstring.

    Args:
        experiment: registered experiment name (``synprune list``).
        seeds: seeds run at every grid point.
        grid: ``{"dotted.config.key": [values, ...]}``; the sweep is the Cartesian product.
        out: sweep directory. If it holds a sweep with the same definition, that sweep is resumed.
        overrides: ``key=value`` strings applied to every run before the grid.
        config: a full config to start from instead of the experiment's default.
        devices: local devices to split the run axis over (``None``: all; 1: no sharding).
        report: call the experiment's reporter for each run (summary and plots in its run dir).
        plots: draw the sweep summary plots into ``out/plots``.
        progress: tqdm bar per group.
        log: optional callable receiving one-line progress messages.

    Returns:
        :class:`SweepResult`.

    Raises:
        ConfigError: invalid definition (checked, for every run, before anything compiles), or
            ``out`` holds a different sweep.
    """

    out = Path(out)
    seeds = _check_seeds(seeds)
    grid = {key: list(values) for key, values in (grid or {}).items()}
    definition = _definition(experiment, seeds, grid, overrides, config)
    runs = plan_runs(experiment, seeds, grid, overrides, config)
    members = build_members(experiment, runs, out)
    local = len(jax.local_devices())
    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int)
                                or not 1 <= devices <= local):
        raise ConfigError(f"devices must be an int in [1, {local}] (local devices), "
                          f"got {devices!r}")

    definition_path = out / SWEEP_FILE
    if definition_path.exists():
        previous = json.loads(definition_path.read_text())
        if previous != json.loads(json.dumps(definition)):
            raise ConfigError(f"{out} holds a different sweep ({definition_path}); use another "
                              "directory or repeat the original definition to resume it")
    out.mkdir(parents=True, exist_ok=True)
    runner_lib._write_json(definition_path, definition)

    groups = group_members(members)
    group_ids = {id(m): index for index, group in enumerate(groups) for m in group}
    _write_runs_index(out, runs, grid, {m.spec.run_id: group_ids[id(m)] for m in members})

    count = local if devices is None else devices
    meshes: dict[int, object] = {}

    def mesh_for(runs: int):
        """The first ``min(count, runs)`` devices: a group smaller than the device count is not
        padded up to it (no copies computed for nothing); ``None`` for one device."""
        size = min(count, runs)
        if size <= 1:
            return None
        if size not in meshes:
            from synprune_jax import sharding

            meshes[size] = sharding.make_mesh(size, "runs")
        return meshes[size]

    timing, skipped = [], []
    for group_index, group in enumerate(groups):
        num_generations = group[0].built.run_config.num_generations
        by_start: dict[int, list[_Member]] = {}
        for member in group:
            done = _completed_generation(member.run_dir)
            if done is not None and done >= num_generations:
                skipped.append(member.spec.run_id)
                continue
            by_start.setdefault(done if done is not None else -1, []).append(member)
        for start, subgroup in sorted(by_start.items()):
            if log is not None:
                log(f"group {group_index}: {len(subgroup)} runs from generation {max(start, 0)}")
            group_timing, states = run_group(subgroup, mesh=mesh_for(len(subgroup)),
                                             progress=progress, log=log)
            group_timing["group"] = group_index
            timing.append(group_timing)
            if report:
                host = jax.device_get(states)
                for index, member in enumerate(subgroup):
                    state = jax.tree_util.tree_map(lambda leaf: leaf[index], host)
                    member.built.report(str(member.run_dir), state,
                                        runner_lib.read_metrics(member.run_dir))
    if timing:
        runner_lib._write_json(out / "timing.json", {"groups": timing})
    table = collect(out)
    if plots:
        plot_sweep(table, list(grid), out / "plots")
    return SweepResult(out=out, runs=runs, table=table, timing=timing, skipped=skipped)


def _write_runs_index(out: Path, runs: Sequence[RunSpec], grid: Mapping, groups: dict) -> None:
    import pandas as pd

    rows = [{"run_id": spec.run_id, "group": groups[spec.run_id], "seed": spec.seed,
             **{key: _cell(spec.values[key]) for key in grid}} for spec in runs]
    pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)


def _cell(value):
    """Table cell for a swept value: lists become their JSON text (hashable, Parquet-safe)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def collect(out: str | os.PathLike):
    """Builds the tidy table of a sweep directory and writes ``results.csv`` / ``.parquet``.

    Returns:
        ``pandas.DataFrame`` with one row per run and generation: the columns of ``runs.csv``
        (``run_id``, ``group``, ``seed``, swept keys) followed by ``generation`` and the metrics.
        Runs without metrics yet are left out.
    """
    import pandas as pd

    out = Path(out)
    index = pd.read_csv(out / "runs.csv")
    frames = []
    for row in index.to_dict("records"):
        run_dir = out / "runs" / row["run_id"]
        try:
            metrics = runner_lib.read_metrics(run_dir)
        except FileNotFoundError:
            continue
        frame = pd.DataFrame(metrics)
        for position, (key, value) in enumerate(row.items()):
            frame.insert(position, key, value)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=list(index.columns) + ["generation"])
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    return table


def final_rows(table):
    """The last generation of every run (one row per run)."""
    if table.empty:
        return table
    last = table.groupby("run_id")["generation"].transform("max")
    return table[table["generation"] == last].reset_index(drop=True)


def plot_sweep(table, swept_keys: Sequence[str], directory: str | os.PathLike,
               metrics: Sequence[str] | None = None) -> list[Path]:
    """Summary figures of a sweep (host only).

    For every swept key and metric: the final value against the swept value, mean over seeds with
    a min-max band and the individual seeds as dots, one line per setting of the other swept
    keys (``final_<metric>_vs_<key>.png``). For every metric: its curve over generations, mean
    over seeds with a min-max band, one line per grid point (``curves_<metric>.png``).
    """
    from synprune_jax.plots import _new_figure, _save

    paths: list[Path] = []
    if table.empty:
        return paths
    metrics = summary_metrics(table, swept_keys) if metrics is None else metrics
    metrics = [name for name in metrics if name in table.columns]
    directory = Path(directory)
    final = final_rows(table)
    for key in swept_keys:
        others = [other for other in swept_keys if other != key]
        for metric in metrics:
            figure = _new_figure(5.0, 3.6)
            axes = figure.add_subplot()
            settings = final.groupby(others, sort=True) if others else [((), final)]
            for setting, frame in settings:
                values = sorted(frame[key].unique(), key=_sort_key)
                numeric = all(isinstance(v, (int, float, np.number)) for v in values)
                positions = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
                x = np.asarray([positions[v] for v in values])
                grouped = [frame[frame[key] == v][metric].to_numpy(np.float64) for v in values]
                mean = np.asarray([np.nanmean(g) for g in grouped])
                low = np.asarray([np.nanmin(g) for g in grouped])
                high = np.asarray([np.nanmax(g) for g in grouped])
                label = ", ".join(f"{o}={s}" for o, s in zip(others, np.atleast_1d(setting))) \
                    if others else "mean over seeds"
                line, = axes.plot(x, mean, marker="o", label=label)
                axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
                dots = frame[key].map(positions).to_numpy(np.float64)
                axes.scatter(dots, frame[metric].to_numpy(np.float64), s=8,
                             color=line.get_color(), alpha=0.6)
                if not numeric:
                    axes.set_xticks(x, [str(v) for v in values])
            axes.set_xlabel(key)
            axes.set_ylabel(f"final {metric}")
            axes.set_title(f"final {metric} (band: min-max over seeds)", fontsize=9)
            axes.legend(fontsize=7)
            paths.append(_save(figure, directory / f"final_{metric}_vs_{key}.png"))
    for metric in metrics:
        figure = _new_figure(5.5, 3.6)
        axes = figure.add_subplot()
        points = table.groupby(list(swept_keys), sort=True) if swept_keys else [((), table)]
        for setting, frame in points:
            curve = frame.groupby("generation")[metric]
            generations = np.asarray(list(curve.groups), np.float64)
            line, = axes.plot(generations, curve.mean().to_numpy(),
                              label=", ".join(f"{k}={v}" for k, v in
                                              zip(swept_keys, np.atleast_1d(setting)))
                              or "mean over seeds")
            axes.fill_between(generations, curve.min().to_numpy(), curve.max().to_numpy(),
                              color=line.get_color(), alpha=0.15)
        axes.set_xlabel("generation")
        axes.set_ylabel(metric)
        axes.legend(fontsize=7)
        paths.append(_save(figure, directory / f"curves_{metric}.png"))
    return paths


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float, np.number)) else (1, 0.0,
                                                                                    str(value))


def summarize(table, swept_keys: Sequence[str],
              metrics: Sequence[str] | None = None):
    """Final value of each metric per grid point: mean, std (ddof=0), min, max over seeds.

    Returns:
        ``pandas.DataFrame`` with the swept keys, ``num_seeds`` and ``<metric>_mean``,
        ``<metric>_std``, ``<metric>_min``, ``<metric>_max`` columns.
    """
    import pandas as pd

    final = final_rows(table)
    metrics = summary_metrics(final, swept_keys) if metrics is None else metrics
    metrics = [name for name in metrics if name in final.columns]
    if final.empty:
        return pd.DataFrame()
    keys = list(swept_keys)
    grouped = final.groupby(keys, sort=True) if keys else [((), final)]
    rows = []
    for setting, frame in grouped:
        row = dict(zip(keys, np.atleast_1d(setting) if keys else ()))
        row["num_seeds"] = int(len(frame))
        for name in metrics:
            values = frame[name].to_numpy(np.float64)
            row.update({f"{name}_mean": float(np.mean(values)),
                        f"{name}_std": float(np.std(values)),
                        f"{name}_min": float(np.min(values)),
                        f"{name}_max": float(np.max(values))})
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(summary, swept_keys: Sequence[str],
                   metrics: Sequence[str] | None = None) -> str:
    """Markdown table of :func:`summarize`: ``mean ± std`` of each final metric per grid point."""
    if summary.empty:
        return "(no finished runs)"
    if metrics is None:  # every metric summarize() reported
        metrics = [column[:-len("_mean")] for column in summary.columns
                   if column.endswith("_mean")]
    metrics = [name for name in metrics if f"{name}_mean" in summary.columns]
    header = list(swept_keys) + ["seeds"] + [f"final {name}" for name in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [str(row[key]) for key in swept_keys] + [str(row["num_seeds"])]
        cells += [f"{row[f'{name}_mean']:.4g} ± {row[f'{name}_std']:.2g}" for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
