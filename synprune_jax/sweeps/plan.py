"""Planning a sweep: seeds and grid points expanded into runs, runs built and grouped.

Runs whose algorithms compare equal (same static structure) and whose run settings agree
(``num_generations``, ``chunk_size``, ``checkpoint_every``, ``metrics_format``) form one group,
compiled once; their seeds and hyper-parameters (``Built.hyper``) are stacked on a run axis.

Example:
    >>> runs = plan_runs("me-arm", seeds=[0, 1], grid={"mutation.sigma": [0.05, 0.1]})
    >>> [(spec.run_id, spec.seed, spec.values["mutation.sigma"]) for spec in runs][:2]
    [('run-000', 0, 0.05), ('run-001', 1, 0.05)]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from synprune_jax import config as config_lib
from synprune_jax.config import AUTO, ConfigError, requested_devices


@dataclasses.dataclass
class RunSpec:
    """One run of a sweep.

    Attributes:
        run_id: ``run-000``, ``run-001``, ... in grid-major, seed-minor order.
        seed: the run's seed (``run.seed`` of its config).
        values: ``{swept key: value}``.
        config: the run's full config (resolved by ``build``).
    """

    run_id: str
    seed: int
    values: dict
    config: dict


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> ``[0, ..., 7]``; ``"1,3,10-12"`` -> ``[1, 3, 10, 11, 12]``.

    Raises:
        ConfigError: malformed text, a negative seed or a repeated one.
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                first, last = part.split("-", 1) if not part.startswith("-") else (part, "")
                low, high = int(first), int(last)
                if high < low:
                    raise ValueError
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"bad seed list {text!r}: use e.g. 0-7 or 0,3,5-6") from None
    return check_seeds(seeds)


def check_seeds(seeds: Iterable[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    for seed in seeds:
        if (
            isinstance(seed, bool)
            or not isinstance(seed, (int, np.integer))
            or not 0 <= seed < 2**32
        ):
            raise ConfigError(f"seeds must be ints in [0, 2**32), got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"repeated seeds in {seeds}")
    return [int(seed) for seed in seeds]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["mutation.sigma=0.05,0.1"]`` -> ``{"mutation.sigma": ["0.05", "0.1"]}`` (strings).

    Values are typed later against the experiment's default config. A list-valued key takes
    JSON lists separated by ``;``: ``task.hidden_sizes=[8,8];[16,16]``.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"grid entry {item!r} is not of the form key.path=v1,v2")
        key, text = item.split("=", 1)
        key = key.strip()
        separator = ";" if text.strip().startswith("[") else ","
        values = [value.strip() for value in text.split(separator) if value.strip()]
        if not values:
            raise ConfigError(f"grid entry {item!r} has no values")
        if key in grid:
            raise ConfigError(f"grid key {key!r} given twice")
        grid[key] = values
    return grid


def _override_text(key: str, value) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def plan_runs(
    experiment: str,
    seeds: Iterable[int],
    grid: Mapping[str, Sequence] | None = None,
    overrides: Sequence[str] = (),
    config: dict | None = None,
) -> list[RunSpec]:
    """Expands a sweep into runs (grid points in row-major order, seeds fastest).

    Args:
        experiment: a registered experiment name.
        seeds: the seeds every grid point is run with.
        grid: ``{"dotted.key": [values]}``; values may be typed or strings (parsed against the
            default config's type, like ``--set``).
        overrides: ``key=value`` overrides applied to every run first.
        config: start from this config instead of the experiment's default.

    Raises:
        ConfigError: unknown experiment or key, a value of the wrong type, ``run.seed`` in the
            grid, or an invalid resulting config (every run is built, hence validated, here).
    """
    from synprune_jax.experiments import get_experiment

    seeds = check_seeds(seeds)
    grid = dict(grid or {})
    if "run.seed" in grid:
        raise ConfigError("sweep seeds with seeds=... (--seeds), not with the grid key run.seed")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    entry = get_experiment(experiment)
    base = config_lib.apply_overrides(config or entry.default_config(), overrides)
    base["experiment"] = experiment
    runs: list[RunSpec] = []
    for point in itertools.product(*grid.values()):
        point_overrides = [
            _override_text(key, value) for key, value in zip(grid, point, strict=True)
        ]
        point_config = config_lib.apply_overrides(base, point_overrides)
        swept = {key: _lookup(point_config, key) for key in grid}
        for seed in seeds:
            run_config = config_lib.apply_overrides(point_config, [f"run.seed={seed}"])
            runs.append(
                RunSpec(run_id=f"run-{len(runs):03d}", seed=seed, values=swept, config=run_config)
            )
    return runs


@dataclasses.dataclass
class Member:
    """One planned run, built: its spec, the experiment's :class:`~synprune_jax.experiments.Built`
    and its run directory."""

    spec: RunSpec
    built: Any
    run_dir: Path


def _static_key(algorithm) -> Hashable:
    """Runs whose algorithms compare equal share one compiled program (algorithms hold only
    static structure); an unhashable algorithm gets a group of its own."""
    try:
        hash(algorithm)
    except TypeError:
        return ("unhashable", id(algorithm))
    return algorithm


def _group_key(member: Member) -> tuple:
    run_config = member.built.run_config
    return (
        _static_key(member.built.algorithm),
        run_config.num_generations,
        run_config.chunk_size,
        run_config.checkpoint_every,
        run_config.metrics_format,
        run_config.keep_checkpoints,
        jax.tree_util.tree_structure(member.built.hyper),
    )


def build_members(experiment: str, runs: Sequence[RunSpec], out: str | os.PathLike) -> list:
    """Builds (and so validates) every run of the plan."""
    from synprune_jax.experiments import get_experiment

    entry = get_experiment(experiment)
    members = []
    for spec in runs:
        option, devices = requested_devices(spec.config)
        if devices == AUTO:  # the sweep places whole runs on the devices itself
            section, key = option.split(".")
            spec.config[section][key] = devices = 1
        if devices != 1:
            raise ConfigError(
                f"run {spec.run_id}: {option}={devices!r}, but a sweep "
                "places whole runs on devices itself (`--devices`); leave "
                f"{option} at 1"
            )
        built = entry.build(spec.config)  # validates; resolves defaults in spec.config
        members.append(Member(spec=spec, built=built, run_dir=Path(out) / "runs" / spec.run_id))
    return members


def group_members(members: Sequence) -> list[list]:
    """Members with equal static parts and run settings, in first-appearance order."""
    groups: dict[tuple, list] = {}
    for member in members:
        groups.setdefault(_group_key(member), []).append(member)
    return list(groups.values())


def plan_groups(
    experiment: str,
    seeds: Iterable[int],
    grid: Mapping[str, Sequence] | None = None,
    overrides: Sequence[str] = (),
    config: dict | None = None,
) -> list[list[str]]:
    """The run ids of each compiled group a sweep would make (builds, compiles nothing)."""
    runs = plan_runs(experiment, seeds, grid, overrides, config)
    return [
        [m.spec.run_id for m in group]
        for group in group_members(build_members(experiment, runs, "."))
    ]
