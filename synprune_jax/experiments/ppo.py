"""PPO experiments, dense and with gradient-based pruning (the baselines of ``docs/ppo.md``).

* ``ppo``: dense PPO on the main job's task (Brax hopper, ``spring``, 100-step episodes, the
  16-16 tanh policy) for about a million environment steps;
* ``ppo-prune``: the same with gradual magnitude pruning to 10 % density (``ppo.pruning``:
  ``gmp``, ``static``, ``set``, ``rigl``; ``ppo.distribution``: ``uniform`` or ``erk``;
  ``ppo.density``: the target).

The run's generations are PPO iterations of ``ppo.batch_size * ppo.num_minibatches *
ppo.unroll_length`` environment steps each (:class:`~synprune_jax.algorithms.ppo.PPOConfig`).
"""

from __future__ import annotations

import os

import numpy as np

from synprune_jax.config import (
    AUTO,
    ConfigError,
    config_errors,
    from_section,
    require_keys,
    section_defaults,
)
from synprune_jax.experiments.base import (
    Built,
    Experiment,
    markdown_table,
    over_time,
    write_summary,
)

_HOPPER = {
    "name": "brax",
    "env_name": "hopper",
    "backend": "spring",
    "episode_length": 100,
    "num_episodes": 1,
    "hidden_sizes": [16, 16],
    "descriptors": ["sparsity", "disconnected_fraction"],
    "devices": AUTO,
}


def _ppo_section(**values) -> dict:
    from synprune_jax.algorithms.ppo import PPOConfig, PPOHyper

    return section_defaults(PPOConfig, PPOHyper, **values)


def _config(experiment: str, **ppo) -> dict:
    from synprune_jax.runner import RunConfig

    return {
        "experiment": experiment,
        "algorithm": "ppo",
        "task": dict(_HOPPER),
        "ppo": _ppo_section(**ppo),
        "run": section_defaults(RunConfig, num_generations=200, checkpoint_every=50),
    }


def default_config_ppo() -> dict:
    """Dense PPO on hopper: 200 iterations of 5120 env steps (1,024,000 steps)."""
    return _config("ppo")


def default_config_ppo_prune() -> dict:
    """PPO with gradual magnitude pruning to 10 % density on hopper."""
    return _config("ppo-prune", pruning="gmp", density=0.1)


def ppo_config_and_hyper(section: dict):
    """``(PPOConfig, PPOHyper)`` from a config's ``ppo`` section, the hyper's values checked."""
    from synprune_jax.algorithms.ppo import PPOConfig, PPOHyper, validate_hyper

    config, hyper = from_section(section, "ppo", PPOConfig, PPOHyper)
    validate_hyper(hyper)
    return config, hyper


def build_ppo(config: dict) -> Built:
    from synprune_jax.algorithms.ppo import PPO
    from synprune_jax.experiments.map_elites import build_task
    from synprune_jax.runner import RunConfig

    require_keys(config, "config", ("experiment", "algorithm", "task", "ppo", "run"))
    if config["algorithm"] != "ppo":
        raise ConfigError(f"algorithm must be 'ppo', got {config['algorithm']!r}")
    with config_errors():
        ppo_config, hyper = ppo_config_and_hyper(config["ppo"])
        task = build_task(config["task"], 1)  # one policy evaluated at a time: one device
        run_config = from_section(config["run"], "run", RunConfig)
        algorithm = PPO(ppo_config, task)
    return Built(
        algorithm=algorithm,
        hyper=hyper,
        run_config=run_config,
        report=report_ppo,
        describe=describe_ppo,
        plot=plot_ppo,
    )


_OVER_TIME = {
    "env_steps": "env_steps",
    "eval_fitness": "eval_fitness",
    "train_return": "train_return",
    "density": "density",
}
_HEADERS = {
    "generation": "iteration",
    "env_steps": "env steps",
    "eval_fitness": "evaluation return",
    "train_return": "training episodes' return",
    "density": "density",
}


def report_ppo(run_dir: str, state, metrics: dict) -> dict:
    """``summary.json`` / ``summary.md`` (final return and density, the curve) and plots."""
    from synprune_jax import masks as masks_lib
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    section = config["ppo"]
    maskable = _policy_maskable(config)
    steps = np.asarray(metrics.get("env_steps", [0.0]), np.float64)
    summary = {
        "iterations": int(state.generation),
        "env_steps": int(steps[-1]) if steps.size else 0,
        "final_fitness": float(state.fitness),
        "final_density": float(masks_lib.density(state.masks, maskable)),
        "pruning": section["pruning"],
        "distribution": section["distribution"],
        "target_density": float(section["density"]),
        "table": over_time(
            metrics,
            {k: v for k, v in _OVER_TIME.items() if k != "density" or section["pruning"] != "none"},
        ),
    }
    write_summary(run_dir, summary, describe_ppo(summary))
    plot_ppo(run_dir, state, metrics)
    return summary


def describe_ppo(summary: dict) -> str:
    """The method, the final evaluation return and density, and the curve."""
    method = summary["pruning"]
    if method != "none":
        method += f" ({summary['distribution']}, target density {summary['target_density']:g})"
    return (
        f"PPO, pruning {method}: {summary['iterations']} iterations, {summary['env_steps']:,} "
        f"env steps; final policy: return {summary['final_fitness']:.3f} at density "
        f"{summary['final_density']:.3f}\n\n"
        + markdown_table(
            summary["table"],
            {k: v for k, v in _HEADERS.items() if not summary["table"] or k in summary["table"][0]},
            formats={"env_steps": ",.0f"},
        )
    )


def plot_ppo(run_dir: str, state, metrics: dict) -> list[str]:
    from synprune_jax import plots
    from synprune_jax.config import load
    from synprune_jax.experiments.es import plot_masks

    config = load(os.path.join(run_dir, "config.json"))
    return [
        str(
            plots.plot_curves(
                os.path.join(run_dir, "curves.png"),
                metrics,
                keys=("eval_fitness", "train_return", "density"),
            )
        ),
        plot_masks(
            os.path.join(run_dir, "masks.png"),
            state.masks,
            _policy_maskable(config),
            title=f"{config['experiment']}: final mask",
        ),
    ]


def _policy_maskable(config: dict):
    from synprune_jax.experiments.map_elites import build_task

    return build_task(dict(config["task"]), 1).maskable()


EXPERIMENTS = (
    Experiment(
        "ppo",
        "dense PPO (flax + optax, Brax's losses and defaults) on Brax hopper with the "
        "main job's 16-16 tanh policy, about a million env steps",
        default_config_ppo,
        build_ppo,
    ),
    Experiment(
        "ppo-prune",
        "PPO with gradient-based pruning (ppo.pruning: gmp, static, set, rigl) of the "
        "16-16 hopper policy to ppo.density (default gmp to 10 %)",
        default_config_ppo_prune,
        build_ppo,
    ),
)
