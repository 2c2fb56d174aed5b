"""Compile time of random draws: one ``jax.random`` call per weight leaf vs batched calls.

Each ``jax.random`` call inlines a Threefry hash into the program, so the number of calls, not
the number of random numbers, drives XLA's compile time. This script compiles the Gaussian
noise for the leaves of a hopper 16-16 policy (6 leaves), vmapped over a batch of 256 keys, drawn
(a) ``per_leaf``: one call per leaf with its own key, as ``variation.gaussian_mutation`` used to;
(b) ``one_call``: one call over the concatenated size (other numbers: a reference point only);
(c) ``batched``: ``synprune_jax.rng.leafwise``, one vmapped call per group of similar-sized
leaves (2 groups here), which gives exactly the numbers of ``per_leaf`` (checked once).
It prints one JSON line per variant (compile seconds, StableHLO lines). Then, with
``--emitter``, the trade-off that decided where ``leafwise`` is used: the MAP-Elites emitter
(parents, prune/reconnect flips, Gaussian noise; hopper 16-16, batch ``--batch``) compiled with
its flips and noise drawn one call per leaf (the library's code) and through ``leafwise`` with
``max_waste`` 1, 1.5, 2 and 3: compile seconds and XLA scratch memory (``xla_temp_mb``). The
persistent compilation cache is off.

    python benchmarks/rng_compile.py [--batch 256] [--repeats 3] [--emitter]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time

SHAPES = ((11, 16), (16,), (16, 16), (16,), (16, 3), (3,))  # hopper 16-16 policy


def per_leaf(key):
    import jax

    keys = jax.random.split(key, len(SHAPES))
    return [jax.random.normal(k, shape) for k, shape in zip(keys, SHAPES, strict=True)]


def one_call(key):
    import jax

    flat = jax.random.normal(key, (sum(math.prod(shape) for shape in SHAPES),))
    out, offset = [], 0
    for shape in SHAPES:
        size = math.prod(shape)
        out.append(flat[offset : offset + size].reshape(shape))
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
    for x, y in zip(expected, got, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--emitter",
        action="store_true",
        help="also compile the MAP-Elites emitter both ways (scratch memory)",
    )
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

    print(
        json.dumps(
            {
                "benchmark": "rng_compile",
                "jax": jax.__version__,
                "load_average": list(os.getloadavg()),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
        ),
        flush=True,
    )
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
        print(
            json.dumps(
                {
                    "benchmark": "rng_compile",
                    "variant": name,
                    "batch": args.batch,
                    "leaves": len(SHAPES),
                    "compile_s_median": round(statistics.median(seconds), 3),
                    "compile_s": [round(s, 3) for s in seconds],
                    "stablehlo_lines": len(lowered.as_text().splitlines()),
                }
            ),
            flush=True,
        )
    _check_batched_equals_per_leaf()  # after the timings, so that it warms no cache before them
    if args.emitter:
        _emitter(args)


def _emitter(args) -> None:
    """The emitter with per-leaf draws vs ``leafwise`` draws (same numbers, see module doc)."""
    from unittest import mock

    import jax
    import jax.numpy as jnp

    from synprune_jax import pruning, rng, variation
    from synprune_jax.algorithms import map_elites as me
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        "hopper", episode_length=10, hidden_sizes=(16, 16), descriptors=("feet_contact",)
    )
    config = me.MapElitesConfig(archive=GridSpec((0.0,), (1.0,), (128,)), batch_size=args.batch)
    hyper = me.MutationHyper()
    archive = jax.jit(lambda k: me.MapElites(config, task).init(k, hyper))(
        jax.random.key(0)
    ).archive

    def flips(max_waste):
        def flip_mutation(key, masks, maskable, p_disconnect, p_connect):
            leaves, treedef = jax.tree_util.tree_flatten(masks)
            flags = jax.tree_util.tree_leaves(maskable)
            keys = jax.random.split(key, len(leaves))
            picked = [i for i, flag in enumerate(flags) if flag]
            draws = rng.leafwise(
                jax.random.uniform,
                [keys[i] for i in picked],
                [leaves[i].shape for i in picked],
                max_waste=max_waste,
            )
            out = list(leaves)
            for i, u in zip(picked, draws, strict=True):
                out[i] = jnp.where(leaves[i], u >= p_disconnect, u < p_connect)
            return jax.tree_util.tree_unflatten(treedef, out)

        return flip_mutation

    def noise(max_waste):
        def gaussian_mutation(key, params, masks, sigma):
            leaves, treedef = jax.tree_util.tree_flatten(params)
            keys = jax.random.split(key, len(leaves))
            vector = [i for i, p in enumerate(leaves) if p.size > 1]
            scaled = lambda k, shape, dtype: sigma * jax.random.normal(k, shape, dtype)
            drawn = dict(
                zip(
                    vector,
                    rng.leafwise(
                        scaled,
                        [keys[i] for i in vector],
                        [leaves[i].shape for i in vector],
                        [leaves[i].dtype for i in vector],
                        max_waste=max_waste,
                    ),
                    strict=True,
                )
            )
            out = [
                jnp.where(m, p + (drawn[i] if i in drawn else scaled(keys[i], p.shape, p.dtype)), p)
                for i, (p, m) in enumerate(
                    zip(leaves, jax.tree_util.tree_leaves(masks), strict=True)
                )
            ]
            return jax.tree_util.tree_unflatten(treedef, out)

        return gaussian_mutation

    for max_waste in (None, 1.0, 1.5, 2.0, 3.0):
        patches = (
            []
            if max_waste is None
            else [
                mock.patch.object(pruning, "flip_mutation", flips(max_waste)),
                mock.patch.object(variation, "gaussian_mutation", noise(max_waste)),
            ]
        )
        seconds, temp = [], None
        for repeat in range(args.repeats):
            with contextlib.ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch)
                emit = lambda key, archive: me.emit(key, archive, task, config, hyper)
                started = time.perf_counter()
                compiled = jax.jit(emit).lower(jax.random.key(repeat), archive).compile()
                seconds.append(time.perf_counter() - started)
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        print(
            json.dumps(
                {
                    "benchmark": "rng_compile",
                    "variant": "emitter_"
                    + ("per_leaf" if max_waste is None else f"leafwise_{max_waste:g}"),
                    "batch": args.batch,
                    "compile_s_median": round(statistics.median(seconds), 3),
                    "xla_temp_mb": round(temp, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
