"""What every experiment module provides: :class:`Experiment` entries and a :class:`Built`.

An experiment module in :mod:`synprune_jax.experiments` defines a module-level ``EXPERIMENTS``
tuple of :class:`Experiment`; the registry in ``synprune_jax/experiments/__init__.py`` collects
them from every module of the package, so adding a method means adding one module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np

from synprune_jax.runner import Algorithm, RunConfig


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: the name used on the command line.
        description: one line for ``synprune list``.
        default_config: returns a fresh default config dict (with ``"experiment": name``).
        build: config dict -> :class:`Built`; validates the whole config before anything
            compiles and raises :class:`~synprune_jax.config.ConfigError` on bad input.
    """

    name: str
    description: str
    default_config: Callable[[], dict]
    build: Callable[[dict], Built]


@dataclasses.dataclass
class Built:
    """What a builder returns: everything needed to run and report an experiment.

    Attributes:
        algorithm: an object with ``default_hyper``, ``init(key, hyper) -> state`` and
            ``step(key, state, hyper) -> (state, metrics)`` holding only static structure (see
            :mod:`synprune_jax.runner`); runs whose algorithms compare equal share a compiled
            program in a sweep.
        run_config: a :class:`~synprune_jax.runner.RunConfig`.
        report: ``(run_dir, state, metrics) -> summary dict``; writes ``summary.json``,
            ``summary.md`` and the plots into the run directory.
        describe: ``summary dict -> str``, the text the CLI prints at the end of a run.
        plot: ``(run_dir, state, metrics) -> list of paths``; redraws the plots
            (``synprune plot DIR``).
        hyper: the config's hyper-parameters for ``algorithm`` (a pytree of numeric scalars;
            ``None``: ``algorithm.default_hyper``).
    """

    algorithm: Algorithm
    run_config: RunConfig
    report: Callable[[str, object, dict], dict]
    describe: Callable[[dict], str]
    plot: Callable[[str, object, dict], list]
    hyper: object = None

    def __post_init__(self):
        if self.hyper is None:
            self.hyper = self.algorithm.default_hyper


def over_time(metrics: dict, columns: dict[str, str], num_rows: int = 6) -> list[dict]:
    """Rows of ``metrics`` (``{name: [G] values}``, with ``generation``) at up to ``num_rows``
    generations evenly spaced from the first to the last, each row ``generation`` plus the
    ``columns`` (``{key in the row: metric name}``) present in ``metrics``.

    Example:
        >>> over_time({"generation": [1, 2, 3], "max_fitness": [0.5, 0.7, 0.9]},
        ...           {"best": "max_fitness"}, num_rows=2)
        [{'generation': 1, 'best': 0.5}, {'generation': 3, 'best': 0.9}]
    """
    generations = np.asarray(metrics.get("generation", []))
    if generations.size == 0:
        return []
    picks = sorted(
        set(
            np.linspace(0, generations.size - 1, min(num_rows, generations.size))
            .round()
            .astype(int)
            .tolist()
        )
    )
    return [
        {
            "generation": int(generations[i]),
            **{
                key: float(np.asarray(metrics[name], np.float64)[i])
                for key, name in columns.items()
                if name in metrics
            },
        }
        for i in picks
    ]


def markdown_table(
    rows: list[dict],
    headers: dict[str, str],
    digits: int = 3,
    formats: dict[str, str] | None = None,
) -> str:
    """``rows`` as a markdown table of the ``headers`` (``{key: title}``) columns; floats with
    ``digits`` decimals, or the format spec ``formats[key]`` (e.g. ``".3g"``).

    Example:
        >>> print(markdown_table([{"generation": 1, "best": 0.5}], {"generation": "generation",
        ...                                                          "best": "best fitness"}))
        | generation | best fitness |
        |---|---|
        | 1 | 0.500 |
    """
    formats = formats or {}

    def cell(key, value):
        return (
            format(value, formats.get(key, f".{digits}f"))
            if isinstance(value, float)
            else str(value)
        )

    lines = ["| " + " | ".join(headers.values()) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(key, row[key]) for key in headers) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(run_dir: str, summary: dict, markdown: str) -> None:
    """Writes ``summary.json`` (the dict, indented) and ``summary.md`` (``markdown``) to a run
    directory."""
    with open(os.path.join(run_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(run_dir, "summary.md"), "w") as handle:
        handle.write(markdown + "\n")
