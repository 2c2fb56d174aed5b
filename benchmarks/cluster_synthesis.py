"""Cluster-driven synthesis speed: time per generation and compacted vs masked inference.

Builds the ``cluster-synthesis`` experiment (digits, LeNet-5) from its default config plus
``--set`` overrides, compiles ``init`` (which trains the ancestor) and one generation ahead of time
(compile seconds reported apart), runs the generations one by one (each timed to completion), then
times inference at the final generation: the masked full-size network (``spec.apply`` with masks)
against the compacted network with dead filters / neurons removed (:func:`compact`), both jitted,
median of ``--repeats`` calls after a warm-up, for each batch size. Prints one JSON object per line;
the last holds everything.

    python benchmarks/cluster_synthesis.py --quick     # 3 generations
    python benchmarks/cluster_synthesis.py             # the experiment's default generations
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _time_calls(function, argument, repeats: int) -> float:
    jax.block_until_ready(function(argument))  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(function(argument))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> dict:
    from synprune_jax.config import apply_overrides
    from synprune_jax.experiments.cluster_synthesis import build, default_config
    from synprune_jax.runner import generation_key, init_key
    from synprune_jax.synthesis import compact, network_stats

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 generations")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as for `synprune run`",
    )
    parser.add_argument("--batch-sizes", default="1,256,1024")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    config = apply_overrides(default_config(), args.set)
    if args.quick:
        config["run"]["num_generations"] = 3
    built = build(config)
    algorithm, hyper, seed = built.algorithm, built.hyper, config["run"]["seed"]
    spec = algorithm.spec

    # the hyper-parameters are constants of the compiled programs, as in `synprune run`
    started = time.perf_counter()
    init = jax.jit(lambda key: algorithm.init(key, hyper)).lower(init_key(seed)).compile()
    init_compile_s = time.perf_counter() - started
    started = time.perf_counter()
    state = jax.block_until_ready(init(init_key(seed)))
    ancestor_s = time.perf_counter() - started
    started = time.perf_counter()
    step = (
        jax.jit(lambda key, state: algorithm.step(key, state, hyper))
        .lower(generation_key(seed, 0), state)
        .compile()
    )
    step_compile_s = time.perf_counter() - started
    _emit(
        {
            "stage": "compiled",
            "init_compile_s": init_compile_s,
            "ancestor_train_s": ancestor_s,
            "step_compile_s": step_compile_s,
        }
    )

    generation_seconds = []
    for generation in range(config["run"]["num_generations"]):
        if bool(state.stopped):
            break
        started = time.perf_counter()
        state, metrics = jax.block_until_ready(step(generation_key(seed, generation), state))
        generation_seconds.append(time.perf_counter() - started)
        _emit(
            {
                "stage": "generation",
                "generation": generation + 1,
                "seconds": generation_seconds[-1],
                **{name: float(value) for name, value in metrics.items()},
            }
        )

    compacted = compact(spec, state.params, state.masks)
    stats = network_stats(spec, state.masks)
    masked_apply = jax.jit(lambda images: spec.apply(state.params, state.masks, images))
    compact_apply = jax.jit(compacted.apply)
    inference = []
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        images = jnp.asarray(
            rng.random((batch, spec.image_size, spec.image_size, spec.channels), dtype=np.float32)
        )
        np.testing.assert_allclose(
            compact_apply(images), masked_apply(images), rtol=1e-4, atol=1e-4
        )
        masked_s = _time_calls(masked_apply, images, args.repeats)
        compact_s = _time_calls(compact_apply, images, args.repeats)
        inference.append(
            {
                "batch": batch,
                "masked_s": masked_s,
                "compact_s": compact_s,
                "speedup": masked_s / compact_s,
                "masked_images_per_s": batch / masked_s,
                "compact_images_per_s": batch / compact_s,
            }
        )
        _emit({"stage": "inference", **inference[-1]})
    result = {
        "benchmark": "cluster_synthesis",
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "overrides": args.set + (["run.num_generations=3"] if args.quick else []),
        "init_compile_s": init_compile_s,
        "ancestor_train_s": ancestor_s,
        "step_compile_s": step_compile_s,
        "generations_run": len(generation_seconds),
        "seconds_per_generation": statistics.median(generation_seconds)
        if generation_seconds
        else None,
        "synapse_reduction": float(state.ancestor_synapses) / max(int(stats.synapses), 1),
        "cluster_reduction": float(state.ancestor_clusters) / max(int(stats.clusters), 1),
        "ancestor_test_accuracy": float(state.ancestor_test_accuracy),
        "test_accuracy": float(state.test_accuracy),
        "compact_widths": list(compacted.widths),
        "inference": inference,
    }
    _emit(result)
    return result


if __name__ == "__main__":
    main()
