"""Benchmark: sparse transfer heads trained + evaluated per second, vmapped vs a Python loop.

Prints one JSON object:

* ``vmapped``: the whole population's heads trained (optax, early stopping) and evaluated on the
  validation split in one jitted, vmapped call;
* ``sharded`` (with ``--devices N``, N > 1): the vmapped population split over ``N`` devices
  (``TransferProblem(devices=N)``; on a CPU, ``N`` CPU devices created before JAX starts; the
  other variants run on the first of them, except the ``floor_*_sharded`` ones);
* ``loop``: the same per-individual code (the whole training of one head jitted once, for a
  population of one) called in a Python loop over the individuals;
* ``loop_python_epochs``: a loop at the granularity of the original method (Keras-style): per
  individual, a Python loop over epochs calling a jitted epoch (a ``lax.scan`` over the
  minibatches) and a jitted validation loss, with early stopping decided in Python;
* ``speedup`` / ``speedup_vs_python_epochs``: heads per second vmapped / each loop;
  ``speedup_sharded``: sharded / the jitted loop;
* ``nsga2_generation``: compile time and steady-state seconds of one NSGA-II generation
  (``population_size`` children trained and evaluated, non-dominated sorting, survival), and
  ``nsga2_generation_sharded`` with the sharded problem;
* ``flops_per_head`` (the matrix products of one head's training and evaluation, counted from
  the shapes), each variant's ``gflops`` (at its minimum wall time), ``matmul_peak_gflops`` (a
  2048^3 float32 product on this machine, :func:`benchmarks.matmul_peak_gflops`) and
  ``speedup_bound_at_matmul_peak``: how many times faster than the loop the population could be
  trained if every product ran at that ceiling;
* ``floor_first_layer`` and ``floor_training`` (and ``..._sharded`` with ``--devices``): the
  training's arithmetic alone, written on population-wide arrays (see :func:`_floor_programs`);
  ``speedup_at_floor``: the jitted loop's time over each floor's (``min_wall``: minimum over
  minimum, ``median_wall``: median over median), and ``speedup_bound_measured``: the largest of
  the first-layer floors' (a measured ceiling on the speed-up of programs that train the heads
  as these do, for fixed epochs; see :func:`_floor_programs`).

Compile time (``first_call_s``) is reported apart from steady state: the median (``steady_s``)
and minimum (``min_s``) wall time and the median process CPU time (``cpu_s``, all threads) of
``--repeats`` calls, interleaved across the variants so that a change in machine load hits all
of them; on a shared machine ``min_s`` and ``cpu_s`` are the steadier figures. Uses the default
digits transfer data (cached under ``$SYNPRUNE_CACHE_DIR``); ``--backbone pixels`` skips the
CNN pretraining (smoke runs).

    python benchmarks/transfer_heads.py --population 30 --repeats 9 --devices 2
"""

from __future__ import annotations

import argparse
import datetime
import functools
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
    return {
        "first_call_s": first,
        "steady_s": statistics.median(walls),
        "min_s": min(walls),
        "cpu_s": statistics.median(cpus),
        "heads_per_s": heads / statistics.median(walls),
    }


def _python_epoch_loop(problem, hyper):
    """Per-individual training with the epoch loop and early stopping in Python (``hyper``: the
    problem's :class:`~synprune_jax.transfer.problem.ProblemHyper`)."""
    import jax.numpy as jnp
    import optax

    from synprune_jax.transfer.head import genome_key, head_logits, init_head, shuffle_key
    from synprune_jax.transfer.objectives import objective_vector

    head, train, a = problem.head, problem.train_config, problem.arrays
    optimizer = train.make_optimizer(hyper.learning_rate, hyper.momentum)
    num_train = a["train_x"].shape[0]
    batch_size = min(train.batch_size, num_train)
    num_batches = num_train // batch_size

    def loss(params, genome, x, y):
        input_mask, hidden_mask = head.split(genome)
        logits = head_logits(params, input_mask, hidden_mask, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def init(genome):
        params = init_head(genome_key(hyper.seed, genome), head)
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
        measured = problem._head_metrics(params, genome, "val", hyper.temperature)
        return objective_vector(measured, problem.objective_names)

    keys = jax.random.split(shuffle_key(hyper.seed), train.epochs)

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


def _first_row(run, key, genomes):
    """``run(key, genomes)`` with a leading axis of one (a device's row of a split result)."""
    return run(key, genomes)[None]


def _floor_programs(problem, hyper, heads: int, devices: int = 1) -> dict:
    """Measured floors: the training's dense arithmetic alone, as jitted XLA programs.

    Both are written directly on population-wide arrays (the first-layer kernel ``[F, P * H]``,
    so the first layer is one ``[B, F] x [F, P * H]`` product each way: the best case for
    XLA:CPU), with contiguous minibatches and no masks, shuffling, early stopping (nor its
    copies of the best parameters) or final objectives. Like the real program and the loop,
    they run every epoch: the training computes a stopped head's remaining epochs and discards
    them (with the same per-head code on both sides, skipping them would shorten the loop in
    the same proportion; under ``vmap`` a per-head early exit saves nothing until every head
    has stopped).

    * ``floor_first_layer``: per minibatch step the first layer's product and its weight
      gradient and the configured optimizer's update of the ``[F, P * H]`` kernel; per epoch
      the validation split's first-layer product. Part of the work of every fixed-epoch dense
      training of these heads, in its fastest layout: loop time / this time is a measured
      ceiling on the speed-up (a program doing all of the work would have to run faster than
      this part of it alone). Not a proof: the time is a measurement, with its noise.
    * ``floor_training``: the whole two-layer training (softmax cross-entropy, its gradient,
      the optimizer's update of every parameter) and a validation forward pass per epoch, the
      second layer as one batched product ``[N, P, H] x [P, H, C]``.

    With ``devices > 1`` each is also split over the devices (``..._sharded``: ``P / devices``
    heads per device with ``jax.shard_map``), as ``TransferProblem(devices=N)`` splits the real
    program. Returns ``{name: jitted fn(key, genomes)}`` (both arguments unused).
    """
    import optax

    head, train, arrays = problem.head, problem.train_config, problem.arrays
    train_x, train_y, val_x = arrays["train_x"], arrays["train_y"], arrays["val_x"]
    batch = min(train.batch_size, train_x.shape[0])
    steps = train_x.shape[0] // batch
    f, h, c = head.num_features, head.num_hidden, head.num_classes
    optimizer = train.make_optimizer(hyper.learning_rate, hyper.momentum)

    def program(heads: int, first_layer_only: bool):
        keys = jax.random.split(jax.random.key(0), 2)
        params = {
            "w1": jax.random.normal(keys[0], (f, heads * h)) * (2.0 / f) ** 0.5,
            "b1": jnp.zeros((heads * h,)),
            "w2": jax.random.normal(keys[1], (heads, h, c)) * (2.0 / h) ** 0.5,
            "b2": jnp.zeros((heads, c)),
        }
        if first_layer_only:
            params = {"w1": params["w1"]}

        def logits(params, features):  # [N, F] -> [P, N, C]
            hidden = jax.nn.relu(features @ params["w1"] + params["b1"])
            hidden = hidden.reshape(features.shape[0], heads, h)
            return jnp.einsum("nph,phc->pnc", hidden, params["w2"]) + params["b2"][:, None, :]

        def gradient(params, features, labels):
            if first_layer_only:  # relu of the product stands in for the hidden gradient
                return {"w1": features.T @ jax.nn.relu(features @ params["w1"])}

            def loss(params):  # summed over heads: each head gets its own gradient
                per_example = optax.softmax_cross_entropy_with_integer_labels(
                    logits(params, features), labels[None, :]
                )
                return per_example.mean(axis=1).sum()

            return jax.grad(loss)(params)

        def validation(params):
            if first_layer_only:
                return jnp.sum(jax.nn.relu(val_x @ params["w1"]))
            return jnp.sum(logits(params, val_x))

        def run(key, genomes):
            del key, genomes

            def epoch(carry, _):
                def step(inner, index):
                    params, opt_state = inner
                    start = index * batch
                    grads = gradient(
                        params,
                        jax.lax.dynamic_slice_in_dim(train_x, start, batch),
                        jax.lax.dynamic_slice_in_dim(train_y, start, batch),
                    )
                    updates, opt_state = optimizer.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                (params, opt_state), _ = jax.lax.scan(step, carry[:2], jnp.arange(steps))
                return (params, opt_state, carry[2] + validation(params)), None

            carry = (params, optimizer.init(params), jnp.float32(0))
            return jax.lax.scan(epoch, carry, None, length=train.epochs)[0][2]

        return run

    if devices > 1:
        from jax.sharding import PartitionSpec

        from synprune_jax.sharding import make_mesh

        mesh = make_mesh(devices)
    programs = {}
    for name, first_layer_only in (("floor_first_layer", True), ("floor_training", False)):
        programs[name] = jax.jit(program(heads, first_layer_only))
        if devices > 1:
            # bound now (a lambda would see the loop's last program when jit traces it)
            part = functools.partial(_first_row, program(-(-heads // devices), first_layer_only))
            split = jax.shard_map(
                part,
                mesh=mesh,
                in_specs=(PartitionSpec(), PartitionSpec()),
                out_specs=PartitionSpec(mesh.axis_names[0]),
                check_vma=False,
            )
            programs[name + "_sharded"] = jax.jit(split)
    return programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--backbone",
        default="cnn",
        choices=("cnn", "pixels"),
        help="features of the default digits data: the pretrained CNN (default, "
        "128 features) or the raw pixels (64, no pretraining; for smoke runs)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="also time the population split over this many devices (on a CPU: "
        "CPU devices created here)",
    )
    args = parser.parse_args()
    if args.devices > 1:  # before JAX starts; CPU devices only (an accelerator keeps its own)
        jax.config.update("jax_num_cpu_devices", args.devices)

    from synprune_jax.algorithms.nsga2 import NSGA2, NSGA2Config, random_density_genomes
    from synprune_jax.transfer import DataConfig, HeadConfig, TrainConfig, TransferProblem
    from synprune_jax.transfer.data import default_cache_dir, prepare_data

    data = prepare_data(DataConfig(backbone=args.backbone), cache_dir=default_cache_dir())
    head = HeadConfig(data.num_features, args.hidden, data.num_classes, genome="input")
    problem = TransferProblem(data, head, TrainConfig(epochs=args.epochs))
    hyper = problem.default_hyper  # learning rate 0.01, seed 0, temperature 1000: constants
    genomes = random_density_genomes(jax.random.key(0), args.population, head.genome_length)
    key = jax.random.key(1)

    vmapped = jax.jit(functools.partial(problem.evaluate, hyper=hyper))
    single = jax.jit(functools.partial(problem.evaluate, hyper=hyper))

    def loop(key, genomes):
        return [single(key, genomes[index : index + 1]) for index in range(genomes.shape[0])]

    python_loop = _python_epoch_loop(problem, hyper)
    variants = {
        "vmapped": vmapped,
        "loop": loop,
        "loop_python_epochs": python_loop,
        **_floor_programs(problem, hyper, args.population, args.devices),
    }
    sharded_problem = None
    if args.devices > 1:
        sharded_problem = TransferProblem(
            data, head, TrainConfig(epochs=args.epochs), devices=args.devices
        )
        variants["sharded"] = jax.jit(functools.partial(sharded_problem.evaluate, hyper=hyper))
    first = {name: _call(fn, key, genomes)[0] for name, fn in variants.items()}
    calls = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        for name, fn in variants.items():
            calls[name].append(_call(fn, key, genomes))
    timings = {name: _summary(first[name], calls[name], args.population) for name in variants}
    same = float(jnp.max(jnp.abs(python_loop(key, genomes) - vmapped(key, genomes))))
    timings["loop_python_epochs"]["max_abs_objective_difference_vs_vmapped"] = same
    if sharded_problem is not None:
        timings["sharded"]["max_abs_objective_difference_vs_vmapped"] = float(
            jnp.max(jnp.abs(variants["sharded"](key, genomes) - vmapped(key, genomes)))
        )

    def nsga2_generation(problem) -> dict:
        algorithm = NSGA2(NSGA2Config(population_size=args.population), problem)
        search_hyper = algorithm.default_hyper  # constants of the compiled programs
        state = jax.jit(functools.partial(algorithm.init, hyper=search_hyper))(jax.random.key(2))
        step = jax.jit(functools.partial(algorithm.step, hyper=search_hyper))
        started = time.perf_counter()
        # lowered for the state's shape alone, and the state placed where the compiled step
        # wants it before each call (a no-op once it is there): with a sharded problem, init's
        # output and the step's own output can be laid out otherwise than the step takes them.
        # (The runner needs this only once, after compiling: its chunk is a scan, whose carry
        # keeps one layout.)
        compiled = step.lower(jax.random.key(3), jax.eval_shape(lambda: state)).compile()
        step_compile = time.perf_counter() - started
        placement = compiled.input_shardings[0][1]
        state, _ = compiled(jax.random.key(3), jax.device_put(state, placement))
        jax.block_until_ready(state)
        times = []
        for generation in range(args.repeats):
            started = time.perf_counter()
            state, _ = compiled(jax.random.key(10 + generation), jax.device_put(state, placement))
            jax.block_until_ready(state)
            times.append(time.perf_counter() - started)
        return {
            "compile_s": step_compile,
            "steady_s": statistics.median(times),
            "min_s": min(times),
            "children_per_generation": args.population,
        }

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
    flops_per_head = 2.0 * (
        args.epochs * (train_n // batch) * batch * (2 * f * h + 3 * h * c)
        + (args.epochs + 1) * val_n * (f * h + h * c)
        + ood_n * (f * h + h * c)
    )
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import matmul_peak_gflops  # run as a script: the repository root on the path

    peak = matmul_peak_gflops()
    for name in variants:
        timings[name]["gflops"] = flops_per_head * heads / timings[name]["min_s"] / 1e9
    # the floors' own products (see _floor_programs), at their minimum wall time
    steps_run = args.epochs * (train_n // batch)
    floor_flops = {
        "floor_first_layer": 2.0 * f * h * (steps_run * 2 * batch + args.epochs * val_n),
        "floor_training": 2.0
        * (steps_run * batch * (2 * f * h + 3 * h * c) + args.epochs * val_n * (f * h + h * c)),
    }
    for name in [name for name in variants if name.startswith("floor")]:
        # a split floor trains ceil(P / N) heads per device, padding included
        trained = -(-heads // args.devices) * args.devices if name.endswith("_sharded") else heads
        flops = floor_flops[name.removesuffix("_sharded")] * trained
        timings[name]["gflops"] = flops / timings[name]["min_s"] / 1e9
    loop_s = timings["loop"]
    floors = {
        name: {
            "min_wall": loop_s["min_s"] / timings[name]["min_s"],
            "median_wall": loop_s["steady_s"] / timings[name]["steady_s"],
        }
        for name in variants
        if name.startswith("floor")
    }
    result = {
        "benchmark": "transfer_heads",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "population": heads,
        "head": {
            "features": head.num_features,
            "hidden": head.num_hidden,
            "classes": head.num_classes,
            "genome": head.genome,
            "backbone": args.backbone,
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": problem.train_config.batch_size,
            "train_samples": int(data.train_features.shape[0]),
            "optimizer": "adam",
            "early_stopping_patience": 5,
        },
        **timings,
        "speedup": timings["loop"]["steady_s"] / timings["vmapped"]["steady_s"],
        "speedup_min": timings["loop"]["min_s"] / timings["vmapped"]["min_s"],
        "speedup_cpu": timings["loop"]["cpu_s"] / timings["vmapped"]["cpu_s"],
        "speedup_vs_python_epochs": (
            timings["loop_python_epochs"]["steady_s"] / timings["vmapped"]["steady_s"]
        ),
        "speedup_vs_python_epochs_cpu": (
            timings["loop_python_epochs"]["cpu_s"] / timings["vmapped"]["cpu_s"]
        ),
        "flops_per_head": flops_per_head,
        "matmul_peak_gflops": peak,
        # the fastest any program could train and evaluate the population at the matmul ceiling,
        # as a multiple of the jitted loop (min wall): the bound on the vmapped speed-up
        "speedup_bound_at_matmul_peak": (
            timings["loop"]["min_s"] / (flops_per_head * heads / (peak * 1e9))
        ),
        # the jitted loop over each measured floor (see _floor_programs); the first-layer
        # floors are part of the work of every fixed-epoch dense training of these heads
        "speedup_at_floor": floors,
        "speedup_bound_measured": {
            statistic: max(
                value[statistic]
                for name, value in floors.items()
                if name.startswith("floor_first_layer")
            )
            for statistic in ("min_wall", "median_wall")
        },
        "nsga2_generation": nsga2_generation(problem),
    }
    if sharded_problem is not None:
        loop_s, sharded_s = timings["loop"], timings["sharded"]
        result.update(
            {
                "speedup_sharded": loop_s["steady_s"] / sharded_s["steady_s"],
                "speedup_sharded_min": loop_s["min_s"] / sharded_s["min_s"],
                "speedup_sharded_cpu": loop_s["cpu_s"] / sharded_s["cpu_s"],
                "nsga2_generation_sharded": nsga2_generation(sharded_problem),
            }
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
