"""Turns the suite's CSV files into figures saved next to them (``benchmarks/results/*.png``).

    python -m benchmarks.plot --suite quick

Figures (each made only when its CSV exists):

* ``scaling_<suite>.png``: evaluations/s vs batch size (log-log), one line per workload and width;
* ``ratios_<suite>.png``: ours / peer speed ratios (MAP-Elites on Brax, arm per 1M evaluations,
  archive insertion per size), in process CPU time where the CSV has it (steadier on a loaded
  machine), else wall time; a ratio above 1 means ours is faster;
* ``archive_insertion_<suite>.png``: insertions/s vs batch, per archive size, both sides;
* ``masked_vs_dense_<suite>.png``: time relative to the dense pass vs population, per width;
* ``qdax_map_elites_<suite>.png``: QD-score vs steady-state seconds, both sides.
"""

from __future__ import annotations

import argparse
import os

from benchmarks import RESULTS_DIR, SUITES


def _read(directory: str, name: str, suite: str):
    import pandas as pd

    path = os.path.join(directory, f"{name}_{suite}.csv")
    return pd.read_csv(path) if os.path.exists(path) else None


def _preferred(row, first: str, second: str) -> float:
    """``row[first]`` when present and finite (CPU-time ratios), else ``row[second]``."""
    import math

    value = row.get(first)
    if value is not None and isinstance(value, float) and math.isfinite(value):
        return value
    return row[second]


def _save(figure, directory: str, name: str, suite: str, written: list[str]) -> None:
    path = os.path.join(directory, f"{name}_{suite}.png")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    written.append(path)


def plot_all(directory: str, suite: str) -> list[str]:
    """Writes every figure whose data exists; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    scaling = _read(directory, "scaling", suite)
    if scaling is not None and "evals_per_s" in scaling:
        figure, axis = plt.subplots(figsize=(6, 4))
        for (workload, width), group in scaling.groupby(["workload", "width"]):
            group = group.sort_values("batch")
            axis.plot(
                group["batch"], group["evals_per_s"], marker="o", label=f"{workload}, width {width}"
            )
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="batch (individuals per generation)",
            ylabel="evaluations / s",
            title="MAP-Elites throughput vs batch",
        )
        axis.legend(fontsize=8)
        _save(figure, directory, "scaling", suite, written)
        plt.close(figure)

    labels, values = [], []
    me = _read(directory, "qdax_map_elites", suite)
    if me is not None and "evals_per_s_ratio" in me:
        for _, row in me[me["case"] == "ratio"].iterrows():
            side = str(row.get("side", ""))
            suffix = {
                "ours_sharded/qdax": " (ours 2 CPU devices)",
                "ours_sharded/qdax_distributed": " (both 2 CPU devices)",
            }.get(side, "")
            labels.append(f"ME Brax b{int(row['batch'])}{suffix}")
            values.append(_preferred(row, "evals_per_cpu_s_ratio", "evals_per_s_ratio"))
    arm = _read(directory, "arm_million", suite)
    if arm is not None and "speedup" in arm:
        for _, row in arm[arm["case"] == "ratio"].iterrows():
            kind = " (CDF parents)" if "cdf" in str(row["side"]) else ""
            labels.append(f"arm 1M evals{kind}")
            values.append(_preferred(row, "cpu_speedup", "speedup"))
    insertion = _read(directory, "archive_insertion", suite)
    if insertion is not None and "speedup" in insertion:
        for _, row in insertion[insertion["case"] == "ratio"].iterrows():
            kind = " (ours CVT path)" if str(row["side"]).startswith("ours_cvt") else ""
            labels.append(f"add {int(row['cells'])}c b{int(row['batch'])}{kind}")
            values.append(_preferred(row, "cpu_speedup", "speedup"))
    if values:
        figure, axis = plt.subplots(figsize=(max(5, 0.6 * len(values) + 2), 4))
        axis.bar(
            range(len(values)), values, color=["tab:green" if v >= 1 else "tab:red" for v in values]
        )
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=8)
        axis.set(
            yscale="log",
            ylabel="ours / QDax speed (>1: ours faster)",
            title="Speed ratio vs QDax (process CPU time where recorded)",
        )
        _save(figure, directory, "ratios", suite, written)
        plt.close(figure)

    if insertion is not None and "insertions_per_s" in insertion:
        rows = insertion[insertion["case"] == "insert"]
        figure, axis = plt.subplots(figsize=(6, 4))
        for (side, cells), group in rows.groupby(["side", "cells"]):
            group = group.sort_values("batch")
            axis.plot(
                group["batch"],
                group["insertions_per_s"],
                marker="o",
                linestyle="-" if side == "ours" else "--",
                label=f"{side}, {cells} cells",
            )
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="batch",
            ylabel="insertions / s",
            title="Archive insertion",
        )
        axis.legend(fontsize=8)
        _save(figure, directory, "archive_insertion", suite, written)
        plt.close(figure)

    masked = _read(directory, "masked_vs_dense", suite)
    if masked is not None and "ratio_to_dense" in masked:
        rows = masked[masked["variant"] != "skipped"]
        keys = sorted(set(zip(rows["width"], rows["density"], strict=True)))
        figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
        for axis, (width, density) in zip(axes[0], keys, strict=True):
            subset = rows[(rows["width"] == width) & (rows["density"] == density)]
            for variant, group in subset.groupby("variant"):
                group = group.sort_values("population")
                axis.plot(group["population"], group["ratio_to_dense"], marker="o", label=variant)
            axis.axhline(1.0, color="black", linewidth=0.8)
            axis.set(
                xscale="log",
                xlabel="population",
                ylabel="time / dense time",
                title=f"width {width}, density {density}",
            )
            axis.legend(fontsize=7)
        _save(figure, directory, "masked_vs_dense", suite, written)
        plt.close(figure)

    if me is not None and "chunk_s" in me:
        traces = me[me["case"] == "trace"]
        figure, axis = plt.subplots(figsize=(6, 4))
        for (side, batch), group in traces.groupby(["side", "batch"]):
            group = group.sort_values("generation")
            axis.plot(
                group["chunk_s"].cumsum(),
                group["qd_score"],
                marker=".",
                label=f"{side}, batch {batch}",
            )
        axis.set(
            xlabel="steady-state seconds",
            ylabel="QD-score",
            title="MAP-Elites on hopper: QD-score vs time",
        )
        axis.legend(fontsize=8)
        _save(figure, directory, "qdax_map_elites", suite, written)
        plt.close(figure)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument("--dir", default=RESULTS_DIR, help="directory holding the CSV files")
    args = parser.parse_args(argv)
    for path in plot_all(args.dir, args.suite):
        print(path)


if __name__ == "__main__":
    main()
