"""Peer side of ``benchmarks/es_brax.py``: brax's own ES trainer (``brax.training.agents.es``).

Runs in a separate environment with ``jax < 0.10`` (brax.training calls APIs removed in
jax 0.10), e.g. ``/work/main/.venv-brax`` (jax 0.9.2 + brax 0.14.2); it does not import
synprune_jax. Prints one JSON object.

The trainer evaluates ``2 * population_size`` perturbed policies per epoch (antithetic pairs),
each for ``episode_length`` steps (auto-reset env, rewards masked after ``done``: every step is
simulated), so one epoch is ``2 * population_size * episode_length`` env steps, the count its
own ``training/sps`` metric uses. Timing: ``training/walltime`` and ``training/sps`` reported
per epoch through ``progress_fn`` (an evaluation after every epoch, outside the training clock);
the first epoch includes compilation, so ``compile_s = first epoch - median later epoch``.

    .venv-brax/bin/python benchmarks/peers/brax_es_peer.py --env hopper --population 64 \\
        --episode-length 100 --epochs 12
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import time


class _Stop(Exception):
    pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument(
        "--population",
        type=int,
        default=64,
        help="evaluated policies per epoch (brax population_size = this / 2)",
    )
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--hidden", default="16,16")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    if args.population % 2:
        parser.error("--population must be even (antithetic pairs)")

    import flax.linen as linen
    import jax
    from brax import envs
    from brax.training.agents.es import networks as es_networks
    from brax.training.agents.es import train as es_train

    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    env = envs.get_environment(args.env, backend=args.backend)
    epochs: list[dict] = []

    def progress(step, metrics):
        if "training/sps" not in metrics:
            return  # the initial evaluation (num_evals > 1)
        epochs.append(
            {"sps": float(metrics["training/sps"]), "walltime": float(metrics["training/walltime"])}
        )
        if len(epochs) >= args.epochs:
            raise _Stop

    factory = functools.partial(
        es_networks.make_es_networks, hidden_layer_sizes=hidden, activation=linen.tanh
    )
    steps_per_epoch = args.population * args.episode_length
    started = time.perf_counter()
    num_timesteps = steps_per_epoch * args.epochs * 10
    # num_evals = num_timesteps + 1 makes the eval interval one env step, so the trainer
    # calls progress_fn after every epoch; _Stop ends it after --epochs epochs.
    with contextlib.suppress(_Stop):
        es_train.train(
            env,
            num_timesteps=num_timesteps,
            episode_length=args.episode_length,
            population_size=args.population // 2,
            learning_rate=0.01,
            perturbation_std=0.05,
            num_eval_envs=1,
            num_evals=num_timesteps + 1,
            network_factory=factory,
            progress_fn=progress,
            seed=0,
        )
    total = time.perf_counter() - started
    if len(epochs) < 3:
        raise SystemExit(f"only {len(epochs)} epochs ran")
    epoch_seconds = [epochs[0]["walltime"]] + [
        b["walltime"] - a["walltime"] for a, b in zip(epochs[:-1], epochs[1:], strict=True)
    ]
    steady = statistics.median(epoch_seconds[1:])
    print(
        json.dumps(
            {
                "side": "brax",
                "trainer": "brax.training.agents.es",
                "env": args.env,
                "backend": args.backend,
                "population": args.population,
                "episode_length": args.episode_length,
                "hidden": list(hidden),
                "epochs": len(epochs),
                "env_steps_per_epoch": steps_per_epoch,
                "env_steps_per_s": steps_per_epoch / steady,
                "median_epoch_s": steady,
                "compile_s": max(epoch_seconds[0] - steady, 0.0),
                "first_epoch_s": epoch_seconds[0],
                "total_s_with_evals": total,
                "jax": jax.__version__,
                "python": platform.python_version(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
