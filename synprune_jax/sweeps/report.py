"""Reading a sweep back: the tidy table, per-setting summaries and figures (host only).

Example:
    >>> table = collect("runs/arm-sweep")                       # doctest: +SKIP
    >>> summary = summarize(table, ["mutation.sigma"])                # doctest: +SKIP
    >>> print(format_summary(summary, ["mutation.sigma"]))            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synprune_jax.rundir import read_metrics

if TYPE_CHECKING:
    from synprune_jax.sweeps.plan import RunSpec

SUMMARY_METRICS = ("qd_score", "max_fitness", "coverage")
# Headline metrics of the other methods, used when a sweep's table has none of SUMMARY_METRICS:
# NSGA-II (max of each objective, front size), autoencoders (L1, kept parameters), cluster
# synthesis (accuracy and reductions).
FALLBACK_METRICS = (
    "max_accuracy",
    "max_auroc",
    "max_sparsity",
    "front_size",
    "l1_train",
    "l1_test",
    "kept_fraction",
    "test_accuracy",
    "synapse_reduction",
    "cluster_reduction",
)
_BOOKKEEPING = ("run_id", "group", "seed", "generation")


def summary_metrics(table, swept_keys: Sequence[str] = ()) -> list[str]:
    """The metrics a sweep summary reports for ``table``: those of :data:`SUMMARY_METRICS` it
    has; else those of :data:`FALLBACK_METRICS`; else its first three numeric metric columns."""
    columns = list(getattr(table, "columns", ()))
    chosen = [name for name in SUMMARY_METRICS if name in columns]
    if not chosen:
        chosen = [name for name in FALLBACK_METRICS if name in columns]
    if not chosen:
        skip = set(_BOOKKEEPING) | set(swept_keys)
        chosen = [
            name
            for name in columns
            if name not in skip and np.issubdtype(np.asarray(table[name]).dtype, np.number)
        ][:3]
    return chosen


def write_runs_index(out: Path, runs: Sequence[RunSpec], grid: Mapping, groups: dict) -> None:
    import pandas as pd

    rows = [
        {
            "run_id": spec.run_id,
            "group": groups[spec.run_id],
            "seed": spec.seed,
            **{key: _cell(spec.values[key]) for key in grid},
        }
        for spec in runs
    ]
    pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)


def _cell(value):
    """Table cell for a swept value: lists become their JSON text (hashable, Parquet-safe)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def collect(out: str | os.PathLike):
    """Builds the tidy table of a sweep directory and writes ``results.csv`` / ``.parquet``.

    Returns:
        ``pandas.DataFrame`` with one row per run and generation: the columns of ``runs.csv``
        (``run_id``, ``group``, ``seed``, swept keys) followed by ``generation`` and the metrics.
        Runs without metrics yet are left out.
    """
    import pandas as pd

    out = Path(out)
    index = pd.read_csv(out / "runs.csv")
    frames = []
    for row in index.to_dict("records"):
        run_dir = out / "runs" / row["run_id"]
        try:
            metrics = read_metrics(run_dir)
        except FileNotFoundError:
            continue
        frame = pd.DataFrame(metrics)
        for position, (key, value) in enumerate(row.items()):
            frame.insert(position, key, value)
        frames.append(frame)
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(index.columns) + ["generation"])
    )
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    return table


def final_rows(table):
    """The last generation of every run (one row per run)."""
    if table.empty:
        return table
    last = table.groupby("run_id")["generation"].transform("max")
    return table[table["generation"] == last].reset_index(drop=True)


def plot_sweep(
    table,
    swept_keys: Sequence[str],
    directory: str | os.PathLike,
    metrics: Sequence[str] | None = None,
) -> list[Path]:
    """Summary figures of a sweep (host only).

    For every swept key and metric: the final value against the swept value, mean over seeds with
    a min-max band and the individual seeds as dots, one line per setting of the other swept
    keys (``final_<metric>_vs_<key>.png``). For every metric: its curve over generations, mean
    over seeds with a min-max band, one line per grid point (``curves_<metric>.png``).
    """
    from synprune_jax.plots import _new_figure, _save

    paths: list[Path] = []
    if table.empty:
        return paths
    metrics = summary_metrics(table, swept_keys) if metrics is None else metrics
    metrics = [name for name in metrics if name in table.columns]
    directory = Path(directory)
    final = final_rows(table)
    for key in swept_keys:
        others = [other for other in swept_keys if other != key]
        for metric in metrics:
            figure = _new_figure(5.0, 3.6)
            axes = figure.add_subplot()
            settings = final.groupby(others, sort=True) if others else [((), final)]
            for setting, frame in settings:
                values = sorted(frame[key].unique(), key=_sort_key)
                numeric = all(isinstance(v, (int, float, np.number)) for v in values)
                positions = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
                x = np.asarray([positions[v] for v in values])
                grouped = [frame[frame[key] == v][metric].to_numpy(np.float64) for v in values]
                mean = np.asarray([np.nanmean(g) for g in grouped])
                low = np.asarray([np.nanmin(g) for g in grouped])
                high = np.asarray([np.nanmax(g) for g in grouped])
                label = (
                    ", ".join(
                        f"{o}={s}" for o, s in zip(others, np.atleast_1d(setting), strict=True)
                    )
                    if others
                    else "mean over seeds"
                )
                (line,) = axes.plot(x, mean, marker="o", label=label)
                axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
                dots = frame[key].map(positions).to_numpy(np.float64)
                axes.scatter(
                    dots, frame[metric].to_numpy(np.float64), s=8, color=line.get_color(), alpha=0.6
                )
                if not numeric:
                    axes.set_xticks(x, [str(v) for v in values])
            axes.set_xlabel(key)
            axes.set_ylabel(f"final {metric}")
            axes.set_title(f"final {metric} (band: min-max over seeds)", fontsize=9)
            axes.legend(fontsize=7)
            paths.append(_save(figure, directory / f"final_{metric}_vs_{key}.png"))
    for metric in metrics:
        figure = _new_figure(5.5, 3.6)
        axes = figure.add_subplot()
        points = table.groupby(list(swept_keys), sort=True) if swept_keys else [((), table)]
        for setting, frame in points:
            curve = frame.groupby("generation")[metric]
            generations = np.asarray(list(curve.groups), np.float64)
            (line,) = axes.plot(
                generations,
                curve.mean().to_numpy(),
                label=", ".join(
                    f"{k}={v}" for k, v in zip(swept_keys, np.atleast_1d(setting), strict=True)
                )
                or "mean over seeds",
            )
            axes.fill_between(
                generations,
                curve.min().to_numpy(),
                curve.max().to_numpy(),
                color=line.get_color(),
                alpha=0.15,
            )
        axes.set_xlabel("generation")
        axes.set_ylabel(metric)
        axes.legend(fontsize=7)
        paths.append(_save(figure, directory / f"curves_{metric}.png"))
    return paths


def _sort_key(value):
    return (
        (0, float(value), "")
        if isinstance(value, (int, float, np.number))
        else (1, 0.0, str(value))
    )


def summarize(table, swept_keys: Sequence[str], metrics: Sequence[str] | None = None):
    """Final value of each metric per grid point: mean, std (ddof=0), min, max over seeds.

    Returns:
        ``pandas.DataFrame`` with the swept keys, ``num_seeds`` and ``<metric>_mean``,
        ``<metric>_std``, ``<metric>_min``, ``<metric>_max`` columns.
    """
    import pandas as pd

    final = final_rows(table)
    metrics = summary_metrics(final, swept_keys) if metrics is None else metrics
    metrics = [name for name in metrics if name in final.columns]
    if final.empty:
        return pd.DataFrame()
    keys = list(swept_keys)
    grouped = final.groupby(keys, sort=True) if keys else [((), final)]
    rows = []
    for setting, frame in grouped:
        row = dict(zip(keys, np.atleast_1d(setting) if keys else (), strict=True))
        row["num_seeds"] = int(len(frame))
        for name in metrics:
            values = frame[name].to_numpy(np.float64)
            row.update(
                {
                    f"{name}_mean": float(np.mean(values)),
                    f"{name}_std": float(np.std(values)),
                    f"{name}_min": float(np.min(values)),
                    f"{name}_max": float(np.max(values)),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(summary, swept_keys: Sequence[str], metrics: Sequence[str] | None = None) -> str:
    """Markdown table of :func:`summarize`: ``mean ± std`` of each final metric per grid point."""
    if summary.empty:
        return "(no finished runs)"
    if metrics is None:  # every metric summarize() reported
        metrics = [
            column[: -len("_mean")] for column in summary.columns if column.endswith("_mean")
        ]
    metrics = [name for name in metrics if f"{name}_mean" in summary.columns]
    header = list(swept_keys) + ["seeds"] + [f"final {name}" for name in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [str(row[key]) for key in swept_keys] + [str(row["num_seeds"])]
        cells += [f"{row[f'{name}_mean']:.4g} ± {row[f'{name}_std']:.2g}" for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
