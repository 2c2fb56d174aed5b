"""Sweep speed: one vmapped program for 8 runs versus the same 8 runs one after another, and
evaluation throughput over 1, 2, 4, 8 emulated devices. Prints one JSON object per line.

Part 1 (``"part": "sweep"``). The same 8 runs (seeds 0-7 of one experiment) advance
``--generations`` generations

* vmapped: ``jit(vmap(chunk))`` over the run axis, exactly what :func:`synprune_jax.sweeps.sweep`
  compiles for a group;
* sequential: ``jit(chunk)`` with the seed as a traced argument, compiled once and called for one
  run after another (the fastest sequential baseline: no compile and no file I/O per run);

and, in a second, fresh process with ``N`` devices (``--sweep-devices``; by default on a CPU host
the largest divisor of ``--runs`` not above the usable cores, one CPU device per core as
``synprune sweep`` creates them; the one-device variants never share a process with extra CPU
devices, which would change how XLA:CPU threads their programs):

* vmapped_sharded: the same vmapped chunk with the run axis split over the devices, as
  ``sweeps.sweep(devices=N)`` compiles it (nothing exchanged between devices during a chunk);
* sequential_task_devices: the runs one after another, each with its population sharded over the
  same devices (``task.devices=N``; MAP-Elites experiments): one-after-another runs that also use
  every core.

Compile seconds are reported separately; steady-state seconds are the median of ``--repeats``
timed passes after a warm-up pass, the variants of a process alternating pass by pass, with the
median process CPU time (all threads) of each; per-run arguments are sliced and placed before the
clock starts. ``speedup`` = sequential / vmapped steady-state seconds (one
device each); ``speedup_sharded`` = the faster of the two sequential variants (``best_sequential``)
/ vmapped_sharded, and ``speedup_sharded_per_cpu_s`` the same in CPU seconds. All variants use
one chunk body (:func:`synprune_jax.runner.scan_generations`) and file I/O is left out.
``max_abs_difference_final_qd_score(_sharded)`` compares the final QD-scores with the sequential
runs'.

Part 3 (``"part": "end_to_end"``, ``--end-to-end``). What a user waits for: the whole sweep through
the public API, :func:`synprune_jax.sweeps.sweep` (8 runs, one compiled program, run directories,
metrics and checkpoints written), against the same 8 runs one after another through
:func:`synprune_jax.runner.run` (what ``synprune run EXPERIMENT --set run.seed=i`` does 8 times,
without the process start-up); the sweep side creates its CPU devices as ``synprune sweep`` does.
Each side runs in a fresh subprocess, timed from after the
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


def _timed_call(function) -> tuple[float, float]:
    """(wall seconds, process CPU seconds, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def _task_devices_runner(experiment, overrides, num_devices, chunk_size):
    """One run's chunk with the population sharded over ``num_devices`` (``task.devices``), or
    ``None`` when the experiment has no ``task.devices`` option."""
    import jax

    from synprune_jax import config as config_lib
    from synprune_jax import runner
    from synprune_jax.experiments import get_experiment

    definition = get_experiment(experiment)
    config = definition.default_config()
    if "devices" not in config.get("task", {}):
        return None
    config = config_lib.apply_overrides(config, [*overrides, f"task.devices={num_devices}"])
    config["experiment"] = experiment
    built = definition.build(config)
    algorithm, hyper = built.algorithm, built.hyper
    init = jax.jit(lambda seed: runner.strong_types(algorithm.init(runner.init_key(seed), hyper)))

    def chunk(seed, state):
        step = lambda key, state: algorithm.step(key, state, hyper)
        return runner.scan_generations(step, seed, state, chunk_size)

    return init, jax.jit(chunk)


def sweep_benchmark(
    experiment: str,
    overrides: list[str],
    num_runs: int,
    generations: int,
    chunk_size: int,
    repeats: int,
    num_devices: int = 1,
    sharded_only: bool = False,
) -> dict:
    """Part 1 in this process. ``num_devices == 1``: the one-device variants (vmapped,
    sequential); ``sharded_only``: only the variants on ``num_devices`` devices (run in a process
    that has them, so that the one-device variants never share a process with extra CPU
    devices, which would change how XLA:CPU threads their programs)."""
    import jax
    import numpy as np

    from synprune_jax import runner, sharding, sweeps

    runs = sweeps.plan_runs(experiment, range(num_runs), None, overrides)
    members = sweeps.build_members(experiment, runs, ".")
    groups = sweeps.group_members(members)
    assert len(groups) == 1, "seeds only: one group"
    algorithm = members[0].built.algorithm
    seeds = np.arange(num_runs, dtype=np.uint32)
    hypers = runner.stack([m.built.hyper for m in members])

    def init_one(seed, hyper):
        return runner.strong_types(algorithm.init(runner.init_key(seed), hyper))

    def chunk(seed, hyper, state):
        step = lambda key, state: algorithm.step(key, state, hyper)
        return runner.scan_generations(step, seed, state, chunk_size)

    one = lambda tree, i: jax.tree_util.tree_map(lambda leaf: leaf[i], tree)
    first_device = jax.local_devices()[0]
    states = jax.device_put(jax.jit(jax.vmap(init_one))(seeds, hypers), first_device)
    jax.block_until_ready(states)

    num_chunks = max(1, generations // chunk_size)

    def run_vmapped(program, run_seeds, run_hypers, current):
        for _ in range(num_chunks):
            current, outputs = program(run_seeds, run_hypers, current)
        return jax.block_until_ready(current)

    variants, compile_s = {}, {}
    if not sharded_only:
        started = time.perf_counter()
        vmapped = jax.jit(jax.vmap(chunk)).lower(seeds, hypers, states).compile()
        compile_s["vmapped"] = time.perf_counter() - started
        started = time.perf_counter()
        single = jax.jit(chunk).lower(seeds[0], one(hypers, 0), one(states, 0)).compile()
        compile_s["sequential"] = time.perf_counter() - started
        variants["vmapped"] = lambda: run_vmapped(vmapped, seeds, hypers, states)
        # per-run arguments sliced and placed before any timing: the loop times only the calls
        run_args = [
            jax.device_put((seeds[index], one(hypers, index), one(states, index)), first_device)
            for index in range(num_runs)
        ]

        def run_sequential():
            finals = []
            for seed, hyper, current in run_args:
                for _ in range(num_chunks):
                    current, outputs = single(seed, hyper, current)
                finals.append(jax.block_until_ready(current))
            return finals

        variants["sequential"] = run_sequential

    if num_devices > 1:
        # The sweep as `sweeps.sweep(devices=num_devices)` runs it: the run axis split over the
        # devices (on a CPU host, one CPU device per core), nothing exchanged during a chunk.
        mesh = sharding.make_mesh(num_devices, "runs")
        lead = sharding.leading_axis_sharding(mesh)
        if num_runs % num_devices:
            raise SystemExit(f"--runs {num_runs} must be a multiple of the {num_devices} devices")
        put = lambda tree: None if tree is None else sharding.shard_leading_axis(tree, mesh)
        placed = (put(seeds), put(hypers), put(states))
        started = time.perf_counter()
        sharded = (
            jax.jit(jax.vmap(chunk), in_shardings=lead, out_shardings=lead).lower(*placed).compile()
        )
        compile_s["vmapped_sharded"] = time.perf_counter() - started
        variants["vmapped_sharded"] = lambda: run_vmapped(sharded, *placed)
        # The strongest one-after-another baseline that also uses every device: each run's
        # population sharded over the devices (`task.devices`), where the experiment has it.
        task_devices = _task_devices_runner(experiment, overrides, num_devices, chunk_size)
        if task_devices is not None:
            init, task_chunk = task_devices
            started = time.perf_counter()
            first_state = init(seeds[0])
            program = task_chunk.lower(seeds[0], first_state).compile()
            compile_s["sequential_task_devices"] = time.perf_counter() - started
            placement = program.input_shardings[0]
            task_args = [jax.device_put((seed, init(seed)), placement) for seed in seeds]

            def run_task_devices():
                finals = []
                for seed, current in task_args:
                    for _ in range(num_chunks):
                        current, outputs = program(seed, current)
                    finals.append(jax.block_until_ready(current))
                return finals

            variants["sequential_task_devices"] = run_task_devices

    # Warm up every variant, then alternate them pass by pass so that load changes on a shared
    # machine hit all of them alike.
    finals = {name: function() for name, function in variants.items()}
    calls = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            calls[name].append(_timed_call(function))
    steady = {name: statistics.median(wall for wall, _ in values) for name, values in calls.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in calls.items()}
    from synprune_jax.archives import qd_metrics

    offset = algorithm.config.qd_offset if hasattr(algorithm, "config") else 0.0
    final_scores = {}
    for name, final in finals.items():  # per run, to compare the variants' results
        runs_final = final if isinstance(final, list) else [one(final, i) for i in range(num_runs)]
        if hasattr(runs_final[0], "archive"):
            final_scores[name] = [
                float(qd_metrics(state.archive, offset)["qd_score"]) for state in runs_final
            ]
    generations_run = num_chunks * chunk_size
    return {
        "part": "sweep",
        "experiment": experiment,
        "overrides": overrides,
        "runs": num_runs,
        "generations": generations_run,
        "chunk_size": chunk_size,
        "repeats": repeats,
        "load_average": round(os.getloadavg()[0], 2),
        **{f"{name}_compile_s": round(value, 3) for name, value in compile_s.items()},
        **{f"{name}_steady_s": round(value, 4) for name, value in steady.items()},
        **{f"{name}_cpu_s": round(value, 4) for name, value in cpu.items()},
        **{
            f"{name}_runs_generations_per_s": round(num_runs * generations_run / value, 1)
            for name, value in steady.items()
        },
        "final_qd_scores": final_scores,
    }


def summarize_sweep(record: dict) -> dict:
    """Speed-ups and result differences of a part-1 record (one-device fields merged with the
    sharded child's): ``speedup`` = sequential / vmapped (one device); with the sharded variants,
    ``speedup_sharded`` = the faster sequential variant (``best_sequential``) / vmapped_sharded."""
    steady = {
        name[: -len("_steady_s")]: value
        for name, value in record.items()
        if name.endswith("_steady_s")
    }
    cpu = {
        name[: -len("_cpu_s")]: value for name, value in record.items() if name.endswith("_cpu_s")
    }
    scores = record.pop("final_qd_scores", {})
    reference = scores.get("sequential")

    def difference(name):
        if reference is None or name not in scores:
            return None
        return max(abs(a - b) for a, b in zip(scores[name], reference, strict=True))

    record["speedup"] = round(steady["sequential"] / steady["vmapped"], 2)
    record["max_abs_difference_final_qd_score"] = difference("vmapped")
    if "vmapped_sharded" in steady:
        baselines = [name for name in ("sequential", "sequential_task_devices") if name in steady]
        best = min(baselines, key=steady.get)
        record.update(
            {
                "best_sequential": best,
                "speedup_sharded": round(steady[best] / steady["vmapped_sharded"], 2),
                "speedup_sharded_vs_one_device_sequential": round(
                    steady["sequential"] / steady["vmapped_sharded"], 2
                ),
                "speedup_sharded_per_cpu_s": round(cpu[best] / cpu["vmapped_sharded"], 2),
                "max_abs_difference_final_qd_score_sharded": difference("vmapped_sharded"),
                "max_abs_difference_final_qd_score_task_devices": difference(
                    "sequential_task_devices"
                ),
            }
        )
    return record


def sharded_sweep_child(argv: list[str], num_devices: int) -> dict:
    """Runs this script's part 1 ``sharded_only`` in a fresh process with ``num_devices`` CPU
    devices (``JAX_NUM_CPU_DEVICES``, read by JAX at start) and returns its record."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(num_devices))
    env.pop("XLA_FLAGS", None)
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv, "--sharded-child", str(num_devices)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"sharded sweep child failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1])


def largest_divisor(num_runs: int, limit: int) -> int:
    """The largest divisor of ``num_runs`` not above ``limit`` (the sharded variant needs the runs
    to split evenly over its devices)."""
    return max(d for d in range(1, num_runs + 1) if num_runs % d == 0 and d <= limit)


END_TO_END_CHILD = r"""
import json, sys, time
from pathlib import Path
import jax
from synprune_jax.cli import _claim_sweep_cpu_devices
if sys.argv[1] == "sweep":  # as `synprune sweep` does: one CPU device per core, up to the runs
    _claim_sweep_cpu_devices(None, int(sys.argv[4]))
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
    sweeps.sweep(experiment, seeds=range(runs), out=out, overrides=overrides, report=False,
                 plots=False)
else:
    definition = get_experiment(experiment)
    for seed in range(runs):
        config = config_lib.apply_overrides(definition.default_config(),
                                            [*overrides, f"run.seed={seed}"])
        config["experiment"] = experiment
        built = definition.build(config)
        runner.run(built.algorithm, out / f"run-{seed:03d}", built.run_config, hyper=built.hyper)
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


def end_to_end_benchmark(
    experiment: str, overrides: list[str], num_runs: int, generations: int, chunk_size: int
) -> dict:
    """Part 3: ``sweeps.sweep`` vs ``runner.run`` per run, each side in a fresh process."""
    import tempfile

    overrides = [
        *overrides,
        f"run.num_generations={generations}",
        f"run.chunk_size={chunk_size}",
        "run.progress=false",
    ]
    records = []
    for cache in (False, True):
        sides = {}
        with tempfile.TemporaryDirectory() as directory:
            for side in ("sweep", "sequential"):
                out = os.path.join(directory, side)
                cache_dir = os.path.join(directory, f"cache-{side}") if cache else ""
                completed = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        END_TO_END_CHILD,
                        side,
                        experiment,
                        out,
                        str(num_runs),
                        json.dumps(overrides),
                        cache_dir,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if completed.returncode != 0:
                    tail = completed.stderr.strip().splitlines()[-1:] or ["?"]
                    return {"part": "end_to_end", "status": "error", "side": side, "error": tail[0]}
                sides[side] = json.loads(completed.stdout.strip().splitlines()[-1])
        sweep_s, sequential_s = sides["sweep"]["wall_s"], sides["sequential"]["wall_s"]
        records.append(
            {
                "persistent_cache": cache,
                "sweep_wall_s": round(sweep_s, 2),
                "sequential_wall_s": round(sequential_s, 2),
                "sweep_compile_s": round(sides["sweep"]["compile_s"], 2),
                "sequential_compile_s": round(sides["sequential"]["compile_s"], 2),
                "speedup": round(sequential_s / sweep_s, 2),
                "speedup_without_compile": round(
                    (sequential_s - sides["sequential"]["compile_s"])
                    / max(sweep_s - sides["sweep"]["compile_s"], 1e-9),
                    2,
                ),
            }
        )
    return {
        "part": "end_to_end",
        "experiment": experiment,
        "overrides": overrides,
        "runs": num_runs,
        "generations": generations,
        "results": records,
    }


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


def devices_benchmark(
    task: str,
    task_options: dict,
    population: int,
    repeats: int,
    counts: list[int],
    real_devices: bool,
) -> dict:
    results = []
    for count in counts:
        env = dict(os.environ)
        if not real_devices:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
            env["JAX_PLATFORMS"] = "cpu"
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(count))
        options = {
            "task": task,
            "task_options": task_options,
            "population": population,
            "repeats": repeats,
        }
        completed = subprocess.run(
            [sys.executable, "-c", DEVICE_CHILD, json.dumps(options)],
            env=env,
            capture_output=True,
            text=True,
        )
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode != 0 or not lines:
            raise RuntimeError(f"{count} devices failed:\n{completed.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    import numpy as np

    reference = np.asarray(results[0]["fitness"], np.float64)
    for result in results:
        fitness = np.asarray(result.pop("fitness"), np.float64)
        difference = np.abs(fitness - reference)
        result["max_abs_difference_vs_1"] = float(difference.max())
        result["max_rel_difference_vs_1"] = float(
            (difference / np.maximum(np.abs(reference), 1e-6)).max()
        )
    return {
        "part": "devices",
        "task": task,
        "task_options": task_options,
        "emulated": not real_devices,
        "results": results,
        "identical": all(r["fitness_sha1"] == results[0]["fitness_sha1"] for r in results),
    }


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
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also part 3: sweeps.sweep vs runner.run per run, fresh processes",
    )
    parser.add_argument(
        "--sweep-devices",
        type=int,
        default=None,
        help="devices for the sharded variants of part 1 (default: on a CPU "
        "host the largest divisor of --runs not above the cores, one CPU "
        "device per core as `synprune sweep` creates them; elsewhere of "
        "the local devices; 1 skips the sharded variants)",
    )
    parser.add_argument("--sharded-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = (
        args.set
        if args.set is not None
        else ["map_elites.batch_size=64", "map_elites.initial_batch_size=128"]
    )
    sweep_options = (
        args.experiment,
        overrides,
        args.runs,
        args.generations,
        args.chunk_size,
        args.repeats,
    )
    if args.sharded_child:  # the process with the devices (see sharded_sweep_child)
        _emit(sweep_benchmark(*sweep_options, num_devices=args.sharded_child, sharded_only=True))
        return 0
    import jax

    _emit(
        {
            "part": "environment",
            "backend": jax.default_backend(),
            "devices": jax.device_count(),
            "jax": jax.__version__,
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    )
    if not args.skip_sweep:
        record = sweep_benchmark(*sweep_options)  # one device, in this process
        if args.sweep_devices is not None:
            count = args.sweep_devices
        else:  # CPU: one device per usable core, created in the child; else the local devices
            from synprune_jax.cli import usable_cores

            limit = usable_cores() if jax.default_backend() == "cpu" else len(jax.local_devices())
            count = largest_divisor(args.runs, limit)
        record["devices"] = count
        if count > 1:
            child_argv = [
                "--experiment",
                args.experiment,
                "--runs",
                str(args.runs),
                "--generations",
                str(args.generations),
                "--chunk-size",
                str(args.chunk_size),
                "--repeats",
                str(args.repeats),
            ]
            for override in overrides:
                child_argv += ["--set", override]
            child = sharded_sweep_child(child_argv, count)
            for key, value in child.items():
                if key.startswith(("vmapped_sharded_", "sequential_task_devices_")):
                    record[key] = value
            record["final_qd_scores"].update(child["final_qd_scores"])
            record["load_average_sharded_child"] = child["load_average"]
        _emit(summarize_sweep(record))
    if args.end_to_end:
        _emit(
            end_to_end_benchmark(
                args.experiment, overrides, args.runs, args.generations, args.chunk_size
            )
        )
    if not args.skip_devices:
        task_options = (
            {
                "env_name": "hopper",
                "backend": "spring",
                "episode_length": 50,
                "hidden_sizes": [16, 16],
            }
            if args.device_task == "brax"
            else {"num_joints": 8, "genotype": "mlp", "hidden_sizes": [32]}
        )
        _emit(
            devices_benchmark(
                args.device_task,
                task_options,
                args.population,
                args.repeats,
                [int(c) for c in args.devices.split(",")],
                args.real_devices,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
