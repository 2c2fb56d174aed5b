"""Synaptic-cluster-driven evolutionary synthesis of a sparse LeNet-5: config, builder, report.

``synprune run cluster-synthesis`` trains a dense LeNet-5 ancestor on scikit-learn's digits
(resized to 32x32), then synthesises sparser offspring generation after generation (see
:mod:`synprune_jax.synthesis.algorithm`). The run directory gains ``summary.json`` /
``summary.md`` (final synapse, cluster and FLOP reduction factors, accuracy vs the ancestor),
``curves.png`` and ``compact.npz`` (the compacted network's parameters).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from synprune_jax.config import ConfigError, config_errors, require_keys
from synprune_jax.experiments.base import Built, Experiment, write_summary

NAME = "cluster-synthesis"
PLOT_KEYS = ("test_accuracy", "synapse_reduction", "cluster_reduction", "flops_reduction")


def default_config() -> dict:
    """Digits, LeNet-5, full encoding with gentle removal rates (``encoding.synapse_rate=0.25``,
    ``encoding.cluster_rate=0.1``; rates of 1 are the published encoding), 15 generations (the
    results and run times are in ``docs/cluster_synthesis.md``)."""
    return {
        "experiment": NAME,
        "algorithm": "cluster_synthesis",
        "data": {"name": "digits", "mnist_dir": None, "validation_fraction": 0.2,
                 "test_fraction": 0.2, "split_seed": 0, "max_train": 0},
        "network": {"widths": [6, 16, 120, 84]},
        "encoding": {"synapse_factor": 1.0, "cluster_factor": 1.0, "truncation": 0.1,
                     "mode": "both", "conv_clusters": "filter", "scope": "layer",
                     "synapse_scope": "cluster", "synapse_rate": 0.25, "cluster_rate": 0.1},
        "synthesis": {"num_offspring": 3, "epochs": 8, "ancestor_epochs": 15, "batch_size": 16,
                      "learning_rate": 3e-3, "schedule": "cosine", "remove_unused": True,
                      "reinitialize": False, "tolerance": 0.02, "stop_on_drop": True,
                      "patience": 4, "eval_batch_size": 512},
        "run": {"num_generations": 15, "seed": 0, "chunk_size": 1, "checkpoint_every": 1,
                "metrics_format": "csv", "progress": True},
    }


def _section(config: dict, name: str, *classes) -> dict:
    section = dict(config[name])
    require_keys(section, name, [field.name for cls in classes for field in dataclasses.fields(cls)
                                 if field.name not in ("network", "encoding")])
    return section


def _number(section: dict, name: str, key: str, hyper_class) -> float:
    """Takes ``key`` out of ``section`` as a float (absent: the field's default in
    ``hyper_class``, as the dataclass configs default their own missing keys)."""
    value = section.pop(key, {field.name: field.default
                              for field in dataclasses.fields(hyper_class)}[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}.{key} must be a number, got {value!r}")
    return float(value)


def build(config: dict) -> Built:
    """Loads the data and builds :class:`~synprune_jax.synthesis.ClusterSynthesis` and its
    :class:`~synprune_jax.synthesis.SynthesisHyper`; validates every section (unknown keys,
    ranges, data / network fit) before anything compiles."""
    from synprune_jax.runner import RunConfig
    from synprune_jax.synthesis import (ClusterSynthesis, EncodingConfig, EncodingHyper, LeNetSpec,
                                        SynthesisConfig, SynthesisHyper, check_hyper,
                                        load_dataset)

    require_keys(config, "config", ("experiment", "algorithm", "data", "network", "encoding",
                                     "synthesis", "run"))
    if config["algorithm"] != "cluster_synthesis":
        raise ConfigError(f"unknown algorithm {config['algorithm']!r}; "
                          "valid: ['cluster_synthesis']")
    with config_errors():
        require_keys(config["data"], "data", ("name", "mnist_dir", "validation_fraction",
                                              "test_fraction", "split_seed", "max_train"))
        require_keys(config["network"], "network", ("widths",))
        encoding_section = _section(config, "encoding", EncodingConfig, EncodingHyper)
        encoding_hyper = EncodingHyper(**{
            field.name: _number(encoding_section, "encoding", field.name, EncodingHyper)
            for field in dataclasses.fields(EncodingHyper)})
        encoding = EncodingConfig(**encoding_section)
        synthesis = _section(config, "synthesis", SynthesisConfig, SynthesisHyper)
        hyper = SynthesisHyper(
            learning_rate=_number(synthesis, "synthesis", "learning_rate", SynthesisHyper),
            tolerance=_number(synthesis, "synthesis", "tolerance", SynthesisHyper),
            encoding=encoding_hyper)
        check_hyper(hyper)
        require_keys(config["run"], "run", ("num_generations", "seed", "chunk_size",
                                            "checkpoint_every", "metrics_format", "progress"))
        run_config = RunConfig(**config["run"])
        widths = tuple(int(w) for w in config["network"]["widths"])
        if len(widths) != 4:
            raise ConfigError(f"network.widths needs 4 ints (conv1, conv2, dense1, dense2), "
                              f"got {list(widths)}")
        # check everything that does not need the data before loading it
        LeNetSpec(widths=widths)
        SynthesisConfig(encoding=encoding, **synthesis)
        data_section = config["data"]
        try:
            data = load_dataset(data_section["name"], mnist_dir=data_section["mnist_dir"],
                                validation_fraction=float(data_section["validation_fraction"]),
                                test_fraction=float(data_section["test_fraction"]),
                                split_seed=int(data_section["split_seed"]),
                                max_train=int(data_section["max_train"]))
        except (FileNotFoundError, OSError) as error:
            raise ConfigError(f"data: {error}") from error
        network = LeNetSpec(image_size=data.image_size, channels=data.train_images.shape[-1],
                            num_classes=data.num_classes, widths=widths)
        algorithm = ClusterSynthesis(SynthesisConfig(network=network, encoding=encoding,
                                                     **synthesis), data)
    return Built(algorithm=algorithm, hyper=hyper, run_config=run_config,
                 report=functools.partial(report, spec=network), describe=describe,
                 plot=plot_run)


def summarize(spec, state, metrics: dict) -> dict:
    """Final figures of a run (host side): accuracy vs ancestor and reduction factors.

    Args:
        spec: the run's :class:`~synprune_jax.synthesis.LeNetSpec`.
        state: the final :class:`~synprune_jax.synthesis.SynthesisState`.
        metrics: the run's metrics (``read_metrics``).
    """
    from synprune_jax.synthesis import compact, network_stats

    stats = network_stats(spec, state.masks)
    compacted = compact(spec, state.params, state.masks)
    ancestor_synapses = int(state.ancestor_synapses)
    ancestor_clusters = int(state.ancestor_clusters)
    synapses, clusters = int(stats.synapses), int(stats.clusters)
    accepted = metrics.get("accepted", np.zeros(0))
    return {
        "generations": int(state.generation),
        "accepted_generations": int(np.sum(accepted)),
        "stopped": bool(state.stopped),
        "ancestor_test_accuracy": float(state.ancestor_test_accuracy),
        "ancestor_validation_accuracy": float(state.ancestor_validation_accuracy),
        "test_accuracy": float(state.test_accuracy),
        "validation_accuracy": float(state.validation_accuracy),
        "accuracy_drop_points": 100.0 * float(state.ancestor_test_accuracy - state.test_accuracy),
        "ancestor_synapses": ancestor_synapses,
        "synapses": synapses,
        "effective_synapses": int(stats.effective_synapses),
        "synapse_reduction": ancestor_synapses / max(synapses, 1),
        "ancestor_clusters": ancestor_clusters,
        "clusters": clusters,
        "cluster_reduction": ancestor_clusters / max(clusters, 1),
        "ancestor_flops": float(state.ancestor_flops),
        "flops": float(stats.flops),
        "flops_reduction": float(state.ancestor_flops) / max(float(stats.flops), 1.0),
        "layer_synapses": [int(x) for x in np.asarray(stats.layer_synapses)],
        "compact_widths": list(compacted.widths),
        "compact_weights": compacted.num_weights,
    }


def format_summary(summary: dict) -> str:
    lines = [
        "| | ancestor | final | reduction |",
        "|---|---|---|---|",
        f"| test accuracy | {100 * summary['ancestor_test_accuracy']:.2f} % | "
        f"{100 * summary['test_accuracy']:.2f} % | {summary['accuracy_drop_points']:+.2f} points "
        "drop |",
        f"| synapses | {summary['ancestor_synapses']} | {summary['synapses']} | "
        f"{summary['synapse_reduction']:.1f}x |",
        f"| clusters (filters + hidden neurons) | {summary['ancestor_clusters']} | "
        f"{summary['clusters']} | {summary['cluster_reduction']:.1f}x |",
        f"| FLOPs per image | {summary['ancestor_flops']:.0f} | {summary['flops']:.0f} | "
        f"{summary['flops_reduction']:.1f}x |",
    ]
    return "\n".join(lines)


def report(run_dir: str, state, metrics: dict, *, spec) -> dict:
    """Writes ``summary.json``, ``summary.md``, ``compact.npz`` and the plots."""
    from synprune_jax.synthesis import compact

    summary = summarize(spec, state, metrics)
    write_summary(run_dir, summary, format_summary(summary))
    compacted = compact(spec, state.params, state.masks)
    arrays = {f"{layer}/{leaf}": np.asarray(value)
              for layer, leaves in compacted.params.items() for leaf, value in leaves.items()}
    np.savez(os.path.join(run_dir, "compact.npz"), widths=np.asarray(compacted.widths), **arrays)
    plot_run(run_dir, state, metrics)
    return summary


def describe(summary: dict) -> str:
    stop = ", stopped by the accuracy criterion" if summary["stopped"] else ""
    return (f"generations {summary['generations']} ({summary['accepted_generations']} accepted"
            f"{stop}); compact widths {summary['compact_widths']}\n\n" + format_summary(summary))


def plot_run(run_dir: str, state, metrics: dict) -> list[str]:
    """Test accuracy, synapse / cluster / FLOP reduction factors of the kept network and the
    best offspring's validation accuracy per generation (generation 0: the ancestor)."""
    from synprune_jax import plots

    if not metrics or "generation" not in metrics:
        return []
    # prepend generation 0: the ancestor (reduction factors 1)
    series = {"generation": np.concatenate([[0], np.asarray(metrics["generation"])])}
    ancestor = {"test_accuracy": float(np.asarray(metrics["ancestor_test_accuracy"])[0]),
                "offspring_validation_accuracy": np.nan}
    for key in PLOT_KEYS + ("offspring_validation_accuracy",):
        first = ancestor.get(key, 1.0)
        series[key] = np.concatenate([[first], np.asarray(metrics[key], np.float64)])
    return [str(plots.plot_curves(os.path.join(run_dir, "curves.png"), series,
                                  keys=PLOT_KEYS + ("offspring_validation_accuracy",)))]


EXPERIMENTS = (
    Experiment(NAME, "Synaptic-cluster-driven evolutionary synthesis of a sparse LeNet-5 on "
               "scikit-learn digits at 32x32 (data.name=mnist with data.mnist_dir for MNIST)",
               default_config, build),
)
