"""Benchmark suite: synprune_jax against QDax, evosax, Brax and plain JAX loops.

Every benchmark module exposes ``run(suite) -> list[dict]`` with ``suite`` one of
:data:`SUITES` (``"toy"`` is for the smoke test only) and a ``main()`` for standalone use. Each
returned record is one flat JSON object (one line of output, one CSV row). The single entry point
is ``python -m benchmarks.run --suite quick|full`` (see :mod:`benchmarks.run`).

Shared helpers live here: machine description, JSON / CSV output, timing (compile separate from
steady state, interleaved repetitions, medians), peak memory and detection of optional peers
(QDax), which must never stop the rest of the suite.
"""

from __future__ import annotations

import csv
import datetime
import importlib
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

SUITES = ("toy", "quick", "full")

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def check_suite(suite: str) -> str:
    """Returns ``suite`` or raises ``ValueError`` naming the valid ones."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid: {list(SUITES)}")
    return suite


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (falls back to ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The machine a figure was measured on: CPU, cores, load, jax / peer versions, date (UTC)."""
    import jax

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": ";".join(str(device) for device in jax.devices()),
    }
    for name in ("jaxlib", "brax", "flax", "evosax", "qdax"):
        info[name] = package_version(name)
    return info


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"missing"``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def peer_status(module: str) -> tuple[bool, str]:
    """Whether an optional peer library imports; ``(False, reason)`` when it does not.

    The reason says plainly what is missing and how to get it, so a benchmark can report it and
    carry on with the rest.
    """
    try:
        importlib.import_module(module)
    except Exception as error:  # ImportError, or a peer broken by the installed jax version
        return False, (
            f"peer {module!r} is not usable here ({type(error).__name__}: {error}); "
            'install it with `pip install -e ".[bench]"` in a separate environment'
        )
    return True, "ok"


def peer_records(module: str) -> tuple[bool, list[dict]]:
    """:func:`peer_status` as a benchmark's opening records: ``(usable, records)`` where
    ``records`` holds one ``peer_missing`` record when the peer is not usable, else nothing."""
    usable, reason = peer_status(module)
    records = [] if usable else [{"case": "peer_missing", "side": module, "status": reason}]
    return usable, records


def run_peer_script(python: str, script: str, arguments: Sequence[str], side: str) -> dict:
    """Runs a peer script (one that prints one JSON object) with another environment's
    interpreter and returns that object, or ``{"side": side, "error": ...}`` saying why there is
    none (no interpreter, or the script's exit status and last line of stderr)."""
    import subprocess

    if not os.path.exists(python):
        return {
            "side": side,
            "error": f"no interpreter at {python} (make an environment with jax<0.10 and brax "
            "there; see docs/benchmarks.md)",
        }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run(
        [python, script, *arguments], capture_output=True, text=True, cwd=root
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = completed.stderr.strip().splitlines()
    return {
        "side": side,
        "error": f"the peer failed (exit {completed.returncode})"
        + (f": {tail[-1]}" if tail else " without output"),
    }


def emit(record: dict) -> dict:
    """Prints one JSON line (flushes) and returns the record."""
    print(json.dumps(record, default=_json_default), flush=True)
    return record


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def write_csv(path: str, records: Sequence[dict]) -> str:
    """Writes records as CSV (union of keys, first-seen order); returns the path."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({key: _csv_value(record.get(key)) for key in columns})
    return path


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Reads ``VmHWM`` from ``/proc/self/status`` (Linux): unlike ``ru_maxrss``, which a child
    inherits from its parent across fork and exec, it starts afresh in every new program.
    Elsewhere falls back to ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fresh_compilation_cache() -> str | None:
    """Points JAX's persistent compilation cache at a new, empty directory.

    Compiles in this process stay cold (nothing is in the new cache) while a later compile of the
    same program (another benchmark point with the same shapes, a memory probe in a child
    process) loads it instead. Returns the directory, or ``None`` when a cache was already
    configured (compile times may then be warm).
    """
    import tempfile

    import jax

    if jax.config.jax_compilation_cache_dir:
        return None
    directory = tempfile.mkdtemp(prefix="synprune_bench_cache_")
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:  # the cache is set up once per process; make it read the new setting
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    return directory


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's practical float32 ceiling: GFLOP/s of the fastest of ``repeats`` jitted
    ``[size, size] @ [size, size]`` products on the default device (large enough for XLA to use
    every core). A workload's GFLOP/s divided by this says how much headroom a faster program
    could still find; it bounds the speed-up any rewrite of a compute-bound loop can reach."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, b))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(product(a, b))
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


def tree_megabytes(tree) -> float:
    """Total bytes of the arrays in a pytree, in MiB."""
    import jax

    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree)) / 2**20


def compile_timed(function: Callable, *args, donate_argnums=(), static_argnums=()):
    """AOT-compiles ``jax.jit(function)`` for ``args``.

    Returns:
        ``(compiled, compile_seconds, memory)`` where ``memory`` is a dict of XLA's own
        accounting in MiB (``xla_argument_mb``, ``xla_output_mb``, ``xla_temp_mb``), empty if the
        backend does not report it.
    """
    import jax

    start = time.perf_counter()
    compiled = (
        jax.jit(function, donate_argnums=donate_argnums, static_argnums=static_argnums)
        .lower(*args)
        .compile()
    )
    seconds = time.perf_counter() - start
    return compiled, seconds, xla_memory(compiled)


def compile_map_elites(algorithm, chunk: int, hyper=None):
    """AOT-compiles ``algorithm.init`` and a ``lax.scan`` chunk of ``chunk`` generations
    (with ``hyper``, default ``algorithm.default_hyper``, as constants).

    Keys as in every benchmark of ours: init with ``key(0)``, generation ``g`` with
    ``fold_in(key(1), g)``. The chunk donates its state and returns only the new state.

    Returns:
        ``(state, compiled_chunk, init_compile_s, chunk_compile_s, memory)``, ``state`` the
        initial state and ``memory`` the chunk's XLA accounting (see :func:`compile_timed`).
    """
    import jax

    hyper = algorithm.default_hyper if hyper is None else hyper
    key = jax.random.key(0)
    init, init_s, _ = compile_timed(lambda key: algorithm.init(key, hyper), key)
    state = init(key)
    root = jax.random.key(1)

    def run_chunk(state):
        def body(state, _):
            state, _ = algorithm.step(jax.random.fold_in(root, state.generation), state, hyper)
            return state, None

        return jax.lax.scan(body, state, None, length=chunk)[0]

    compiled, chunk_s, memory = compile_timed(run_chunk, state, donate_argnums=0)
    return state, compiled, init_s, chunk_s, memory


def xla_memory(compiled) -> dict:
    """XLA's memory accounting of a compiled program, in MiB (empty if unavailable)."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if analysis is None:
        return {}
    return {
        "xla_argument_mb": analysis.argument_size_in_bytes / 2**20,
        "xla_output_mb": analysis.output_size_in_bytes / 2**20,
        "xla_temp_mb": analysis.temp_size_in_bytes / 2**20,
    }


def timed(function: Callable, *args):
    """Calls ``function(*args)``, blocks on the result; returns ``(result, seconds)``."""
    import jax

    start = time.perf_counter()
    result = function(*args)
    jax.block_until_ready(result)
    return result, time.perf_counter() - start


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Times several zero-argument callables in alternation (A B A B ...), after one warm-up each.

    Alternating spreads the noise of a shared machine over every contender instead of giving
    one a quiet minute and another a busy one. Besides wall time, the process CPU time of each
    call (all threads, user + system) is recorded: on a loaded machine it is far steadier than
    wall time, because waiting for a core does not count.

    Returns:
        ``{name: {"median_s", "min_s", "median_cpu_s", "repeats"}}``.
    """
    import jax

    for function in functions.values():
        jax.block_until_ready(function())
    times: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(function())
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "median_cpu_s": statistics.median(cpu[name]),
            "repeats": len(values),
        }
        for name, values in times.items()
    }


def run_and_report(
    name: str, records: Iterable[dict], out_dir: str | None, suite: str
) -> list[dict]:
    """Stamps every record with the benchmark name and suite, prints it, writes the CSV."""
    stamped = []
    for record in records:
        stamped.append(emit({"benchmark": name, "suite": suite, **record}))
    if out_dir is not None and stamped:
        write_csv(os.path.join(out_dir, f"{name}_{suite}.csv"), stamped)
    return stamped


def standalone_main(name: str, run: Callable[[str], list[dict]], description: str) -> None:
    """``main()`` of a benchmark module: ``--suite`` and ``--out`` flags."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the CSV ('' = none)")
    args = parser.parse_args()
    emit({"benchmark": "machine", "suite": args.suite, **machine_info()})
    run_and_report(name, run(args.suite), args.out or None, args.suite)
