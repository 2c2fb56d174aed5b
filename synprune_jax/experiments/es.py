"""ES-with-pruning and truncation-GA experiments: default configs, builders and reporters.

* ``es-prune`` / ``es-prune-arm``: an evosax strategy (OpenES by default) on one masked policy,
  pruned every k generations along a schedule (:class:`~synprune_jax.algorithms.es.MaskedES`);
* ``ga-pruned-init`` / ``ga-arm``: truncation GA from Beta-pruned random networks, or from the
  elites of a finished MAP-Elites run (``ga.init=archive``, ``ga.archive_dir=DIR``, read on the
  host by :func:`load_archive_elites`) (:class:`~synprune_jax.algorithms.ga.TruncationGA`);
* ``me-es``: MAP-Elites whose offspring come from the core mutation emitter and an ES emitter
  (:class:`~synprune_jax.algorithms.map_elites.MapElitesES`).
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

DENSITY_BANDS = (0.1, 0.25, 0.5, 1.0)

_BRAX_TASK = {
    "name": "brax",
    "env_name": "hopper",
    "backend": "spring",
    "episode_length": 100,
    "num_episodes": 1,
    "hidden_sizes": [16, 16],
    "descriptors": ["sparsity", "disconnected_fraction"],
    "devices": AUTO,
}
_ARM_TASK = {
    "name": "arm",
    "num_joints": 8,
    "genotype": "mlp",
    "hidden_sizes": [16],
    "descriptors": ["sparsity", "disconnected_fraction"],
    "devices": AUTO,
}


def _run(num_generations: int, checkpoint_every: int = 50) -> dict:
    from synprune_jax.runner import RunConfig

    return section_defaults(
        RunConfig, num_generations=num_generations, checkpoint_every=checkpoint_every
    )


def _es_section(**values) -> dict:
    """The ``es`` section: ``ESConfig``'s fields, then ``ESHyper``'s."""
    from synprune_jax.algorithms.es import ESConfig, ESHyper

    return section_defaults(ESConfig, ESHyper, **values)


def es_config_and_hyper(section: dict):
    """``(ESConfig, ESHyper)`` from a config's ``es`` section, the hyper's values checked
    (:func:`~synprune_jax.algorithms.es.validate_hyper`; the builders turn errors into
    ``ConfigError``)."""
    from synprune_jax.algorithms.es import ESConfig, ESHyper, validate_hyper

    config, hyper = from_section(section, "es", ESConfig, ESHyper)
    validate_hyper(hyper)
    return config, hyper


def default_config_es_prune() -> dict:
    """OpenES on hopper (spring), 16-16 tanh policy, pruned by |mean| toward 20 % density."""
    return {
        "experiment": "es-prune",
        "algorithm": "es",
        "task": dict(_BRAX_TASK),
        "es": _es_section(
            population_size=64,
            sigma_init=0.05,
            learning_rate=0.02,
            prune_every=10,
            prune_schedule="cubic",
            target_density=0.2,
            prune_start=10,
            prune_end=150,
        ),
        "run": _run(200),
    }


def default_config_es_prune_arm() -> dict:
    return {
        "experiment": "es-prune-arm",
        "algorithm": "es",
        "task": dict(_ARM_TASK),
        "es": _es_section(
            population_size=32,
            sigma_init=0.05,
            learning_rate=0.02,
            prune_every=5,
            prune_schedule="linear",
            target_density=0.25,
            prune_start=5,
            prune_end=60,
            prune_criterion="snr",
        ),
        "run": _run(100),
    }


def _mutation_section(sigma: float) -> dict:
    from synprune_jax.variation import MutationHyper

    return section_defaults(MutationHyper, sigma=sigma)


def _ga_section(population_size: int) -> dict:
    """The ``ga`` section: ``GAConfig``'s fields (its ``mutation``'s in place), ``GAHyper``'s
    less ``mutation`` (the ``mutation`` section) and ``archive_dir`` (``ga.init=archive``)."""
    from synprune_jax.algorithms.ga import GAConfig, GAHyper

    return {
        **section_defaults(GAConfig, (GAHyper, ("mutation",)), population_size=population_size),
        "archive_dir": None,
    }


def default_config_ga() -> dict:
    """Truncation GA on hopper (spring) from Beta-pruned random 16-16 policies."""
    return {
        "experiment": "ga-pruned-init",
        "algorithm": "ga",
        "task": dict(_BRAX_TASK),
        "ga": _ga_section(128),
        "mutation": _mutation_section(0.05),
        "run": _run(200),
    }


def default_config_ga_arm() -> dict:
    return {
        "experiment": "ga-arm",
        "algorithm": "ga",
        "task": dict(_ARM_TASK),
        "ga": _ga_section(64),
        "mutation": _mutation_section(0.1),
        "run": _run(100),
    }


def default_config_me_es() -> dict:
    """MAP-Elites with mutation + ES emitters on the arm MLP (sparsity x disconnection grid)."""
    from synprune_jax.algorithms.emitters import ESEmitterConfig, MapElitesESHyper
    from synprune_jax.experiments.map_elites import _grid, map_elites_section

    return {
        "experiment": "me-es",
        "algorithm": "me_es",
        "task": dict(_ARM_TASK),
        "archive": _grid([16, 16]),
        "map_elites": map_elites_section(
            batch_size=64, initial_batch_size=128, qd_offset=-float(np.pi**2)
        ),
        "es_emitter": section_defaults(ESEmitterConfig, (MapElitesESHyper, ("mutation",))),
        "mutation": _mutation_section(0.1),
        "run": _run(100),
    }


def default_config_es_info() -> dict:
    """Information at generation 0 vs ES learning speed: 16 Beta-pruned hopper policies."""
    from synprune_jax.analysis.learning_speed import LearningSpeedStudy

    study = (LearningSpeedStudy, ("task", "es_config", "observations_fn"))
    return {
        "experiment": "es-info",
        "algorithm": "learning_speed",
        "task": dict(_BRAX_TASK),
        "es": _es_section(
            population_size=32, sigma_init=0.05, learning_rate=0.02, evaluate_mean=False
        ),
        "study": section_defaults(study, num_networks=16, threshold=225.0),
        "run": _run(50, checkpoint_every=10),
    }


# ----- builders ---------------------------------------------------------------------------------


def _as_config_error(function):
    def wrapped(config: dict) -> Built:
        with config_errors(FileNotFoundError):
            return function(config)

    return wrapped


def _require(config: dict, algorithm: str, sections: tuple[str, ...]) -> None:
    require_keys(config, "config", ("experiment", "algorithm", "task", *sections, "run"))
    if config["algorithm"] != algorithm:
        raise ConfigError(f"algorithm must be {algorithm!r}, got {config['algorithm']!r}")


@_as_config_error
def build_es(config: dict) -> Built:
    from synprune_jax.algorithms.es import MaskedES
    from synprune_jax.experiments.map_elites import build_task
    from synprune_jax.runner import RunConfig

    _require(config, "es", ("es",))
    es_config, hyper = es_config_and_hyper(config["es"])
    task = build_task(config["task"], es_config.population_size)
    run_config = from_section(config["run"], "run", RunConfig)
    return Built(
        algorithm=MaskedES(es_config, task),
        hyper=hyper,
        run_config=run_config,
        report=report_es,
        describe=describe_es,
        plot=plot_es,
    )


@_as_config_error
def build_ga(config: dict) -> Built:
    from synprune_jax.algorithms.ga import GAConfig, GAHyper, TruncationGA, validate_hyper
    from synprune_jax.experiments.map_elites import build_task, mutation_hyper
    from synprune_jax.runner import RunConfig

    _require(config, "ga", ("ga", "mutation"))
    ga_config, hyper = from_section(
        config["ga"],
        "ga",
        GAConfig,
        (GAHyper, {"mutation": mutation_hyper(config["mutation"])}),
        extra=("archive_dir",),
    )
    validate_hyper(hyper)
    with config_errors():
        ga_config.mutation.check_hyper(hyper.mutation)
    archive_dir = config["ga"].get("archive_dir")
    if ga_config.init == "archive" and not archive_dir:
        raise ConfigError("ga.init='archive' needs ga.archive_dir (a finished MAP-Elites run)")
    task = build_task(config["task"], ga_config.population_size)
    elites = load_archive_elites(archive_dir) if ga_config.init == "archive" else None
    run_config = from_section(config["run"], "run", RunConfig)
    return Built(
        algorithm=TruncationGA(ga_config, task, elites),
        hyper=hyper,
        run_config=run_config,
        report=report_ga,
        describe=describe_ga,
        plot=plot_ga,
    )


def load_archive_elites(run_dir: str | os.PathLike, count: int | None = None) -> dict:
    """Elites of a finished MAP-Elites run directory, best first (host side): rebuilds the
    run's algorithm from ``run_dir/config.json`` and restores its latest checkpoint.

    Returns:
        ``{"params": [K, ...], "masks": [K, ...], "rates": [K, 2], "fitness": [K],
        "experiment": name}`` (numpy pytrees; ``K`` = filled cells, or ``count`` of them), the
        ``elites`` argument of :class:`~synprune_jax.algorithms.ga.TruncationGA`.

    Raises:
        FileNotFoundError: no config or checkpoint. ValueError: the state has no archive, or
            it is empty.
    """
    import jax

    from synprune_jax.export import restore_run

    config, _, state = restore_run(run_dir)
    if not hasattr(state, "archive"):
        raise ValueError(f"the run in {run_dir} ({config['experiment']}) has no archive")
    archive = jax.device_get(state.archive)
    fitness = np.asarray(archive.fitness)
    filled = np.nonzero(np.isfinite(fitness))[0]
    if filled.size == 0:
        raise ValueError(f"the archive of {run_dir} is empty")
    order = filled[np.argsort(-fitness[filled], kind="stable")]
    if count is not None:
        order = order[:count]
    genomes = archive.genomes
    take = lambda tree: jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[order], tree)
    return {
        "params": take(genomes.params),
        "masks": take(genomes.masks),
        "rates": np.asarray(genomes.rates, np.float32)[order],
        "fitness": fitness[order],
        "experiment": config["experiment"],
    }


@_as_config_error
def build_me_es(config: dict) -> Built:
    from synprune_jax.algorithms.emitters import (
        ESEmitterConfig,
        MapElitesESHyper,
        validate_es_hyper,
    )
    from synprune_jax.algorithms.map_elites import MapElitesES
    from synprune_jax.experiments import map_elites as me_experiment
    from synprune_jax.runner import RunConfig

    _require(config, "me_es", ("archive", "map_elites", "es_emitter", "mutation"))
    task = me_experiment.build_task(config["task"], config["map_elites"].get("batch_size"))
    archive = me_experiment.build_archive_spec(config["archive"], task)
    me_config = me_experiment.map_elites_config(config["map_elites"], archive)
    mutation = me_experiment.mutation_hyper(config["mutation"])
    with config_errors():
        me_config.mutation.check_hyper(mutation)
    emitter, hyper = from_section(
        config["es_emitter"],
        "es_emitter",
        ESEmitterConfig,
        (MapElitesESHyper, {"mutation": mutation}),
    )
    validate_es_hyper(hyper)
    return Built(
        algorithm=MapElitesES(me_config, emitter, task),
        hyper=hyper,
        run_config=from_section(config["run"], "run", RunConfig),
        report=me_experiment.report,
        describe=me_experiment.describe,
        plot=me_experiment.plot_run,
    )


@_as_config_error
def build_es_info(config: dict) -> Built:
    from synprune_jax.analysis.learning_speed import LearningSpeedStudy
    from synprune_jax.experiments.map_elites import build_task
    from synprune_jax.runner import RunConfig

    _require(config, "learning_speed", ("es", "study"))
    if config["task"]["name"] != "brax":
        raise ConfigError("es-info records rollouts: it needs a Brax task (task.name=brax)")
    es_config, hyper = es_config_and_hyper(config["es"])
    task = build_task(config["task"], es_config.population_size)
    given = {"task": task, "es_config": es_config, "observations_fn": None}
    algorithm = from_section(config["study"], "study", (LearningSpeedStudy, given))
    return Built(
        algorithm=algorithm,
        hyper=hyper,
        run_config=from_section(config["run"], "run", RunConfig),
        report=report_es_info,
        describe=describe_es_info,
        plot=plot_es_info,
    )


def report_es_info(run_dir: str, state, metrics: dict) -> dict:
    """Table of MI at generation 0 vs generations to the threshold, correlation and plot."""
    from synprune_jax.analysis import learning_speed as speed
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    generations = np.asarray(state.first_reached)
    action_mi = np.asarray(state.action_mi, np.float64)
    rows = speed.learning_speed_table(
        action_mi, np.asarray(state.entropy), np.asarray(state.density), generations
    )
    correlation = speed.rank_correlation(action_mi, generations, int(state.generation))
    density_correlation = speed.rank_correlation(
        np.asarray(state.density, np.float64), generations, int(state.generation)
    )
    threshold = float(config["study"]["threshold"])
    summary = {
        "generations": int(state.generation),
        "evaluations": int(state.num_evaluations),
        "threshold": threshold,
        "spearman_mi": correlation,
        "spearman_density": density_correlation,
        "table": rows,
    }
    write_summary(run_dir, summary, speed.format_table(rows, correlation, threshold))
    plot_es_info(run_dir, state, metrics)
    return summary


def describe_es_info(summary: dict) -> str:
    from synprune_jax.analysis import learning_speed as speed

    return (
        f"generations {summary['generations']}, evaluations {summary['evaluations']}\n\n"
        + speed.format_table(summary["table"], summary["spearman_mi"], summary["threshold"])
    )


def plot_es_info(run_dir: str, state, metrics: dict) -> list[str]:
    from synprune_jax import plots
    from synprune_jax.analysis import learning_speed as speed

    return [
        speed.plot_mi_vs_learning_speed(
            os.path.join(run_dir, "mi_vs_learning_speed.png"),
            np.asarray(state.action_mi),
            np.asarray(state.first_reached),
            int(state.generation),
        ),
        str(
            plots.plot_curves(
                os.path.join(run_dir, "curves.png"),
                metrics,
                keys=("max_fitness", "mean_best_fitness", "fraction_reached"),
            )
        ),
    ]


# ----- reports ----------------------------------------------------------------------------------


def _last(metrics: dict, name: str) -> float:
    values = np.asarray(metrics.get(name, []), np.float64)
    return float(values[-1]) if values.size else float("nan")


def report_es(run_dir: str, state, metrics: dict) -> dict:
    """``summary.json`` / ``summary.md`` (best and final-mean fitness, density) and plots."""
    from synprune_jax import masks as masks_lib
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    maskable = _task(config).maskable()
    summary = {
        "generations": int(state.generation),
        "evaluations": int(state.num_evaluations),
        "best_fitness": float(state.best_fitness),
        "best_density": float(masks_lib.density(state.best_masks, maskable)),
        "final_density": float(masks_lib.density(state.masks, maskable)),
        "final_mean_fitness": _last(metrics, "mean_network_fitness"),
        "strategy": config["es"]["strategy"],
        "table": over_time(metrics, _ES_OVER_TIME),
    }
    write_summary(run_dir, summary, describe_es(summary))
    plot_es(run_dir, state, metrics)
    return summary


# the ES's table over time: {row key: metric}
_ES_OVER_TIME = {
    "best_fitness": "best_fitness",
    "max_fitness": "max_fitness",
    "density": "density",
    "mean_network_fitness": "mean_network_fitness",
}
_ES_HEADERS = {
    "generation": "generation",
    "best_fitness": "best so far",
    "max_fitness": "best of generation",
    "density": "density",
    "mean_network_fitness": "mean network",
}


def describe_es(summary: dict) -> str:
    """Totals, the best network and its density, and the fitness and density over time."""
    headers = {
        key: title
        for key, title in _ES_HEADERS.items()
        if not summary["table"] or key in summary["table"][0]
    }
    return (
        f"{summary['strategy']}: generations {summary['generations']}, evaluations "
        f"{summary['evaluations']}; best fitness {summary['best_fitness']:.3f} at density "
        f"{summary['best_density']:.3f}; final density {summary['final_density']:.3f}, final "
        f"mean network fitness {summary['final_mean_fitness']:.3f}\n\n"
        + markdown_table(summary["table"], headers)
    )


def plot_es(run_dir: str, state, metrics: dict) -> list[str]:
    from synprune_jax import plots
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    task = _task(config)
    return [
        str(
            plots.plot_curves(
                os.path.join(run_dir, "curves.png"),
                metrics,
                keys=("max_fitness", "mean_network_fitness", "density"),
            )
        ),
        plot_masks(
            os.path.join(run_dir, "masks.png"),
            state.masks,
            task.maskable(),
            title=f"{config['experiment']}: final mask",
        ),
    ]


def population_density(state, maskable) -> np.ndarray:
    """``[P]`` density of every individual of a GA state (host side)."""
    import jax

    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state.population.masks)]
    flags = jax.tree_util.tree_leaves(maskable)
    active = sum(
        leaf.reshape(leaf.shape[0], -1).sum(1) for leaf, f in zip(leaves, flags, strict=True) if f
    )
    total = sum(leaf[0].size for leaf, f in zip(leaves, flags, strict=True) if f)
    return np.asarray(active, np.float64) / total


def report_ga(run_dir: str, state, metrics: dict) -> dict:
    from synprune_jax.config import load
    from synprune_jax.experiments.map_elites import best_by_density

    config = load(os.path.join(run_dir, "config.json"))
    maskable = _task(config).maskable()
    fitness = np.asarray(state.fitness, np.float64)
    best = int(np.argmax(np.where(np.isfinite(fitness), fitness, -np.inf)))
    density = population_density(state, maskable)
    summary = {
        "generations": int(state.generation),
        "evaluations": int(state.num_evaluations),
        "max_fitness": float(fitness[best]),
        "best_density": float(density[best]),
        "mean_density": float(density.mean()),
        "best_by_density": best_by_density(fitness, density, count_key="count"),
        "table": over_time(
            metrics,
            {
                key: key
                for key in (
                    ("max_fitness", "best_density") if config["task"]["name"] != "arm" else ()
                )
                + ("children_max_fitness", "mean_fitness", "mean_density")
            },
        ),
    }
    write_summary(run_dir, summary, _format_ga(summary))
    plot_ga(run_dir, state, metrics)
    return summary


# the GA's table over time (the best fitness and its density are left out on the kinematic arm,
# whose fitness saturates at 0: an almost empty network reaches it in the first generation)
_GA_HEADERS = {
    "generation": "generation",
    "max_fitness": "best fitness",
    "best_density": "its density",
    "children_max_fitness": "best child",
    "mean_fitness": "mean fitness",
    "mean_density": "mean density",
}


def _format_ga(summary: dict) -> str:
    lines = [
        f"best fitness {summary['max_fitness']:.3f} at density {summary['best_density']:.3f}"
        f" (population mean density {summary['mean_density']:.3f})",
        "",
        markdown_table(
            summary["table"],
            {
                key: title
                for key, title in _GA_HEADERS.items()
                if not summary["table"] or key in summary["table"][0]
            },
        ),
        "",
        "| density <= | best fitness | individuals |",
        "|---|---|---|",
    ]
    for row in summary["best_by_density"]:
        best = "—" if np.isnan(row["best_fitness"]) else f"{row['best_fitness']:.3f}"
        lines.append(f"| {row['max_density'] * 100:.0f} % | {best} | {row['count']} |")
    return "\n".join(lines)


def describe_ga(summary: dict) -> str:
    return (
        f"generations {summary['generations']}, evaluations {summary['evaluations']}\n"
        + _format_ga(summary)
    )


def plot_ga(run_dir: str, state, metrics: dict) -> list[str]:
    import jax

    from synprune_jax import plots
    from synprune_jax.config import load

    config = load(os.path.join(run_dir, "config.json"))
    task = _task(config)
    fitness = np.asarray(state.fitness, np.float64)
    best = int(np.argmax(np.where(np.isfinite(fitness), fitness, -np.inf)))
    best_masks = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[best], state.population.masks)
    return [
        str(
            plots.plot_curves(
                os.path.join(run_dir, "curves.png"),
                metrics,
                keys=("max_fitness", "mean_fitness", "mean_density"),
            )
        ),
        str(
            plots.plot_fitness_vs_density(
                os.path.join(run_dir, "fitness_vs_density.png"),
                population_density(state, task.maskable()),
                np.where(np.isfinite(fitness), fitness, np.nan),
                bands=DENSITY_BANDS,
            )
        ),
        plot_masks(
            os.path.join(run_dir, "masks.png"),
            best_masks,
            task.maskable(),
            title=f"{config['experiment']}: mask of the best individual",
        ),
    ]


def plot_masks(path: str, masks, maskable, title: str = "") -> str:
    """One panel per maskable leaf (kernel ``[in, out]`` drawn as in x out; 1-D as one row)."""
    import jax
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    leaves = [
        np.asarray(leaf)
        for leaf, flag in zip(
            jax.tree_util.tree_leaves(masks), jax.tree_util.tree_leaves(maskable), strict=True
        )
        if flag
    ]
    figure = Figure(figsize=(3.0 * len(leaves), 3.2))
    axes_list = figure.subplots(1, len(leaves), squeeze=False)[0]
    for index, (axes, leaf) in enumerate(zip(axes_list, leaves, strict=True)):
        image = leaf.reshape(1, -1) if leaf.ndim == 1 else leaf.reshape(leaf.shape[0], -1)
        axes.imshow(image, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        axes.set_title(f"layer {index}: {image.mean() * 100:.0f} % active", fontsize=9)
        axes.set_xlabel("output unit")
        axes.set_ylabel("input unit")
    if title:
        figure.suptitle(f"{title} (black: active)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return str(path)


def _task(config: dict):
    from synprune_jax.experiments.map_elites import build_task

    return build_task(dict(config["task"]))


EXPERIMENTS = (
    Experiment(
        "es-prune",
        "OpenES (evosax) on one masked 16-16 policy for Brax hopper, pruned "
        "by |mean| every 10 generations along a cubic schedule to 20 % density",
        default_config_es_prune,
        build_es,
    ),
    Experiment(
        "es-prune-arm",
        "evosax ES with signal-to-noise pruning on the kinematic-arm MLP (seconds on CPU)",
        default_config_es_prune_arm,
        build_es,
    ),
    Experiment(
        "ga-pruned-init",
        "truncation GA (best half mutated into the worst half) on Brax "
        "hopper from Beta-pruned random policies, or from MAP-Elites elites "
        "(ga.init=archive ga.archive_dir=DIR)",
        default_config_ga,
        build_ga,
    ),
    Experiment(
        "ga-arm",
        "truncation GA on the kinematic-arm MLP from Beta-pruned networks (seconds on CPU)",
        default_config_ga_arm,
        build_ga,
    ),
    Experiment(
        "es-info",
        "mutual information (hidden units vs actions) of 16 Beta-pruned "
        "hopper policies at generation 0 vs the ES generations each needs to reach a "
        "return threshold: table, Spearman rho, plot",
        default_config_es_info,
        build_es_info,
    ),
    Experiment(
        "me-es",
        "MAP-Elites on the arm MLP with mutation and evosax-ES emitters mixed "
        "in one run (ME-ES style)",
        default_config_me_es,
        build_me_es,
    ),
)
