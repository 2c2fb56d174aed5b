"""Engine overhead over raw Brax stepping (prints one JSON object per line).

Raw: a plain jitted Brax rollout of the same *unmasked* tanh MLP, batch B, fixed episode length
(vmapped reset + ``lax.scan``), rewards summed. Engine: full MAP-Elites generations (emit +
masked evaluation with the alive mask + descriptors + archive insertion), scanned in chunks as the
runner does. Both count ``B * episode_length`` env steps per call / generation and share one reset
state across the batch per call (the engine's common random numbers). Throughputs are medians over
timed calls (raw) or chunks (engine), after a warm-up call.

The last line holds ``raw_env_steps_per_s``, ``engine_env_steps_per_s``, ``overhead_ratio``
(engine / raw; target >= 0.90 at batch 256), ``compile_s`` (engine chunk, AOT) and peak host
memory after the first and the last timed chunk (it must not grow with generations).

    python -m benchmarks.throughput --quick      # hopper/spring, batch 256, 100 steps
    python -m benchmarks.throughput              # also batch 1024 and 200 steps
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import jax


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def build_raw(
    env_name: str, backend: str, batch: int, episode_length: int, hidden: tuple[int, ...]
):
    """A plain Brax rollout of ``batch`` unmasked MLPs (:func:`benchmarks.task_suites.build_raw`
    on the Brax task): the speed limit the engine is measured against. Returns ``(call,
    compile_s)``; ``call(index)`` runs one rollout with a fresh reset key."""
    from benchmarks.task_suites import build_raw as build_task_raw

    return build_task_raw(_task(env_name, backend, episode_length, hidden), batch)


def _task(env_name: str, backend: str, episode_length: int, hidden: tuple[int, ...]):
    from synprune_jax.tasks import BraxTask

    return BraxTask(
        env_name=env_name,
        backend=backend,
        episode_length=episode_length,
        hidden_sizes=hidden,
        descriptors=("sparsity", "disconnected_fraction"),
    )


def build_engine(
    env_name: str,
    backend: str,
    batch: int,
    episode_length: int,
    hidden: tuple[int, ...],
    chunk: int,
):
    """Full MAP-Elites generations on the Brax task (sparsity x disconnected fraction),
    :func:`benchmarks.task_suites.build_engine`. Returns ``(call, compile_s)``."""
    from benchmarks.task_suites import build_engine as build_task_engine

    return build_task_engine(_task(env_name, backend, episode_length, hidden), batch, chunk)


def interleaved(
    env_name: str,
    backend: str,
    batch: int,
    episode_length: int,
    hidden: tuple[int, ...],
    chunk: int,
    rounds: int,
) -> dict:
    """Times raw rollouts and engine chunks alternately, so both see the same machine load.

    Each round times ``chunk`` raw rollouts and then one engine chunk of ``chunk`` generations
    (the same number of env steps); throughputs are medians over rounds.
    """
    raw_call, raw_compile_s = build_raw(env_name, backend, batch, episode_length, hidden)
    engine_call, engine_compile_s = build_engine(
        env_name, backend, batch, episode_length, hidden, chunk
    )
    raw_times, engine_times, rss = [], [], []
    for index in range(rounds):
        start = time.perf_counter()
        for repeat in range(chunk):
            raw_call(index * chunk + repeat)
        raw_times.append((time.perf_counter() - start) / chunk)
        start = time.perf_counter()
        metrics = engine_call()
        engine_times.append((time.perf_counter() - start) / chunk)
        rss.append(_peak_rss_mb())
    steps = batch * episode_length
    ratios = [raw / engine for raw, engine in zip(raw_times, engine_times, strict=True)]
    return {
        "stage": "summary",
        "raw_env_steps_per_s": steps / statistics.median(raw_times),
        "engine_env_steps_per_s": steps / statistics.median(engine_times),
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_min": min(ratios),
        "overhead_ratio_max": max(ratios),
        "seconds_per_generation": statistics.median(engine_times),
        "generations_timed": chunk * rounds,
        "compile_s": engine_compile_s,
        "raw_compile_s": raw_compile_s,
        "peak_rss_mb_first_chunk": rss[0],
        "peak_rss_mb_last_chunk": rss[-1],
        "qd_score": float(metrics["qd_score"][-1]),
        "coverage": float(metrics["coverage"][-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 256, 100 steps only")
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--hidden", default="16,16")
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    sizes = [(256, 100)] if args.quick else [(256, 100), (1024, 100), (256, 200)]
    machine = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "processor": platform.processor(),
        "machine": platform.machine(),
    }
    _emit({"stage": "machine", **machine})
    for batch, episode_length in sizes:
        common = {
            "env": args.env,
            "backend": args.backend,
            "batch": batch,
            "episode_length": episode_length,
            "hidden": list(hidden),
        }
        _emit(
            {
                **common,
                **interleaved(
                    args.env,
                    args.backend,
                    batch,
                    episode_length,
                    hidden,
                    chunk=5,
                    rounds=6 if args.quick else 10,
                ),
            }
        )


if __name__ == "__main__":
    main()
