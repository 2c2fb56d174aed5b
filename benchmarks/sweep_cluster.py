"""Sweeps on a Ray cluster against a local sweep: runs per hour, Ray's overhead per task, the time
one killed worker costs. Prints one JSON object per line.

The same sweep (``--runs`` runs of ``--experiment``, seeds ``0..runs-1``, ``--generations``
generations, no per-run reports) runs through ``synprune sweep`` in a fresh driver process, as

* ``local-1``: a local sweep on one CPU device, the process pinned to one core;
* ``ray-1``: on a Ray cluster of one worker node (one CPU, its raylet and workers pinned to core
  0), the head node scheduling nothing;
* ``local-2``: a local sweep on two CPU devices (one per core), the process pinned to two cores;
* ``ray-2``: on a Ray cluster of two worker nodes, each pinned to its own core;
* ``ray-2-killed``: as ``ray-2``, with one task's worker process killed (``kill -9``) as soon as
  the first checkpoint is on disk; its task is submitted again and resumes from that checkpoint.

Each cluster is ``ray.cluster_utils.Cluster`` on this machine (every node its own raylet process).
A cluster sweep over ``n`` one-CPU slots runs tasks of ``runs / n`` runs, the share of each device
in the local sweep over ``n`` devices (the tables are compared: ``same_table``). The persistent
compilation cache is off everywhere, so every side compiles its program once per task (the
compile seconds, read from ``timing.json``, are reported apart). Reported per variant: the
driver's wall seconds from start to exit (process start and imports included), runs per hour,
compile seconds, and for the cluster variants Ray's overhead per task (``overhead_s`` of
``timing.json``: the driver's seconds from submission to result minus the task's own seconds on
its worker: scheduling, worker start and imports, transfers), the retried runs; ``lost_s`` =
``ray-2-killed`` minus ``ray-2`` wall seconds. ``--repeats`` passes alternate the variants.

    python benchmarks/sweep_cluster.py                       # me-arm, 16 runs x 100 generations
    python benchmarks/sweep_cluster.py --runs 16 --generations 300 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _environment() -> dict:
    environment = dict(os.environ, JAX_PLATFORMS="cpu", RAY_AUTH_MODE="disabled")
    environment["SYNPRUNE_NO_CACHE"] = "1"
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    environment.pop("XLA_FLAGS", None)
    return environment


def _pin_tree(pid: int, cores: set[int]) -> None:
    """Pins a process and its descendants (a raylet and the workers it started) to ``cores``;
    workers it starts later inherit the raylet's affinity."""
    import psutil

    process = psutil.Process(pid)
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that already ended
            each.cpu_affinity(sorted(cores))


def _start_cluster(workers: int):
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update(_environment())
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        for core in range(workers):
            node = cluster.add_node(num_cpus=1)
            _pin_tree(node.all_processes["raylet"][0].process.pid, {core})
        cluster.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return cluster


def _command(args, out: Path, *extra: str) -> list[str]:
    sets = [
        f"run.num_generations={args.generations}",
        "run.chunk_size=10",
        f"run.checkpoint_every={args.checkpoint_every}",
        *args.set,
    ]
    return [
        sys.executable,
        "-m",
        "synprune_jax.cli",
        "sweep",
        args.experiment,
        "--seeds",
        f"0-{args.runs - 1}",
        "--out",
        str(out),
        "--no-report",
        *[part for item in sets for part in ("--set", item)],
        *extra,
    ]


def _task_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::run_task"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _run_variant(name: str, command: list[str], out: Path, *, cores: set[int], kill: bool):
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    killed_at = None
    if kill:
        while process.poll() is None and killed_at is None:
            pids = _task_pids()
            if pids and any(out.glob("runs/*/checkpoints/*")):
                os.kill(pids[0], signal.SIGKILL)
                killed_at = time.perf_counter() - started
            time.sleep(0.1)
    output = process.communicate()[0]
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{output[-3000:]}")
    timing = json.loads((out / "timing.json").read_text())
    if "cluster" in timing:
        parts = [part for task in timing["tasks"] for part in task["parts"]]
        overheads = [task["overhead_s"] for task in timing["tasks"]]
        extra = {
            "tasks": timing["cluster"]["tasks"],
            "retried_runs": timing["cluster"]["retried_runs"],
            "overhead_per_task_s": sum(overheads) / len(overheads),
            "overhead_max_s": max(overheads),
        }
    else:
        parts, extra = timing["groups"], {}
    compile_s = [
        (part["init_compile_s"] or 0.0) + sum(part["chunk_compile_s"].values()) for part in parts
    ]
    return {
        "variant": name,
        "wall_s": wall,
        "runs_per_hour": 3600.0 * len(_runs(out)) / wall,
        "compile_s_per_program": sum(compile_s) / len(compile_s),
        "programs": len(compile_s),
        "killed_at_s": killed_at,
        **extra,
    }


def _runs(out: Path) -> list[Path]:
    return sorted(out.glob("runs/run-*"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="me-arm")
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    import pandas as pd
    import ray

    _emit(
        {
            "part": "setup",
            "experiment": args.experiment,
            "runs": args.runs,
            "generations": args.generations,
            "ray": ray.__version__,
            "cores": sorted(os.sched_getaffinity(0)),
        }
    )
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores")
    results: dict[str, list[dict]] = {}
    tables: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="sweep-cluster-") as scratch:
        for repeat in range(args.repeats):
            for workers in (1, 2):
                local = Path(scratch, f"local-{workers}-{repeat}")
                record = _run_variant(
                    f"local-{workers}",
                    _command(args, local, "--devices", str(workers)),
                    local,
                    cores=set(range(workers)),
                    kill=False,
                )
                tables[f"local-{workers}"] = pd.read_parquet(local / "results.parquet")
                _emit({"part": "variant", "repeat": repeat, **record})
                results.setdefault(record["variant"], []).append(record)
                cluster = _start_cluster(workers)
                try:
                    names = [f"ray-{workers}"] + ([f"ray-{workers}-killed"] if workers == 2 else [])
                    for name in names:
                        out = Path(scratch, f"{name}-{repeat}")
                        record = _run_variant(
                            name,
                            _command(args, out, "--cluster", cluster.address),
                            out,
                            cores={0},
                            kill=name.endswith("killed"),
                        )
                        table = pd.read_parquet(out / "results.parquet")
                        record["same_table"] = bool(table.equals(tables[f"local-{workers}"]))
                        _emit({"part": "variant", "repeat": repeat, **record})
                        results.setdefault(name, []).append(record)
                finally:
                    cluster.shutdown()

    def median(name: str, key: str) -> float:
        values = sorted(record[key] for record in results[name])
        return values[len(values) // 2]

    _emit(
        {
            "part": "summary",
            **{
                f"{name}_runs_per_hour": median(name, "runs_per_hour")
                for name in ("local-1", "ray-1", "local-2", "ray-2", "ray-2-killed")
            },
            "ray_overhead_per_task_s": median("ray-2", "overhead_per_task_s"),
            "lost_to_one_killed_worker_s": median("ray-2-killed", "wall_s")
            - median("ray-2", "wall_s"),
            "ray_2_over_local_2_wall": median("ray-2", "wall_s") / median("local-2", "wall_s"),
        }
    )


if __name__ == "__main__":
    main()
