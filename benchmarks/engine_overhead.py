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
  evaluation, + the insertion, + the metrics; each part is the difference of two medians.
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
  ``scan_update``), cold, in the bench environment where QDax is installed; skipped otherwise.

    python -m benchmarks.engine_overhead --suite quick
    python -m benchmarks.engine_overhead --suite quick --only arm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import (RESULTS_DIR, SUITES, check_suite, emit, interleaved_medians,
                        machine_info, peer_status, run_and_report)

NAME = "engine_overhead"

#: hucebot/fast_map-elites, clang -O3, Iso+LineDD, 10-DoF arm, 64 x 64 grid, batch 128, one
#: thread, measured on this machine kind (see the issue and ../shared/ENVIRONMENT.md).
REFERENCE_CPP_SECONDS_PER_MILLION = 0.306

SIZES = {
    "toy": {"batches": (64,), "evaluations": 20_000, "chunk": 100, "rounds": 3,
            "compile": ("default",)},
    "quick": {"batches": (128, 1024, 4096), "evaluations": 1_000_000, "chunk": 500,
              "rounds": 5, "compile": ("default", "brax_qdax")},
    "full": {"batches": (128, 1024, 4096), "evaluations": 1_000_000, "chunk": 500,
             "rounds": 15, "compile": ("default", "brax_qdax")},
}

PART_PROGRAMS = ("emit", "evaluate", "insert", "full")

#: ``synprune run`` overrides of each compile setting (one chunk of generations, no progress).
COMPILE_SETTINGS = {
    "default": ["--set", "run.num_generations=10"],
    "brax_qdax": ["--set", "task.env_name=walker2d", "--set", "task.hidden_sizes=[64,64]",
                  "--set", "task.descriptors=[feet_contact]", "--set", "archive.kind=cvt",
                  "--set", "archive.num_cells=1024", "--set", "map_elites.batch_size=256",
                  "--set", "map_elites.initial_batch_size=256",
                  "--set", "run.num_generations=10"],
}


def arm_setting(batch: int = 128):
    """``(algorithm, hyper)``: MAP-Elites on the 10-joint arm, direct genotype, 64 x 64 grid
    over the tip, ``batch`` offspring (and initial individuals), sigma 0.01, no flips."""
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import KinematicArm
    from synprune_jax.variation import MutationConfig

    task = KinematicArm(num_joints=10, genotype="angles")
    config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (64, 64)),
                             batch_size=batch, initial_batch_size=batch, qd_offset=0.0,
                             mutation=MutationConfig(forward_prune=False, flips=False))
    algorithm = MapElites(config, task)
    return algorithm, algorithm.default_hyper.replace(sigma=0.01, p_disconnect=0.0,
                                                      p_connect=0.0)


def part_step(algorithm, hyper, part: str):
    """``(key, state) -> (state, metrics)``: one generation cut after ``part`` (one of
    :data:`PART_PROGRAMS`; ``"full"`` is ``algorithm.step``). A cut generation keeps what it
    computed alive by folding one value of it into the archive's fitness (``+ 0 * value``)."""
    import jax

    from synprune_jax.archives import add

    if part == "full":
        return lambda key, state: algorithm.step(key, state, hyper)
    config, task, emitter = algorithm.config, algorithm.task, algorithm.emitter

    def keep(state, value):
        fitness = state.archive.fitness + 0.0 * value
        return state.replace(archive=state.archive.replace(fitness=fitness)), {}

    def step(key, state):
        key_emit, key_eval = jax.random.split(key)
        offspring, _ = emitter.emit(key_emit, state.archive, None, hyper)
        if part == "emit":
            return keep(state, sum(leaf.reshape(-1)[0] for leaf in
                                   jax.tree_util.tree_leaves(offspring.params)))
        result = task.evaluate(key_eval, offspring)
        if part == "evaluate":
            return keep(state, result.fitness[0] + result.descriptors[0, 0])
        archive, _ = add(config.archive, state.archive, offspring, result)
        return state.replace(archive=archive), {}

    return step


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
        init = jax.jit(lambda key: runner.strong_types(algorithm.init(key, hyper)))
        initial = init(runner.init_key(0))
        compiled, compile_s = {}, {}
        for part in PART_PROGRAMS:
            step = part_step(algorithm, hyper, part)
            program = jax.jit(lambda state, seed, step=step: runner.scan_generations(
                step, seed, state, chunk), donate_argnums=0)
            start = time.perf_counter()
            compiled[part] = program.lower(initial, np.uint32(0)).compile()
            compile_s[part] = time.perf_counter() - start
        # the run: the runner's chunk (full step, every generation's metrics to the host)
        state = jax.tree_util.tree_map(jax.numpy.copy, initial)
        wall, cpu = 0.0, 0.0
        for _ in range(chunks):
            start, start_cpu = time.perf_counter(), time.process_time()
            state, outputs = compiled["full"](state, np.uint32(0))
            jax.device_get(outputs)
            wall += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
        evaluations = chunk * chunks * batch
        fitness = np.asarray(state.archive.fitness)
        filled = np.isfinite(fitness)
        records.append({
            "case": "arm", "program": "run", "batch": batch, "cells": int(fitness.size),
            "generations": chunk * chunks, "evaluations": evaluations,
            "wall_s_per_million": wall * 1e6 / evaluations,
            "cpu_s_per_million": cpu * 1e6 / evaluations,
            "cells_filled": int(filled.sum()), "qd_score": float(fitness[filled].sum()),
            "chunk_compile_s": compile_s["full"],
            "reference_cpp_seconds_per_million": REFERENCE_CPP_SECONDS_PER_MILLION})
        emit(records[-1])
        # parts: the four cut programs alternately, each from its own copy of the start state
        states = {part: jax.tree_util.tree_map(jax.numpy.copy, initial) for part in compiled}

        def call(part):
            def go():
                states[part], outputs = compiled[part](states[part], np.uint32(0))
                return jax.device_get(outputs)
            return go

        timed = interleaved_medians({part: call(part) for part in PART_PROGRAMS},
                                    setting["rounds"])
        per_gen = {part: timed[part]["median_s"] / chunk * 1e6 for part in PART_PROGRAMS}
        per_gen_cpu = {part: timed[part]["median_cpu_s"] / chunk * 1e6 for part in PART_PROGRAMS}
        split = {"emit": per_gen["emit"],
                 "evaluate": per_gen["evaluate"] - per_gen["emit"],
                 "insert": per_gen["insert"] - per_gen["evaluate"],
                 "metrics": per_gen["full"] - per_gen["insert"]}
        records.append({
            "case": "arm", "program": "parts", "batch": batch, "rounds": setting["rounds"],
            "generation_us": per_gen["full"], "generation_cpu_us": per_gen_cpu["full"],
            **{f"{name}_us": value for name, value in split.items()},
            **{f"{part}_compile_s": compile_s[part] for part in PART_PROGRAMS}})
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
        lambda event, seconds, **kw: compiles.append((kw.get("fun_name", "?"), seconds))
        if event == "/jax/core/compile/backend_compile_duration" else None)
    jax.monitoring.register_event_listener(
        lambda event, **kw: events.__setitem__(event, events.get(event, 0) + 1)
        if "compilation_cache" in event else None)
    from synprune_jax import cli

    start = time.perf_counter()
    code = cli.main(["run", "me-prune", "--out", out_dir, "--set", "run.progress=false",
                     "--set", f"mutation.sigma={sigma}", *COMPILE_SETTINGS[setting]])
    total = time.perf_counter() - start
    slow = sorted(compiles, key=lambda item: -item[1])
    return {"exit": code, "wall_s": total, "programs": len(compiles),
            "compile_s": sum(seconds for _, seconds in compiles),
            "top_programs": [[name, round(seconds, 2)] for name, seconds in slow[:6]],
            "cache_hits": events.get("/jax/compilation_cache/cache_hits", 0),
            "cache_misses": events.get("/jax/compilation_cache/cache_misses", 0)}


def compile_records(setting: dict) -> list[dict]:
    """The ``compile`` case: cold then warm (another sigma) child processes per setting."""
    records = []
    for name in setting["compile"]:
        with tempfile.TemporaryDirectory(prefix="synprune_compile_") as scratch:
            env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(scratch, "cache")}
            for phase, sigma in (("cold", 0.05), ("warm", 0.02)):
                command = [sys.executable, "-m", "benchmarks.engine_overhead", "--child",
                           name, str(sigma), os.path.join(scratch, phase)]
                done = subprocess.run(command, capture_output=True, text=True, env=env,
                                      cwd=os.path.dirname(os.path.dirname(
                                          os.path.abspath(__file__))))
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode != 0 or not lines:
                    record = {"case": "compile", "setting": name, "phase": phase,
                              "status": "failed", "stderr": done.stderr[-600:]}
                else:
                    record = {"case": "compile", "setting": name, "phase": phase,
                              "sigma": sigma, **json.loads(lines[-1])}
                records.append(emit(record))
    return records


def qdax_compile_record() -> list[dict]:
    """QDax 0.5's compile time on the ``brax_qdax`` setting (init + one scan_update)."""
    usable, reason = peer_status("qdax")
    if not usable:
        return [emit({"case": "qdax_compile", "status": "skipped", "reason": reason})]
    import jax

    from benchmarks.qdax_map_elites import build_qdax

    start = time.perf_counter()
    side = build_qdax({"env": "walker2d", "episode_length": 100, "hidden": (64, 64),
                       "cvt_cells": 1024, "chunk": 1}, 256)
    return [emit({"case": "qdax_compile", "setting": "brax_qdax",
                  "init_compile_s": side.init_compile_s,
                  "update_compile_s": side.chunk_compile_s,
                  "compile_s": side.init_compile_s + side.chunk_compile_s,
                  "wall_s": time.perf_counter() - start, "jax": jax.__version__})]


def run(suite: str, only: tuple[str, ...] = ("arm", "compile", "qdax_compile")) -> list[dict]:
    """Every record of ``suite`` (the cases in ``only``)."""
    setting = SIZES[check_suite(suite)]
    records = []
    if "arm" in only:
        records += arm_records(setting)
    if "compile" in only:
        records += compile_records(setting)
    if "qdax_compile" in only and suite != "toy":
        records += qdax_compile_record()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the CSV ('' = none)")
    parser.add_argument("--only", default="arm,compile,qdax_compile",
                        help="comma-separated cases: arm, compile, qdax_compile")
    parser.add_argument("--child", nargs=3, metavar=("SETTING", "SIGMA", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        setting, sigma, out_dir = args.child
        print(json.dumps(compile_child(setting, float(sigma), out_dir)), flush=True)
        return
    emit({"benchmark": "machine", "suite": args.suite, **machine_info()})
    records = run(args.suite, tuple(args.only.split(",")))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    run_and_report(NAME, [], None, args.suite)  # records were printed as they came
    if args.out:
        from benchmarks import write_csv

        write_csv(os.path.join(args.out, f"{NAME}_{args.suite}.csv"),
                  [{"benchmark": NAME, "suite": args.suite, **r} for r in records])


if __name__ == "__main__":
    main()
