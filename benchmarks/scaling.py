"""Scaling curves: MAP-Elites throughput vs population (batch) size and vs network width.

Two workloads, both full MAP-Elites generations (emit, evaluate, insert) scanned in chunks as the
runner does, compiled ahead of time (compile time reported apart):

* ``brax``: hopper on the ``spring`` backend, tanh MLP with two hidden layers of ``width``,
  ``episode_length`` steps, 32 x 32 grid over (sparsity, disconnected fraction) — the engine's
  default setting; throughput in evaluations/s and env steps/s;
* ``arm``: 8-joint kinematic arm whose angles come from a masked MLP (``genotype="mlp"``, one
  hidden layer of ``width``), 100 x 100 grid over the tip position: no physics, so it shows where
  the network and archive work saturate the device.

Every point seeds its archive with the same ``INITIAL_BATCH`` random networks, so points of the
same width share one initialisation program: it is compiled once (cold) and loaded from a
fresh persistent compilation cache afterwards (``init_compile_s`` is then small; the first
point of each width carries the cold figure). The chunk program is compiled cold at every point.

Where the device saturates: ``evals_per_s`` stops growing with the batch (on a CPU this happens
early; on a GPU much later). ``seconds_per_generation`` is the median over chunks.

    python -m benchmarks.scaling --suite quick
"""

from __future__ import annotations

import statistics
import time

import jax

from benchmarks import check_suite, compile_map_elites, fresh_compilation_cache, standalone_main

NAME = "scaling"

INITIAL_BATCH = 64

SIZES = {
    "toy": {"brax": [(4, 4)], "arm": [(8, 4)], "episode_length": 5, "chunk": 1, "chunks": 2},
    "quick": {
        "brax": [(64, 16), (256, 16), (1024, 16)],
        "arm": [(256, 16), (4096, 16), (16384, 16), (4096, 128)],
        "episode_length": 100,
        "chunk": 4,
        "chunks": 3,
    },
    "full": {
        "brax": [
            (64, 16),
            (256, 16),
            (1024, 16),
            (4096, 16),
            (16384, 16),
            (256, 64),
            (256, 256),
            (1024, 64),
        ],
        "arm": [(64, 16), (256, 16), (1024, 16), (4096, 16), (16384, 16), (4096, 64), (4096, 256)],
        "episode_length": 100,
        "chunk": 5,
        "chunks": 4,
    },
}


def _measure(algorithm, chunk: int, chunks: int) -> dict:
    state, compiled, init_s, chunk_s, memory = compile_map_elites(algorithm, chunk)
    times = []
    for _ in range(chunks):
        start = time.perf_counter()
        state = compiled(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    seconds_per_generation = statistics.median(times) / chunk
    return {
        "init_compile_s": init_s,
        "chunk_compile_s": chunk_s,
        "seconds_per_generation": seconds_per_generation,
        "evals_per_s": algorithm.config.batch_size / seconds_per_generation,
        **memory,
    }


def brax_point(batch: int, width: int, episode_length: int, chunk: int, chunks: int) -> dict:
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name="hopper",
        backend="spring",
        episode_length=episode_length,
        hidden_sizes=(width, width),
    )
    config = MapElitesConfig(
        archive=GridSpec((0.0, 0.0), (1.0, 1.0), (32, 32)),
        batch_size=batch,
        initial_batch_size=min(batch, INITIAL_BATCH),
    )
    result = _measure(MapElites(config, task), chunk, chunks)
    result["env_steps_per_s"] = result["evals_per_s"] * episode_length
    return {
        "workload": "brax",
        "env": "hopper",
        "backend": "spring",
        "episode_length": episode_length,
        **result,
    }


def arm_point(batch: int, width: int, chunk: int, chunks: int) -> dict:
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import KinematicArm

    task = KinematicArm(num_joints=8, genotype="mlp", hidden_sizes=(width,))
    config = MapElitesConfig(
        archive=GridSpec((0.0, 0.0), (1.0, 1.0), (100, 100)),
        batch_size=batch,
        initial_batch_size=min(batch, INITIAL_BATCH),
    )
    return {"workload": "arm", **_measure(MapElites(config, task), chunk, chunks)}


def run(suite: str) -> list[dict]:
    """One record per (workload, batch, width)."""
    setting = SIZES[check_suite(suite)]
    cache = fresh_compilation_cache()
    records = []
    for batch, width in setting["arm"]:
        records.append(
            {
                "batch": batch,
                "width": width,
                **arm_point(batch, width, setting["chunk"] * 5, setting["chunks"]),
            }
        )
    for batch, width in setting["brax"]:
        records.append(
            {
                "batch": batch,
                "width": width,
                **brax_point(
                    batch, width, setting["episode_length"], setting["chunk"], setting["chunks"]
                ),
            }
        )
    for record in records:
        record["compilation_cache"] = "fresh" if cache else "configured"
    return records


def main() -> None:
    standalone_main(NAME, run, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
