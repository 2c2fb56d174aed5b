"""The engine's own cost where evaluation is cheap, and its compile time (JSON lines).

Three cases (issue "The engine's own cost where evaluation is cheap, and compile time"):

* ``arm``: MAP-Elites on the 10-joint planar arm, direct genotype (one gene per joint), a
  64 x 64 grid over the tip, Gaussian sigma 0.01 and no prune / reconnect flips
  (``MutationConfig(flips=False)``), at each batch size of the suite. ``run`` is the runner's own
  compiled chunk (:func:`synprune_jax.runner.scan_generations`: every generation's metrics, one
  host transfer per chunk) over ``ceil(1e6 / batch)`` generations: wall and process-CPU seconds
  per million evaluations, cells filled, QD-score (offset 0: fitness is ``-var(angles)``, so the
  score is negative and rises toward 0). ``parts`` splits one generation by part from four
  programs timed alternately (A B C D A B ...): emit only (parent sampling + mutation), + the
  evaluation, + the insertion, + the metrics; each part is the difference of two medians. Two
  more programs in the same alternation bound what cannot go: ``draws_alone`` (only the random
  draws of a generation, the streams the results are defined by) and ``evaluate_alone`` (only
  the task's evaluation of a batch); ``no_draws`` is the whole generation with every random draw
  replaced by integer arithmetic (:func:`without_random_draws`), what is left if the random
  streams cost nothing. ``full_previous`` is the generation as it was before this
  issue's changes (:func:`previous_engine`), in the same alternation: ``speedup_vs_previous``.
  The C++ reference (hucebot/fast_map-elites, clang -O3, one thread, same grid and batch 128)
  is the fixed figure :data:`REFERENCE_CPP_SECONDS_PER_MILLION`, quoted, not rebuilt here.
* ``compile``: the programs a CLI run compiles, counted and timed by JAX's own monitoring
  events, in child processes that share one persistent compilation cache: ``cold`` (empty
  cache), then ``warm`` (a new process, the same cache, a different mutation sigma: the
  hyper-parameters are arguments of the compiled programs, so the cache must serve them).
  Settings: ``default`` (``synprune run``'s default experiment, one chunk) and ``brax_qdax``
  (MAP-Elites on Brax walker2d, spring, episode 100, a 64-64 tanh MLP, CVT 1024 cells, batch
  256: QDax's own example setting).
* ``qdax_compile``: QDax 0.5 ``MAPElites`` on the ``brax_qdax`` setting (init, then one
  ``scan_update``) and ours (``synprune run``, empty cache), cold, alternately in fresh child
  processes (``compile_rounds`` each), with the medians' ratio; in the bench environment where
  QDax is installed, skipped otherwise.

    python -m benchmarks.engine_overhead --suite quick
    python -m benchmarks.engine_overhead --suite quick --only arm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import (
    RESULTS_DIR,
    SUITES,
    check_suite,
    emit,
    interleaved_medians,
    machine_info,
    peer_status,
    write_csv,
)

NAME = "engine_overhead"

#: hucebot/fast_map-elites, clang -O3, Iso+LineDD, 10-DoF arm, 64 x 64 grid, batch 128, one
#: thread, measured on this machine kind (see the issue and ../shared/ENVIRONMENT.md).
REFERENCE_CPP_SECONDS_PER_MILLION = 0.306

SIZES = {
    "toy": {
        "batches": (64,),
        "evaluations": 20_000,
        "chunk": 100,
        "rounds": 3,
        "compile": ("default",),
        "compile_rounds": 1,
    },
    "quick": {
        "batches": (128, 1024, 4096),
        "evaluations": 1_000_000,
        "chunk": 500,
        "rounds": 5,
        "compile": ("default", "brax_qdax"),
        "compile_rounds": 3,
    },
    "full": {
        "batches": (128, 1024, 4096),
        "evaluations": 1_000_000,
        "chunk": 500,
        "rounds": 15,
        "compile": ("default", "brax_qdax"),
        "compile_rounds": 5,
    },
}

PART_PROGRAMS = (
    "emit",
    "evaluate",
    "insert",
    "full",
    "draws",
    "evaluate_alone",
    "no_draws",
    "full_previous",
)

#: ``synprune run`` overrides of each compile setting (one chunk of generations, no progress).
COMPILE_SETTINGS = {
    "default": ["--set", "run.num_generations=10"],
    "brax_qdax": [
        "--set",
        "task.env_name=walker2d",
        "--set",
        "task.hidden_sizes=[64,64]",
        "--set",
        "task.descriptors=[feet_contact]",
        "--set",
        "archive.kind=cvt",
        "--set",
        "archive.num_cells=1024",
        "--set",
        "map_elites.batch_size=256",
        "--set",
        "map_elites.initial_batch_size=256",
        "--set",
        "task.devices=1",
        "--set",
        "run.num_generations=10",
    ],
}


def arm_setting(batch: int = 128, flips: bool = False):
    """``(algorithm, hyper)``: MAP-Elites on the 10-joint arm, direct genotype, 64 x 64 grid
    over the tip, ``batch`` offspring (and initial individuals), sigma 0.01, no flips
    (``flips=True``: flips drawn at zero rates, the same offspring at more cost)."""
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import KinematicArm
    from synprune_jax.variation import MutationConfig

    task = KinematicArm(num_joints=10, genotype="angles")
    config = MapElitesConfig(
        archive=GridSpec((0.0, 0.0), (1.0, 1.0), (64, 64)),
        batch_size=batch,
        initial_batch_size=batch,
        qd_offset=0.0,
        mutation=MutationConfig(forward_prune=False, flips=flips),
    )
    algorithm = MapElites(config, task)
    return algorithm, algorithm.default_hyper.replace(sigma=0.01, p_disconnect=0.0, p_connect=0.0)


def part_step(algorithm, part: str):
    """``(key, state, hyper) -> (state, metrics)``: one generation cut after ``part`` (one of
    :data:`PART_PROGRAMS`; ``"full"`` is ``algorithm.step``), or a bound program:

    * ``"draws"``: only the random draws a generation makes (the runner's generation key, the
      emitter's parent ``randint``, one key per child split in three, the Gaussian's per-leaf
      split and ``normal``), the streams the results depend on;
    * ``"evaluate_alone"``: only ``task.evaluate`` of the carried offspring-sized population.

    A cut program keeps what it computed alive by folding a sum of it into the archive's
    fitness (``+ 0 * sum``), so XLA can neither drop nor slice it."""
    import jax
    import jax.numpy as jnp

    from synprune_jax.archives import add, sample

    if part == "full":
        return algorithm.step
    config, task, emitter = algorithm.config, algorithm.task, algorithm.emitter

    def keep(state, *trees):
        total = sum(
            jnp.sum(leaf.astype(jnp.float32))
            for tree in trees
            for leaf in jax.tree_util.tree_leaves(tree)
        )
        fitness = state.archive.fitness + 0.0 * total
        return state.replace(archive=state.archive.replace(fitness=fitness)), {}

    def step(key, state, hyper):
        key_emit, key_eval = jax.random.split(key)
        if part == "draws":
            key_parents, key_mutate = jax.random.split(key_emit)
            parents = jax.random.randint(key_parents, (emitter.batch_size,), 0, 7)

            def child(k, leaf):
                key_gauss = jax.random.split(k, 3)[2]
                leaf_key = jax.random.split(key_gauss, 1)[0]
                return jax.random.normal(leaf_key, leaf.shape, leaf.dtype)

            template = jax.tree_util.tree_leaves(state.archive.genomes.params)[0][0]
            noise = jax.vmap(child, in_axes=(0, None))(
                jax.random.split(key_mutate, emitter.batch_size), template
            )
            return keep(state, parents, noise)
        if part == "evaluate_alone":
            population = sample(jax.random.key(0), state.archive, emitter.batch_size)
            population = population.replace(
                params=jax.tree_util.tree_map(
                    lambda leaf: leaf + 1e-7 * state.generation, population.params
                )
            )
            result = task.evaluate(key_eval, population)
            return keep(state, result.fitness, result.descriptors, result.extras["density"])
        offspring, _ = emitter.emit(key_emit, state.archive, None, hyper)
        if part == "emit":
            return keep(state, offspring.params)
        result = task.evaluate(key_eval, offspring)
        if part == "evaluate":
            return keep(state, result.fitness, result.descriptors, result.extras["density"])
        archive, _ = add(config.archive, state.archive, offspring, result)
        return state.replace(archive=archive), {}

    return step


#: ``jax.random`` functions a MAP-Elites generation calls (:func:`without_random_draws`).
_DRAWS = ("split", "fold_in", "randint", "normal", "uniform", "bernoulli")


@contextlib.contextmanager
def without_random_draws():
    """While tracing: ``jax.random``'s :data:`_DRAWS` replaced by a few integer operations on the
    key's data (a multiplicative hash of a counter), so a generation traced inside makes no
    Threefry call. The numbers are not random and the results differ: the ``no_draws`` program
    only measures what a generation costs without its random streams (a lower bound for any
    choice of streams)."""
    import jax
    import jax.numpy as jnp

    random = jax.random
    is_key = lambda key: jnp.issubdtype(key.dtype, jax.dtypes.prng_key)  # noqa: E731
    data = lambda key: random.key_data(key) if is_key(key) else key  # noqa: E731
    wrap = lambda key, words: random.wrap_key_data(words) if is_key(key) else words  # noqa: E731

    def words(key, shape):
        word = data(key)
        seed = word[..., 0] ^ (word[..., 1] * jnp.uint32(2654435761))
        count = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
        return (seed + count * jnp.uint32(2246822519)) * jnp.uint32(3266489917)

    def uniform(key, shape=(), dtype=jnp.float32, minval=0.0, maxval=1.0):
        unit = (words(key, tuple(shape)) >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
        return (minval + (maxval - minval) * unit).astype(dtype)

    def randint(key, shape, minval, maxval, dtype=jnp.int32):
        span = jnp.maximum(jnp.asarray(maxval) - jnp.asarray(minval), 1).astype(jnp.uint32)
        return (jnp.asarray(minval) + (words(key, tuple(shape)) % span)).astype(dtype)

    fakes = {
        "split": lambda key, num=2: wrap(
            key, data(key)[..., None, :] + jnp.arange(num, dtype=jnp.uint32)[:, None]
        ),
        "fold_in": lambda key, value: wrap(key, data(key) + jnp.asarray(value, jnp.uint32)),
        "randint": randint,
        "uniform": uniform,
        "normal": lambda key, shape=(), dtype=jnp.float32: 3.4 * (uniform(key, shape, dtype) - 0.5),
        "bernoulli": lambda key, p=0.5, shape=None: (
            uniform(key, jnp.shape(p) if shape is None else shape) < p
        ),
    }
    saved = {name: getattr(random, name) for name in _DRAWS}
    _REAL_DRAWS.update(saved)
    for name in _DRAWS:
        setattr(random, name, fakes[name])
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(random, name, function)


_REAL_DRAWS: dict = {}


@contextlib.contextmanager
def real_random_draws():
    """Inside :func:`without_random_draws`: ``jax.random`` as it is, e.g. to trace a task's own
    evaluation with its real streams while the algorithm's draws stay replaced."""
    import jax

    current = {name: getattr(jax.random, name) for name in _DRAWS}
    for name in _DRAWS:
        setattr(jax.random, name, _REAL_DRAWS.get(name, current[name]))
    try:
        yield
    finally:
        for name, function in current.items():
            setattr(jax.random, name, function)


def nonzero_sample_indices(key, archive, num):
    """``archives.sample_indices`` as it was before issue 23: the filled cells listed by
    ``jnp.nonzero`` (an associative-scan cumsum on CPU). Same signature and draws."""
    import jax
    import jax.numpy as jnp

    filled = archive.filled
    num_cells = filled.shape[0]
    num_filled = jnp.sum(filled, dtype=jnp.int32)
    (filled_cells,) = jnp.nonzero(filled, size=num_cells, fill_value=0)
    table = jnp.where(num_filled > 0, filled_cells, jnp.arange(num_cells))
    upper = jnp.where(num_filled > 0, num_filled, num_cells)
    draws = jax.random.randint(key, (num,), 0, upper, dtype=jnp.int32)
    return table[draws].astype(jnp.int32)


@contextlib.contextmanager
def previous_engine():
    """While tracing: the engine as it was before this issue's changes (parents through
    :func:`nonzero_sample_indices`, clashes settled through ``[C]`` scatters). With
    ``arm_setting(batch, flips=True)`` (a flip draw at zero rates) it is the previous generation,
    with the same results; the ``full_previous`` program is timed alternately with ``full``."""
    from synprune_jax.archives import repertoire

    saved = repertoire.sample_indices, repertoire._PAIRWISE_PAIRS_PER_CELL
    repertoire.sample_indices, repertoire._PAIRWISE_PAIRS_PER_CELL = nonzero_sample_indices, 0
    try:
        yield
    finally:
        repertoire.sample_indices, repertoire._PAIRWISE_PAIRS_PER_CELL = saved


def _schedule(batch: int, setting: dict) -> tuple[int, int]:
    """``(generations per chunk, chunks)`` covering at least ``evaluations``."""
    generations = math.ceil(setting["evaluations"] / batch)
    chunk = min(setting["chunk"], generations)
    return chunk, math.ceil(generations / chunk)


def arm_records(setting: dict) -> list[dict]:
    """The ``arm`` case: one ``run`` and one ``parts`` record per batch size."""
    import jax
    import numpy as np

    from synprune_jax import runner

    records = []
    for batch in setting["batches"]:
        algorithm, hyper = arm_setting(batch)
        chunk, chunks = _schedule(batch, setting)
        hyper_args = runner.hyper_arguments(hyper)
        init = jax.jit(
            lambda key, hyper, algorithm=algorithm: runner.strong_types(algorithm.init(key, hyper))
        )
        initial = init(runner.init_key(0), hyper_args)
        compiled, compile_s, threefry_left = {}, {}, None
        for part in PART_PROGRAMS:
            previous = part == "full_previous"
            step = part_step(
                arm_setting(batch, flips=True)[0] if previous else algorithm,
                "full" if part in ("full_previous", "no_draws") else part,
            )

            # as the runner compiles a run: seed and hyper-parameters are arguments
            def chunk_program(state, seed, hyper, step=step, chunk=chunk):
                return runner.scan_generations(
                    lambda key, state: step(key, state, hyper), seed, state, chunk
                )

            start = time.perf_counter()
            context = {"full_previous": previous_engine, "no_draws": without_random_draws}.get(
                part, contextlib.nullcontext
            )
            with context():
                lowered = jax.jit(chunk_program, donate_argnums=0).lower(
                    initial, np.uint32(0), hyper_args
                )
            compiled[part] = lowered.compile()
            compile_s[part] = time.perf_counter() - start
            if part == "no_draws":  # the bound holds only if no Threefry call is left
                threefry_left = lowered.as_text().count("threefry")
        # the run: the runner's chunk (full step, every generation's metrics to the host)
        state = jax.tree_util.tree_map(jax.numpy.copy, initial)
        wall, cpu = 0.0, 0.0
        for _ in range(chunks):
            start, start_cpu = time.perf_counter(), time.process_time()
            state, outputs = compiled["full"](state, np.uint32(0), hyper_args)
            jax.device_get(outputs)
            wall += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
        evaluations = chunk * chunks * batch
        fitness = np.asarray(state.archive.fitness)
        filled = np.isfinite(fitness)
        records.append(
            {
                "case": "arm",
                "program": "run",
                "batch": batch,
                "cells": int(fitness.size),
                "generations": chunk * chunks,
                "evaluations": evaluations,
                "wall_s_per_million": wall * 1e6 / evaluations,
                "cpu_s_per_million": cpu * 1e6 / evaluations,
                "cells_filled": int(filled.sum()),
                "qd_score": float(fitness[filled].sum()),
                "chunk_compile_s": compile_s["full"],
                "reference_cpp_seconds_per_million": REFERENCE_CPP_SECONDS_PER_MILLION,
            }
        )
        emit(records[-1])
        # parts: the cut and bound programs alternately, each from its own copy of the start state
        states = {part: jax.tree_util.tree_map(jax.numpy.copy, initial) for part in compiled}

        def call(part, states=states, compiled=compiled, hyper_args=hyper_args):
            def go():
                states[part], outputs = compiled[part](states[part], np.uint32(0), hyper_args)
                return jax.device_get(outputs)

            return go

        timed = interleaved_medians({part: call(part) for part in PART_PROGRAMS}, setting["rounds"])
        per_gen = {part: timed[part]["median_s"] / chunk * 1e6 for part in PART_PROGRAMS}
        per_gen_cpu = {part: timed[part]["median_cpu_s"] / chunk * 1e6 for part in PART_PROGRAMS}
        split = {
            "emit": per_gen["emit"],
            "evaluate": per_gen["evaluate"] - per_gen["emit"],
            "insert": per_gen["insert"] - per_gen["evaluate"],
            "metrics": per_gen["full"] - per_gen["insert"],
            "draws_alone": per_gen["draws"],
            "evaluate_alone": per_gen["evaluate_alone"],
            "no_draws": per_gen["no_draws"],
        }
        records.append(
            {
                "case": "arm",
                "program": "parts",
                "batch": batch,
                "rounds": setting["rounds"],
                "generation_us": per_gen["full"],
                "generation_cpu_us": per_gen_cpu["full"],
                "previous_generation_us": per_gen["full_previous"],
                "speedup_vs_previous": per_gen["full_previous"] / per_gen["full"],
                "speedup_vs_previous_cpu": per_gen_cpu["full_previous"] / per_gen_cpu["full"],
                # both advanced through the same generations from the same state: same archive
                "previous_same_archive": bool(
                    np.array_equal(
                        np.asarray(states["full"].archive.fitness),
                        np.asarray(states["full_previous"].archive.fitness),
                    )
                ),
                **{f"{name}_us": value for name, value in split.items()},
                "no_draws_s_per_million": per_gen["no_draws"] / batch,
                "no_draws_threefry_calls": threefry_left,
                **{f"{part}_compile_s": compile_s[part] for part in PART_PROGRAMS},
            }
        )
        emit(records[-1])
    return records


# ----- compile time: child processes sharing one persistent cache -------------------------------


def compile_child(setting: str, sigma: float, out_dir: str) -> dict:
    """Runs ``synprune run`` (``setting``'s overrides, ``mutation.sigma=sigma``) in this process
    and returns the programs it compiled: ``{name: seconds}`` from JAX's backend-compile events
    (a program served by the persistent cache counts its retrieval), plus cache hits / misses."""
    import jax

    compiles: list[tuple[str, float]] = []
    events: dict[str, int] = {}
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kw: (
            compiles.append((kw.get("fun_name", "?"), seconds))
            if event == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    jax.monitoring.register_event_listener(
        lambda event, **kw: (
            events.__setitem__(event, events.get(event, 0) + 1)
            if "compilation_cache" in event
            else None
        )
    )
    from synprune_jax import cli

    start = time.perf_counter()
    code = cli.main(
        [
            "run",
            "me-prune",
            "--out",
            out_dir,
            "--set",
            "run.progress=false",
            "--set",
            f"mutation.sigma={sigma}",
            *COMPILE_SETTINGS[setting],
        ]
    )
    total = time.perf_counter() - start
    slow = sorted(compiles, key=lambda item: -item[1])
    return {
        "exit": code,
        "wall_s": total,
        "programs": len(compiles),
        "compile_s": sum(seconds for _, seconds in compiles),
        "top_programs": [[name, round(seconds, 2)] for name, seconds in slow[:6]],
        "cache_hits": events.get("/jax/compilation_cache/cache_hits", 0),
        "cache_misses": events.get("/jax/compilation_cache/cache_misses", 0),
    }


def compile_records(setting: dict) -> list[dict]:
    """The ``compile`` case: cold then warm (another sigma) child processes per setting."""
    records = []
    for name in setting["compile"]:
        with tempfile.TemporaryDirectory(prefix="synprune_compile_") as scratch:
            env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(scratch, "cache")}
            for phase, sigma in (("cold", 0.05), ("warm", 0.02)):
                child, stderr = _child(
                    ["--child", name, str(sigma), os.path.join(scratch, phase)], env
                )
                record = {"case": "compile", "setting": name, "phase": phase}
                if child is None:
                    record.update(status="failed", stderr=stderr)
                else:
                    record.update(sigma=sigma, **child)
                records.append(emit(record))
        if name != "default":
            records.append(compile_parts_record(name))
    return records


def compile_parts_record(name: str) -> dict:
    """Cold compile time of each part of a setting's programs, each compiled alone in this
    process: the task's evaluation of one batch (in both init and chunk), the random initial
    population (init; and inside it the kernels, the masks' Beta-distributed densities and as many
    uniforms), the emitter (chunk), the insertion and the archive metrics; and, as the
    floor under the evaluation, a bare rollout of the same batch in the same env
    (:func:`benchmarks.task_suites.build_raw`: unmasked policies, no alive mask, no
    descriptors)."""
    import jax

    from benchmarks import fresh_compilation_cache
    from synprune_jax.algorithms.map_elites import random_population
    from synprune_jax.archives import add, qd_metrics
    from synprune_jax.config import apply_overrides
    from synprune_jax.experiments import get_experiment

    fresh_compilation_cache()
    experiment = get_experiment("me-prune")
    built = experiment.build(
        apply_overrides(experiment.default_config(), COMPILE_SETTINGS[name][1::2])
    )
    algorithm, hyper = built.algorithm, built.hyper
    task, config = algorithm.task, algorithm.config
    batch = algorithm.emitter.batch_size
    key = jax.random.key(0)
    population = jax.eval_shape(lambda k: random_population(k, task, config, hyper, batch), key)
    state = jax.eval_shape(lambda k: algorithm.init(k, hyper), key)
    result = jax.eval_shape(task.evaluate, key, population)
    keys = jax.random.split(key, batch)
    layers = sum(bool(leaf) for leaf in jax.tree_util.tree_leaves(task.maskable()))
    parts = {
        "evaluate": (task.evaluate, key, population),
        "random_population": (lambda k: random_population(k, task, config, hyper, batch), key),
        "emit": (lambda k, a: algorithm.emitter.emit(k, a, None, hyper)[0], key, state.archive),
        "insert": (lambda a, p, r: add(config.archive, a, p, r), state.archive, population, result),
        "metrics": (lambda a: qd_metrics(a, config.qd_offset, config.density_bands), state.archive),
        # inside random_population: the kernels (flax's truncated-normal initialiser), the
        # initial masks' Beta-distributed densities, and as many uniforms for comparison
        "initial_kernels": (lambda ks: jax.vmap(task.init_params)(ks), keys),
        "initial_densities": (
            lambda ks: jax.vmap(
                lambda k: jax.random.beta(k, config.init_beta_a, config.init_beta_b, (layers,))
            )(ks),
            keys,
        ),
        "as_many_uniforms": (
            lambda ks: jax.vmap(lambda k: jax.random.uniform(k, (layers,)))(ks),
            keys,
        ),
    }
    record = {"case": "compile_parts", "setting": name, "batch": batch}
    for part, (function, *args) in parts.items():
        start = time.perf_counter()
        jax.jit(function).lower(*args).compile()
        record[f"{part}_compile_s"] = time.perf_counter() - start
    from benchmarks.task_suites import build_raw

    record["bare_rollout_compile_s"] = build_raw(task, batch)[1]
    return emit(record)


def qdax_compile_child() -> dict:
    """QDax 0.5's compile time on the ``brax_qdax`` setting (init + one ``scan_update``), in this
    process (a child: its cache is cold)."""
    import jax

    from benchmarks.qdax_map_elites import build_qdax

    start = time.perf_counter()
    side = build_qdax(
        {
            "env": "walker2d",
            "episode_length": 100,
            "hidden": (64, 64),
            "cvt_cells": 1024,
            "chunk": 1,
        },
        256,
    )
    return {
        "init_compile_s": side.init_compile_s,
        "update_compile_s": side.chunk_compile_s,
        "compile_s": side.init_compile_s + side.chunk_compile_s,
        "wall_s": time.perf_counter() - start,
        "jax": jax.__version__,
    }


def _child(arguments: list[str], env: dict | None = None) -> tuple[dict | None, str]:
    """``(record, stderr tail)`` of a ``--child`` / ``--qdax-child`` process: the last JSON line
    it printed, or ``None`` if it failed."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine_overhead", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    record = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    return record, done.stderr[-600:]


def qdax_compile_record(rounds: int) -> list[dict]:
    """Cold compile of QDax 0.5 and of ours on the ``brax_qdax`` setting, alternately in fresh
    child processes (ours with an empty persistent cache), ``rounds`` times: one record per
    round and side, then the medians and their ratio (ours / QDax)."""
    import statistics

    usable, reason = peer_status("qdax")
    if not usable:
        return [emit({"case": "qdax_compile", "status": "skipped", "reason": reason})]
    records, totals = [], {"ours": [], "qdax": []}
    for index in range(rounds):
        with tempfile.TemporaryDirectory(prefix="synprune_compile_") as scratch:
            env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(scratch, "cache")}
            ours = _child(["--child", "brax_qdax", "0.05", os.path.join(scratch, "run")], env)[0]
        qdax = _child(["--qdax-child"])[0]
        for side, record in (("ours", ours), ("qdax", qdax)):
            if record is None:
                records.append(
                    emit({"case": "qdax_compile", "side": side, "round": index, "status": "failed"})
                )
                continue
            totals[side].append(record["compile_s"])
            records.append(
                emit(
                    {
                        "case": "qdax_compile",
                        "setting": "brax_qdax",
                        "side": side,
                        "round": index,
                        **{key: record[key] for key in ("compile_s", "wall_s")},
                        **{
                            key: record.get(key)
                            for key in ("init_compile_s", "update_compile_s", "top_programs")
                        },
                    }
                )
            )
    if totals["ours"] and totals["qdax"]:
        ours, qdax = statistics.median(totals["ours"]), statistics.median(totals["qdax"])
        records.append(
            emit(
                {
                    "case": "qdax_compile",
                    "setting": "brax_qdax",
                    "side": "median",
                    "rounds": rounds,
                    "ours_compile_s": ours,
                    "qdax_compile_s": qdax,
                    "ours_over_qdax": ours / qdax,
                    # a failed child leaves one side shorter: pair what both have
                    "ratios": [a / b for a, b in zip(totals["ours"], totals["qdax"], strict=False)],
                }
            )
        )
    return records


def run(suite: str, only: tuple[str, ...] = ("arm", "compile", "qdax_compile")) -> list[dict]:
    """Every record of ``suite`` (the cases in ``only``)."""
    setting = SIZES[check_suite(suite)]
    records = []
    if "arm" in only:
        records += arm_records(setting)
    if "compile" in only:
        records += compile_records(setting)
    elif "compile_parts" in only:
        records += [compile_parts_record(name) for name in setting["compile"] if name != "default"]
    if "qdax_compile" in only and suite != "toy":
        records += qdax_compile_record(setting["compile_rounds"])
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the CSV ('' = none)")
    parser.add_argument(
        "--only",
        default="arm,compile,qdax_compile",
        help="comma-separated cases: arm, compile, qdax_compile "
        "(compile_parts: only the per-part compile of compile)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("SETTING", "SIGMA", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--qdax-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.qdax_child:
        print(json.dumps(qdax_compile_child()), flush=True)
        return
    if args.child:
        setting, sigma, out_dir = args.child
        print(json.dumps(compile_child(setting, float(sigma), out_dir)), flush=True)
        return
    emit({"benchmark": "machine", "suite": args.suite, **machine_info()})
    records = run(args.suite, tuple(args.only.split(",")))  # printed as they come
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_csv(
            os.path.join(args.out, f"{NAME}_{args.suite}.csv"),
            [{"benchmark": NAME, "suite": args.suite, **r} for r in records],
        )


if __name__ == "__main__":
    main()
