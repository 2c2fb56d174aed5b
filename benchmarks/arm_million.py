"""Kinematic-arm MAP-Elites: wall time for one million evaluations, ours vs QDax.

The yardstick: the C++ reference implementation hucebot/fast_map-elites reports 0.43 s per 1M
arm evaluations on a 2020 MacBook (multi-threaded, Eigen + TBB); QDax's own arm example uses the
same setting as here.

Setting (both sides): 8-joint planar arm, direct genotype (one gene per joint), batch 2048,
100 x 100 grid over the tip position in [0, 1]^2, an initial batch of 100 random genomes, then
``ceil(1e6 / 2048)`` generations.

* ours: ``KinematicArm(num_joints=8, genotype="angles")`` with
  :class:`~synprune_jax.algorithms.map_elites.MapElites` (prune/reconnect flips on the genes,
  Gaussian mutation, no forward pruning: there is no network); fitness ``-var(angles)``.
* QDax 0.5: ``arm_scoring_function`` (fitness ``-std`` of the normalised genes) with
  ``MixingEmitter`` + ``isoline_variation`` (iso 0.005, line 0.05) and Euclidean centroids.

* ours_cdf_parents: ours with one change, parents drawn by inverse CDF instead of
  ``jax.random.categorical`` over all cells (which draws ``batch * cells`` Gumbel numbers per
  generation: 20M here). This is the fix proposed for ``archives.sample_indices``.

The fitness definitions differ (each library's own arm), the evaluation work per individual is
the same order (8 cosines and sines). Generations run in chunks (``lax.scan``) that alternate
ours / QDax; ``seconds_per_million`` is the summed steady-state time scaled to 1e6 evaluations,
compile time is reported apart.

    python -m benchmarks.arm_million --suite quick
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import check_suite, compile_map_elites, compile_timed, peer_records, standalone_main

NAME = "arm_million"

SIZES = {
    "toy": {
        "num_joints": 8,
        "batch": 64,
        "resolution": (10, 10),
        "evaluations": 256,
        "chunks": 2,
        "initial_batch": 16,
    },
    "quick": {
        "num_joints": 8,
        "batch": 2048,
        "resolution": (100, 100),
        "evaluations": 1_000_000,
        "chunks": 4,
        "initial_batch": 100,
    },
    "full": {
        "num_joints": 8,
        "batch": 2048,
        "resolution": (100, 100),
        "evaluations": 1_000_000,
        "chunks": 8,
        "initial_batch": 100,
    },
}

REFERENCE_CPP_SECONDS_PER_MILLION = 0.43  # hucebot/fast_map-elites README, MacBook 2020


def _schedule(setting: dict) -> tuple[int, int]:
    """``(generations_per_chunk, generations)`` covering at least ``evaluations``."""
    generations = math.ceil(setting["evaluations"] / setting["batch"])
    per_chunk = math.ceil(generations / setting["chunks"])
    return per_chunk, per_chunk * setting["chunks"]


def _ours_algorithm(setting: dict):
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.tasks import KinematicArm
    from synprune_jax.variation import MutationConfig

    task = KinematicArm(num_joints=setting["num_joints"], genotype="angles")
    config = MapElitesConfig(
        archive=GridSpec((0.0, 0.0), (1.0, 1.0), setting["resolution"]),
        batch_size=setting["batch"],
        initial_batch_size=setting["initial_batch"],
        mutation=MutationConfig(forward_prune=False),
    )
    return MapElites(config, task)


def build_ours(setting: dict, per_chunk: int):

    algorithm = _ours_algorithm(setting)
    state, chunk, init_s, chunk_s, _ = compile_map_elites(algorithm, per_chunk)
    return state, chunk, init_s, chunk_s, lambda s: s.archive.fitness


def cdf_parent_indices(key: jax.Array, filled: jax.Array, num: int) -> jax.Array:
    """Uniform draws among filled cells by inverse CDF: O(C + num log C).

    The same distribution as :func:`synprune_jax.archives.sample_indices` (uniform over filled
    cells, over all cells when none is filled), which draws ``jax.random.categorical`` with
    shape ``[num]`` over ``C`` logits and so makes ``num * C`` Gumbel draws per generation.

    Args:
        key: PRNG key.
        filled: ``[C]`` bool.
        num: number of draws (static).

    Returns:
        ``[num]`` int32 cell indices.
    """
    weights = (filled | ~jnp.any(filled)).astype(jnp.float32)
    cdf = jnp.cumsum(weights)
    draws = jax.random.uniform(key, (num,), maxval=cdf[-1])
    index = jnp.searchsorted(cdf, draws, side="right")
    return jnp.minimum(index, filled.shape[0] - 1).astype(jnp.int32)


def build_ours_cdf_parents(setting: dict, per_chunk: int):
    """Ours with one change, the proposed fix: parents drawn by :func:`cdf_parent_indices`.

    The generation is otherwise ``MapElites.step`` built from the
    same public pieces (``mutate``, ``task.evaluate``, ``archives.add``).
    """
    from synprune_jax.archives import add
    from synprune_jax.variation import mutate

    state, _, init_s, _, fitness_of = build_ours(setting, 1)
    algorithm = _ours_algorithm(setting)
    task, config, hyper = algorithm.task, algorithm.config, algorithm.default_hyper
    root = jax.random.key(1)

    def step(key, state):
        key_parents, key_mutate, key_eval = jax.random.split(key, 3)
        indices = cdf_parent_indices(key_parents, state.archive.filled, config.batch_size)
        parents = jax.tree_util.tree_map(lambda leaf: leaf[indices], state.archive.genomes)
        offspring = jax.vmap(
            lambda k, p: mutate(k, p, task.maskable(), config.mutation, hyper, task.spec)
        )(jax.random.split(key_mutate, config.batch_size), parents)
        result = task.evaluate(key_eval, offspring)
        archive, _ = add(config.archive, state.archive, offspring, result)
        return state.replace(
            archive=archive,
            generation=state.generation + 1,
            num_evaluations=state.num_evaluations + config.batch_size,
        )

    def run_chunk(state):
        def body(state, _):
            return step(jax.random.fold_in(root, state.generation), state), None

        return jax.lax.scan(body, state, None, length=per_chunk)[0]

    chunk, chunk_s, _ = compile_timed(run_chunk, state, donate_argnums=0)
    return state, chunk, init_s, chunk_s, fitness_of


def build_qdax(setting: dict, per_chunk: int):
    from qdax.core.containers.mapelites_repertoire import compute_euclidean_centroids
    from qdax.core.emitters.mutation_operators import isoline_variation
    from qdax.core.emitters.standard_emitters import MixingEmitter
    from qdax.core.map_elites import MAPElites
    from qdax.tasks.arm import arm_scoring_function
    from qdax.utils.metrics import default_qd_metrics

    emitter = MixingEmitter(
        mutation_fn=None,
        variation_fn=functools.partial(
            isoline_variation, iso_sigma=0.005, line_sigma=0.05, minval=0.0, maxval=1.0
        ),
        variation_percentage=1.0,
        batch_size=setting["batch"],
    )
    algorithm = MAPElites(
        scoring_function=arm_scoring_function,
        emitter=emitter,
        metrics_function=functools.partial(default_qd_metrics, qd_offset=1.0),
    )
    centroids = compute_euclidean_centroids(setting["resolution"], minval=0.0, maxval=1.0)
    genotypes = jax.random.uniform(
        jax.random.key(0), (setting["initial_batch"], setting["num_joints"])
    )

    def init(genotypes, key):
        repertoire, emitter_state, _ = algorithm.init(genotypes, centroids, key)
        return repertoire, emitter_state, key

    def run_chunk(carry):
        return jax.lax.scan(algorithm.scan_update, carry, None, length=per_chunk)[0]

    compiled_init, init_s, _ = compile_timed(init, genotypes, jax.random.key(1))
    state = compiled_init(genotypes, jax.random.key(1))
    chunk, chunk_s, _ = compile_timed(run_chunk, state, donate_argnums=0)
    return state, chunk, init_s, chunk_s, lambda s: s[0].fitnesses


def run(suite: str) -> list[dict]:
    """One record per side (and a ``ratio`` record when QDax is present)."""
    setting = SIZES[check_suite(suite)]
    per_chunk, generations = _schedule(setting)
    qdax_ok, records = peer_records("qdax")
    builders = {"ours": build_ours, "ours_cdf_parents": build_ours_cdf_parents}
    if qdax_ok:
        builders["qdax"] = build_qdax
    sides = {name: list(builder(setting, per_chunk)) for name, builder in builders.items()}
    times = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    for _ in range(setting["chunks"]):  # alternate ours / QDax
        for name, side in sides.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            side[0] = side[1](side[0])
            jax.block_until_ready(side[0])
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    evaluations = generations * setting["batch"]
    common = {
        "num_joints": setting["num_joints"],
        "batch": setting["batch"],
        "cells": int(np.prod(setting["resolution"])),
        "generations": generations,
        "evaluations": evaluations,
        "reference_cpp_seconds_per_million": REFERENCE_CPP_SECONDS_PER_MILLION,
    }
    results = {}
    for name, (state, _, init_s, chunk_s, fitness_of) in sides.items():
        fitness = np.asarray(fitness_of(state)).reshape(-1)
        total = float(np.sum(times[name]))
        results[name] = {
            **common,
            "case": "arm",
            "side": name,
            "seconds": total,
            "seconds_per_million": total * 1e6 / evaluations,
            "cpu_seconds_per_million": float(np.sum(cpu[name])) * 1e6 / evaluations,
            "evals_per_s": evaluations / total,
            "median_chunk_s": float(np.median(times[name])),
            "init_compile_s": init_s,
            "chunk_compile_s": chunk_s,
            "coverage": float(np.isfinite(fitness).mean()),
        }
        records.append(results[name])
    for name in (n for n in results if n != "qdax" and "qdax" in results):
        records.append(
            {
                **common,
                "case": "ratio",
                "side": f"{name}/qdax",
                "speedup": results["qdax"]["seconds"] / results[name]["seconds"],
                "cpu_speedup": results["qdax"]["cpu_seconds_per_million"]
                / results[name]["cpu_seconds_per_million"],
            }
        )
    return records


def main() -> None:
    standalone_main(NAME, run, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
