"""Reference run of brax's own PPO trainer (``brax.training.agents.ppo``).

Runs in a separate environment with ``jax < 0.10`` (brax.training calls APIs removed in
jax 0.10), e.g. ``/work/main/.venv-brax`` (jax 0.9.2 + brax 0.14.2); it does not import
synprune_jax. Prints one JSON object.

``ppo.train.train`` on ``brax.envs.get_environment(env, backend=backend)`` with a small tanh
policy (16, 16) and value net (64, 64). One training step collects
``batch_size * num_minibatches`` rollouts of ``unroll_length`` steps (from ``num_envs``
parallel envs), i.e. ``batch_size * unroll_length * num_minibatches * action_repeat`` env
steps, then makes ``num_updates_per_batch`` passes of ``num_minibatches`` SGD steps. The
trainer rounds the run up to whole epochs of training steps (one epoch between evaluations),
so the steps actually taken can exceed ``--timesteps`` slightly. Per seed it reports the
evaluation curve (env steps -> mean eval episode reward over ``num_eval_envs`` envs,
deterministic policy), the final eval reward and its std, wall time, and brax's own
``training/sps`` per epoch (training clock only; the first epoch includes compilation).
Several seeds (``--seeds 0,1,2``) run one after another in the same process.

    .venv-brax/bin/python benchmarks/peers/brax_ppo_peer.py --env hopper --timesteps 1000000 \\
        --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import platform
import statistics
import sys
import time
from importlib import metadata


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _hidden(text: str) -> tuple[int, ...]:
    return tuple(int(h) for h in text.split(",") if h)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--action-repeat", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds; overrides --seed")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--unroll-length", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-minibatches", type=int, default=8)
    parser.add_argument("--num-updates-per-batch", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--entropy-cost", type=float, default=1e-2)
    parser.add_argument("--discounting", type=float, default=0.97)
    parser.add_argument("--gae-lambda", type=float, default=0.95)
    parser.add_argument("--clipping-epsilon", type=float, default=0.3)
    parser.add_argument("--reward-scaling", type=float, default=1.0)
    parser.add_argument(
        "--normalize-observations", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument(
        "--normalize-advantage", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument("--max-grad-norm", type=float, default=None)
    parser.add_argument("--policy-hidden", default="16,16")
    parser.add_argument("--value-hidden", default="64,64")
    parser.add_argument("--num-evals", type=int, default=11)
    parser.add_argument("--num-eval-envs", type=int, default=128)
    parser.add_argument("--deterministic-eval", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s] if args.seeds else [args.seed]

    # mujoco.mjx.warp prints "Failed to import warp" on stdout at import; keep stdout to the
    # one JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        import flax.linen as linen
        import jax
        from brax import envs
        from brax.training.agents.ppo import networks as ppo_networks
        from brax.training.agents.ppo import train as ppo_train

        env = envs.get_environment(args.env, backend=args.backend)
    factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=_hidden(args.policy_hidden),
        value_hidden_layer_sizes=_hidden(args.value_hidden),
        activation=linen.tanh,
    )
    settings = {
        "num_timesteps": args.timesteps,
        "episode_length": args.episode_length,
        "action_repeat": args.action_repeat,
        "num_envs": args.num_envs,
        "unroll_length": args.unroll_length,
        "batch_size": args.batch_size,
        "num_minibatches": args.num_minibatches,
        "num_updates_per_batch": args.num_updates_per_batch,
        "learning_rate": args.learning_rate,
        "entropy_cost": args.entropy_cost,
        "discounting": args.discounting,
        "gae_lambda": args.gae_lambda,
        "clipping_epsilon": args.clipping_epsilon,
        "reward_scaling": args.reward_scaling,
        "normalize_observations": args.normalize_observations,
        "max_grad_norm": args.max_grad_norm,
        "num_evals": args.num_evals,
        "num_eval_envs": args.num_eval_envs,
        "deterministic_eval": args.deterministic_eval,
    }
    train_params = inspect.signature(ppo_train.train).parameters
    if "normalize_advantage" in train_params:
        settings["normalize_advantage"] = args.normalize_advantage
    # Defaults of this brax version that matter when comparing with another PPO.
    brax_defaults = {
        name: train_params[name].default
        for name in ("vf_loss_coefficient", "bootstrap_on_timeout", "clipping_epsilon_value")
        if name in train_params
    }
    net_params = inspect.signature(ppo_networks.make_ppo_networks).parameters
    brax_defaults.update(
        {
            name: net_params[name].default
            for name in ("distribution_type", "noise_std_type", "init_noise_std")
            if name in net_params
        }
    )

    runs = []
    for seed in seeds:
        curve: list[list[float]] = []
        epochs: list[dict] = []
        last: dict = {}

        def progress(step, metrics, curve=curve, epochs=epochs, last=last):
            metrics = {k: float(v) for k, v in metrics.items()}
            if "eval/episode_reward" in metrics:
                curve.append([int(step), metrics["eval/episode_reward"]])
            if "training/sps" in metrics:
                epochs.append(
                    {
                        "step": int(step),
                        "sps": metrics["training/sps"],
                        "walltime": metrics["training/walltime"],
                    }
                )
            last.clear()
            last.update(metrics)

        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            ppo_train.train(
                environment=env,
                network_factory=factory,
                progress_fn=progress,
                seed=seed,
                **settings,
            )
        total = time.perf_counter() - started
        sps = [e["sps"] for e in epochs]
        runs.append(
            {
                "seed": seed,
                "final_return": last.get("eval/episode_reward"),
                "final_eval_episode_reward": last.get("eval/episode_reward"),
                "final_eval_episode_reward_std": last.get("eval/episode_reward_std"),
                "final_eval_avg_episode_length": last.get("eval/avg_episode_length"),
                "env_steps": curve[-1][0] if curve else None,
                "curve": curve,
                "wall_s": total,
                "training_walltime_s": epochs[-1]["walltime"] if epochs else None,
                "training_sps_per_epoch": sps,
                "training_sps_median_after_first": (
                    statistics.median(sps[1:]) if len(sps) > 1 else None
                ),
            }
        )

    finals = [r["final_eval_episode_reward"] for r in runs]
    finals = [f for f in finals if f is not None]
    print(
        json.dumps(
            {
                "side": "brax",
                "trainer": "brax.training.agents.ppo",
                "env": args.env,
                "backend": args.backend,
                "settings": settings,
                "policy_hidden": list(_hidden(args.policy_hidden)),
                "value_hidden": list(_hidden(args.value_hidden)),
                "activation": "tanh",
                "brax_defaults": brax_defaults,
                "seeds": seeds,
                "runs": runs,
                "final_reward_mean": statistics.fmean(finals) if finals else None,
                "final_reward_std_across_seeds": (
                    statistics.stdev(finals) if len(finals) > 1 else None
                ),
                "final_reward_min": min(finals) if finals else None,
                "final_reward_max": max(finals) if finals else None,
                "versions": {
                    "jax": jax.__version__,
                    "jaxlib": _version("jaxlib"),
                    "brax": _version("brax"),
                    "flax": _version("flax"),
                    "optax": _version("optax"),
                    "mujoco": _version("mujoco"),
                    "python": platform.python_version(),
                },
                "platform": {
                    "jax_backend": jax.default_backend(),
                    "devices": [str(d) for d in jax.devices()],
                    "machine": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                },
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
