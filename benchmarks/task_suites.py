"""Engine overhead on every task suite: MAP-Elites generations vs a bare rollout (JSON lines).

For each suite (the reach arm, gymnax, MuJoCo Playground, Brax) and env: **raw** is a plain jitted
rollout of the same *unmasked* tanh MLP through the suite's own reset / step (one reset shared by
the batch, ``lax.scan``, rewards summed: no masks, no alive mask, no descriptors); **engine** is
full MAP-Elites generations (emit, masked evaluation with the alive mask, descriptors, archive
insertion) scanned in chunks as the runner does. Both step ``batch * episode_length`` envs per
call / generation; they are timed alternately in one process (``chunk`` raw calls, then one
engine chunk of ``chunk`` generations, ``rounds`` times) and the throughputs are medians.
Compile time (AOT, cold unless the persistent cache holds the program) is reported apart.

A third program, **evaluate**, is the task's own evaluation of a fixed random pruned population
(masks, alive mask, descriptors; no variation or archive): ``evaluate_ratio`` (evaluate / raw)
separates the rollout's bookkeeping from MAP-Elites' own per-generation work. With
``--no-draws``, a fourth program in the same alternation is the engine with the algorithm's random
draws replaced by integer arithmetic (the rollout keeps its own): ``no_draws_ratio`` (raw / it)
bounds what any choice of random streams could reach.

Each line: ``suite``, ``env``, ``batch``, ``episode_length``, ``raw_env_steps_per_s``,
``evaluate_env_steps_per_s``, ``engine_env_steps_per_s``, ``evaluate_ratio``,
``overhead_ratio`` (engine / raw; target >= 0.95 at batch 256) with its min / max over rounds,
``engine_compile_s``, ``evaluate_compile_s``, ``raw_compile_s``.

    python -m benchmarks.task_suites --quick          # one env per suite, batch 256
    python -m benchmarks.task_suites --batch 4096     # large batches (an accelerator)
    python -m benchmarks.task_suites --quick --suite reach --suite gymnax --no-draws
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

# (suite, task keyword arguments); --quick keeps the first of each suite
SUITES = (
    ("reach", {"num_joints": 3, "num_obstacles": 1, "episode_length": 100, "num_episodes": 1}),
    ("gymnax", {"env_name": "MountainCarContinuous-v0", "episode_length": 200}),
    ("gymnax", {"env_name": "Pendulum-v1", "episode_length": 200}),
    ("playground", {"env_name": "CartpoleBalance", "episode_length": 100}),
    ("playground", {"env_name": "CheetahRun", "episode_length": 100}),
    ("brax", {"env_name": "hopper", "backend": "spring", "episode_length": 100}),
)


def build_raw(task, batch: int):
    """A bare rollout of ``batch`` unmasked policies through the task's own reset / step (one
    reset shared by the batch, as the engine's common random numbers; no alive mask). Returns
    ``(call, compile_s)``; ``call(index)`` runs one rollout with a fresh key and blocks."""
    spec = task.spec
    params = jax.vmap(spec.init)(jax.random.split(jax.random.key(0), batch))

    def rollout(key, params):
        key, reset_key = jax.random.split(key)
        state = task._reset(reset_key)
        states = jax.tree_util.tree_map(
            lambda leaf: jnp.broadcast_to(leaf, (batch, *jnp.shape(leaf))), state
        )

        def body(carry, _):
            states, key = carry
            actions = jax.vmap(
                lambda p, s: task._action(spec.apply_dense(p, task._observation(s)))
            )(params, states)
            if task.step_keys:
                key, step_key = jax.random.split(key)
                states = jax.vmap(task._step)(states, actions, jax.random.split(step_key, batch))
            else:
                states = jax.vmap(lambda s, a: task._step(s, a, None))(states, actions)
            return (states, key), jax.vmap(task._reward)(states)

        _, rewards = jax.lax.scan(body, (states, key), None, length=task.episode_length)
        return rewards.sum(axis=0)

    def traced(key, params):
        if task.rank_promotion is None:
            return rollout(key, params)
        with jax.numpy_rank_promotion(task.rank_promotion):
            return rollout(key, params)

    start = time.perf_counter()
    compiled = jax.jit(traced).lower(jax.random.key(0), params).compile()
    compile_s = time.perf_counter() - start
    compiled(jax.random.key(1), params).block_until_ready()  # warm-up

    def call(index: int) -> None:
        compiled(jax.random.key(2 + index), params).block_until_ready()

    return call, compile_s


def build_evaluate(task, batch: int):
    """The task's own evaluation of ``batch`` random pruned networks (masks applied once, the
    alive mask, descriptors; no variation, no archive). Returns ``(call, compile_s)``."""
    from synprune_jax.variation import random_population

    population = random_population(jax.random.key(0), task, batch, jnp.zeros(2))
    start = time.perf_counter()
    compiled = jax.jit(task.evaluate).lower(jax.random.key(0), population).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(jax.random.key(1), population))

    def call(index: int) -> None:
        jax.block_until_ready(compiled(jax.random.key(2 + index), population))

    return call, compile_s


class _RealDrawsTask:
    """``task`` whose ``evaluate`` is traced with ``jax.random`` as it is, inside
    :func:`benchmarks.engine_overhead.without_random_draws` (the rollout keeps its own streams;
    only the algorithm's draws are replaced)."""

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)

    def evaluate(self, key, population):
        from benchmarks.engine_overhead import real_random_draws

        with real_random_draws():
            return self._task.evaluate(key, population)


def build_engine(task, batch: int, chunk: int, no_draws: bool = False):
    """Full MAP-Elites generations on ``task`` (a 32 x 32 grid over its descriptor bounds),
    scanned in chunks of ``chunk`` generations as the runner does. Returns ``(call,
    compile_s)``; ``call()`` runs one chunk, blocks, and returns its metrics. ``no_draws``: the
    algorithm's random draws (parents, mutation, keys) replaced by integer arithmetic
    (:func:`benchmarks.engine_overhead.without_random_draws`; the task's evaluation keeps its
    own): what a generation costs if those streams were free (a bound, not a result)."""
    import contextlib

    from benchmarks.engine_overhead import without_random_draws
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec

    lower, upper = task.descriptor_bounds()
    config = MapElitesConfig(
        archive=GridSpec(tuple(float(x) for x in lower), tuple(float(x) for x in upper), (32, 32)),
        batch_size=batch,
    )
    algorithm = MapElites(config, _RealDrawsTask(task) if no_draws else task)
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    root = jax.random.key(1)

    def run_chunk(state):
        def body(state, _):
            return algorithm.step(jax.random.fold_in(root, state.generation), state, hyper)

        return jax.lax.scan(body, state, None, length=chunk)

    start = time.perf_counter()
    with without_random_draws() if no_draws else contextlib.nullcontext():
        lowered = jax.jit(run_chunk, donate_argnums=0).lower(state)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    holder = {"state": compiled(state)[0]}  # warm-up
    jax.block_until_ready(holder["state"])

    def call() -> dict:
        holder["state"], metrics = compiled(holder["state"])
        jax.block_until_ready(holder["state"])
        return metrics

    return call, compile_s


def measure(
    suite: str, options: dict, batch: int, chunk: int, rounds: int, no_draws: bool = False
) -> dict:
    from synprune_jax.tasks import make_task

    task = make_task(suite, **options)
    raw_call, raw_compile_s = build_raw(task, batch)
    evaluate_call, evaluate_compile_s = build_evaluate(task, batch)
    engine_call, engine_compile_s = build_engine(task, batch, chunk)
    bound_call = build_engine(task, batch, chunk, no_draws=True)[0] if no_draws else None
    raw_times, evaluate_times, engine_times, bound_times = [], [], [], []
    for index in range(rounds):
        start = time.perf_counter()
        for repeat in range(chunk):
            raw_call(index * chunk + repeat)
        raw_times.append((time.perf_counter() - start) / chunk)
        start = time.perf_counter()
        for repeat in range(chunk):
            evaluate_call(index * chunk + repeat)
        evaluate_times.append((time.perf_counter() - start) / chunk)
        start = time.perf_counter()
        engine_call()
        engine_times.append((time.perf_counter() - start) / chunk)
        if bound_call is not None:
            start = time.perf_counter()
            bound_call()
            bound_times.append((time.perf_counter() - start) / chunk)
    steps = batch * task.episode_length
    ratios = [raw / engine for raw, engine in zip(raw_times, engine_times, strict=True)]
    evaluate_ratios = [
        raw / evaluate for raw, evaluate in zip(raw_times, evaluate_times, strict=True)
    ]
    return {
        "suite": suite,
        "env": options.get("env_name", suite),
        "batch": batch,
        "episode_length": task.episode_length,
        "raw_env_steps_per_s": steps / statistics.median(raw_times),
        "evaluate_env_steps_per_s": steps / statistics.median(evaluate_times),
        "engine_env_steps_per_s": steps / statistics.median(engine_times),
        "evaluate_ratio": statistics.median(evaluate_ratios),
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_min": min(ratios),
        "overhead_ratio_max": max(ratios),
        "engine_compile_s": engine_compile_s,
        "evaluate_compile_s": evaluate_compile_s,
        "raw_compile_s": raw_compile_s,
        "generations_timed": chunk * rounds,
        **(
            {
                "no_draws_ratio": statistics.median(
                    [raw / bound for raw, bound in zip(raw_times, bound_times, strict=True)]
                )
            }
            if bound_times
            else {}
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first env of each suite")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--suite", action="append", help="only these suites (repeatable)")
    parser.add_argument(
        "--no-draws",
        action="store_true",
        help="also time the engine without the algorithm's random draws "
        "(no_draws_ratio: a bound, not a result)",
    )
    args = parser.parse_args(argv)
    print(
        json.dumps(
            {
                "stage": "machine",
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "devices": len(jax.devices()),
                "processor": platform.processor(),
            }
        ),
        flush=True,
    )
    seen = set()
    for suite, options in SUITES:
        if (args.suite and suite not in args.suite) or (args.quick and suite in seen):
            continue
        seen.add(suite)
        try:
            record = measure(suite, options, args.batch, args.chunk, args.rounds, args.no_draws)
        except ImportError as error:  # an extra that is not installed
            record = {"suite": suite, "env": options.get("env_name"), "skipped": str(error)}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
