"""MAP-Elites, offspring mutated all at once vs in blocks (``MapElitesConfig.mutation_block``).

Prints one JSON object per task: for ``whole`` (one ``vmap`` over the batch, the default) and
``blocks`` (``lax.map`` over blocks of ``--block`` offspring, default ``32768 // weights``):
chunk compile time, XLA's scratch memory of the compiled chunk (``xla_temp_mb``), and the median
and minimum steady-state seconds of a chunk, the two variants' chunks interleaved so that a change
in machine load hits both. The archives must end equal (same offspring; ``same_archive``).

    python benchmarks/mutation_block.py                  # hopper 16-16 batch 1024, arm batch 512
    python benchmarks/mutation_block.py --tasks hopper --batch 256
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASKS = {"hopper": {"batch": 1024, "chunk": 5}, "arm": {"batch": 512, "chunk": 50}}


def _task(name: str):
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import BraxTask, KinematicArm

    if name == "hopper":
        return (
            BraxTask(
                env_name="hopper",
                backend="spring",
                episode_length=100,
                hidden_sizes=(16, 16),
                descriptors=("feet_contact",),
            ),
            GridSpec((0.0,), (1.0,), (128,)),
        )
    return KinematicArm(num_joints=8, genotype="mlp"), GridSpec((0.0, 0.0), (1.0, 1.0), (32, 32))


def measure(name: str, batch: int, block: int | None, repeats: int) -> dict:
    from benchmarks import compile_map_elites
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig

    task, grid = _task(name)
    weights = sum(
        int(leaf.size) for leaf in jax.tree_util.tree_leaves(task.init_params(jax.random.key(0)))
    )
    block = block or max(1, (1 << 15) // weights)
    if block >= batch:
        raise SystemExit(f"block {block} >= batch {batch}: both sides would be one vmap")
    chunk = TASKS[name]["chunk"]
    sides = {}
    for side, size in (("whole", None), ("blocks", block)):
        algorithm = MapElites(
            MapElitesConfig(archive=grid, batch_size=batch, mutation_block=size), task
        )
        state, compiled, _, chunk_s, memory = compile_map_elites(algorithm, chunk)
        sides[side] = {
            "state": state,
            "chunk": compiled,
            "times": [],
            "chunk_compile_s": chunk_s,
            "xla_temp_mb": memory.get("xla_temp_mb"),
        }
    for _ in range(repeats + 1):  # the first chunk of each is a warm-up
        for side in sides.values():
            started = time.perf_counter()
            side["state"] = side["chunk"](side["state"])
            jax.block_until_ready(side["state"])
            side["times"].append(time.perf_counter() - started)
    fitness = [np.asarray(side["state"].archive.fitness) for side in sides.values()]
    record = {
        "benchmark": "mutation_block",
        "task": name,
        "batch": batch,
        "weights": weights,
        "block": block,
        "generations_per_chunk": chunk,
        "same_archive": bool(np.array_equal(*fitness)),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for side_name, side in sides.items():
        times = side["times"][1:]
        record[side_name] = {
            "chunk_compile_s": side["chunk_compile_s"],
            "xla_temp_mb": side["xla_temp_mb"],
            "steady_s": statistics.median(times),
            "min_s": min(times),
        }
    record["blocks_over_whole_steady"] = record["blocks"]["steady_s"] / record["whole"]["steady_s"]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="hopper,arm")
    parser.add_argument("--batch", type=int, default=None, help="default: per task")
    parser.add_argument("--block", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    for name in args.tasks.split(","):
        if name not in TASKS:
            raise SystemExit(f"unknown task {name!r}; choose from {sorted(TASKS)}")
        with jax.numpy_rank_promotion("allow"):
            record = measure(name, args.batch or TASKS[name]["batch"], args.block, args.repeats)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
