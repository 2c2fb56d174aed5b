"""Our PPO vs Brax's own PPO trainer: final returns on the same env, episode length and budget.

Two sides, each printing one JSON object, then a summary line:

* ``ours``: :class:`synprune_jax.algorithms.ppo.PPO` (experiment ``ppo``: dense 16-16 tanh
  policy, 64-64 value MLP, Brax's losses and defaults), one run per seed as one vmapped sweep;
  each final policy evaluated deterministically on ``--eval-episodes`` episodes;
* ``brax``: ``brax.training.agents.ppo`` via ``benchmarks/peers/brax_ppo_peer.py``, run with the
  ``--brax-python`` interpreter (an environment with ``jax < 0.10``: brax.training does not run on
  jax 0.10), with the same settings, network sizes and activation, evaluated by its own
  deterministic evaluator on as many episodes. If it cannot run, the summary says so and still
  reports ours.

Same env (``hopper``, ``spring``), episode length (100), env-step budget, ``num_envs``,
``unroll_length``, ``batch_size``, ``num_minibatches``, ``num_updates_per_batch``, learning rate,
entropy cost, discount, GAE lambda, clipping, reward scaling, observation and advantage
normalisation, action distribution (tanh-Normal, one scale parameter per action dimension
starting at 1: Brax 0.14's defaults). Differences that remain: kernel initialisation (Brax:
LeCun uniform; ours: the engine's LeCun normal); Brax auto-resets to each env's first state,
ours to a fresh reset drawn per unroll. The check: the
two sides' mean final returns over the seeds differ by less than the larger of their standard
deviations across seeds.

    python benchmarks/ppo_brax.py                        # 3 seeds, 1,024,000 steps each
    python benchmarks/ppo_brax.py --side ours --timesteps 204800 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: the benchmarks package
from benchmarks import run_peer_script  # noqa: E402

PEER = os.path.join(ROOT, "benchmarks", "peers", "brax_ppo_peer.py")
DEFAULT_BRAX_PYTHON = os.path.join(ROOT, ".venv-brax", "bin", "python")
STEPS_PER_ITERATION = 32 * 8 * 20  # the ppo experiment's batch_size * num_minibatches * unroll


def run_ours(args) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from synprune_jax import sweeps
    from synprune_jax.export import open_run
    from synprune_jax.types import Population

    iterations = args.timesteps // STEPS_PER_ITERATION
    overrides = [
        f"task.env_name={args.env}",
        f"task.backend={args.backend}",
        f"task.episode_length={args.episode_length}",
        "task.devices=1",
        f"run.num_generations={iterations}",
        "run.progress=false",
    ]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = sweeps.sweep(
            "ppo", args.seeds, out=out, overrides=overrides, devices=1, report=False, plots=False
        )
        wall = time.perf_counter() - started
        timing = result.timing[0]
        finals = []
        for spec in result.runs:
            networks = open_run(os.path.join(out, "runs", spec.run_id))
            evaluator = dataclasses.replace(networks.task, num_episodes=args.eval_episodes)
            population = Population(
                params=jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[:1], networks.params),
                masks=jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[:1], networks.masks),
                rates=jnp.zeros((1, 2), jnp.float32),
            )
            fitness = jax.jit(evaluator.evaluate)(jax.random.key(spec.seed + 10_000), population)
            finals.append(float(fitness.fitness[0]))
        curves = {
            str(seed): rows[["generation", "eval_fitness"]]
            .to_numpy()
            .tolist()[:: max(1, iterations // 10)]
            for seed, rows in result.table.groupby("seed")
        }
    compile_s = float(timing["init_compile_s"] or 0) + sum(timing["chunk_compile_s"].values())
    steady = float(timing["seconds_per_generation"])
    return {
        "side": "ours",
        "seeds": list(args.seeds),
        "env_steps_per_run": iterations * STEPS_PER_ITERATION,
        "final_returns": finals,
        "mean": statistics.fmean(finals),
        "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "eval_episodes": args.eval_episodes,
        "curves_one_episode": curves,
        "wall_s": wall,
        "compile_s": compile_s,
        "steady_env_steps_per_s": len(finals) * STEPS_PER_ITERATION / steady,
        "note": "the seeds ran vmapped together in one program; steps/s counts all of them",
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
    }


def run_brax(args) -> dict:
    arguments = [
        "--env",
        args.env,
        "--backend",
        args.backend,
        "--episode-length",
        str(args.episode_length),
        "--timesteps",
        str(args.timesteps // STEPS_PER_ITERATION * STEPS_PER_ITERATION),
        "--seeds",
        ",".join(map(str, args.seeds)),
    ]
    return run_peer_script(args.brax_python, PEER, arguments, "brax")


def _brax_finals(brax: dict) -> list[float]:
    return [float(run["final_return"]) for run in brax.get("runs", [])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", default="all", help="all, or one of ours, brax")
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=1_024_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-episodes", type=int, default=128)
    parser.add_argument("--brax-python", default=DEFAULT_BRAX_PYTHON)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    sides = ("ours", "brax") if args.side == "all" else (args.side,)
    results = {}
    for side in sides:
        results[side] = run_ours(args) if side == "ours" else run_brax(args)
        print(json.dumps(results[side]), flush=True)
    if len(results) == 2:
        ours, brax = results["ours"], results["brax"]
        finals = _brax_finals(brax)
        if "error" in brax or not finals:
            print(json.dumps({"summary": "brax side did not run", "ours_mean": ours["mean"]}))
            return 0
        brax_mean = statistics.fmean(finals)
        brax_std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        spread = max(ours["std"], brax_std)
        print(
            json.dumps(
                {
                    "summary": "final return, mean over seeds",
                    "ours_mean": ours["mean"],
                    "ours_std": ours["std"],
                    "brax_mean": brax_mean,
                    "brax_std": brax_std,
                    "difference": ours["mean"] - brax_mean,
                    "agree_within_spread": abs(ours["mean"] - brax_mean) <= spread,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
