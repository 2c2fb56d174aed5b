"""Experiments ``mo-prune-transfer`` (NSGA-II) and ``ga-prune-transfer`` (the single-objective
steady-state GA) on a transfer-learned sparse head: configs, builder, report, plots.

``build`` prepares the data and backbone (host numpy, cached, before anything is traced); the
test split is used only by the report. docs/mo_transfer.md describes the task and the outputs.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil

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

ALGORITHMS = ("nsga2", "ga")


def _base_config(name: str, algorithm: str, objectives: list[str]) -> dict:
    from synprune_jax.algorithms.nsga2 import NSGA2Config, NSGA2Hyper
    from synprune_jax.algorithms.steady_state_ga import SteadyStateGAConfig, SteadyStateGAHyper
    from synprune_jax.runner import RunConfig
    from synprune_jax.transfer.data import DataConfig
    from synprune_jax.transfer.head import HeadConfig, TrainConfig
    from synprune_jax.transfer.problem import ProblemHyper

    return {
        "experiment": name,
        "algorithm": algorithm,
        "data": {**section_defaults(DataConfig), "cache_dir": None},
        "head": section_defaults((HeadConfig, ("num_features", "num_classes")), num_hidden=32),
        "train": {
            **section_defaults(TrainConfig, (ProblemHyper, ("temperature", "seed"))),
            "devices": AUTO,
        },
        "objectives": {"names": objectives, "temperature": 1000.0, "reference": None},
        "nsga2": section_defaults(
            NSGA2Config, (NSGA2Hyper, ("problem",)), population_size=60, memo_capacity=4096
        ),
        "ga": section_defaults(
            (SteadyStateGAConfig, ("objective_index",)),
            (SteadyStateGAHyper, ("problem",)),
            population_size=30,
            memo_capacity=4096,
        ),
        "report": {"bands": [0.0, 50.0, 75.0, 90.0], "accuracy_tolerance": 0.02},
        "run": section_defaults(RunConfig, num_generations=40, chunk_size=5, checkpoint_every=10),
    }


def default_config() -> dict:
    """NSGA-II on accuracy x sparsity x OOD AUROC."""
    return _base_config("mo-prune-transfer", "nsga2", ["accuracy", "sparsity", "auroc"])


def default_config_ga() -> dict:
    """The single-objective GA (fitness = validation accuracy) on the same transfer task."""
    config = _base_config("ga-prune-transfer", "ga", ["accuracy", "sparsity", "auroc"])
    config["run"].update(num_generations=150, chunk_size=10, checkpoint_every=50)
    return config


def build(config: dict) -> Built:
    """Validates the config, prepares the data (cached) and returns the search (``NSGA2`` or
    ``SteadyStateGA`` over a :class:`~synprune_jax.transfer.problem.TransferProblem`), its
    hyper-parameters, the run config and the report."""
    from synprune_jax.algorithms import nsga2 as nsga2_lib
    from synprune_jax.algorithms import steady_state_ga as ga_lib
    from synprune_jax.runner import RunConfig
    from synprune_jax.sharding import devices_mesh, resolve_devices
    from synprune_jax.transfer import problem as problem_lib
    from synprune_jax.transfer.data import DataConfig, cache_key, default_cache_dir, prepare_data
    from synprune_jax.transfer.head import HeadConfig, TrainConfig
    from synprune_jax.transfer.objectives import check_names

    require_keys(
        config,
        "config",
        (
            "experiment",
            "algorithm",
            "data",
            "head",
            "train",
            "objectives",
            "nsga2",
            "ga",
            "report",
            "run",
        ),
    )
    if config["algorithm"] not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {config['algorithm']!r}; valid: {list(ALGORITHMS)}")
    with config_errors():
        run_config = from_section(config["run"], "run", RunConfig)
        data_config = from_section(config["data"], "data", DataConfig, extra=("cache_dir",))
        cache_dir = config["data"].get("cache_dir") or default_cache_dir()
        # checked now with stand-in sizes; sized from the data below
        head = from_section(
            config["head"], "head", (HeadConfig, {"num_features": 1, "num_classes": 2})
        )
        # "auto": every local device, at most the heads one evaluation trains (written back)
        search = config["nsga2"] if config["algorithm"] == "nsga2" else config["ga"]
        batch = search.get("population_size" if config["algorithm"] == "nsga2" else "num_offspring")
        devices = config["train"]["devices"] = resolve_devices(
            config["train"].get("devices", 1), batch
        )
        devices_mesh(devices, "train.devices")  # before the data / backbone work
        objectives = config["objectives"]
        require_keys(objectives, "objectives", ("names", "temperature", "reference"))
        names = check_names(objectives["names"])
        # the run seed is also the heads' training seed
        train_config, problem_hyper = from_section(
            config["train"],
            "train",
            TrainConfig,
            (
                problem_lib.ProblemHyper,
                {
                    "temperature": float(objectives["temperature"]),
                    "seed": np.uint32(run_config.seed),
                },
            ),
            extra=("devices",),
        )
        problem_lib.validate_hyper(problem_hyper)
        reference = objectives["reference"]
        if reference is not None and len(reference) != len(names):
            raise ConfigError("objectives.reference needs one value per objective")
        require_keys(config["report"], "report", ("bands", "accuracy_tolerance"))
        if not all(0 <= float(b) <= 100 for b in config["report"]["bands"]):
            raise ConfigError("report.bands are percentiles in [0, 100]")
        extra_hyper = {"problem": problem_hyper}
        if config["algorithm"] == "nsga2":
            if len(names) < 2:
                raise ConfigError("NSGA-II needs at least two objectives in objectives.names")
            search_config, hyper = from_section(
                config["nsga2"], "nsga2", nsga2_lib.NSGA2Config, (nsga2_lib.NSGA2Hyper, extra_hyper)
            )
            nsga2_lib.validate_hyper(hyper)
        else:
            search_config, hyper = from_section(
                config["ga"],
                "ga",
                (ga_lib.SteadyStateGAConfig, ("objective_index",)),
                (ga_lib.SteadyStateGAHyper, extra_hyper),
            )
            ga_lib.validate_hyper(hyper)
        # host work (data, backbone, cache) before the runner traces anything
        data = prepare_data(data_config, cache_dir=cache_dir)
        head = dataclasses.replace(
            head, num_features=data.num_features, num_classes=data.num_classes
        )
        problem = problem_lib.TransferProblem(data, head, train_config, names, devices=devices)
        algorithm: nsga2_lib.NSGA2 | ga_lib.SteadyStateGA
        if config["algorithm"] == "nsga2":
            algorithm = nsga2_lib.NSGA2(search_config, problem, names)
            hyper = algorithm.resolve_hyper(hyper)  # mutation_rate null: 1 / L
        else:
            algorithm = ga_lib.SteadyStateGA(search_config, problem, names)
    features_path = os.path.join(cache_dir, f"features-{cache_key(data_config)}.npz")

    def report_fn(run_dir, state, metrics):
        return report(
            run_dir,
            state,
            metrics,
            algorithm=algorithm,
            hyper=hyper,
            config=config,
            features_path=features_path,
        )

    def plot_fn(run_dir, state, metrics):
        return plot_run(run_dir, state, metrics, algorithm=algorithm, config=config)

    return Built(
        algorithm=algorithm,
        run_config=run_config,
        report=report_fn,
        describe=describe,
        plot=plot_fn,
        hyper=hyper,
    )


# ----- report ------------------------------------------------------------------------------------


def front_of(state) -> tuple[np.ndarray, np.ndarray]:
    """Distinct first-front members of the final population: ``(genomes [K, L], objectives
    [K, M])``, sorted by the first objective (descending)."""
    from synprune_jax.archives.pareto import non_dominated_numpy

    genomes = np.asarray(state.genomes, bool)
    objectives = np.asarray(state.objectives, np.float64)
    finite = np.all(np.isfinite(objectives), axis=1)
    genomes, objectives = genomes[finite], objectives[finite]
    genomes, first = np.unique(genomes, axis=0, return_index=True)
    objectives = objectives[first]
    keep = non_dominated_numpy(objectives)
    genomes, objectives = genomes[keep], objectives[keep]
    order = np.lexsort((genomes.sum(axis=1), -objectives[:, 0]))
    return genomes[order], objectives[order]


def key_figures(
    val_accuracy, active_fraction, val_auroc, test_accuracy, test_auroc, tolerance: float
) -> dict:
    """The issue's headline numbers, chosen on validation figures only."""
    from synprune_jax.transfer.ensembles import best_single_index

    best = best_single_index(val_accuracy, active_fraction)
    near = np.flatnonzero(val_accuracy >= val_accuracy[best] - tolerance - 1e-9)
    sparse = near[np.lexsort((-val_accuracy[near], active_fraction[near]))[0]]
    robust = int(np.lexsort((active_fraction, -val_auroc))[0])
    pick = lambda i: {
        "val_accuracy": float(val_accuracy[i]),  # noqa: E731
        "test_accuracy": float(test_accuracy[i]),
        "active_fraction": float(active_fraction[i]),
        "val_auroc": float(val_auroc[i]),
        "test_auroc": float(test_auroc[i]),
    }
    return {
        "best_accuracy": pick(best),
        "sparsest_within_tolerance": pick(int(sparse)),
        "best_auroc": pick(robust),
        "tolerance": tolerance,
    }


def report(
    run_dir: str,
    state,
    metrics: dict,
    *,
    algorithm,
    hyper,
    config: dict,
    features_path: str | None = None,
) -> dict:
    """Writes ``front.csv``, ``front.npz``, ``summary.json``, ``summary.md``, ``features.npz``
    (a copy of ``features_path``, the cached features, when it exists) and the plots; returns
    the summary dict.

    Args:
        algorithm: the run's :class:`~synprune_jax.algorithms.nsga2.NSGA2` or
            :class:`~synprune_jax.algorithms.steady_state_ga.SteadyStateGA` (its ``problem``
            retrains the front members for the test split).
        hyper: the run's hyper-parameters (``hyper.problem`` trains the heads as the run did).
    """
    from synprune_jax.archives.pareto import hypervolume
    from synprune_jax.transfer.ensembles import ensemble_table, importance
    from synprune_jax.transfer.objectives import DEFAULT_REFERENCE

    problem = algorithm.problem
    names = algorithm.objective_names
    genomes, objectives = front_of(state)
    dense = np.ones((1, genomes.shape[1]), bool)  # the unpruned head, for comparison
    both = problem.report_metrics(np.concatenate([genomes, dense]), hyper.problem)
    measured = {name: value[:-1] for name, value in both.items()}
    reference = config["objectives"]["reference"]
    if reference is None:
        reference = [DEFAULT_REFERENCE[name] for name in names]
    reference = np.asarray(reference, np.float64)
    data = problem.data
    figures = key_figures(
        measured["val_accuracy"],
        measured["val_active_fraction"],
        measured["val_auroc"],
        measured["test_accuracy"],
        measured["test_auroc"],
        float(config["report"]["accuracy_tolerance"]),
    )
    table = ensemble_table(
        measured["val_accuracy"],
        measured["val_active_fraction"],
        measured["test_predictions"],
        measured["test_probabilities"],
        data.test_labels,
        bands=tuple(config["report"]["bands"]),
    )
    weights = importance(genomes, measured["val_accuracy"])
    summary = {
        "generations": int(state.generation),
        "evaluations": int(state.num_evaluations),
        "objectives": list(names),
        "reference": reference.tolist(),
        "hypervolume": hypervolume(objectives, reference),
        "population_hypervolume": hypervolume(np.asarray(state.objectives), reference),
        "front_size": int(genomes.shape[0]),
        "key_figures": figures,
        "dense_head": {
            f"{split}_{name}": float(both[f"{split}_{name}"][-1])
            for split in ("val", "test")
            for name in ("accuracy", "auroc")
        },
        "ensembles": table,
        "data": data.info,
        "feature_shape": list(data.feature_shape),
        "table": over_time(
            metrics,
            {
                key: key
                for key in metrics
                if key in _OVER_TIME or key.startswith("max_") and key not in _NOT_OVER_TIME
            },
        ),
    }
    write_summary(run_dir, summary, format_summary(summary))
    _write_front(run_dir, genomes, objectives, names, measured)
    np.save(os.path.join(run_dir, "importance.npy"), weights)
    if features_path is not None and os.path.exists(features_path):
        shutil.copyfile(features_path, os.path.join(run_dir, "features.npz"))
    plot_run(run_dir, state, metrics, algorithm=algorithm, config=config)
    return summary


def _write_front(run_dir, genomes, objectives, names, measured) -> None:
    np.savez(
        os.path.join(run_dir, "front.npz"),
        genomes=genomes,
        objectives=objectives,
        objective_names=np.asarray(names),
    )
    floats = ("val_active_fraction", "val_accuracy", "val_auroc", "test_accuracy", "test_auroc")
    with open(os.path.join(run_dir, "front.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "active_fraction", *floats[1:], "epochs_run", "mask"])
        for k in range(genomes.shape[0]):
            writer.writerow(
                [
                    *(repr(float(v)) for v in objectives[k]),
                    *(repr(float(measured[column][k])) for column in floats),
                    int(measured["val_epochs_run"][k]),
                    "".join("1" if bit else "0" for bit in genomes[k]),
                ]
            )


def format_summary(summary: dict) -> str:
    figures = summary["key_figures"]
    tolerance = figures["tolerance"] * 100
    lines = [
        f"Front: {summary['front_size']} heads, objectives {', '.join(summary['objectives'])}; "
        f"hypervolume {summary['hypervolume']:.4f} (reference {summary['reference']})",
        "",
        "| head (chosen on validation) | val acc | test acc | active fraction | val AUROC | "
        "test AUROC |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "best_accuracy": "best accuracy",
        "sparsest_within_tolerance": f"sparsest within {tolerance:.0f} pt of best",
        "best_auroc": "best AUROC",
    }
    rows = [(labels[key], figures[key]) for key in labels]
    dense = summary.get("dense_head")
    if dense is not None:
        rows.append(("unpruned head (reference)", {**dense, "active_fraction": 1.0}))
    for label, row in rows:
        lines.append(
            f"| {label} | {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} | "
            f"{row['active_fraction']:.3f} | {row['val_auroc']:.4f} | "
            f"{row['test_auroc']:.4f} |"
        )
    lines += [
        "",
        "| band (val acc >= percentile) | members | ensemble test acc | "
        "best single test acc | mean member test acc | mean active fraction |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["ensembles"]:
        lines.append(
            f"| p{row['percentile']:.0f} | {row['num_members']} | "
            f"{row['ensemble_test_accuracy']:.4f} | "
            f"{row['best_single_test_accuracy']:.4f} | "
            f"{row['mean_member_test_accuracy']:.4f} | "
            f"{row['mean_active_fraction']:.3f} |"
        )
    return "\n".join(lines)


# The search over the generations: the best value of each objective in the population (not the
# sparsity, whose best is always an empty head, nor the GA's fitness, which is its accuracy),
# with the front's size (NSGA-II) or the best head's density (GA) and the means.
_OVER_TIME = ("front_size", "best_density", "mean_fitness", "mean_density")
_NOT_OVER_TIME = ("max_sparsity", "max_fitness")


def describe(summary: dict) -> str:
    """Totals, the front's key heads and ensembles, and the search over time."""
    table = summary.get("table", [])
    titles = {
        "front_size": "front size",
        "best_density": "density of best",
        "mean_fitness": "mean fitness",
        "mean_density": "mean density",
    }
    headers = {
        key: titles.get(key, f"best {key[len('max_') :]}" if key.startswith("max_") else key)
        for key in (table[0] if table else {})
    }
    return (
        f"generations {summary['generations']}, evaluations {summary['evaluations']}\n\n"
        + format_summary(summary)
        + ("\n\n" + markdown_table(table, headers) if table else "")
    )


# ----- plots (host only) -------------------------------------------------------------------------


def _label(name: str) -> str:
    return {
        "sparsity": "sparsity (1 - active fraction)",
        "auroc": "OOD AUROC (validation)",
        "accuracy": "accuracy (validation)",
        "neg_loss": "- loss (validation)",
    }.get(name, name)


def plot_run(run_dir: str, state, metrics: dict, *, algorithm, config: dict) -> list[str]:
    """``front_2d.png``, ``front_3d.png`` (three or more objectives), ``importance.png``,
    ``curves.png`` (``algorithm``: the run's search, for the objective names and the head)."""
    from synprune_jax import plots

    names = algorithm.objective_names
    population = np.asarray(state.objectives, np.float64)
    genomes, front = front_of(state)
    paths = []
    figure = plots._new_figure(5.5, 4.2)
    axes = figure.add_subplot()
    x_index = names.index("sparsity") if "sparsity" in names else (1 if len(names) > 1 else 0)
    y_index = names.index("accuracy") if "accuracy" in names else 0
    colour = names.index("auroc") if "auroc" in names and len(names) > 2 else None
    axes.scatter(
        population[:, x_index], population[:, y_index], s=10, c="lightgrey", label="population"
    )
    scatter = axes.scatter(
        front[:, x_index],
        front[:, y_index],
        s=28,
        c=None if colour is None else front[:, colour],
        cmap="viridis",
        edgecolors="black",
        linewidths=0.4,
        label="first front",
    )
    if colour is not None:
        figure.colorbar(scatter, ax=axes, label=_label(names[colour]))
    axes.set_xlabel(_label(names[x_index]))
    axes.set_ylabel(_label(names[y_index]))
    axes.legend(loc="lower left")
    axes.set_title(f"{config.get('experiment', '')}: Pareto front")
    paths.append(str(plots._save(figure, os.path.join(run_dir, "front_2d.png"))))
    if len(names) >= 3:
        figure = plots._new_figure(5.5, 4.5)
        axes = figure.add_subplot(projection="3d")
        axes.scatter(population[:, 0], population[:, 1], population[:, 2], s=6, c="lightgrey")
        axes.scatter(
            front[:, 0],
            front[:, 1],
            front[:, 2],
            s=22,
            c=front[:, 2],
            cmap="viridis",
            edgecolors="black",
            linewidths=0.3,
        )
        axes.set_xlabel(_label(names[0]), fontsize=7)
        axes.set_ylabel(_label(names[1]), fontsize=7)
        axes.set_zlabel(_label(names[2]), fontsize=7)
        axes.set_title("first front (3 objectives)")
        paths.append(str(plots._save(figure, os.path.join(run_dir, "front_3d.png"))))
    importance_path = os.path.join(run_dir, "importance.npy")
    if os.path.exists(importance_path):
        weights = np.load(importance_path)
    else:
        weights = genomes.mean(axis=0) if genomes.size else np.zeros(genomes.shape[1])
    paths.append(
        plot_importance(
            os.path.join(run_dir, "importance.png"),
            weights,
            algorithm.problem.head,
            algorithm.problem.data.feature_shape,
        )
    )
    keys = tuple(k for k in metrics if k.startswith("max_") or k == "front_size")
    if keys and metrics:
        paths.append(
            str(plots.plot_curves(os.path.join(run_dir, "curves.png"), metrics, keys=keys))
        )
    return paths


def plot_importance(path: str, weights: np.ndarray, head, feature_shape) -> str:
    """Input-feature importance as a picture (mean over channels of a ``[H, W, C]`` feature
    map) when the features are spatial, plus bars for hidden neurons when they are evolved."""
    from synprune_jax import plots

    num_in = head.num_features if head.genome in ("input", "both") else 0
    parts = [
        (name, part)
        for name, part in (("input feature", weights[:num_in]), ("hidden neuron", weights[num_in:]))
        if part.size
    ]
    figure = plots._new_figure(4.5 * len(parts), 3.8)
    for index, (name, part) in enumerate(parts, start=1):
        axes = figure.add_subplot(1, len(parts), index)
        if name == "input feature" and len(feature_shape) >= 2:
            picture, title = _mosaic(part.reshape(feature_shape))
            top = max(float(np.nanmax(picture)), 1e-6)
            image = axes.imshow(picture, cmap="magma", vmin=0.0, vmax=top)
            figure.colorbar(image, ax=axes, label="importance")
            axes.set_title(title, fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
        else:
            axes.bar(np.arange(part.size), part)
            axes.set_xlabel(name)
            axes.set_ylabel("importance")
    return str(plots._save(figure, path))


def _mosaic(feature_map: np.ndarray) -> tuple[np.ndarray, str]:
    """``[H, W]`` as is; ``[H, W, C]`` tiled channel by channel (4 per row, NaN gaps)."""
    if feature_map.ndim == 2:
        return feature_map, f"input features {feature_map.shape}"
    height, width, channels = feature_map.shape[:3]
    if channels == 1:
        return feature_map[..., 0], f"input features {feature_map.shape[:2]}"
    per_row = min(4, channels)
    rows = -(-channels // per_row)
    mosaic = np.full((rows * (height + 1) - 1, per_row * (width + 1) - 1), np.nan)
    for channel in range(channels):
        r, c = divmod(channel, per_row)
        mosaic[
            r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width
        ] = feature_map[..., channel]
    return mosaic, (
        f"input features {tuple(feature_map.shape)}: one {height}x{width} tile per channel"
    )


EXPERIMENTS = (
    Experiment(
        "mo-prune-transfer",
        "NSGA-II pruning of a transfer-learned sparse head (digits: "
        "CNN pretrained on 0,1,2,4,6, target 3,5,8,9, OOD 7; accuracy x sparsity x OOD "
        "AUROC); "
        "Pareto front, ensembles, importance; 1-2 min on 2 CPU cores",
        default_config,
        build,
    ),
    Experiment(
        "ga-prune-transfer",
        "The original single-objective steady-state GA (validation "
        "accuracy, ties to the sparser head) on the same transfer task",
        default_config_ga,
        build,
    ),
)
