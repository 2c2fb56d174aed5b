"""MAP-Elites pruning experiments: default configs, builder and reporter."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from synprune_jax.config import (
    AUTO,
    ConfigError,
    config_errors,
    from_section,
    require_keys,
    section_defaults,
)
from synprune_jax.experiments.base import Built, Experiment, write_summary

DENSITY_BANDS = (0.1, 0.25, 0.5, 1.0)


def _common(
    experiment: str, task: dict, archive: dict, *, sigma: float, num_generations: int, **values
) -> dict:
    from synprune_jax.runner import RunConfig
    from synprune_jax.variation import MutationHyper

    return {
        "experiment": experiment,
        "algorithm": "map_elites",
        "task": {**task, "devices": AUTO},
        "archive": archive,
        "map_elites": map_elites_section(**values),
        "mutation": section_defaults(MutationHyper, sigma=sigma),
        "run": section_defaults(RunConfig, num_generations=num_generations),
    }


def map_elites_section(**values) -> dict:
    """The ``map_elites`` section: ``MapElitesConfig``'s fields (its ``mutation``'s in place),
    ``values`` replacing defaults (shared by the MAP-Elites and ME-ES experiments)."""
    from synprune_jax.algorithms.map_elites import MapElitesConfig

    return section_defaults((MapElitesConfig, ("archive", "density_bands")), **values)


def _grid(resolution: list[int]) -> dict:
    """Archive section; ``lower``/``upper`` null means the task's own descriptor bounds."""
    return {
        "kind": "grid",
        "resolution": resolution,
        "lower": None,
        "upper": None,
        "num_cells": 400,
        "num_samples": 50000,
    }


def default_config_brax() -> dict:
    """The default job: hopper (spring backend), sparsity x disconnected-fraction grid."""
    task = {
        "name": "brax",
        "env_name": "hopper",
        "backend": "spring",
        "episode_length": 100,
        "num_episodes": 1,
        "hidden_sizes": [16, 16],
        "descriptors": ["sparsity", "disconnected_fraction"],
    }
    # Hopper returns over 100 steps stay above -100 (healthy reward >= 0, control and
    # backward-motion costs are small per step): the stated QD offset.
    return _common(
        "me-prune",
        task,
        _grid([20, 20]),
        batch_size=256,
        initial_batch_size=1024,
        num_generations=800,
        qd_offset=-100.0,
        forward_prune=True,
        sigma=0.05,
    )


def default_config_feet() -> dict:
    task = {
        "name": "brax",
        "env_name": "halfcheetah",
        "backend": "spring",
        "episode_length": 100,
        "num_episodes": 1,
        "hidden_sizes": [16, 16],
        "descriptors": ["feet_contact"],
    }
    return _common(
        "me-prune-feet",
        task,
        _grid([10, 10]),
        batch_size=128,
        initial_batch_size=512,
        num_generations=200,
        qd_offset=-200.0,
        forward_prune=True,
        sigma=0.05,
    )


def default_config_arm() -> dict:
    task = {"name": "arm", "num_joints": 8, "genotype": "angles"}
    return _common(
        "me-arm",
        task,
        _grid([32, 32]),
        batch_size=512,
        initial_batch_size=1024,
        num_generations=200,
        qd_offset=-float(np.pi**2),
        forward_prune=False,
        sigma=0.1,
    )


def _suite_config(
    experiment: str,
    name: str,
    qd_offset: float,
    num_generations: int,
    batch_size: int,
    sigma: float = 0.05,
    **task,
) -> dict:
    """A MAP-Elites pruning config on task ``name`` (its defaults, ``task`` replacing some):
    sparsity x disconnected fraction on a 20 x 20 grid."""
    from synprune_jax.tasks import task_section

    section = {**task_section(name), **task}
    return _common(
        experiment,
        section,
        _grid([20, 20]),
        batch_size=batch_size,
        initial_batch_size=4 * batch_size,
        num_generations=num_generations,
        qd_offset=qd_offset,
        forward_prune=True,
        sigma=sigma,
    )


def default_config_reach() -> dict:
    # fitness: progress in [-2, 1] (arm lengths), a 0.1 penalty per colliding step (<= 100
    # steps), a success bonus of 1: never below -12
    return _suite_config(
        "me-prune-reach",
        "reach",
        qd_offset=-12.0,
        num_generations=2000,
        batch_size=256,
        num_joints=3,
        num_obstacles=1,
        episode_length=100,
        num_episodes=4,
    )


def default_config_gymnax() -> dict:
    # MountainCarContinuous: -0.1 a^2 per step (|a| <= 1) and +100 at the flag: >= -0.1 * T.
    # Its observations are small (velocity ~0.07): the weights must grow large before a policy
    # pumps with the velocity, so sigma is 10x the Brax default; the env's own 999 steps.
    return _suite_config(
        "me-prune-gymnax",
        "gymnax",
        qd_offset=-100.0,
        num_generations=1500,
        batch_size=256,
        sigma=0.5,
        env_name="MountainCarContinuous-v0",
        episode_length=999,
    )


def default_config_playground() -> dict:
    # dm_control rewards lie in [0, 1] per step
    return _suite_config(
        "me-prune-playground",
        "playground",
        qd_offset=0.0,
        num_generations=1500,
        batch_size=128,
        env_name="CartpoleSwingup",
        episode_length=200,
    )


def build_task(section: dict, population: int | None = None):
    """The task of a config's ``task`` section.

    ``devices`` (default 1) is not a task option: with ``devices = N > 1`` the task is wrapped in
    :class:`~synprune_jax.sharding.ShardedTask` over the first ``N`` local devices, so each device
    evaluates ``P / N`` individuals (on a CPU, ``synprune run`` creates ``N`` CPU devices first).
    ``"auto"`` (the experiments' default) is every local device, at most ``population``
    (:func:`~synprune_jax.sharding.resolve_devices`), and is replaced by that count in
    ``section``, so the saved config reproduces the run. Results differ from a 1-device run in
    the last bits (:mod:`synprune_jax.sharding`): seeded runs reproduce for a fixed ``devices``.
    """
    from synprune_jax.sharding import ShardedTask, devices_mesh, resolve_devices
    from synprune_jax.tasks import make_task

    section["devices"] = resolve_devices(section.get("devices", 1), population)
    mesh = devices_mesh(section["devices"], "task.devices")
    options = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in section.items()
        if k not in ("name", "devices")
    }
    try:
        task = make_task(section["name"], **options)
    except TypeError as error:  # unknown keyword for this task
        raise ConfigError(f"task {section['name']!r}: {error}") from error
    return task if mesh is None else ShardedTask(task, mesh)


def build_archive_spec(section: dict, task):
    from synprune_jax.archives import CVTSpec, GridSpec

    require_keys(section, "archive", _grid([1]))  # one key set for both kinds
    lower, upper = task.descriptor_bounds()
    lower = tuple(float(x) for x in (section["lower"] if section["lower"] is not None else lower))
    upper = tuple(float(x) for x in (section["upper"] if section["upper"] is not None else upper))
    section["lower"], section["upper"] = list(lower), list(upper)  # the resolved config says them
    if section["kind"] == "grid":
        resolution = tuple(int(r) for r in section["resolution"])
        if len(resolution) == 1 and len(lower) > 1:
            resolution = resolution * len(lower)
        return GridSpec(lower=lower, upper=upper, resolution=resolution)
    if section["kind"] == "cvt":
        return CVTSpec(
            lower=lower,
            upper=upper,
            num_cells=int(section["num_cells"]),
            num_samples=int(section["num_samples"]),
        )
    raise ConfigError(f"unknown archive kind {section['kind']!r}; valid: ['cvt', 'grid']")


def build(config: dict) -> Built:
    """Builds task, archive, MAP-Elites and run configuration; validates everything first.

    Resolves defaults in place (archive bounds taken from the task), so the config saved in the
    run directory states every value used.
    """
    from synprune_jax.algorithms.map_elites import MapElites
    from synprune_jax.runner import RunConfig

    require_keys(
        config,
        "config",
        ("experiment", "algorithm", "task", "archive", "map_elites", "mutation", "run"),
    )
    if config["algorithm"] != "map_elites":
        raise ConfigError(f"unknown algorithm {config['algorithm']!r}; valid: ['map_elites']")
    with config_errors():
        task = build_task(config["task"], config["map_elites"].get("batch_size"))
        archive = build_archive_spec(config["archive"], task)
        me_config = map_elites_config(config["map_elites"], archive)
        hyper = mutation_hyper(config["mutation"])
        me_config.mutation.check_hyper(hyper)
        run_config = from_section(config["run"], "run", RunConfig)
        algorithm = MapElites(me_config, task)
    return Built(
        algorithm=algorithm,
        hyper=hyper,
        run_config=run_config,
        report=report,
        describe=describe,
        plot=plot_run,
    )


def map_elites_config(section: dict, archive):
    """The ``map_elites`` section of a run config -> ``MapElitesConfig`` (shared by the
    MAP-Elites and ME-ES experiments; unknown keys are refused)."""
    from synprune_jax.algorithms.map_elites import MapElitesConfig

    given = {"archive": archive, "density_bands": DENSITY_BANDS}
    return from_section(section, "map_elites", (MapElitesConfig, given))


def mutation_hyper(section: dict):
    """The ``mutation`` section -> a validated :class:`~synprune_jax.variation.MutationHyper`."""
    from synprune_jax.variation import MutationHyper

    hyper = from_section(section, "mutation", MutationHyper)
    if hyper.sigma < 0:
        raise ConfigError(f"mutation.sigma must be >= 0, got {hyper.sigma}")
    for name in ("p_disconnect", "p_connect", "rate_redraw_probability"):
        value = getattr(hyper, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"mutation.{name} must be in [0, 1], got {value}")
    if not 0.0 < hyper.rate_min <= hyper.rate_max <= 1.0:
        raise ConfigError("mutation needs 0 < rate_min <= rate_max <= 1")
    return hyper


def best_by_density(fitness, density, bands=DENSITY_BANDS, count_key="num_elites") -> list[dict]:
    """Best finite ``fitness`` at ``density`` <= each band, with the count there (host side)."""
    fitness, density = np.asarray(fitness), np.asarray(density)
    rows = []
    for band in bands:
        inside = np.isfinite(fitness) & (density <= band + 1e-6)
        best = float(fitness[inside].max()) if inside.any() else float("nan")
        rows.append({"max_density": band, "best_fitness": best, count_key: int(inside.sum())})
    return rows


def summary_table(
    state, bands=DENSITY_BANDS, qd_offset: float = 0.0, best: bool = True
) -> list[dict]:
    """What the archive holds at density <= each band (host side): ``num_elites``, ``coverage``
    (their fraction of the cells), ``qd_score`` (sum of fitness - ``qd_offset``),
    ``mean_fitness`` and, with ``best``, ``best_fitness``; NaN where a band is empty.

    Example:
        >>> rows = summary_table(state, qd_offset=-100.0)  # doctest: +SKIP
        >>> [row["max_density"] for row in rows]  # doctest: +SKIP
        [0.1, 0.25, 0.5, 1.0]
    """
    fitness = np.asarray(state.archive.fitness, np.float64)
    density = np.asarray(state.archive.density, np.float64)
    rows = []
    for row in best_by_density(fitness, density, bands):
        inside = np.isfinite(fitness) & (density <= row["max_density"] + 1e-6)
        row.update(
            coverage=float(inside.sum() / fitness.size),
            qd_score=float(np.sum(fitness[inside] - qd_offset)),
            mean_fitness=float(fitness[inside].mean()) if inside.any() else float("nan"),
        )
        if not best:
            del row["best_fitness"]
        rows.append(row)
    return rows


def sparsest(fitness, density, coverages=(0.5, 0.9), level: float = 0.9) -> dict:
    """How sparse the archive's networks get (host side): ``density_for_coverage``, the density
    bound under which the elites reach each fraction of the archive's final coverage, and
    ``density_for_fitness``, the lowest density of an elite whose fitness is at least ``level``
    of the way from the worst elite to the best (with that ``fitness_threshold``)."""
    fitness, density = np.asarray(fitness, np.float64), np.asarray(density, np.float64)
    filled = np.isfinite(fitness)
    if not filled.any():
        return {
            "density_for_coverage": {str(c): float("nan") for c in coverages},
            "fitness_threshold": float("nan"),
            "density_for_fitness": float("nan"),
        }
    ordered = np.sort(density[filled])
    low, high = fitness[filled].min(), fitness[filled].max()
    threshold = low + level * (high - low)
    return {
        "density_for_coverage": {
            str(c): float(ordered[max(0, int(np.ceil(c * ordered.size)) - 1)]) for c in coverages
        },
        "fitness_threshold": float(threshold),
        "density_for_fitness": float(density[filled & (fitness >= threshold)].min()),
    }


def format_summary(rows: list[dict]) -> str:
    """The band table as markdown (a ``best return`` column when the rows have one)."""
    best = "best_fitness" in rows[0]
    lines = [
        "| density <= | elites | coverage | QD-score | mean fitness |"
        + (" best return |" if best else ""),
        "|---|---|---|---|---|" + ("---|" if best else ""),
    ]

    def number(value, digits=2):
        return "—" if np.isnan(value) else f"{value:.{digits}f}"

    for row in rows:
        lines.append(
            f"| {row['max_density'] * 100:.0f} % | {row['num_elites']} | "
            f"{row['coverage']:.3f} | {number(row['qd_score'], 1)} | "
            f"{number(row['mean_fitness'], 3)} |"
            + (f" {number(row['best_fitness'])} |" if best else "")
        )
    return "\n".join(lines)


def _format_sparsest(sparse: dict) -> str:
    coverage = ", ".join(
        f"{float(c) * 100:.0f} % of it at density <= {d:.3f}"
        for c, d in sparse["density_for_coverage"].items()
    )
    return (
        f"Coverage: {coverage}. Sparsest elite with fitness >= "
        f"{sparse['fitness_threshold']:.3f} (90 % of the way from the worst elite to the "
        f"best): density {sparse['density_for_fitness']:.3f}."
    )


def report(run_dir: str, state, metrics: dict) -> dict:
    """Writes ``summary.json``, ``summary.md`` and the plots; returns the summary dict: totals,
    ``table`` (:func:`summary_table`; without the best return on the kinematic arm, whose
    fitness saturates at 0) and ``sparsest`` (:func:`sparsest`)."""
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    archive = state.archive
    fitness = np.asarray(archive.fitness, np.float64)
    rows = summary_table(
        state,
        qd_offset=float(config["map_elites"]["qd_offset"]),
        best=config["task"]["name"] != "arm",
    )
    summary: dict[str, Any] = {
        "generations": int(state.generation),
        "evaluations": int(state.num_evaluations),
        "coverage": float(np.isfinite(fitness).mean()),
        "max_fitness": float(fitness[np.isfinite(fitness)].max())
        if np.isfinite(fitness).any()
        else float("nan"),
        "table": rows,
        "sparsest": sparsest(fitness, np.asarray(archive.density)),
    }
    write_summary(
        run_dir, summary, format_summary(rows) + "\n\n" + _format_sparsest(summary["sparsest"])
    )
    plot_run(run_dir, state, metrics)
    return summary


def describe(summary: dict) -> str:
    """The text ``synprune run`` prints at the end: totals, the band table, how sparse."""
    return (
        f"generations {summary['generations']}, evaluations {summary['evaluations']}, "
        f"coverage {summary['coverage']:.3f}, max fitness {summary['max_fitness']:.3f}\n\n"
        + format_summary(summary["table"])
        + "\n\n"
        + _format_sparsest(summary["sparsest"])
    )


def plot_run(run_dir: str, state, metrics: dict) -> list[str]:
    """Archive heatmap, QD curves and best fitness against density."""
    from synprune_jax import plots
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    archive = state.archive
    fitness = np.asarray(archive.fitness, np.float64)
    fitness = np.where(np.isfinite(fitness), fitness, np.nan)
    centroids = np.asarray(archive.centroids)
    section = config["archive"]
    lower, upper = np.asarray(section["lower"]), np.asarray(section["upper"])  # resolved by build
    resolution = None
    if section["kind"] == "grid":
        resolution = tuple(section["resolution"])
        if len(resolution) == 1:
            resolution = resolution * centroids.shape[1]
    names = _descriptor_names(config)
    paths = [
        plots.plot_archive_heatmap(
            os.path.join(run_dir, "archive_heatmap.png"),
            fitness,
            centroids,
            resolution=resolution,
            lower=lower,
            upper=upper,
            labels=(names[0], names[1] if len(names) > 1 else ""),
            title=f"{config.get('experiment', '')}: elite fitness",
        ),
        plots.plot_curves(
            os.path.join(run_dir, "curves.png"),
            metrics,
            keys=("qd_score", "coverage", "max_fitness"),
        ),
        plots.plot_fitness_vs_density(
            os.path.join(run_dir, "fitness_vs_density.png"),
            np.asarray(archive.density),
            fitness,
            bands=DENSITY_BANDS,
        ),
    ]
    return [str(path) for path in paths]


def _descriptor_names(config: dict) -> list[str]:
    try:
        return list(build_task(config["task"]).descriptor_names)
    except Exception:  # plotting must not fail on a task that cannot be rebuilt
        return ["descriptor 0", "descriptor 1"]


EXPERIMENTS = (
    Experiment(
        "me-prune",
        "MAP-Elites synaptic pruning of a tanh MLP on Brax hopper "
        "(descriptors: sparsity x disconnected fraction)",
        default_config_brax,
        build,
    ),
    Experiment(
        "me-prune-feet",
        "MAP-Elites pruning on Brax halfcheetah with feet-contact "
        "descriptors (behavioural diversity); reports density bands as well",
        default_config_feet,
        build,
    ),
    Experiment(
        "me-prune-reach",
        "MAP-Elites pruning of a tanh MLP that moves a 3-link planar "
        "arm to a target around an obstacle (Cartesian observations; reach task); the "
        "table gives the best return per density band",
        default_config_reach,
        build,
    ),
    Experiment(
        "me-prune-gymnax",
        "MAP-Elites pruning on gymnax MountainCarContinuous-v0 "
        "(any gymnax env with task.env_name; needs the [tasks] extra)",
        default_config_gymnax,
        build,
    ),
    Experiment(
        "me-prune-playground",
        "MAP-Elites pruning on MuJoCo Playground CartpoleSwingup "
        "(any dm_control-suite env with task.env_name; needs the [tasks] extra)",
        default_config_playground,
        build,
    ),
    Experiment(
        "me-arm",
        "MAP-Elites on the kinematic planar arm (direct masked joint "
        "angles; end-effector descriptors): the quick QD benchmark, seconds on CPU",
        default_config_arm,
        build,
    ),
)
