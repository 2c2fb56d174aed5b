"""Masked OpenES (ours, through evosax) vs brax's own ES trainer, and vs evosax used directly.

Three sides, each printing one JSON object, then a summary line with the ratios:

* ``ours``: :class:`synprune_jax.algorithms.es.MaskedES` (evosax ``Open_ES``, antithetic,
  Adam, ``"unmasked"`` search space, dense initial mask, no pruning, mean not re-evaluated) on a
  :class:`~synprune_jax.tasks.BraxTask`;
* ``evosax``: evosax ``Open_ES`` used directly on the raveled parameters of the same unmasked
  policy, evaluated with the same Brax rollout (no masks, no adapter): the adapter's overhead;
* ``brax``: ``brax.training.agents.es`` via ``benchmarks/peers/brax_es_peer.py``, run with the
  ``--brax-python`` interpreter (an environment with ``jax < 0.10``; brax.training does not run
  on jax 0.10). If it cannot run, the summary says so and still reports ours.

Same population (policies evaluated per generation, antithetic pairs), episode length and network
(16-16 tanh MLP; brax's policy head outputs mean and scale of a tanh-Normal, so its last layer is
twice as wide). Steady state: median seconds per generation of a jitted generation called from
the host (as brax's trainer does per epoch), after a warm-up; ``ours`` and ``evosax`` run in one
process and their generations are timed interleaved; env steps per second count
``population * episode_length`` per generation (both sides simulate every step of every
episode). Compile time is reported separately (ours: ahead-of-time ``lower().compile()``;
brax: first epoch minus the median epoch).

    python benchmarks/es_brax.py                       # hopper/spring, population 64, 100 steps
    python benchmarks/es_brax.py --side ours,evosax --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: the benchmarks package
from benchmarks import run_peer_script  # noqa: E402

PEER = os.path.join(ROOT, "benchmarks", "peers", "brax_es_peer.py")
DEFAULT_BRAX_PYTHON = os.path.join(ROOT, ".venv-brax", "bin", "python")


def build_ours(args):
    """Compiled generation of ours: ``(step, state, compile_s, record)``."""
    from synprune_jax.algorithms.es import ESConfig, ESHyper, MaskedES
    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name=args.env,
        backend=args.backend,
        episode_length=args.episode_length,
        hidden_sizes=args.hidden,
    )
    config = ESConfig(
        strategy="open_es",
        population_size=args.population,
        search_space="unmasked",
        evaluate_mean=False,
    )
    hyper = ESHyper(sigma_init=0.05, learning_rate=0.01)  # constants of the program, as a run's
    algorithm = MaskedES(config, task)
    state = jax.jit(lambda key: algorithm.init(key, hyper))(jax.random.key(0))
    started = time.perf_counter()
    step = (
        jax.jit(lambda key, state: algorithm.step(key, state, hyper))
        .lower(jax.random.key(0), state)
        .compile()
    )
    compile_s = time.perf_counter() - started
    return (
        step,
        state,
        compile_s,
        {
            "side": "ours",
            "algorithm": "MaskedES(open_es, unmasked)",
            "env": args.env,
            "backend": args.backend,
            "population": args.population,
            "episode_length": args.episode_length,
            "hidden": list(args.hidden),
            "generations": args.generations,
            "jax": jax.__version__,
        },
    )


def build_evosax_direct(args):
    """evosax Open_ES on the raveled unmasked policy, evaluated with the same rollout:
    ``(step, state, compile_s, record)``."""
    import optax
    from evosax.algorithms import Open_ES
    from jax import flatten_util

    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name=args.env,
        backend=args.backend,
        episode_length=args.episode_length,
        hidden_sizes=args.hidden,
    )
    params = task.init_params(jax.random.key(0))
    flat, unravel = flatten_util.ravel_pytree(params)
    es = Open_ES(
        population_size=args.population,
        solution=flat,
        optimizer=optax.adam(0.01),
        std_schedule=optax.constant_schedule(0.05),
    )
    es_params = es.default_params

    def step(key, state):
        key_ask, key_eval, key_tell = jax.random.split(key, 3)
        with jax.numpy_rank_promotion("allow"):
            population, state = es.ask(key_ask, state, es_params)
            out = jax.vmap(task.rollout, in_axes=(0, None))(jax.vmap(unravel)(population), key_eval)
            state, _ = es.tell(key_tell, population, -out["return"], state, es_params)
        return state, {"max_fitness": jnp.max(out["return"])}

    with jax.numpy_rank_promotion("allow"):
        state = es.init(jax.random.key(0), flat, es_params)
    started = time.perf_counter()
    compiled = jax.jit(step).lower(jax.random.key(0), state).compile()
    compile_s = time.perf_counter() - started
    return (
        compiled,
        state,
        compile_s,
        {
            "side": "evosax",
            "algorithm": "evosax Open_ES direct (no masks)",
            "env": args.env,
            "backend": args.backend,
            "population": args.population,
            "episode_length": args.episode_length,
            "generations": args.generations,
        },
    )


def run_in_process(args, sides) -> dict:
    """Builds the in-process sides, then times their generations *interleaved* (one of each in
    turn), so that a shared machine's load changes hit all of them alike."""
    builders = {"ours": build_ours, "evosax": build_evosax_direct}
    built = {side: builders[side](args) for side in sides}
    states = {side: built[side][1] for side in sides}
    for side in sides:  # warm-up
        states[side], metrics = built[side][0](jax.random.key(10_000), states[side])
        jax.block_until_ready(metrics)
    seconds = {side: [] for side in sides}
    for g in range(args.generations):
        for side in sides:
            started = time.perf_counter()
            states[side], metrics = built[side][0](jax.random.key(g), states[side])
            jax.block_until_ready((states[side], metrics))
            seconds[side].append(time.perf_counter() - started)
    steps = args.population * args.episode_length
    results = {}
    for side in sides:
        median = statistics.median(seconds[side])
        results[side] = {
            **built[side][3],
            "env_steps_per_generation": steps,
            "env_steps_per_s": steps / median,
            "median_generation_s": median,
            "compile_s": built[side][2],
        }
    return results


def run_brax(args) -> dict:
    arguments = [
        "--env",
        args.env,
        "--backend",
        args.backend,
        "--population",
        str(args.population),
        "--episode-length",
        str(args.episode_length),
        "--hidden",
        ",".join(map(str, args.hidden)),
        "--epochs",
        str(args.generations + 1),
    ]
    return run_peer_script(args.brax_python, PEER, arguments, "brax")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side", default="all", help="all, or a comma-separated subset of ours,evosax,brax"
    )
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--hidden", default="16,16")
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--brax-python", default=DEFAULT_BRAX_PYTHON)
    parser.add_argument(
        "--quick", action="store_true", help="population 32, 50 steps, 5 generations"
    )
    args = parser.parse_args(argv)
    args.hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    if args.quick:
        args.population, args.episode_length, args.generations = 32, 50, 5
    if args.population % 2:
        parser.error("--population must be even (antithetic pairs)")
    sides = (
        ("ours", "evosax", "brax")
        if args.side == "all"
        else tuple(side.strip() for side in args.side.split(",") if side.strip())
    )
    unknown = sorted(set(sides) - {"ours", "evosax", "brax"})
    if unknown or not sides:
        parser.error(f"unknown --side {unknown}; use all or a subset of ours,evosax,brax")
    local = [side for side in sides if side != "brax"]
    results = run_in_process(args, local) if local else {}
    for side in local:
        print(json.dumps(results[side]), flush=True)
    if "brax" in sides:
        results["brax"] = run_brax(args)
        print(json.dumps(results["brax"]), flush=True)
    if len(results) > 1:
        summary = {
            "summary": True,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }
        ours = results.get("ours", {}).get("env_steps_per_s")
        for side in ("brax", "evosax"):
            other = results.get(side, {})
            if ours and other.get("env_steps_per_s"):
                summary[f"ours_over_{side}"] = ours / other["env_steps_per_s"]
            elif side in results:
                summary[f"ours_over_{side}"] = None
                summary[f"{side}_error"] = other.get("error", "no throughput")
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
