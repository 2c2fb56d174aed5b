"""Compile time of random draws: one ``jax.random`` call per weight leaf vs batched calls.

Each ``jax.random`` call inlines a Threefry hash into the program, so the number of calls, not
the number of random numbers, drives XLA's compile time. This script compiles the Gaussian
noise for the leaves of a hopper 16-16 policy (6 leaves), vmapped over a batch of 256 keys, drawn
(a) ``per_leaf``: one call per leaf with its own key, as ``variation.gaussian_mutation`` used to;
(b) ``one_call``: one call over the concatenated size (other numbers: a reference point only);
(c) ``batched``: ``synprune_jax.rng.leafwise``, one vmapped call per group of similar-sized
leaves (2 groups here), which gives exactly the numbers of ``per_leaf`` (checked once) and is
what ``gaussian_mutation``, ``flip_mutation`` and ``init_masks`` now use.
It prints one JSON line per variant (compile seconds, StableHLO lines). The persistent
compilation cache is off.

    python benchmarks/rng_compile.py [--batch 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

SHAPES = ((11, 16), (16,), (16, 16), (16,), (16, 3), (3,))  # hopper 16-16 policy


def per_leaf(key):
    import jax

    keys = jax.random.split(key, len(SHAPES))
    return [jax.random.normal(k, shape) for k, shape in zip(keys, SHAPES)]


def one_call(key):
    import jax

    flat = jax.random.normal(key, (sum(math.prod(shape) for shape in SHAPES),))
    out, offset = [], 0
    for shape in SHAPES:
        size = math.prod(shape)
        out.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return out


def batched(key):
    """``per_leaf``'s numbers, drawn with one vmapped call per group of leaves."""
    import jax

    from synprune_jax import rng

    keys = jax.random.split(key, len(SHAPES))
    return rng.leafwise(jax.random.normal, keys, SHAPES)


def _check_batched_equals_per_leaf() -> None:
    import jax
    import numpy as np

    keys = jax.random.split(jax.random.key(0), 4)
    expected, got = jax.vmap(per_leaf)(keys), jax.vmap(batched)(keys)
    for x, y in zip(expected, got):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import jax

    previous = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        _run(args)
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)
    return 0


def _run(args) -> None:
    import jax

    print(json.dumps({"benchmark": "rng_compile", "jax": jax.__version__,
                      "load_average": list(os.getloadavg()),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}), flush=True)
    for name, draw in (("per_leaf", per_leaf), ("one_call", one_call), ("batched", batched)):
        seconds = []
        for repeat in range(args.repeats):
            # a fresh function object per repeat: nothing is reused from an earlier compile
            def population(key, draw=draw):
                return jax.vmap(draw)(jax.random.split(key, args.batch))

            started = time.perf_counter()
            lowered = jax.jit(population).lower(jax.random.key(repeat))
            lowered.compile()
            seconds.append(time.perf_counter() - started)
        print(json.dumps({"benchmark": "rng_compile", "variant": name, "batch": args.batch,
                          "leaves": len(SHAPES), "compile_s_median": round(
                              statistics.median(seconds), 3),
                          "compile_s": [round(s, 3) for s in seconds],
                          "stablehlo_lines": len(lowered.as_text().splitlines())}), flush=True)
    _check_batched_equals_per_leaf()  # after the timings, so that it warms no cache before them


if __name__ == "__main__":
    raise SystemExit(main())
