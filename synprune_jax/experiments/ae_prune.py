"""Activation-guided pruning of autoencoders: ``ae-prune`` (canonical) and ``ae-coevolution``.

One runner generation is one epoch; ``run.num_generations`` is the number of epochs. The setting,
operator and schedule are config keys::

    synprune run ae-prune --set operator=conjunctive --set schedule=exponential
    synprune run ae-coevolution --set operator=random --set schedule=exponential
    synprune run ae-coevolution --set coevolution.topology=torus --set coevolution.grid_shape=2x5
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np

from synprune_jax.config import (
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

SETTINGS = ("canonical", "coevolution")
# published p0: 0.1 for the variance operator, 0.5 for the others
DEFAULT_PROBABILITY = {"variance": 0.1, "random": 0.5, "conjunctive": 0.5, "none": 0.5}
# TrainingHyper field: (config section, key)
HYPER_KEYS = {
    "learning_rate": ("training", "learning_rate"),
    "prune_probability": ("pruning", "probability"),
    "prune_amount": ("pruning", "amount"),
    "threshold": ("pruning", "threshold"),
    "lr_mutation_std": ("coevolution", "lr_mutation_std"),
    "lr_min": ("coevolution", "lr_min"),
    "lr_max": ("coevolution", "lr_max"),
}


def _default(setting: str, name: str) -> dict:
    from synprune_jax.autoencoder import AutoencoderSpec, BinaryClusteringSpec
    from synprune_jax.runner import RunConfig

    return {
        "experiment": name,
        "setting": setting,
        "operator": "none",
        "schedule": "exponential",
        "data": {**section_defaults(BinaryClusteringSpec), "seed": 0},
        "model": section_defaults((AutoencoderSpec, ("input_dim",))),
        "training": {
            "num_trials": 30,
            "batch_size": 5,
            "learning_rate": 1e-5,
            "adam_beta1": 0.5,
            "adam_beta2": 0.999,
            "eval_every": 1,
        },
        "pruning": {
            "probability": None,
            "amount": 0.1,
            "threshold": 0.1,
            "num_cases": 100,
            "persistent": False,
            "activation_point": "post_relu",
        },
        "coevolution": {
            "num_cells": 10,
            "radius": 1,
            "order": "sequential",
            "topology": "ring",
            "grid_shape": None,
            "neighbourhood": "von_neumann",
            "lr_mutation_std": 1e-5,
            "lr_min": 1e-9,
            "lr_max": 10.0,
        },
        "run": section_defaults(RunConfig, num_generations=400),
    }


def default_config_canonical() -> dict:
    """Published canonical setting: 30 trials, 400 epochs, batch 5, lr 1e-5, no pruning."""
    return _default("canonical", "ae-prune")


def default_config_coevolution() -> dict:
    """Published coevolution setting: ring of 10 cells, radius 1, cells visited in turn
    (``coevolution.topology=torus``: a toroidal grid instead)."""
    return _default("coevolution", "ae-coevolution")


def _number(section: dict, name: str, key: str) -> float:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}.{key} must be a number, got {value!r}")
    return float(value)


def _grid_shape(value):
    """``coevolution.grid_shape``: null, ``[rows, cols]`` or the text ``"2x5"`` / ``"2,5"``."""
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.lower().replace("x", ",").split(",")]
        except ValueError:
            raise ConfigError(
                f"coevolution.grid_shape must be [rows, cols] or 'ROWSxCOLS', got {value!r}"
            ) from None
    return tuple(value) if isinstance(value, list) else value


def build(config: dict) -> Built:
    """Validates the config, generates the data and builds the algorithm and its
    :class:`~synprune_jax.autoencoder.TrainingHyper` (nothing compiles).

    Resolves ``pruning.probability`` (null -> the published p0 of the operator) in place.
    """
    import jax

    from synprune_jax.autoencoder import (
        AutoencoderSpec,
        BinaryClusteringSpec,
        CanonicalTraining,
        CoevolutionConfig,
        SpatialCoevolution,
        TrainingConfig,
        TrainingHyper,
        check_hyper,
        make_binary_clustering,
    )
    from synprune_jax.autoencoder.pruning import check_operator
    from synprune_jax.autoencoder.schedules import check_schedule
    from synprune_jax.runner import RunConfig

    defaults = _default("canonical", "ae-prune")
    require_keys(config, "config", defaults)
    for name in ("operator", "schedule"):  # `--set operator=none` parses to null
        if config[name] is None:
            config[name] = "none"
    if config["setting"] not in SETTINGS:
        raise ConfigError(f"unknown setting {config['setting']!r}; valid: {list(SETTINGS)}")
    with config_errors():
        check_operator(config["operator"])
        check_schedule(config["schedule"])
    for name in ("training", "pruning", "coevolution"):
        require_keys(config[name], name, defaults[name])
    training, pruning, coevolution = config["training"], config["pruning"], config["coevolution"]
    if pruning["probability"] is None:
        pruning["probability"] = DEFAULT_PROBABILITY[config["operator"]]
    with config_errors():
        data_spec = from_section(config["data"], "data", BinaryClusteringSpec, extra=("seed",))
        data_seed = config["data"].get("seed", 0)
        if not isinstance(data_seed, int) or isinstance(data_seed, bool) or data_seed < 0:
            raise ConfigError(f"data.seed must be a non-negative int, got {data_seed!r}")
        spec = from_section(
            config["model"], "model", (AutoencoderSpec, {"input_dim": data_spec.dim})
        )
        run_config = from_section(config["run"], "run", RunConfig)
        common = dict(
            spec=spec,
            num_epochs=run_config.num_generations,
            operator=config["operator"],
            schedule=config["schedule"],
            **{key: training[key] for key in ("num_trials", "batch_size", "eval_every")},
            **{key: pruning[key] for key in ("persistent", "activation_point", "num_cases")},
            adam_beta1=_number(training, "training", "adam_beta1"),
            adam_beta2=_number(training, "training", "adam_beta2"),
        )
        hyper = TrainingHyper(
            **{
                field: _number(config[section], section, key)
                for field, (section, key) in HYPER_KEYS.items()
            }
        )
        check_hyper(hyper)
        if config["setting"] == "canonical":
            algorithm_config = TrainingConfig(**common)
        else:
            # topology keys are optional so that run directories made before they existed
            # still resume (as rings)
            algorithm_config = CoevolutionConfig(
                **common,
                num_cells=coevolution["num_cells"],
                radius=coevolution["radius"],
                order=coevolution["order"],
                topology=coevolution.get("topology", "ring"),
                grid_shape=_grid_shape(coevolution.get("grid_shape")),
                neighbourhood=coevolution.get("neighbourhood", "von_neumann"),
            )
        data = make_binary_clustering(jax.random.key(data_seed), data_spec)
        algorithm: CanonicalTraining | SpatialCoevolution
        if isinstance(algorithm_config, CoevolutionConfig):
            algorithm = SpatialCoevolution(algorithm_config, data["train"], data["test"])
        else:
            algorithm = CanonicalTraining(algorithm_config, data["train"], data["test"])
    labels = {name: config[name] for name in ("setting", "operator", "schedule")}
    return Built(
        algorithm=algorithm,
        hyper=hyper,
        run_config=run_config,
        report=functools.partial(report, spec=spec, labels=labels),
        describe=describe,
        plot=functools.partial(plot_run, spec=spec),
    )


def summarize(state, spec) -> dict:
    """Mean / std / min / max over trials of the final per-trial figures, plus the raw values."""
    from synprune_jax.autoencoder import final_per_trial

    per_trial = final_per_trial(state, spec)
    summary: dict[str, Any] = {
        "epochs": int(state.generation),
        "num_trials": int(len(per_trial["l1_train"])),
    }
    for name, values in per_trial.items():
        values = np.asarray(values, np.float64)
        summary[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "per_trial": [float(v) for v in values],
        }
    return summary


def report(run_dir: str, state, metrics: dict, *, spec, labels: dict) -> dict:
    """Writes ``summary.json``, ``summary.md`` and the plots; returns the summary.

    Args:
        spec: the run's :class:`~synprune_jax.autoencoder.AutoencoderSpec`.
        labels: ``{"setting", "operator", "schedule"}`` of the run, added to the summary.
    """
    summary = summarize(state, spec)
    summary.update(labels)
    # the kept fraction only where the run prunes (operator "none" keeps every weight)
    summary["table"] = over_time(
        metrics,
        {
            key: key
            for key in _OVER_TIME
            if key != "kept_fraction" or labels.get("operator", "none") != "none"
        },
    )
    write_summary(run_dir, summary, describe(summary))
    plot_run(run_dir, state, metrics, spec=spec)
    return summary


_OVER_TIME = ("l1_train", "l1_test", "kept_fraction", "learning_rate")


def describe(summary: dict) -> str:
    """One table row: final training / test L1 and parameters kept, mean ± std over trials; then
    the means over trials across the epochs."""

    def cell(name, scale=1.0, digits=4):
        entry = summary[name]
        return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"

    return (
        "| setting | operator | schedule | epochs | trials | train L1 | test L1 | kept % | "
        "kept % at last prune |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {summary.get('setting', '')} | {summary.get('operator', '')} | "
        f"{summary.get('schedule', '')} | {summary['epochs']} | {summary['num_trials']} | "
        f"{cell('l1_train')} | {cell('l1_test')} | {cell('kept_fraction', 100, 1)} | "
        f"{cell('kept_fraction_at_prune', 100, 1)} |\n\n"
        + markdown_table(
            summary.get("table", []),
            {
                key: title
                for key, title in (
                    ("generation", "epoch"),
                    ("l1_train", "train L1"),
                    ("l1_test", "test L1"),
                    ("kept_fraction", "kept fraction"),
                    ("learning_rate", "learning rate"),
                )
                if summary.get("table") and key in summary["table"][0]
            },
            digits=4,
            formats={"learning_rate": ".3g"},
        )
    )


def plot_run(run_dir: str, state, metrics: dict, *, spec) -> list[str]:
    """Curves of L1 and kept parameters against epoch; boxplots of the final values over trials
    (``spec``: the run's :class:`~synprune_jax.autoencoder.AutoencoderSpec`)."""
    from synprune_jax import plots
    from synprune_jax.autoencoder import final_per_trial

    paths: list[str | os.PathLike] = [
        plots.plot_curves(
            os.path.join(run_dir, "curves.png"),
            metrics,
            keys=("l1_train", "l1_test", "kept_fraction", "kept_fraction_at_prune"),
        )
    ]
    per_trial = final_per_trial(state, spec)
    paths.append(
        plot_boxplots(
            os.path.join(run_dir, "boxplots.png"),
            {
                "train L1": per_trial["l1_train"],
                "test L1": per_trial["l1_test"],
                "kept fraction": per_trial["kept_fraction"],
            },
        )
    )
    return [str(path) for path in paths]


def plot_boxplots(path: str, groups: dict) -> str:
    """One boxplot panel per entry of ``groups`` (``{label: [trials]}``); returns the path."""
    from synprune_jax.plots import _new_figure, _save

    figure = _new_figure(3.0 * len(groups), 3.0)
    axes_list = figure.subplots(1, len(groups), squeeze=False)[0]
    for axes, (label, values) in zip(axes_list, groups.items(), strict=True):
        axes.boxplot([np.asarray(values, np.float64)])
        axes.set_title(label)
        axes.set_xticks([])
        axes.grid(alpha=0.3)
    return str(_save(figure, path))


def plot_comparison(run_dirs: list[str], path: str) -> str:
    """Compares finished runs: final training L1 and kept parameters across trials (boxplots) and
    the mean training L1 / kept fraction at last prune against epoch (curves).

    Args:
        run_dirs: run directories holding ``summary.json`` and metrics.
        path: output image.

    Returns:
        The saved path.
    """
    from synprune_jax.plots import _new_figure, _save
    from synprune_jax.runner import read_metrics

    labels, summaries, histories = [], [], []
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "summary.json")) as handle:
            summary = json.load(handle)
        summaries.append(summary)
        histories.append(read_metrics(run_dir))
        setting = "canon." if summary["setting"] == "canonical" else "coev."
        labels.append(f"{setting} {summary['operator']}\n{summary['schedule']}")
    figure = _new_figure(4.0 * 4, 4.0)
    axes = figure.subplots(1, 4)
    axes[0].boxplot([s["l1_train"]["per_trial"] for s in summaries])
    axes[0].set_ylabel("final training L1 (per trial)")
    axes[1].boxplot(
        [[100 * v for v in s["kept_fraction_at_prune"]["per_trial"]] for s in summaries]
    )
    axes[1].set_ylabel("% parameters kept at last prune (per trial)")
    for panel in axes[:2]:
        panel.set_xticks(range(1, len(labels) + 1), labels, fontsize=6, rotation=60)
    for label, history in zip(labels, histories, strict=True):
        axes[2].plot(history["generation"], history["l1_train"], label=label.replace("\n", " "))
        axes[3].plot(history["generation"], 100 * history["kept_fraction_at_prune"])
    axes[2].set(xlabel="epoch", ylabel="training L1 (mean over trials)")
    axes[3].set(xlabel="epoch", ylabel="% kept at last prune (mean)")
    axes[2].legend(fontsize=6)
    for panel in axes:
        panel.grid(alpha=0.3)
    return str(_save(figure, path))


EXPERIMENTS = (
    Experiment(
        "ae-prune",
        "Autoencoder on binary clustering, canonical Adam training with "
        "scheduled pruning (operator/schedule in config: variance, conjunctive, random)",
        default_config_canonical,
        build,
    ),
    Experiment(
        "ae-coevolution",
        "Spatial coevolution of encoders/decoders on a ring of 10 cells "
        "(or a toroidal grid) with scheduled pruning (cells vmapped, trials vmapped)",
        default_config_coevolution,
        build,
    ),
)
