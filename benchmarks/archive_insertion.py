"""Archive insertion alone: ``synprune_jax.archives.add`` vs QDax's ``MapElitesRepertoire.add``.

Both sides insert the same batch (same genomes, fitness and 2-D descriptors in [0, 1]^2) into a
grid repertoire of the same cells (QDax's Euclidean centroids are our grid's cell centres). The
genome is a flat float32 vector of ``genome_size`` genes (the size of a 16-16 hopper policy);
ours also stores a same-shaped boolean mask and two rates per individual, as it does in a run.
A third contender, ``ours_cvt``, is our archive with nearest-centroid cells (a
:class:`~synprune_jax.archives.CVTSpec` path) over the very same centres: the search QDax does for
every archive, so it isolates the cell lookup from the rest of the insertion.
All are jitted with the archive donated (in-place update, as inside a scanned MAP-Elites step),
one batch is inserted before the timed calls, and each timed call inserts a fresh batch.
Repetitions alternate ours / QDax; medians are reported.

Correctness check: after the same insertions both archives hold the same multiset of cell
fitnesses (``same_fitness``; QDax numbers its cells in another order).

    python -m benchmarks.archive_insertion --suite quick
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import check_suite, interleaved_medians, peer_records, standalone_main

NAME = "archive_insertion"

# Nearest-centroid contenders (QDax, ours_cvt) are skipped above this many batch x cells pairs.
MAX_NEAREST_PAIRS = 500_000_000

GENOME_SIZE = 515  # a 16-16 tanh policy on hopper: 11*16 + 16*16 + 16*3 kernels + 35 biases

SIZES = {
    "toy": {"cells": (64,), "batches": (32,), "repeats": 2, "genome_size": 8},
    "quick": {
        "cells": (1_024, 10_000),
        "batches": (1_024, 4_096),
        "repeats": 5,
        "genome_size": GENOME_SIZE,
    },
    "full": {
        "cells": (1_024, 10_000, 99_856),
        "batches": (1_024, 4_096, 16_384),
        "repeats": 3,
        "genome_size": GENOME_SIZE,
    },
}


def grid_resolution(cells: int) -> tuple[int, int]:
    """A square 2-D grid with about ``cells`` cells."""
    side = int(round(math.sqrt(cells)))
    return side, side


def make_batch(key: jax.Array, batch: int, genome_size: int):
    """Random genomes ``[B, G]``, fitness ``[B]`` and descriptors ``[B, 2]`` in [0, 1]^2."""
    key_genome, key_fitness, key_descriptor, key_mask = jax.random.split(key, 4)
    genomes = jax.random.normal(key_genome, (batch, genome_size))
    masks = jax.random.bernoulli(key_mask, 0.5, (batch, genome_size))
    fitness = jax.random.normal(key_fitness, (batch,))
    descriptors = jax.random.uniform(key_descriptor, (batch, 2))
    return genomes, masks, fitness, descriptors


def _ours(resolution, batch, genome_size, batches, cvt: bool = False):
    from synprune_jax.archives import CVTSpec, GridSpec, add, init_archive
    from synprune_jax.types import EvalResult, Population

    grid = GridSpec((0.0, 0.0), (1.0, 1.0), resolution)
    template = Population(
        params=jnp.zeros(genome_size), masks=jnp.ones(genome_size, bool), rates=jnp.zeros(2)
    )
    if cvt:
        # Nearest-centroid cells over the grid's own centres: the same search QDax does.
        num_cells = grid.num_cells
        spec = CVTSpec((0.0, 0.0), (1.0, 1.0), num_cells, num_samples=num_cells, num_iterations=0)
        archive = init_archive(spec, template).replace(centroids=grid.centroids())
    else:
        spec = grid
        archive = init_archive(spec, template)

    def insert(archive, genomes, masks, fitness, descriptors):
        population = Population(
            params=genomes, masks=masks, rates=jnp.zeros((fitness.shape[0], 2), jnp.float32)
        )
        result = EvalResult(
            fitness=fitness, descriptors=descriptors, extras={"density": jnp.mean(masks, axis=1)}
        )
        return add(spec, archive, population, result)[0]

    compiled = jax.jit(insert, donate_argnums=0).lower(archive, *batches[0]).compile()
    return archive, compiled, lambda a: a.fitness


def _qdax(resolution, batch, genome_size, batches):
    from qdax.core.containers.mapelites_repertoire import (
        MapElitesRepertoire,
        compute_euclidean_centroids,
    )

    centroids = compute_euclidean_centroids(resolution, minval=0.0, maxval=1.0)
    repertoire = MapElitesRepertoire.init_default(
        genotype=jnp.zeros(genome_size), centroids=centroids
    )

    def insert(repertoire, genomes, masks, fitness, descriptors):
        del masks  # QDax genomes carry no masks
        return repertoire.add(genomes, descriptors, fitness)

    with jax.numpy_rank_promotion("allow"):  # QDax's add broadcasts implicitly
        compiled = jax.jit(insert, donate_argnums=0).lower(repertoire, *batches[0]).compile()
    return repertoire, compiled, lambda r: jnp.reshape(r.fitnesses, (-1,))


def _same(fitness_of, states, side: str) -> bool:
    """Same elites in both archives: sorted cell fitnesses agree (QDax numbers its cells in
    another order: its Euclidean centroids come from ``meshgrid`` in ``"xy"`` order)."""
    return bool(
        np.array_equal(
            np.sort(np.asarray(fitness_of[side](states[side]))),
            np.sort(np.asarray(fitness_of["qdax"](states["qdax"]))),
        )
    )


def run(suite: str) -> list[dict]:
    """One record per (cells, batch, side) plus a ``ratio`` record per size."""
    sizes = SIZES[check_suite(suite)]
    qdax_ok, records = peer_records("qdax")
    genome_size = sizes["genome_size"]
    for cells in sizes["cells"]:
        resolution = grid_resolution(cells)
        num_cells = resolution[0] * resolution[1]
        for batch in sizes["batches"]:
            # One batch goes in before timing (the cost of a fixed-shape insertion does not depend
            # on how full the archive is), then fresh batches are timed (cycled).
            fill = [make_batch(jax.random.key(1000), batch, genome_size)]
            timed_batches = [make_batch(jax.random.key(i), batch, genome_size) for i in range(4)]
            sides = {"ours": _ours}
            common = {"cells": num_cells, "batch": batch, "genome_size": genome_size}
            if num_cells * batch > MAX_NEAREST_PAIRS:
                # QDax may hold a [B, C, D] distance array: 16k x 100k x 2 floats is 12.8 GB.
                records.append(
                    {
                        **common,
                        "case": "skipped",
                        "side": "qdax,ours_cvt",
                        "status": f"batch x cells over {MAX_NEAREST_PAIRS:.0e}",
                    }
                )
            else:
                sides["ours_cvt"] = lambda *a: _ours(*a, cvt=True)
                if qdax_ok:
                    sides["qdax"] = _qdax
            states, functions, fitness_of = {}, {}, {}
            for side, builder in sides.items():
                state, compiled, fitness = builder(resolution, batch, genome_size, timed_batches)
                for arguments in fill:
                    state = compiled(state, *arguments)
                states[side], fitness_of[side] = state, fitness

                def call(
                    side=side,
                    compiled=compiled,
                    batches=timed_batches,
                    states=states,
                    counter=itertools.count(),  # noqa: B008 (one counter per closure, on purpose)
                ):
                    arguments = batches[next(counter) % len(batches)]
                    states[side] = compiled(states[side], *arguments)
                    return states[side]

                functions[side] = call
            medians = interleaved_medians(functions, sizes["repeats"])
            for side, timing in medians.items():
                records.append(
                    {
                        **common,
                        "case": "insert",
                        "side": side,
                        "median_s": timing["median_s"],
                        "min_s": timing["min_s"],
                        "insertions_per_s": batch / timing["median_s"],
                        "median_cpu_s": timing["median_cpu_s"],
                        "repeats": timing["repeats"],
                    }
                )
            for side in (s for s in medians if s != "qdax" and "qdax" in medians):
                records.append(
                    {
                        **common,
                        "case": "ratio",
                        "side": f"{side}/qdax",
                        "speedup": medians["qdax"]["median_s"] / medians[side]["median_s"],
                        "cpu_speedup": medians["qdax"]["median_cpu_s"]
                        / max(medians[side]["median_cpu_s"], 1e-9),
                        "same_fitness": _same(fitness_of, states, side),
                    }
                )
    return records


def main() -> None:
    standalone_main(NAME, run, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
