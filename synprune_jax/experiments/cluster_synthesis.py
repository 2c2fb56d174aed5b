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

NAME = "cluster-synthesis"
PLOT_KEYS = (
    "test_accuracy",
    "synapse_reduction",
    "cluster_reduction",
    "flops_reduction",
    "offspring_validation_accuracy",
)


def default_config() -> dict:
    """Digits, LeNet-5, full encoding with gentle removal rates (``encoding.synapse_rate=0.25``,
    ``encoding.cluster_rate=0.1``; rates of 1 are the published encoding), 15 generations (the
    results and run times are in ``docs/cluster_synthesis.md``)."""
    from synprune_jax.runner import RunConfig
    from synprune_jax.synthesis import (
        EncodingConfig,
        EncodingHyper,
        LeNetSpec,
        SynthesisConfig,
        SynthesisHyper,
    )

    return {
        "experiment": NAME,
        "algorithm": "cluster_synthesis",
        "data": {
            "name": "digits",
            "mnist_dir": None,
            "validation_fraction": 0.2,
            "test_fraction": 0.2,
            "split_seed": 0,
            "max_train": 0,
        },
        "network": section_defaults((LeNetSpec, _SIZED_BY_DATA)),
        "encoding": section_defaults(
            EncodingConfig, EncodingHyper, synapse_rate=0.25, cluster_rate=0.1
        ),
        "synthesis": section_defaults(
            (SynthesisConfig, ("network", "encoding")), (SynthesisHyper, ("encoding",))
        ),
        "run": section_defaults(RunConfig, num_generations=15, chunk_size=1, checkpoint_every=1),
    }


# LeNetSpec fields that come from the data, not the config
_SIZED_BY_DATA = ("image_size", "channels", "num_classes")


def build(config: dict) -> Built:
    """Loads the data and builds :class:`~synprune_jax.synthesis.ClusterSynthesis` and its
    :class:`~synprune_jax.synthesis.SynthesisHyper`; validates every section (unknown keys,
    ranges, data / network fit) before anything compiles."""
    from synprune_jax.runner import RunConfig
    from synprune_jax.synthesis import (
        ClusterSynthesis,
        EncodingConfig,
        EncodingHyper,
        LeNetSpec,
        SynthesisConfig,
        SynthesisHyper,
        check_hyper,
        load_dataset,
    )

    require_keys(
        config,
        "config",
        ("experiment", "algorithm", "data", "network", "encoding", "synthesis", "run"),
    )
    if config["algorithm"] != "cluster_synthesis":
        raise ConfigError(
            f"unknown algorithm {config['algorithm']!r}; valid: ['cluster_synthesis']"
        )
    with config_errors():
        require_keys(
            config["data"],
            "data",
            (
                "name",
                "mnist_dir",
                "validation_fraction",
                "test_fraction",
                "split_seed",
                "max_train",
            ),
        )
        encoding, encoding_hyper = from_section(
            config["encoding"], "encoding", EncodingConfig, EncodingHyper
        )
        # checked now with LeNetSpec's default sizes; sized from the data below
        network = from_section(config["network"], "network", (LeNetSpec, _SIZED_BY_DATA))
        synthesis, hyper = from_section(
            config["synthesis"],
            "synthesis",
            (SynthesisConfig, {"network": network, "encoding": encoding}),
            (SynthesisHyper, {"encoding": encoding_hyper}),
        )
        check_hyper(hyper)
        run_config = from_section(config["run"], "run", RunConfig)
        data_section = config["data"]
        try:
            data = load_dataset(
                data_section["name"],
                mnist_dir=data_section["mnist_dir"],
                validation_fraction=float(data_section["validation_fraction"]),
                test_fraction=float(data_section["test_fraction"]),
                split_seed=int(data_section["split_seed"]),
                max_train=int(data_section["max_train"]),
            )
        except (FileNotFoundError, OSError) as error:
            raise ConfigError(f"data: {error}") from error
        network = dataclasses.replace(
            network,
            image_size=data.image_size,
            channels=data.train_images.shape[-1],
            num_classes=data.num_classes,
        )
        algorithm = ClusterSynthesis(dataclasses.replace(synthesis, network=network), data)
    return Built(
        algorithm=algorithm,
        hyper=hyper,
        run_config=run_config,
        report=functools.partial(report, spec=network),
        describe=describe,
        plot=plot_run,
    )


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


_OVER_TIME = ("test_accuracy", "synapse_reduction", "cluster_reduction", "flops_reduction")


def format_summary(summary: dict) -> str:
    """The ancestor against the final network, then the kept network over the generations."""
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
    return (
        "\n".join(lines)
        + "\n\n"
        + markdown_table(
            summary.get("table", []),
            {
                "generation": "generation",
                "test_accuracy": "test accuracy",
                "synapse_reduction": "synapse reduction",
                "cluster_reduction": "cluster reduction",
                "flops_reduction": "FLOPs reduction",
            },
        )
    )


def report(run_dir: str, state, metrics: dict, *, spec) -> dict:
    """Writes ``summary.json``, ``summary.md``, ``compact.npz`` and the plots."""
    from synprune_jax.synthesis import compact

    summary = summarize(spec, state, metrics)
    summary["table"] = over_time(metrics, {key: key for key in _OVER_TIME})
    write_summary(run_dir, summary, format_summary(summary))
    compacted = compact(spec, state.params, state.masks)
    arrays = {
        f"{layer}/{leaf}": np.asarray(value)
        for layer, leaves in compacted.params.items()
        for leaf, value in leaves.items()
    }
    arrays["widths"] = np.asarray(compacted.widths)
    # numpy's stub reads a ** dict as possibly holding allow_pickle (bool)
    np.savez(os.path.join(run_dir, "compact.npz"), **arrays)  # type: ignore[arg-type]
    plot_run(run_dir, state, metrics)
    return summary


def describe(summary: dict) -> str:
    stop = ", stopped by the accuracy criterion" if summary["stopped"] else ""
    return (
        f"generations {summary['generations']} ({summary['accepted_generations']} accepted"
        f"{stop}); compact widths {summary['compact_widths']}\n\n" + format_summary(summary)
    )


def plot_run(run_dir: str, state, metrics: dict) -> list[str]:
    """Test accuracy, synapse / cluster / FLOP reduction factors of the kept network and the
    best offspring's validation accuracy per generation (generation 0: the ancestor)."""
    from synprune_jax import plots

    if not metrics or "generation" not in metrics:
        return []
    # prepend generation 0: the ancestor (reduction factors 1)
    series = {"generation": np.concatenate([[0], np.asarray(metrics["generation"])])}
    ancestor = {
        "test_accuracy": float(np.asarray(metrics["ancestor_test_accuracy"])[0]),
        "offspring_validation_accuracy": np.nan,
    }
    for key in PLOT_KEYS:
        series[key] = np.concatenate(
            [[ancestor.get(key, 1.0)], np.asarray(metrics[key], np.float64)]
        )
    return [str(plots.plot_curves(os.path.join(run_dir, "curves.png"), series, keys=PLOT_KEYS))]


EXPERIMENTS = (
    Experiment(
        NAME,
        "Synaptic-cluster-driven evolutionary synthesis of a sparse LeNet-5 on "
        "scikit-learn digits at 32x32 (data.name=mnist with data.mnist_dir for MNIST)",
        default_config,
        build,
    ),
)
