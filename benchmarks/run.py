"""One entry point for the whole benchmark suite.

    python -m benchmarks.run --suite quick          # minutes on a laptop CPU
    python -m benchmarks.run --suite full           # the published tables (much longer)
    python -m benchmarks.run --suite quick --only archive_insertion,arm_million

Each benchmark runs in its own Python process (clean peak memory, no compilation cache or
configuration leaking from one to the next), prints JSON lines, and writes
``benchmarks/results/<benchmark>_<suite>.csv``; this script passes the lines through, writes
``machine_<suite>.csv`` (CPU model, jax and peer versions, date, load) and finishes with one
``{"benchmark": "suite", ...}`` line listing what ran, what failed and which peers were missing.
A missing peer (QDax) is reported and the rest runs. A failing benchmark is reported and the
suite goes on; the exit status is then 1.

Peers live in a separate environment (``pip install -e ".[bench]"``): run the suite with that
environment's Python to include them. Plots: ``python -m benchmarks.plot --suite quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import RESULTS_DIR, SUITES, emit, machine_info, peer_status, write_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Cheap ones first, so a partial run still has them.
BENCHMARKS = (
    "archive_insertion",
    "masked_vs_dense",
    "arm_million",
    "scaling",
    "qdax_map_elites",
    "es_brax",
    "throughput",
    "task_suites",
    "engine_overhead",
    "pruned_inference",
)


def command_for(name: str, suite: str, out_dir: str) -> list[str] | None:
    """The command line of one benchmark, or ``None`` when its script is absent."""
    here = os.path.join(ROOT, "benchmarks")
    if name == "throughput":  # the engine-overhead script: its own flags, no CSV of its own
        if not os.path.exists(os.path.join(here, "throughput.py")):
            return None
        return [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            *(["--quick"] if suite != "full" else []),
        ]
    if not os.path.exists(os.path.join(here, f"{name}.py")):
        return None
    if name == "es_brax":  # written by the evolution-strategies work: run as its own script
        return [
            sys.executable,
            os.path.join(here, "es_brax.py"),
            *(["--quick"] if suite != "full" else []),
        ]
    if name == "task_suites":  # engine vs bare rollout per task suite: its own flags
        return [
            sys.executable,
            "-m",
            "benchmarks.task_suites",
            *(["--quick"] if suite != "full" else []),
        ]
    return [sys.executable, "-m", f"benchmarks.{name}", "--suite", suite, "--out", out_dir]


def run_one(name: str, suite: str, out_dir: str, timeout: float | None) -> dict:
    """Runs one benchmark process, streams its JSON lines, returns a summary record."""
    command = command_for(name, suite, out_dir)
    if command is None:
        return emit(
            {
                "benchmark": name,
                "suite": suite,
                "status": "absent",
                "detail": f"benchmarks/{name}.py does not exist",
            }
        )
    start = time.perf_counter()
    records = []
    with subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            stdout, stderr = _stream(process, records, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return emit(
                {
                    "benchmark": name,
                    "suite": suite,
                    "status": "timeout",
                    "seconds": time.perf_counter() - start,
                }
            )
    if name in ("throughput", "es_brax", "task_suites") and records:
        # Those scripts print their own JSON but write no CSV: keep theirs next to ours.
        write_csv(
            os.path.join(out_dir, f"{name}_{suite}.csv"),
            [{"benchmark": name, "suite": suite, **r} for r in records],
        )
    status = "ok" if process.returncode == 0 else "error"
    summary = {
        "benchmark": name,
        "suite": suite,
        "status": status,
        "seconds": time.perf_counter() - start,
        "records": len(records),
    }
    if status == "error":
        summary["detail"] = stderr.strip().splitlines()[-1] if stderr.strip() else "no stderr"
    return emit(summary)


def _stream(process, records: list, timeout: float | None):
    """Echoes the child's JSON lines as they come; keeps its stderr for error reports."""
    import threading

    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
    reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for line in process.stdout:
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            print(line, flush=True)
            if record.get("benchmark") != "machine":
                records.append(record)
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(process.args, timeout)
    process.wait()
    reader.join(timeout=5)
    return "", "".join(errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the CSV files")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed to each benchmark process"
    )
    args = parser.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else BENCHMARKS) if n]
    skip = [n for n in args.skip.split(",") if n]
    unknown = sorted(n for n in set(names) | set(skip) if n not in BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {list(BENCHMARKS)}")
    names = [n for n in names if n not in skip]
    if args.suite == "toy":  # the smoke-test suite: peers' own scripts have no toy size
        names = [n for n in names if n not in ("throughput", "es_brax")]

    os.makedirs(args.out, exist_ok=True)
    machine = emit({"benchmark": "machine", "suite": args.suite, **machine_info()})
    write_csv(
        os.path.join(args.out, f"machine_{args.suite}.csv"),
        [{"key": k, "value": v} for k, v in machine.items()],
    )
    peers = {}
    for module in ("qdax",):
        available, reason = peer_status(module)
        peers[module] = "ok" if available else "missing"
        if not available:
            emit(
                {
                    "benchmark": "peer",
                    "suite": args.suite,
                    "peer": module,
                    "status": "missing",
                    "detail": reason,
                }
            )
    summaries = [run_one(name, args.suite, args.out, args.timeout) for name in names]
    failed = [s["benchmark"] for s in summaries if s["status"] in ("error", "timeout")]
    emit(
        {
            "benchmark": "suite",
            "suite": args.suite,
            "ran": [s["benchmark"] for s in summaries if s["status"] == "ok"],
            "failed": failed,
            "absent": [s["benchmark"] for s in summaries if s["status"] == "absent"],
            "peers": peers,
            "out": args.out,
        }
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
