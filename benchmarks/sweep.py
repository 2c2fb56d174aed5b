"""Sweep speed: one vmapped program for 8 runs versus the same 8 runs one after another, and
evaluation throughput over 1, 2, 4, 8 emulated devices. Prints one JSON object per line.

Part 1 (``"part": "sweep"``). The same 8 runs (seeds 0-7 of one experiment) advance
``--generations`` generations

* vmapped: ``jit(vmap(chunk))`` over the run axis, exactly what :func:`synprune_jax.sweeps.sweep`
  compiles for a group;
* sequential: ``jit(chunk)`` with the seed as a traced argument, compiled once and called for one
  run after another (the fastest sequential baseline: no compile and no file I/O per run).

Compile seconds are reported separately; steady-state seconds are the median of ``--repeats``
timed passes after a warm-up pass, the two paths alternating pass by pass. ``speedup`` = sequential / vmapped steady-state seconds.
Both paths use one chunk body (:func:`synprune_jax.runner.scan_generations`) and file I/O is left
out. ``max_abs_difference`` compares the final QD-scores of the two paths.

Part 3 (``"part": "end_to_end"``, ``--end-to-end``). What a user waits for: the whole sweep through
the public API, :func:`synprune_jax.sweeps.sweep` (8 runs, one compiled program, run directories,
metrics and checkpoints written), against the same 8 runs one after another through
:func:`synprune_jax.runner.run` (what ``synprune run EXPERIMENT --set run.seed=i`` does 8 times,
without the process start-up). Each side runs in a fresh subprocess, timed from after the
imports to the end, twice: with the persistent compilation cache off (each ``run`` call compiles
its own program) and with a fresh one on, as the CLI keeps it (runs that differ only in their seed
then load the first run's program from the cache: the seed is an argument of the runner's
program, not a constant in it). The compile (or cache load) seconds inside each side are read
from the runs' ``timing.json`` and reported apart.

Part 2 (``"part": "devices"``). For 1, 2, 4, 8 devices a subprocess with
``--xla_force_host_platform_device_count=n`` evaluates one population with
:class:`synprune_jax.sharding.ShardedTask` (``shard_map`` over the population axis) and reports
individuals per second, a checksum of the fitness and its largest absolute / relative difference
from the 1-device fitness; ``identical`` says whether every device count gave the 1-device fitness
bit for bit (XLA:CPU may pick other kernels for other per-device batch sizes, so the last bits can
differ). On a CPU the emulated devices share the same cores,
so this is a correctness check, not a scaling figure; on an accelerator host, run it with the
real devices (``--real-devices``).

    python benchmarks/sweep.py                      # me-arm, 8 runs, then 1/2/4/8 devices
    python benchmarks/sweep.py --experiment me-prune --set task.episode_length=50 \\
        --set map_elites.batch_size=64 --generations 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def sweep_benchmark(experiment: str, overrides: list[str], num_runs: int, generations: int,
                    chunk_size: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from synprune_jax import runner, sweeps

    runs = sweeps.plan_runs(experiment, range(num_runs), None, overrides)
    members = sweeps.build_members(experiment, runs, ".")
    groups = sweeps.group_members(members)
    assert len(groups) == 1, "seeds only: one group"
    algorithm = members[0].built.algorithm
    adapter = sweeps.adapter_for(algorithm)
    seeds = np.arange(num_runs, dtype=np.uint32)
    hypers = sweeps._stack([m.hyper for m in members]) if members[0].hyper is not None else None

    def init_one(seed, hyper):
        return runner._strong_types(adapter.init(algorithm, runner.init_key(seed), hyper))

    def chunk(seed, hyper, state):
        step = lambda key, state: adapter.step(algorithm, key, state, hyper)
        return runner.scan_generations(step, seed, state, chunk_size)

    one = lambda tree, i: jax.tree_util.tree_map(lambda leaf: leaf[i], tree)
    states = jax.jit(jax.vmap(init_one))(seeds, hypers)
    jax.block_until_ready(states)

    started = time.perf_counter()
    vmapped = jax.jit(jax.vmap(chunk)).lower(seeds, hypers, states).compile()
    vmapped_compile = time.perf_counter() - started
    started = time.perf_counter()
    single = jax.jit(chunk).lower(seeds[0], one(hypers, 0), one(states, 0)).compile()
    single_compile = time.perf_counter() - started
    num_chunks = max(1, generations // chunk_size)

    def run_vmapped():
        current = states
        for _ in range(num_chunks):
            current, outputs = vmapped(seeds, hypers, current)
        return jax.block_until_ready(current)

    def run_sequential():
        finals = []
        for index in range(num_runs):
            current = one(states, index)
            for _ in range(num_chunks):
                current, outputs = single(seeds[index], one(hypers, index), current)
            finals.append(jax.block_until_ready(current))
        return finals

    # Warm up both, then alternate them so that load changes on a shared machine hit both alike.
    run_vmapped(), run_sequential()
    vmapped_times, sequential_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        vmapped_final = run_vmapped()
        vmapped_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        sequential_final = run_sequential()
        sequential_times.append(time.perf_counter() - started)
    vmapped_s = statistics.median(vmapped_times)
    sequential_s = statistics.median(sequential_times)
    from synprune_jax.archives import qd_metrics

    offset = algorithm.config.qd_offset if hasattr(algorithm, "config") else 0.0
    difference = 0.0
    if hasattr(vmapped_final, "archive"):
        for index, final in enumerate(sequential_final):
            a = float(qd_metrics(one(vmapped_final, index).archive, offset)["qd_score"])
            b = float(qd_metrics(final.archive, offset)["qd_score"])
            difference = max(difference, abs(a - b))
    generations_run = num_chunks * chunk_size
    return {
        "part": "sweep", "experiment": experiment, "overrides": overrides, "runs": num_runs,
        "generations": generations_run, "chunk_size": chunk_size, "repeats": repeats,
        "vmapped_compile_s": round(vmapped_compile, 3),
        "sequential_compile_s": round(single_compile, 3),
        "vmapped_steady_s": round(vmapped_s, 4), "sequential_steady_s": round(sequential_s, 4),
        "vmapped_runs_generations_per_s": round(num_runs * generations_run / vmapped_s, 1),
        "sequential_runs_generations_per_s": round(num_runs * generations_run / sequential_s, 1),
        "speedup": round(sequential_s / vmapped_s, 2),
        "max_abs_difference_final_qd_score": difference,
    }


END_TO_END_CHILD = r"""
import json, sys, time
from pathlib import Path
import jax
if sys.argv[6]:  # a fresh persistent compilation cache, as the CLI keeps one
    jax.config.update("jax_compilation_cache_dir", sys.argv[6])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
else:
    jax.config.update("jax_enable_compilation_cache", False)
from synprune_jax import config as config_lib, runner, sweeps
from synprune_jax.experiments import get_experiment

side, experiment, out, runs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
overrides = json.loads(sys.argv[5])
started = time.perf_counter()
if side == "sweep":
    sweeps.sweep(experiment, seeds=range(runs), out=out, overrides=overrides, devices=1,
                 report=False, plots=False)
else:
    definition = get_experiment(experiment)
    for seed in range(runs):
        config = config_lib.apply_overrides(definition.default_config(),
                                            [*overrides, f"run.seed={seed}"])
        config["experiment"] = experiment
        built = definition.build(config)
        runner.run(built.algorithm, out / f"run-{seed:03d}", built.run_config)
wall = time.perf_counter() - started
compile_s = 0.0
for timing in out.rglob("timing.json"):
    record = json.loads(timing.read_text())
    for entry in record.get("groups", [record]):  # a sweep's file lists its groups
        compile_s += float(entry.get("init_compile_s") or 0.0)
        compile_s += sum(float(v) for v in (entry.get("chunk_compile_s") or {}).values())
print(json.dumps({"wall_s": wall, "compile_s": compile_s,
                  "timing_files": len(list(out.rglob("timing.json")))}))
"""


def end_to_end_benchmark(experiment: str, overrides: list[str], num_runs: int,
                         generations: int, chunk_size: int) -> dict:
    """Part 3: ``sweeps.sweep`` vs ``runner.run`` per run, each side in a fresh process."""
    import tempfile

    overrides = [*overrides, f"run.num_generations={generations}", f"run.chunk_size={chunk_size}",
                 "run.progress=false"]
    records = []
    for cache in (False, True):
        sides = {}
        with tempfile.TemporaryDirectory() as directory:
            for side in ("sweep", "sequential"):
                out = os.path.join(directory, side)
                cache_dir = os.path.join(directory, f"cache-{side}") if cache else ""
                completed = subprocess.run(
                    [sys.executable, "-c", END_TO_END_CHILD, side, experiment, out,
                     str(num_runs), json.dumps(overrides), cache_dir],
                    capture_output=True, text=True, check=False)
                if completed.returncode != 0:
                    tail = completed.stderr.strip().splitlines()[-1:] or ["?"]
                    return {"part": "end_to_end", "status": "error", "side": side,
                            "error": tail[0]}
                sides[side] = json.loads(completed.stdout.strip().splitlines()[-1])
        sweep_s, sequential_s = sides["sweep"]["wall_s"], sides["sequential"]["wall_s"]
        records.append({
            "persistent_cache": cache,
            "sweep_wall_s": round(sweep_s, 2), "sequential_wall_s": round(sequential_s, 2),
            "sweep_compile_s": round(sides["sweep"]["compile_s"], 2),
            "sequential_compile_s": round(sides["sequential"]["compile_s"], 2),
            "speedup": round(sequential_s / sweep_s, 2),
            "speedup_without_compile": round(
                (sequential_s - sides["sequential"]["compile_s"])
                / max(sweep_s - sides["sweep"]["compile_s"], 1e-9), 2),
        })
    return {"part": "end_to_end", "experiment": experiment, "overrides": overrides,
            "runs": num_runs, "generations": generations, "results": records}


DEVICE_CHILD = r"""
import hashlib, json, statistics, sys, time
import jax, numpy as np
from synprune_jax import sharding
from synprune_jax.algorithms import map_elites
from synprune_jax.archives import GridSpec
from synprune_jax.tasks import make_task
options = json.loads(sys.argv[1])
task = make_task(options["task"], **{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in options["task_options"].items()})
lower, upper = task.descriptor_bounds()
config = map_elites.MapElitesConfig(archive=GridSpec(tuple(lower), tuple(upper), (4,) * len(lower)),
                                    mutation=map_elites.MutationConfig(forward_prune=False))
population = map_elites.random_population(jax.random.key(0), task, config,
                                          map_elites.MutationHyper(), options["population"])
mesh = sharding.make_mesh()
wrapped = sharding.ShardedTask(task, mesh)
population = sharding.shard_leading_axis(population, mesh)
key = jax.random.key(1)
started = time.perf_counter()
evaluate = jax.jit(wrapped.evaluate).lower(key, population).compile()
compile_s = time.perf_counter() - started
jax.block_until_ready(evaluate(key, population))
times = []
for _ in range(options["repeats"]):
    started = time.perf_counter()
    result = jax.block_until_ready(evaluate(key, population))
    times.append(time.perf_counter() - started)
fitness = np.asarray(result.fitness)
seconds = statistics.median(times)
print("RESULT " + json.dumps({
    "devices": jax.device_count(), "population": options["population"],
    "compile_s": round(compile_s, 3), "seconds": round(seconds, 5),
    "individuals_per_s": round(options["population"] / seconds, 1),
    "env_steps_per_s": round(options["population"] * task.env_steps_per_individual / seconds, 1),
    "fitness_sha1": hashlib.sha1(fitness.tobytes()).hexdigest(), "fitness": fitness.tolist()}))
"""


def devices_benchmark(task: str, task_options: dict, population: int, repeats: int,
                      counts: list[int], real_devices: bool) -> dict:
    results = []
    for count in counts:
        env = dict(os.environ)
        if not real_devices:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
            env["JAX_PLATFORMS"] = "cpu"
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(count))
        options = {"task": task, "task_options": task_options, "population": population,
                   "repeats": repeats}
        completed = subprocess.run([sys.executable, "-c", DEVICE_CHILD, json.dumps(options)],
                                   env=env, capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode != 0 or not lines:
            raise RuntimeError(f"{count} devices failed:\n{completed.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    import numpy as np

    reference = np.asarray(results[0]["fitness"], np.float64)
    for result in results:
        fitness = np.asarray(result.pop("fitness"), np.float64)
        difference = np.abs(fitness - reference)
        result["max_abs_difference_vs_1"] = float(difference.max())
        result["max_rel_difference_vs_1"] = float(
            (difference / np.maximum(np.abs(reference), 1e-6)).max())
    return {"part": "devices", "task": task, "task_options": task_options,
            "emulated": not real_devices, "results": results,
            "identical": all(r["fitness_sha1"] == results[0]["fitness_sha1"] for r in results)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="me-arm")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device-task", default="brax")
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--real-devices", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-devices", action="store_true")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also part 3: sweeps.sweep vs runner.run per run, fresh processes")
    args = parser.parse_args(argv)
    overrides = args.set if args.set is not None else [
        "map_elites.batch_size=64", "map_elites.initial_batch_size=128"]
    import jax

    _emit({"part": "environment", "backend": jax.default_backend(),
           "devices": jax.device_count(), "jax": jax.__version__,
           "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    if not args.skip_sweep:
        _emit(sweep_benchmark(args.experiment, overrides, args.runs, args.generations,
                              args.chunk_size, args.repeats))
    if args.end_to_end:
        _emit(end_to_end_benchmark(args.experiment, overrides, args.runs, args.generations,
                                   args.chunk_size))
    if not args.skip_devices:
        task_options = ({"env_name": "hopper", "backend": "spring", "episode_length": 50,
                         "hidden_sizes": [16, 16]} if args.device_task == "brax"
                        else {"num_joints": 8, "genotype": "mlp", "hidden_sizes": [32]})
        _emit(devices_benchmark(args.device_task, task_options, args.population, args.repeats,
                                [int(c) for c in args.devices.split(",")], args.real_devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
