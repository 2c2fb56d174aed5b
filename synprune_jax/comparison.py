"""Evolutionary vs gradient-based pruning at equal environment-step budgets (host side).

:func:`compare_pruning` (``synprune compare-pruning``) runs, on one task and for every seed:

* ``map-elites``: the ``me-prune`` experiment (one run covers every density: the best elite at or
  below each density bound is taken, by its archived fitness);
* ``es``: ``es-prune`` (OpenES on one masked policy, magnitude-pruned along a cubic schedule) at
  each target density; its network is the final search mean;
* ``gmp``, ``static``, ``set``, ``rigl``: ``ppo-prune`` with that pruning method at each target
  density below 1 (:mod:`synprune_jax.sparse_training`); its network is the final policy;
* ``dense``: ``ppo``, the unpruned reference (density 1).

Every run gets the same budget of environment steps (``budget``; each method's generations are
sized to it, rounded down, and the steps actually used are reported). Each method runs as one
sweep (:func:`synprune_jax.sweeps.sweep`: seeds and densities vmapped in one program per shape
group, resumable) under ``out/<method group>/``. The chosen networks are then evaluated
**together** on the same ``episodes`` fresh episodes (one key for all), so the returns compare
like for like whatever noise each method's own fitness had.

Files in ``out``: ``comparison.csv`` (one row per method, density and seed: ``return``, the
network's ``actual_density``, ``env_steps``, ``wall_s`` and ``compile_s``: its sweep group's
wall and compile seconds divided by the group's runs, which ran vmapped together),
``comparison.md`` (mean and spread per method and density), ``comparison.json`` (the
definition) and ``return_vs_density.png``.

Examples:
    >>> table = compare_pruning("runs/compare", budget=1_024_000, seeds=[0, 1, 2])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from synprune_jax import config as config_lib
from synprune_jax.config import ConfigError

METHODS = ("map-elites", "es", "gmp", "static", "set", "rigl", "dense")
GRADIENT_METHODS = ("gmp", "static", "set", "rigl")
DEFAULT_DENSITIES = (0.05, 0.1, 0.25, 0.5, 1.0)
DEFAULT_BUDGET = 1_024_000


@dataclasses.dataclass(frozen=True)
class Arm:
    """One sweep of the comparison.

    Attributes:
        name: its folder under ``out`` (``map-elites``, ``es``, ``ppo-pruning``, ``ppo-dense``).
        experiment: the registered experiment it runs.
        grid: swept keys and values.
        overrides: ``key=value`` strings (the task's, then the budget's sizing).
        env_steps: environment steps one run uses.
    """

    name: str
    experiment: str
    grid: dict
    overrides: tuple[str, ...]
    env_steps: int


def _own(experiment: str, overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides whose section (the part before the first dot) ``experiment`` has."""
    from synprune_jax.experiments import get_experiment

    sections = get_experiment(experiment).default_config()
    return tuple(item for item in overrides if item.split("=", 1)[0].split(".")[0] in sections)


def _configured(experiment: str, overrides: Sequence[str]) -> dict:
    from synprune_jax.experiments import get_experiment

    return config_lib.apply_overrides(get_experiment(experiment).default_config(), overrides)


def _episode_steps(config: dict) -> int:
    task = config["task"]
    return int(task.get("episode_length", 1)) * int(task.get("num_episodes", 1))


def plan_arms(
    budget: int,
    densities: Sequence[float],
    methods: Sequence[str],
    overrides: Sequence[str] = (),
) -> list[Arm]:
    """The sweeps that give every method ``budget`` environment steps per run.

    Raises:
        ConfigError: an unknown method, a density outside ``(0, 1]``, or a budget too small for
            one generation of a method.

    Examples:
        >>> [(arm.name, arm.env_steps) for arm in plan_arms(1_024_000, [0.1, 1.0], METHODS)]
        [('map-elites', 1024000), ('es', 1020500), ('ppo-pruning', 1024000), ('ppo-dense', 1024000)]
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ConfigError(f"unknown methods {unknown}; valid: {list(METHODS)}")
    densities = sorted({float(d) for d in densities})
    if not densities or not all(0 < d <= 1 for d in densities):
        raise ConfigError(f"densities must lie in (0, 1], got {densities}")
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise ConfigError(f"budget must be a positive number of env steps, got {budget!r}")
    budget = int(budget)
    experiments = {"map-elites": "me-prune", "es": "es-prune", "ppo-pruning": "ppo-prune"}
    known = {
        item.split("=", 1)[0].split(".")[0]
        for experiment in (*experiments.values(), "ppo")
        for item in _own(experiment, overrides)
    }
    stray = [item for item in overrides if item.split("=", 1)[0].split(".")[0] not in known]
    if stray:
        raise ConfigError(
            f"overrides {stray} name a section none of the compared experiments has "
            "(me-prune, es-prune, ppo-prune, ppo)"
        )
    arms = []

    def too_small(method: str, per_generation: int) -> ConfigError:
        return ConfigError(
            f"budget {budget:,} env steps is too small for {method}: one generation needs "
            f"{per_generation:,}"
        )

    if "map-elites" in methods:
        own = _own("me-prune", overrides)
        config = _configured("me-prune", own)
        episode = _episode_steps(config)
        batch = int(config["map_elites"]["batch_size"])
        evaluations = budget // episode
        initial = min(int(config["map_elites"]["initial_batch_size"]), evaluations)
        generations = (evaluations - initial) // batch
        if generations < 1:
            raise too_small("map-elites", (initial + batch) * episode)
        arms.append(
            Arm(
                "map-elites",
                "me-prune",
                {},
                (
                    *own,
                    f"map_elites.initial_batch_size={initial}",
                    f"run.num_generations={generations}",
                ),
                (initial + generations * batch) * episode,
            )
        )
    if "es" in methods:
        own = _own("es-prune", overrides)
        config = _configured("es-prune", own)
        episode, section = _episode_steps(config), config["es"]
        per_generation = (int(section["population_size"]) + int(section["evaluate_mean"])) * episode
        generations = budget // per_generation
        if generations < 2:
            raise too_small("es", 2 * per_generation)
        every = max(1, generations // 20)
        arms.append(
            Arm(
                "es",
                "es-prune",
                {"es.target_density": densities},
                (
                    *own,
                    f"run.num_generations={generations}",
                    f"es.prune_every={every}",
                    f"es.prune_start={every}",
                    f"es.prune_end={max(every + 1, round(0.75 * generations))}",
                ),
                generations * per_generation,
            )
        )
    gradient = [m for m in GRADIENT_METHODS if m in methods]
    sparse = [d for d in densities if d < 1]
    for name, experiment, grid, wanted in (
        (
            "ppo-pruning",
            "ppo-prune",
            {"ppo.pruning": gradient, "ppo.density": sparse},
            bool(gradient and sparse),
        ),
        ("ppo-dense", "ppo", {}, "dense" in methods),
    ):
        if not wanted:
            continue
        from synprune_jax.algorithms.ppo import PPOConfig

        own = _own(experiment, overrides)
        section = _configured(experiment, own)["ppo"]
        per_iteration = PPOConfig(
            num_envs=section["num_envs"],
            unroll_length=section["unroll_length"],
            batch_size=section["batch_size"],
            num_minibatches=section["num_minibatches"],
        ).env_steps_per_iteration
        iterations = budget // per_iteration
        if iterations < 2:
            raise too_small(name, 2 * per_iteration)
        start, end = (
            round(0.2 * iterations),
            max(round(0.8 * iterations), round(0.2 * iterations) + 1),
        )
        arms.append(
            Arm(
                name,
                experiment,
                grid,
                (
                    *own,
                    f"run.num_generations={iterations}",
                    f"ppo.prune_start={start}",
                    f"ppo.prune_end={end}",
                    f"ppo.update_every={max(1, iterations // 20)}",
                    f"ppo.update_end={round(0.75 * iterations)}",
                ),
                iterations * per_iteration,
            )
        )
    return arms


def _chosen(arm: Arm, run_dir: Path, values: dict, densities: Sequence[float]):
    """``[(method, density row, network row, RunNetworks, actual density)]`` of one finished
    run: MAP-Elites' best elite at or below each density bound (:func:`select_network`), the
    ES's final search mean, PPO's final policy."""
    from synprune_jax.export import open_run, select_network

    networks = open_run(run_dir)
    actual = networks.densities()
    if arm.name == "map-elites":
        chosen = []
        for bound in densities:
            try:
                row = select_network(networks, density=bound)
            except ValueError:  # no elite that sparse
                continue
            chosen.append(("map-elites", bound, row, networks, actual[row]))
        return chosen
    if arm.name == "es":
        row = int(np.flatnonzero(networks.index == 1)[0])  # the final search mean
        return [("es", float(values["es.target_density"]), row, networks, actual[row])]
    if arm.name == "ppo-pruning":
        method, density = str(values["ppo.pruning"]), float(values["ppo.density"])
        return [(method, density, 0, networks, actual[0])]
    return [("dense", 1.0, 0, networks, actual[0])]


def _evaluate(task, picks: list, episodes: int, seed: int) -> np.ndarray:
    """Returns of the picked networks over the same ``episodes`` episodes (one key)."""
    import jax
    import jax.numpy as jnp

    from synprune_jax.types import Population

    evaluator = dataclasses.replace(task, num_episodes=episodes)
    stack = lambda trees: jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *trees)  # noqa: E731
    chosen = [networks.network(row) for _, _, row, networks, _ in picks]
    params = stack([params for params, _ in chosen])
    masks = stack([masks for _, masks in chosen])
    population = Population(
        params=params, masks=masks, rates=jnp.zeros((len(picks), 2), jnp.float32)
    )
    result = jax.jit(evaluator.evaluate)(jax.random.key(seed), population)
    return np.asarray(result.fitness, np.float64)


def compare_pruning(
    out: str | os.PathLike,
    *,
    budget: int = DEFAULT_BUDGET,
    seeds: Sequence[int] = (0, 1, 2),
    densities: Sequence[float] = DEFAULT_DENSITIES,
    methods: Sequence[str] = METHODS,
    overrides: Sequence[str] = (),
    episodes: int = 16,
    evaluation_seed: int = 2**20,
    devices: int | None = None,
    log: Callable[[str], None] | None = None,
):
    """Runs (or resumes) the comparison; see the module docstring.

    Args:
        out: the comparison's directory (one sweep folder per method group inside).
        budget: environment steps per run.
        seeds: the seeds of every method and density.
        densities: density bounds (MAP-Elites) and targets (ES, gradient methods) in ``(0, 1]``.
        methods: a subset of :data:`METHODS`.
        overrides: ``key=value`` strings; each experiment takes those of its own sections
            (``task.*`` and ``run.*``: all; ``map_elites.*``: MAP-Elites; ``es.*``: ES;
            ``ppo.*``: the PPO runs), e.g. ``task.env_name=walker2d``.
        episodes: evaluation episodes of every chosen network.
        evaluation_seed: the key of those episodes.
        devices: local devices each sweep splits its runs over (``None``: all).
        log: receives one-line progress messages.

    Returns:
        The per-run ``pandas.DataFrame`` written to ``comparison.csv``.

    Raises:
        ConfigError: bad methods, densities, budget or overrides (before anything compiles).
    """
    import pandas as pd

    from synprune_jax import sweeps
    from synprune_jax.experiments.map_elites import build_task

    if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    seeds = sweeps.check_seeds(seeds)
    densities = sorted({float(d) for d in densities})
    arms = plan_arms(budget, densities, methods, overrides)
    for arm in arms:  # every run's config checked before the first compiles
        sweeps.plan_runs(arm.experiment, seeds, arm.grid, list(arm.overrides))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    picks, walls = [], {}
    for arm in arms:
        if log:
            log(f"{arm.name}: {arm.experiment}, {arm.env_steps:,} env steps per run")
        result = sweeps.sweep(
            arm.experiment,
            seeds,
            arm.grid,
            out=out / arm.name,
            overrides=list(arm.overrides),
            devices=devices,
            plots=False,
            log=log,
        )
        walls.update({(arm.name, run): value for run, value in _walls(out / arm.name).items()})
        for spec in result.runs:
            for pick in _chosen(arm, out / arm.name / "runs" / spec.run_id, spec.values, densities):
                picks.append((arm, spec.run_id, spec.seed, pick))
    task_section = _configured("ppo", _own("ppo", overrides))["task"]
    task_section["devices"] = 1
    task = build_task(task_section)
    returns = _evaluate(task, [pick for *_, pick in picks], episodes, evaluation_seed)
    rows = [
        {
            "method": method,
            "density": density,
            "seed": seed,
            "return": float(value),
            "actual_density": float(actual),
            "env_steps": arm.env_steps,
            "wall_s": walls.get((arm.name, run), (math.nan, math.nan))[0],
            "compile_s": walls.get((arm.name, run), (math.nan, math.nan))[1],
        }
        for (arm, run, seed, (method, density, _, _, actual)), value in zip(
            picks, returns, strict=True
        )
    ]
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    summary = summarize(table)
    markdown = describe(summary, budget=budget, episodes=episodes, seeds=seeds)
    (out / "comparison.md").write_text(markdown + "\n")
    (out / "comparison.json").write_text(
        json.dumps(
            {
                "budget": int(budget),
                "seeds": list(seeds),
                "densities": densities,
                "methods": list(methods),
                "overrides": list(overrides),
                "episodes": int(episodes),
                "evaluation_seed": int(evaluation_seed),
            },
            indent=2,
        )
    )
    plot_comparison(out / "return_vs_density.png", summary, budget=budget)
    return table


def _walls(sweep_dir: Path) -> dict[str, tuple[float, float]]:
    """``{run_id: (wall seconds, compile seconds)}`` from a sweep's ``timing.json``: each
    group's figures (compiling included in the wall time) divided by its runs (they ran vmapped
    together). Empty if absent."""
    try:
        groups = json.loads((sweep_dir / "timing.json").read_text()).get("groups", [])
    except (OSError, ValueError, AttributeError):
        return {}
    walls = {}
    for group in groups:
        runs = group.get("runs", [])
        init_s = float(group.get("init_compile_s") or 0.0)  # before the runner's wall clock
        compile_s = init_s + sum(float(v) for v in group.get("chunk_compile_s", {}).values())
        wall_s = init_s + float(group.get("wall_s", math.nan))
        for run in runs:
            walls[run] = (wall_s / len(runs), compile_s / len(runs))
    return walls


def summarize(table):
    """Mean, standard deviation, min and max of ``return`` per method and density, with the
    mean actual density, env steps and wall seconds per run."""
    grouped = table.groupby(["method", "density"], sort=False)
    summary = grouped.agg(
        seeds=("return", "size"),
        mean=("return", "mean"),
        std=("return", "std"),
        min=("return", "min"),
        max=("return", "max"),
        actual_density=("actual_density", "mean"),
        env_steps=("env_steps", "first"),
        wall_s=("wall_s", "mean"),
        compile_s=("compile_s", "mean"),
    ).reset_index()
    order = {name: i for i, name in enumerate(METHODS)}
    summary["order"] = summary["method"].map(order)
    return summary.sort_values(["order", "density"]).drop(columns="order").reset_index(drop=True)


def describe(summary, *, budget: int, episodes: int, seeds: Sequence[int]) -> str:
    """The summary as markdown: one row per method and density."""
    from synprune_jax.experiments.base import markdown_table

    rows = [
        {
            "method": row.method,
            "density": f"{row.density:g}",
            "return": f"{row.mean:.4g}" + ("" if math.isnan(row.std) else f" ± {row.std:.2g}"),
            "range": f"{row.min:.4g} to {row.max:.4g}",
            "actual_density": float(row.actual_density),
            "env_steps": f"{int(row.env_steps):,}",
            "wall_s": float(row.wall_s),
            "compile_s": float(row.compile_s),
        }
        for row in summary.itertuples()
    ]
    headers = {
        "method": "method",
        "density": "density (bound / target)",
        "return": "return (mean ± std over seeds)",
        "range": "min to max",
        "actual_density": "actual density",
        "env_steps": "env steps per run",
        "wall_s": "wall s per run",
        "compile_s": "of it compiling",
    }
    return (
        f"Return of each method's network against density: budget {budget:,} env steps per run, "
        f"seeds {list(seeds)}, every network evaluated on the same {episodes} episodes.\n\n"
        + markdown_table(rows, headers, formats={"wall_s": ".1f", "compile_s": ".1f"})
    )


def plot_comparison(path, summary, *, budget: int) -> Path:
    """Return against density, one line per method (mean, with the seeds' min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in [m for m in METHODS if m in set(summary["method"])]:
        rows = summary[summary["method"] == method].sort_values("density")
        if method == "dense":
            axis.axhline(
                float(rows["mean"].iloc[0]), color="black", linestyle="--", label="dense PPO"
            )
            continue
        axis.plot(rows["density"], rows["mean"], marker="o", label=method)
        axis.fill_between(rows["density"], rows["min"], rows["max"], alpha=0.15)
    axis.set_xscale("log")
    axis.set_xlabel("density of the policy's kernels (log scale)")
    axis.set_ylabel("return (same evaluation episodes)")
    axis.set_title(f"Pruning at an equal budget of {budget:,} env steps per run")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = [
    "Arm",
    "DEFAULT_BUDGET",
    "DEFAULT_DENSITIES",
    "METHODS",
    "compare_pruning",
    "describe",
    "plan_arms",
    "plot_comparison",
    "summarize",
]
