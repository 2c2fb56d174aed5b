"""Speed of the autoencoder spatial coevolution: cells vmapped vs cells stepped in Python.

Prints one JSON object. Three ways to run one epoch of a ring (or ``--topology torus``) of
``--cells`` cells (published sizes by default: 1000-30-10 autoencoder, 1000 training samples,
batch 5, 200 steps per cell):

* ``vmapped``: ``order="synchronous"``, all cells in one ``vmap`` (one compiled call);
* ``python_loop``: the same cell function (:meth:`SpatialCoevolution.cell_epoch`, jitted once)
  called cell by cell from Python, with the same snapshot semantics as ``vmapped`` (the two give
  the same numbers; ``tests/test_autoencoder.py`` checks it);
* ``sequential_scan``: the published visiting order (cells one after another inside a
  ``lax.scan``), one compiled call.

Then ``trials_per_hour``: a full run (``--epochs``, default 400) of ``--trials`` trials vmapped in
the synchronous mode, extrapolated from steady-state epochs. Compile time is reported apart.
``flops_per_cell_epoch`` counts the matrix products of one cell's epoch from the shapes; each
variant's ``gflops``, the machine's ``matmul_peak_gflops`` (a 2048^3 float32 product,
:func:`benchmarks.matmul_peak_gflops`) and ``speedup_bound_at_matmul_peak`` (the loop's time over
the time of the same products at that ceiling) say how much room batching could still find.

    .venv/bin/python benchmarks/ae_coevolution.py [--cells 10] [--trials 4] [--repeats 3]
        [--topology torus [--grid-shape 2x5] [--neighbourhood von_neumann|moore]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _block(tree):
    jax.block_until_ready(tree)
    return tree


def _timed(function, repeats):
    started = time.perf_counter()
    _block(function())
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _block(function())
        times.append(time.perf_counter() - started)
    return compile_s, float(np.median(times))


def main() -> None:
    from synprune_jax.autoencoder import (
        AutoencoderSpec,
        BinaryClusteringSpec,
        CoevolutionConfig,
        SpatialCoevolution,
        TrainingHyper,
        make_binary_clustering,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--operator", default="random")
    parser.add_argument("--topology", default="ring", choices=("ring", "torus"))
    parser.add_argument("--grid-shape", default=None, help="torus rows x cols, e.g. 2x5")
    parser.add_argument("--neighbourhood", default="von_neumann", choices=("von_neumann", "moore"))
    args = parser.parse_args()
    grid_shape = (
        tuple(int(v) for v in args.grid_shape.lower().split("x")) if args.grid_shape else None
    )

    data_spec = BinaryClusteringSpec(num_train=args.num_train)
    data = make_binary_clustering(jax.random.key(0), data_spec)
    config = CoevolutionConfig(
        spec=AutoencoderSpec(),
        num_epochs=args.epochs,
        num_trials=1,
        operator=args.operator,
        schedule="fixed",
        num_cells=args.cells,
        order="synchronous",
        eval_every=args.epochs,
        topology=args.topology,
        grid_shape=grid_shape,
        neighbourhood=args.neighbourhood,
    )
    hyper = TrainingHyper(prune_probability=0.5)
    synchronous = SpatialCoevolution(config, data["train"], data["test"])
    sequential = SpatialCoevolution(
        dataclasses.replace(config, order="sequential"), data["train"], data["test"]
    )
    params = synchronous.init_trial(jax.random.key(1))
    masks = jax.tree_util.tree_map(jnp.ones_like, params)
    rates = jnp.full((args.cells,), 1e-5)
    kept = jnp.zeros((args.cells,), jnp.int32)
    epoch = jnp.int32(5)
    key = jax.random.key(2)

    # the hyper-parameters are constants of the compiled programs, as in a single run
    ring_vmapped = jax.jit(lambda *args: synchronous.ring_epoch(*args, hyper))
    ring_sequential = jax.jit(lambda *args: sequential.ring_epoch(*args, hyper))
    cell_epoch = jax.jit(lambda *args: synchronous.cell_epoch(*args, hyper))
    cell_keys = [jax.random.fold_in(jax.random.split(key)[1], c) for c in range(args.cells)]

    def python_loop():
        new_params, new_rates = params, rates
        outputs = []
        for cell in range(args.cells):
            outputs.append(
                cell_epoch(cell_keys[cell], jnp.int32(cell), params, masks, rates, kept, epoch)
            )
        for cell, (centre, _, rate, _, _, _) in enumerate(outputs):
            new_params = jax.tree_util.tree_map(
                lambda a, b, cell=cell: a.at[cell].set(b), new_params, centre
            )
            new_rates = new_rates.at[cell].set(rate)
        return new_params, new_rates

    results = {}
    for name, function in (
        ("vmapped", lambda: ring_vmapped(key, params, masks, rates, kept, epoch)),
        ("python_loop", python_loop),
        ("sequential_scan", lambda: ring_sequential(key, params, masks, rates, kept, epoch)),
    ):
        compile_s, seconds = _timed(function, args.repeats)
        results[name] = {
            "first_call_s": compile_s,
            "seconds_per_epoch": seconds,
            "epochs_per_s": 1.0 / seconds,
        }

    # Matrix-product work of one cell's epoch (multiply-adds x 2; d, h, z the layer sizes, B the
    # batch): per training step forward B(2dh + 2hz), weight gradients the same, input gradients
    # of every layer but the first B(hd + 2hz); plus the n x n pairings' forward passes on one
    # batch for the selection.
    spec = config.spec
    d, h, z = spec.input_dim, spec.hidden_dim, spec.bottleneck_dim
    b, n = config.batch_size, config.neighbourhood_size
    steps = args.num_train // b
    flops_per_cell_epoch = 2.0 * (
        steps * b * (5 * d * h + 6 * h * z) + n * n * b * (2 * d * h + 2 * h * z)
    )
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import matmul_peak_gflops  # run as a script: the repository root on the path

    peak = matmul_peak_gflops()
    for entry in results.values():
        entry["gflops"] = flops_per_cell_epoch * args.cells / entry["seconds_per_epoch"] / 1e9

    trial_config = dataclasses.replace(config, num_trials=args.trials)
    trials = SpatialCoevolution(trial_config, data["train"], data["test"])
    state = trials.init(jax.random.key(3), hyper)
    step = jax.jit(lambda key, state: trials.step(key, state, hyper))
    compile_s, seconds = _timed(lambda: step(jax.random.key(4), state), args.repeats)
    epochs_per_hour = 3600.0 / seconds
    output = {
        "benchmark": "ae_coevolution",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "cells": args.cells,
        "topology": config.topology,
        "grid_shape": list(config.grid_shape) if config.grid_shape else None,
        "neighbourhood_size": config.neighbourhood_size,
        "steps_per_cell_epoch": args.num_train // config.batch_size,
        "operator": args.operator,
        **{
            f"{name}_{key}": value
            for name, entry in results.items()
            for key, value in entry.items()
        },
        "speedup_vmapped_vs_python_loop": (
            results["python_loop"]["seconds_per_epoch"] / results["vmapped"]["seconds_per_epoch"]
        ),
        "flops_per_cell_epoch": flops_per_cell_epoch,
        "matmul_peak_gflops": peak,
        # how many times faster than the Python loop an epoch could be if every product ran at
        # the machine's large-matmul ceiling: the bound on any vmapped speed-up
        "speedup_bound_at_matmul_peak": (
            results["python_loop"]["seconds_per_epoch"]
            / (flops_per_cell_epoch * args.cells / (peak * 1e9))
        ),
        "trials_vmapped": args.trials,
        "trial_step_compile_s": compile_s,
        "trial_seconds_per_epoch": seconds,
        "trials_per_hour": epochs_per_hour * args.trials / args.epochs,
        "epochs_per_run": args.epochs,
    }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
