"""Benchmark: sparse transfer heads trained + evaluated per second, vmapped vs a Python loop.

Prints one JSON object:

* ``vmapped``: the whole population's heads trained (optax, early stopping) and evaluated on the
  validation split in one jitted, vmapped call;
* ``loop``: the same per-individual code (the whole training of one head jitted once, for a
  population of one) called in a Python loop over the individuals;
* ``loop_python_epochs``: a loop at the granularity of the original method (Keras-style): per
  individual, a Python loop over epochs calling a jitted epoch (a ``lax.scan`` over the
  minibatches) and a jitted validation loss, with early stopping decided in Python;
* ``speedup`` / ``speedup_vs_python_epochs``: heads per second vmapped / each loop;
* ``nsga2_generation``: compile time and steady-state seconds of one NSGA-II generation
  (``population_size`` children trained and evaluated, non-dominated sorting, survival);
* ``flops_per_head`` (the matrix products of one head's training and evaluation, counted from
  the shapes), each variant's ``gflops`` (at its minimum wall time), ``matmul_peak_gflops`` (a
  2048^3 float32 product on this machine, :func:`benchmarks.matmul_peak_gflops`) and
  ``speedup_bound_at_matmul_peak``: how many times faster than the loop the population could be
  trained if every product ran at that ceiling.

Compile time (``first_call_s``) is reported apart from steady state: the median (``steady_s``)
and minimum (``min_s``) wall time and the median process CPU time (``cpu_s``, all threads) of
``--repeats`` calls, interleaved across the variants so that a change in machine load hits all
of them; on a shared machine ``min_s`` and ``cpu_s`` are the steadier figures. Uses the default
digits transfer data (cached under ``$SYNPRUNE_CACHE_DIR``).

    python benchmarks/transfer_heads.py --population 30 --repeats 5
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
import jax.numpy as jnp


def _call(fn, *args) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, waited for."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - wall, time.process_time() - cpu


def _summary(first: float, calls: list[tuple[float, float]], heads: int) -> dict:
    walls = [wall for wall, _ in calls]
    cpus = [cpu for _, cpu in calls]
    return {"first_call_s": first, "steady_s": statistics.median(walls), "min_s": min(walls),
            "cpu_s": statistics.median(cpus),
            "heads_per_s": heads / statistics.median(walls)}


def _python_epoch_loop(problem):
    """Per-individual training with the epoch loop and early stopping in Python."""
    import jax.numpy as jnp
    import optax

    from synprune_jax.transfer.head import genome_key, head_logits, init_head, shuffle_key
    from synprune_jax.transfer.objectives import objective_vector

    head, train, a = problem.head, problem.train_config, problem.arrays
    optimizer = train.make_optimizer()
    num_train = a["train_x"].shape[0]
    batch_size = min(train.batch_size, num_train)
    num_batches = num_train // batch_size

    def loss(params, genome, x, y):
        input_mask, hidden_mask = head.split(genome)
        logits = head_logits(params, input_mask, hidden_mask, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def init(genome):
        params = init_head(genome_key(train.seed, genome), head)
        return params, optimizer.init(params)

    @jax.jit
    def epoch(params, opt_state, genome, key):
        order = jax.random.permutation(key, num_train)
        batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)

        def step(carry, index):
            params, opt_state = carry
            grads = jax.grad(loss)(params, genome, a["train_x"][index], a["train_y"][index])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, loss(params, genome, a["val_x"], a["val_y"])

    @jax.jit
    def objectives(params, genome):
        measured = problem._head_metrics(params, genome, "val")
        return objective_vector(measured, problem.objective_names)

    keys = jax.random.split(shuffle_key(train.seed), train.epochs)

    def run(key, genomes):
        del key
        results = []
        for genome in genomes:
            params, opt_state = init(genome)
            best, best_loss, since_best = params, float("inf"), 0
            for epoch_index in range(train.epochs):
                params, opt_state, val_loss = epoch(params, opt_state, genome, keys[epoch_index])
                val_loss = float(val_loss)
                if val_loss < best_loss:
                    best, best_loss, since_best = params, val_loss, 0
                else:
                    since_best += 1
                    if since_best >= train.patience:
                        break
            results.append(objectives(best, genome))
        return jnp.stack(results)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    from synprune_jax.algorithms.nsga2 import NSGA2, NSGA2Config, random_density_genomes
    from synprune_jax.transfer import DataConfig, HeadConfig, TrainConfig, TransferProblem
    from synprune_jax.transfer.data import default_cache_dir, prepare_data

    data = prepare_data(DataConfig(), cache_dir=default_cache_dir())
    head = HeadConfig(data.num_features, args.hidden, data.num_classes, genome="input")
    problem = TransferProblem(data, head, TrainConfig(epochs=args.epochs))
    genomes = random_density_genomes(jax.random.key(0), args.population, head.genome_length)
    key = jax.random.key(1)

    vmapped = jax.jit(problem.evaluate)
    single = jax.jit(problem.evaluate)

    def loop(key, genomes):
        return [single(key, genomes[index:index + 1]) for index in range(genomes.shape[0])]

    python_loop = _python_epoch_loop(problem)
    variants = {"vmapped": vmapped, "loop": loop, "loop_python_epochs": python_loop}
    first = {name: _call(fn, key, genomes)[0] for name, fn in variants.items()}
    calls = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        for name, fn in variants.items():
            calls[name].append(_call(fn, key, genomes))
    timings = {name: _summary(first[name], calls[name], args.population) for name in variants}
    same = float(jnp.max(jnp.abs(python_loop(key, genomes) - vmapped(key, genomes))))
    timings["loop_python_epochs"]["max_abs_objective_difference_vs_vmapped"] = same

    algorithm = NSGA2(NSGA2Config(population_size=args.population), problem)
    state = jax.jit(algorithm.init)(jax.random.key(2))
    step = jax.jit(algorithm.step)
    started = time.perf_counter()
    compiled = step.lower(jax.random.key(3), state).compile()
    step_compile = time.perf_counter() - started
    state, _ = compiled(jax.random.key(3), state)
    jax.block_until_ready(state)
    times = []
    for generation in range(args.repeats):
        started = time.perf_counter()
        state, metrics = compiled(jax.random.key(10 + generation), state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - started)

    heads = args.population
    # Matrix-product work of one head (multiply-adds x 2), dense as the masked head computes it:
    # every epoch runs (the vmapped program and the jitted loop both compute the epochs after an
    # early stop and discard them); per minibatch step forward F*H + H*C, weight gradients
    # F*H + H*C, hidden gradient H*C; a validation pass per epoch; the final validation and
    # out-of-distribution passes of the objectives.
    f, h, c = head.num_features, head.num_hidden, head.num_classes
    train_n = int(data.train_features.shape[0])
    batch = min(problem.train_config.batch_size, train_n)
    val_n, ood_n = int(data.val_features.shape[0]), int(data.ood_val_features.shape[0])
    flops_per_head = 2.0 * (args.epochs * (train_n // batch) * batch * (2 * f * h + 3 * h * c)
                            + (args.epochs + 1) * val_n * (f * h + h * c)
                            + ood_n * (f * h + h * c))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import matmul_peak_gflops  # run as a script: the repository root on the path

    peak = matmul_peak_gflops()
    for name in variants:
        timings[name]["gflops"] = flops_per_head * heads / timings[name]["min_s"] / 1e9
    result = {
        "benchmark": "transfer_heads",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "population": heads,
        "head": {"features": head.num_features, "hidden": head.num_hidden,
                 "classes": head.num_classes, "genome": head.genome},
        "train": {"epochs": args.epochs, "batch_size": problem.train_config.batch_size,
                  "train_samples":
                  int(data.train_features.shape[0]), "optimizer": "adam",
                  "early_stopping_patience": 5},
        **timings,
        "speedup": timings["loop"]["steady_s"] / timings["vmapped"]["steady_s"],
        "speedup_min": timings["loop"]["min_s"] / timings["vmapped"]["min_s"],
        "speedup_cpu": timings["loop"]["cpu_s"] / timings["vmapped"]["cpu_s"],
        "speedup_vs_python_epochs": (timings["loop_python_epochs"]["steady_s"]
                                     / timings["vmapped"]["steady_s"]),
        "speedup_vs_python_epochs_cpu": (timings["loop_python_epochs"]["cpu_s"]
                                         / timings["vmapped"]["cpu_s"]),
        "flops_per_head": flops_per_head,
        "matmul_peak_gflops": peak,
        # the fastest any program could train and evaluate the population at the matmul ceiling,
        # as a multiple of the jitted loop (min wall): the bound on the vmapped speed-up
        "speedup_bound_at_matmul_peak": (timings["loop"]["min_s"]
                                         / (flops_per_head * heads / (peak * 1e9))),
        "nsga2_generation": {"compile_s": step_compile,
                             "steady_s": statistics.median(times), "min_s": min(times),
                             "children_per_generation": heads},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
