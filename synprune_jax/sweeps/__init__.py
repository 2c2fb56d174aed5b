"""Sweeps: many seeds and hyper-parameter settings in one compiled program per shape group.

    result = sweep("me-arm", seeds=range(8), grid={"mutation.sigma": [0.02, 0.1]},
                   out="runs/arm-sweep", overrides=["run.num_generations=100"])
    result.table            # pandas DataFrame: one row per run and generation

The work is split by job: :mod:`~synprune_jax.sweeps.plan` expands the definition into runs and
groups them, :func:`run_group` executes a group through the one host loop
(:func:`synprune_jax.runner.run_loop`), :mod:`~synprune_jax.sweeps.report` builds the tidy table,
summaries and figures.

Runs whose algorithms compare equal and whose run settings agree form a group: their seeds and
hyper-parameters (``Built.hyper``) are stacked on a run axis ``[R]`` split over the devices, and
the group runs as ``jit(vmap(chunk))``, compiled once, with the numbers of the runs done alone
(up to float reassociation). ``docs/sweeps.md`` describes the grouping, the traced keys of each
method, the files under ``out`` (``sweep.json``, ``runs.csv``, ``runs/<run_id>/``,
``results.csv`` / ``.parquet``, ``timing.json``, ``plots/``) and resuming.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from synprune_jax import config as config_lib
from synprune_jax import runner as runner_lib
from synprune_jax.config import ConfigError
from synprune_jax.rundir import (
    RunDirectory,
    RunLock,
    check_room,
    completed_generation,
    prepare_directory,
    read_metrics,
    write_json,
)
from synprune_jax.sweeps.cluster import RayCluster, require_ray, run_on_ray
from synprune_jax.sweeps.plan import (
    Member,
    RunSpec,
    build_members,
    check_seeds,
    group_members,
    parse_grid,
    parse_seeds,
    plan_groups,
    plan_runs,
)
from synprune_jax.sweeps.report import (
    FALLBACK_METRICS,
    SUMMARY_METRICS,
    collect,
    final_rows,
    format_summary,
    plot_sweep,
    summarize,
    summary_metrics,
    write_runs_index,
)

SWEEP_FILE = "sweep.json"


def run_group(
    members: Sequence[Member],
    *,
    mesh=None,
    size: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, Any]:
    """Runs the runs of one group together (``jit(vmap(...))`` over the run axis).

    Every member must be at the same starting point: all fresh, or all restored from a checkpoint
    at the same generation (:func:`sweep` arranges this). Writes each member's metrics and
    checkpoints into its run directory as :func:`synprune_jax.runner.run` would. ``size`` pads the
    run axis with copies of the first run up to that many runs (a part of a larger group run
    elsewhere keeps the whole group's numbers: see :class:`~synprune_jax.runner._Batched`).

    Returns:
        ``(timing, states)``: timing dict (``runs``, ``padded_runs``, ``num_devices``,
        ``init_compile_s``, ``chunk_compile_s`` per chunk length, ``seconds_per_generation``:
        median over full chunks after the first, ``wall_s``) and the final states, every leaf
        ``[R + padding, ...]``.
    """
    first = members[0]
    run_config = first.built.run_config
    program = runner_lib._Batched(
        first.built.algorithm,
        [m.spec.seed for m in members],
        [m.built.hyper for m in members],
        mesh,
        size=size,
    )
    directories = []
    for member in members:
        member.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = member.run_dir / "config.json"
        if not config_path.exists():
            config_lib.save(member.spec.config, config_path)
        directories.append(RunDirectory(member.run_dir, member.built.run_config))
    states, timing = runner_lib.run_loop(
        program,
        directories,
        run_config,
        resume=True,
        progress=progress,
        description=f"{len(members)} runs",
    )
    timing = {
        "runs": [m.spec.run_id for m in members],
        "padded_runs": program.padding,
        "num_devices": program.num_devices,
        **timing,
    }
    if log is not None:
        log(f"group of {len(members)} runs done in {timing['wall_s']:.1f} s")
    return timing, states


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes:
        out: the sweep directory.
        runs: one :class:`RunSpec` per run, in run-id order (grid points row-major, seeds
            fastest), as :func:`plan_runs` makes them.
        table: the tidy ``pandas.DataFrame`` (columns ``run_id``, ``group``, ``seed``, each
            swept key, ``generation`` and every metric; one row per run and generation), as
            :func:`collect` reads it back from ``out``.
        timing: one timing dict per group run by this call (:func:`run_group`'s, plus its
            ``group`` index; a group whose runs resume from different generations runs in
            parts, one dict each); groups that were already finished have none.
        skipped: run ids that were already finished and not run again.

    Examples:
        >>> result = sweep("me-arm", seeds=range(2), grid={"mutation.sigma": [0.02, 0.1]},
        ...                out="runs/arm-sweep", overrides=["run.num_generations=20"],
        ...                )  # doctest: +SKIP
        >>> result.table[["run_id", "seed", "mutation.sigma"]].drop_duplicates()  # doctest: +SKIP
             run_id  seed  mutation.sigma
        0   run-000     0            0.02
        20  run-001     1            0.02
        40  run-002     0            0.10
        60  run-003     1            0.10
        >>> runs = plan_runs("me-arm", seeds=range(2), grid={"mutation.sigma": [0.02, 0.1]})
        >>> [(spec.run_id, spec.seed, spec.values) for spec in runs]  # what result.runs holds
        [('run-000', 0, {'mutation.sigma': 0.02}), ('run-001', 1, {'mutation.sigma': 0.02}),
         ('run-002', 0, {'mutation.sigma': 0.1}), ('run-003', 1, {'mutation.sigma': 0.1})]
    """

    out: Path
    runs: list[RunSpec]
    table: Any
    timing: list[dict]
    skipped: list[str]


def _definition(experiment, seeds, grid, overrides, config) -> dict:
    return {
        "experiment": experiment,
        "seeds": list(seeds),
        "grid": {key: list(values) for key, values in (grid or {}).items()},
        "overrides": list(overrides),
        "config": config,
    }


def _pending(groups):
    """``[(group_index, start, members)]``: the runs of each group not yet finished, split by the
    generation they resume from (-1: fresh); and the run ids already finished."""
    pending, skipped = [], []
    for group_index, group in enumerate(groups):
        num_generations = group[0].built.run_config.num_generations
        by_start: dict[int, list[Member]] = {}
        for member in group:
            done = completed_generation(member.run_dir)
            if done is not None and done >= num_generations:
                skipped.append(member.spec.run_id)
                continue
            by_start.setdefault(done if done is not None else -1, []).append(member)
        pending += [(group_index, start, subgroup) for start, subgroup in sorted(by_start.items())]
    return pending, skipped


def report_runs(members: Sequence[Member], states) -> None:
    """Calls each member's reporter (summary and plots in its run directory) with its final
    state (row ``i`` of ``states``, the group's final states from :func:`run_group`)."""
    host = jax.device_get(states)
    for index, member in enumerate(members):
        state = jax.tree_util.tree_map(lambda leaf, index=index: leaf[index], host)
        member.built.report(str(member.run_dir), state, read_metrics(member.run_dir))


def _plan_out(out: Path, definition: dict, runs, members, grid):
    """Writes the definition and the runs' index into ``out`` (under its lock) and checks that
    every unfinished run's checkpoints fit; returns ``(groups, pending, skipped)``."""
    write_json(out / SWEEP_FILE, definition)
    groups = group_members(members)
    group_ids = {id(m): index for index, group in enumerate(groups) for m in group}
    write_runs_index(out, runs, grid, {m.spec.run_id: group_ids[id(m)] for m in members})
    pending, skipped = _pending(groups)
    # room for every unfinished run's checkpoints: one state's shapes per group, times its runs
    shapes = {
        index: runner_lib.abstract_state(
            groups[index][0].built.algorithm, groups[index][0].built.hyper
        )
        for index in sorted({index for index, _, _ in pending})
    }
    check_room(
        out,
        [[shapes[index]] * len(subgroup) for index, _, subgroup in pending],
        copies=members[0].built.run_config.keep_checkpoints,
    )
    return groups, pending, skipped


def _share_of(groups, pending, share: tuple[int, int]):
    """``(pending, sizes)`` of share ``index`` of ``count``: part ``index`` of each group cut into
    ``count`` consecutive parts of ``ceil(len(group) / count)`` runs (``sizes[group]``, the
    run-axis length each part pads to), without its finished runs."""
    index, count = share
    sizes = {g: math.ceil(len(group) / count) for g, group in enumerate(groups)}
    mine = {
        id(member)
        for g, group in enumerate(groups)
        for member in group[index * sizes[g] : (index + 1) * sizes[g]]
    }
    chosen = []
    for group_index, start, subgroup in pending:
        part = [member for member in subgroup if id(member) in mine]
        if part:
            chosen.append((group_index, start, part))
    return chosen, sizes


def parse_share(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``: share 2 of 8 (shares count from 0).

    Raises:
        ConfigError: not ``I/N`` with ``0 <= I < N``.

    Examples:
        >>> parse_share("2/8")
        (2, 8)
        >>> parse_share("8/8")
        Traceback (most recent call last):
            ...
        synprune_jax.config.ConfigError: --share takes I/N with 0 <= I < N (shares count from
        0), got '8/8'
    """
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ConfigError(f"--share takes I/N with 0 <= I < N (shares count from 0), got {text!r}")
    return index, count


def _run_local(pending, count: int, *, sizes=None, report, progress, log) -> list[dict]:
    """Runs every unfinished group on this machine's first ``count`` devices (each group's run
    axis padded to ``sizes[group]`` runs when given)."""
    sizes = sizes or {}
    meshes: dict[int, object] = {}

    def mesh_for(runs: int):
        """The first ``min(count, runs)`` devices: a group smaller than the device count is not
        padded up to it (no copies computed for nothing); ``None`` for one device."""
        size = min(count, runs)
        if size <= 1:
            return None
        if size not in meshes:
            from synprune_jax import sharding

            meshes[size] = sharding.make_mesh(size, "runs")
        return meshes[size]

    timing = []
    for group_index, start, subgroup in pending:
        if log is not None:
            log(f"group {group_index}: {len(subgroup)} runs from generation {max(start, 0)}")
        size = sizes.get(group_index, 0)
        group_timing, states = run_group(
            subgroup,
            mesh=mesh_for(max(len(subgroup), size)),
            size=size,
            progress=progress,
            log=log,
        )
        group_timing["group"] = group_index
        timing.append(group_timing)
        if report:
            report_runs(subgroup, states)
    return timing


def sweep(
    experiment: str,
    seeds: Iterable[int] = (0,),
    grid: Mapping[str, Sequence] | None = None,
    *,
    out: str | os.PathLike,
    overrides: Sequence[str] = (),
    config: dict | None = None,
    devices: int | None = None,
    report: bool = True,
    plots: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    cluster: str | RayCluster | None = None,
    share: tuple[int, int] | None = None,
) -> SweepResult:
    """Runs (or resumes) a sweep; see the module docstring.

    Args:
        experiment: registered experiment name (``synprune list``).
        seeds: seeds run at every grid point.
        grid: ``{"dotted.config.key": [values, ...]}``; the sweep is the Cartesian product.
        out: sweep directory. If it holds a sweep with the same definition, that sweep is resumed.
        overrides: ``key=value`` strings applied to every run before the grid.
        config: a full config to start from instead of the experiment's default.
        devices: local devices to split the run axis over (``None``: all; 1: no sharding).
        report: call the experiment's reporter for each run (summary and plots in its run dir).
        plots: draw the sweep summary plots into ``out/plots``.
        progress: tqdm bar per group (on a cluster: one bar over all runs, with finished /
            running / retried counts).
        log: optional callable receiving one-line progress messages.
        cluster: ``None`` (this machine), ``"ray"`` (``RAY_ADDRESS``, else a local Ray
            instance), ``"ray://host:port"`` / ``"host:port"``, or a :class:`RayCluster`: the
            groups run as Ray tasks (:mod:`~synprune_jax.sweeps.cluster`); same directory, same
            table. ``devices`` is then not used.
        share: ``(index, count)``: run only part ``index`` of every group cut into ``count``
            parts (one job of a SLURM array, say), into ``out`` like the whole sweep, padded as
            the whole group is on ``count`` devices; writes no table, plots or timing. The same
            sweep without ``share`` afterwards skips every finished run and gathers the table.
            Shares of one sweep may run at once (on a file system they all see).

    Returns:
        :class:`SweepResult`.

    Raises:
        ConfigError: invalid definition (checked, for every run, before anything compiles),
            ``out`` holds a different sweep, or cannot be created / written.
        RunDirectoryBusy: another live process is writing ``out`` (its ``.lock``).
        RunDirectoryFull: no room in ``out`` for the unfinished runs' checkpoints (checked
            before compiling).
        RunFault: the machine failed mid-run (disk full, I/O error); rerunning the same sweep
            resumes from the last checkpoints.
        CheckpointsDamaged: resuming a run none of whose checkpoints restores.
        Stopped: SIGTERM or a first Ctrl-C; the chunk was finished and checkpointed.

    Examples:
        >>> result = sweep("me-arm", seeds=range(2), grid={"mutation.sigma": [0.02, 0.1]},
        ...                out="runs/arm-sweep", overrides=["run.num_generations=20"],
        ...                )  # doctest: +SKIP
        >>> [spec.run_id for spec in result.runs], result.table.shape  # doctest: +SKIP
        (['run-000', 'run-001', 'run-002', 'run-003'], (80, 21))
        >>> sweep("me-arm", seeds=range(2), grid={"mutation.sigma": [0.02, 0.1]},
        ...       out="runs/arm-sweep", overrides=["run.num_generations=20"],
        ...       ).skipped  # the same sweep again: every run is finished  # doctest: +SKIP
        ['run-000', 'run-001', 'run-002', 'run-003']
        >>> sweep("me-arm", seeds=[0, 0], out="runs/arm-sweep")  # checked before any file
        Traceback (most recent call last):
            ...
        synprune_jax.config.ConfigError: repeated seeds in [0, 0]
    """

    out = Path(out)
    seeds = check_seeds(seeds)
    grid = {key: list(values) for key, values in (grid or {}).items()}
    definition = _definition(experiment, seeds, grid, overrides, config)
    runs = plan_runs(experiment, seeds, grid, overrides, config)
    members = build_members(experiment, runs, out)
    if isinstance(cluster, str):
        cluster = RayCluster.parse(cluster)
    if cluster is not None:
        if not isinstance(cluster, RayCluster):
            raise ConfigError(f"cluster must be None, a string or a RayCluster, got {cluster!r}")
        if devices is not None:
            raise ConfigError(
                "devices is for a sweep on this machine; on a cluster each task uses the "
                "devices it asks for (cpus_per_task / gpus_per_task)"
            )
        require_ray()
    if share is not None:
        if cluster is not None:
            raise ConfigError("a share of a sweep runs on this machine: give share or cluster")
        share = parse_share("/".join(str(part) for part in share))
    local = len(jax.local_devices())
    if devices is not None and (
        isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= local
    ):
        raise ConfigError(
            f"devices must be an int in [1, {local}] (local devices), got {devices!r}"
        )

    definition_path = out / SWEEP_FILE
    if definition_path.exists():
        try:
            previous = json.loads(definition_path.read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot read the sweep's definition ({definition_path}): {error}; "
                "use another directory"
            ) from error
        if previous != json.loads(json.dumps(definition)):
            raise ConfigError(
                f"{out} holds a different sweep ({definition_path}); use another "
                "directory or repeat the original definition to resume it"
            )
    prepare_directory(out)
    if log is not None:
        log(
            f"synprune: sweep {experiment!r}, {len(seeds)} seeds x {len(runs) // len(seeds)} "
            f"grid points into {out}"
        )
    if share is not None:  # one writer per share; the shares' runs do not overlap
        with RunLock(out / "shares" / str(share[0])):
            groups, pending, skipped = _plan_out(out, definition, runs, members, grid)
            pending, sizes = _share_of(groups, pending, share)
            count = local if devices is None else devices
            timing = _run_local(
                pending, count, sizes=sizes, report=report, progress=progress, log=log
            )
        return SweepResult(out=out, runs=runs, table=None, timing=timing, skipped=skipped)
    with RunLock(out):  # one writer per sweep directory
        groups, pending, skipped = _plan_out(out, definition, runs, members, grid)
        if cluster is None:
            count = local if devices is None else devices
            timing = _run_local(pending, count, report=report, progress=progress, log=log)
            if timing:
                write_json(out / "timing.json", {"groups": timing})
        elif pending:
            timing, summary = run_on_ray(
                out,
                experiment,
                groups,
                pending,
                skipped,
                cluster,
                report=report,
                progress=progress,
                log=log,
            )
            write_json(out / "timing.json", {"cluster": summary, "tasks": timing})
        else:
            timing = []
        table = collect(out)
        if plots:
            plot_sweep(table, list(grid), out / "plots")
    return SweepResult(out=out, runs=runs, table=table, timing=timing, skipped=skipped)


__all__ = [
    "FALLBACK_METRICS",
    "Member",
    "RayCluster",
    "RunSpec",
    "SUMMARY_METRICS",
    "SweepResult",
    "build_members",
    "collect",
    "group_members",
    "final_rows",
    "format_summary",
    "parse_grid",
    "parse_seeds",
    "parse_share",
    "plan_groups",
    "plan_runs",
    "plot_sweep",
    "report_runs",
    "run_group",
    "summarize",
    "summary_metrics",
    "sweep",
]
