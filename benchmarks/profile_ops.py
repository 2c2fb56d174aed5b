"""Where the time of a compiled program goes: XLA operations ranked by time (``jax.profiler``).

Prints one JSON object: the program's steady wall time (median of ``--repeats`` calls), then the
``--top`` operations of one profiled call by total time, each with its count, time per call of
the program, output shape and the JAX operation it came from (from the compiled HLO). Targets:

* ``heads``: :meth:`TransferProblem.evaluate` of 30 transfer heads (as
  ``benchmarks/transfer_heads.py`` times it vmapped; 150 minibatch steps per call);
* ``ae_ring``: one synchronous epoch of the 10-cell autoencoder coevolution ring (as
  ``benchmarks/ae_coevolution.py`` times it vmapped; 200 steps per call);
* ``me_arm``: 500 MAP-Elites generations on the engine-overhead arm (``--batch``, default 128;
  ``engine_overhead.arm_setting``, as ``benchmarks/engine_overhead.py`` times it; divide by 500
  for one generation).

Used for the per-step breakdowns in docs/mo_transfer.md and docs/autoencoder.md (divide an
operation's milliseconds by the steps per call).

    python benchmarks/profile_ops.py heads
    python benchmarks/profile_ops.py ae_ring --top 15
    python benchmarks/profile_ops.py me_arm --top 25
    python benchmarks/profile_ops.py me_arm --batch 4096
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _heads():
    from synprune_jax.algorithms.nsga2 import random_density_genomes
    from synprune_jax.transfer import DataConfig, HeadConfig, TrainConfig, TransferProblem
    from synprune_jax.transfer.data import default_cache_dir, prepare_data

    data = prepare_data(DataConfig(), cache_dir=default_cache_dir())
    head = HeadConfig(data.num_features, 32, data.num_classes, genome="input")
    problem = TransferProblem(data, head, TrainConfig(epochs=30))
    genomes = random_density_genomes(jax.random.key(0), 30, head.genome_length)
    return (lambda key, genomes: problem.evaluate(key, genomes, problem.default_hyper)), (
        jax.random.key(1),
        genomes,
    )


def _ae_ring():
    from synprune_jax.autoencoder import (
        AutoencoderSpec,
        BinaryClusteringSpec,
        CoevolutionConfig,
        SpatialCoevolution,
        TrainingHyper,
        make_binary_clustering,
    )

    data = make_binary_clustering(jax.random.key(0), BinaryClusteringSpec(num_train=1000))
    config = CoevolutionConfig(
        spec=AutoencoderSpec(),
        num_epochs=400,
        num_trials=1,
        operator="random",
        schedule="fixed",
        num_cells=10,
        order="synchronous",
        eval_every=400,
    )
    coevolution = SpatialCoevolution(
        config, TrainingHyper(prune_probability=0.5), data["train"], data["test"]
    )
    params = coevolution.init_trial(jax.random.key(1))
    masks = jax.tree_util.tree_map(jnp.ones_like, params)
    return coevolution.ring_epoch, (
        jax.random.key(2),
        params,
        masks,
        jnp.full((10,), 1e-5),
        jnp.zeros((10,), jnp.int32),
        jnp.int32(5),
    )


def _me_arm(batch: int = 128):
    from benchmarks.engine_overhead import arm_setting
    from synprune_jax import runner

    algorithm, hyper = arm_setting(batch)
    state = jax.jit(lambda key: algorithm.init(key, hyper))(runner.init_key(0))
    step = lambda key, state: algorithm.step(key, state, hyper)
    return (lambda state: runner.scan_generations(step, 0, state, 500)), (state,)


TARGETS = {"heads": _heads, "ae_ring": _ae_ring, "me_arm": _me_arm}


def _hlo_index(text: str) -> dict:
    """Instruction name -> (output shape, JAX op name) from compiled HLO text."""
    index = {}
    for line in text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if match:
            op = re.search(r'op_name="([^"]*)"', line)
            index[match.group(1)] = (match.group(2), op.group(1) if op else "")
    return index


def profile(name: str, repeats: int, top: int, batch: int | None = None) -> dict:
    function, args = TARGETS[name](batch) if batch else TARGETS[name]()
    compiled = jax.jit(function).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory, create_perfetto_trace=True)
        jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        trace = sorted(glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True))[-1]
        with gzip.open(trace) as file:
            events = json.load(file)["traceEvents"]
    index = _hlo_index(compiled.as_text())
    total, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in index:
            total[event["name"]] += event.get("dur", 0)
            count[event["name"]] += 1
    operations = [
        {
            "name": op,
            "ms": round(us / 1000, 3),
            "count": count[op],
            "shape": index[op][0],
            "jax_op": index[op][1][-80:],
        }
        for op, us in total.most_common(top)
    ]
    return {
        "benchmark": "profile_ops",
        "target": name,
        "backend": jax.default_backend(),
        "steady_s": statistics.median(times),
        "min_s": min(times),
        "profiled_ops_ms": round(sum(total.values()) / 1000, 3),
        "top": operations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--batch", type=int, default=None, help="me_arm only: the batch size")
    args = parser.parse_args()
    if args.batch and args.target != "me_arm":
        parser.error("--batch applies to me_arm only")
    print(json.dumps(profile(args.target, args.repeats, args.top, args.batch), indent=1))


if __name__ == "__main__":
    main()
