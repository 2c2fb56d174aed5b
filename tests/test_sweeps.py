"""Sweeps: vmapped groups equal the runner's single runs, the tidy table, resume, CLI, errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from synprune_jax import cli, config as config_lib, runner, sweeps
from synprune_jax.config import ConfigError
from synprune_jax.experiments import get_experiment

OVERRIDES = ["map_elites.batch_size=16", "map_elites.initial_batch_size=32",
             "archive.resolution=8,8", "task.num_joints=6", "run.num_generations=6",
             "run.chunk_size=3", "run.checkpoint_every=3", "run.progress=false"]
SIGMAS = (0.05, 0.2)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 4-run sweep (2 seeds x 2 sigmas) run through the CLI: one compiled group."""
    out = tmp_path_factory.mktemp("sweep") / "arm"
    argv = ["sweep", "me-arm", "--seeds", "0-1", "--grid", "mutation.sigma=0.05,0.2",
            "--out", str(out), "--devices", "1", "--no-report"]
    for override in OVERRIDES:
        argv += ["--set", override]
    assert cli.main(argv) == 0
    return out


def _runner_metrics(tmp_path, seed, sigma):
    config = config_lib.apply_overrides(get_experiment("me-arm").default_config(),
                                        OVERRIDES + [f"run.seed={seed}", f"mutation.sigma={sigma}"])
    built = get_experiment("me-arm").build(config)
    _, metrics = runner.run(built.algorithm, tmp_path / f"single-{seed}-{sigma}",
                            built.run_config)
    return metrics


@pytest.mark.parametrize("seed,sigma", [(0, 0.05), (1, 0.2)])
def test_vmapped_sweep_equals_runs_one_by_one(sweep_dir, tmp_path, seed, sigma):
    table = pd.read_parquet(sweep_dir / "results.parquet")
    rows = table[(table["seed"] == seed) & (table["mutation.sigma"] == sigma)]
    expected = _runner_metrics(tmp_path, seed, sigma)
    assert len(rows) == 6
    for name, values in expected.items():
        np.testing.assert_allclose(rows[name].to_numpy(np.float64), values, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    # different seeds / sigmas really differ (the comparison above is not vacuous)
    other = table[(table["seed"] != seed)]
    assert not np.array_equal(other["qd_score"].to_numpy()[:6], rows["qd_score"].to_numpy())


def test_tidy_table_and_files(sweep_dir):
    table = pd.read_csv(sweep_dir / "results.csv")
    parquet = pd.read_parquet(sweep_dir / "results.parquet")
    assert len(table) == len(parquet) == 4 * 6
    assert list(table.columns[:5]) == ["run_id", "group", "seed", "mutation.sigma", "generation"]
    assert set(table["group"]) == {0}  # one compiled program for the whole sweep
    np.testing.assert_array_equal(table["qd_score"].to_numpy(), parquet["qd_score"].to_numpy())
    for run_id, frame in table.groupby("run_id"):
        assert frame["generation"].tolist() == [1, 2, 3, 4, 5, 6]
    index = pd.read_csv(sweep_dir / "runs.csv")
    assert index[["seed", "mutation.sigma"]].values.tolist() == [
        [0, 0.05], [1, 0.05], [0, 0.2], [1, 0.2]]
    run_config = json.loads((sweep_dir / "runs" / "run-003" / "config.json").read_text())
    assert run_config["run"]["seed"] == 1 and run_config["mutation"]["sigma"] == 0.2
    timing = json.loads((sweep_dir / "timing.json").read_text())["groups"]
    assert len(timing) == 1 and list(timing[0]["chunk_compile_s"]) == ["3"]  # compiled once
    for name in ("final_qd_score_vs_mutation.sigma.png", "curves_max_fitness.png"):
        assert (sweep_dir / "plots" / name).stat().st_size > 0
    summary = sweeps.summarize(table, ["mutation.sigma"])
    assert summary["num_seeds"].tolist() == [2, 2]
    final = sweeps.final_rows(table)
    expected = final[final["mutation.sigma"] == 0.05]["qd_score"].mean()
    assert summary.loc[0, "qd_score_mean"] == pytest.approx(expected)


def test_resume_skips_finished_and_continues_interrupted(sweep_dir, tmp_path):
    original = pd.read_csv(sweep_dir / "results.csv")
    kwargs = dict(seeds=SEEDS, grid={"mutation.sigma": ["0.05", "0.2"]}, overrides=OVERRIDES,
                  devices=1, report=False, plots=False)
    finished = sweeps.sweep("me-arm", out=sweep_dir, **kwargs)
    assert finished.skipped == ["run-000", "run-001", "run-002", "run-003"]
    assert finished.timing == []
    # Interrupt two runs after generation 3: drop their last checkpoint (metrics rows 4-6 stay
    # behind, as after a kill between checkpoints; resuming must drop and redo them).
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy)
    for run_id in ("run-001", "run-002"):
        shutil.rmtree(copy / "runs" / run_id / "checkpoints" / "6")
    resumed = sweeps.sweep("me-arm", out=copy, **kwargs)
    assert resumed.skipped == ["run-000", "run-003"]
    assert resumed.timing[0]["runs"] == ["run-001", "run-002"]
    assert resumed.timing[0]["start_generation"] == 3
    assert resumed.timing[0]["init_compile_s"] is None  # restored, not re-initialised
    pd.testing.assert_frame_equal(resumed.table, original, check_exact=False, rtol=1e-6)


def test_resume_refuses_a_different_sweep(sweep_dir):
    with pytest.raises(ConfigError, match="different sweep"):
        sweeps.sweep("me-arm", seeds=[0, 1, 2], grid={"mutation.sigma": ["0.05", "0.2"]},
                      out=sweep_dir, overrides=OVERRIDES, report=False, plots=False)


def test_cli_plot_works_on_a_sweep_run(sweep_dir, capsys):
    assert cli.main(["plot", str(sweep_dir / "runs" / "run-000")]) == 0
    assert "archive_heatmap.png" in capsys.readouterr().out


def test_groups_follow_static_shapes():
    # traced knobs share one program; a structural key makes one group per value
    groups = sweeps.plan_groups("me-arm", [0, 1], {"mutation.sigma": [0.05, 0.1],
                                                    "mutation.p_connect": [0.0, 0.02]},
                                OVERRIDES)
    assert [len(group) for group in groups] == [8]
    groups = sweeps.plan_groups("me-arm", [0, 1], {"map_elites.batch_size": [8, 16],
                                                    "mutation.sigma": [0.05, 0.1]}, OVERRIDES)
    assert groups == [["run-000", "run-001", "run-002", "run-003"],
                      ["run-004", "run-005", "run-006", "run-007"]]


def test_plan_runs_order_values_and_types():
    runs = sweeps.plan_runs("me-arm", [3, 5], {"map_elites.batch_size": ["8", "16"]}, OVERRIDES)
    assert [(run.run_id, run.seed, run.values["map_elites.batch_size"]) for run in runs] == [
        ("run-000", 3, 8), ("run-001", 5, 8), ("run-002", 3, 16), ("run-003", 5, 16)]
    assert runs[3].config["run"]["seed"] == 5 and runs[3].config["run"]["num_generations"] == 6


def test_adapters():
    from synprune_jax.algorithms.map_elites import MapElites

    built = get_experiment("me-arm").build(config_lib.apply_overrides(
        get_experiment("me-arm").default_config(), OVERRIDES))
    assert isinstance(built.algorithm, MapElites)
    adapter = sweeps.adapter_for(built.algorithm)
    assert isinstance(adapter, sweeps.MapElitesAdapter)
    static, hyper = adapter.split(built.algorithm)
    assert hyper is built.algorithm.hyper and hash(static) == hash(adapter.split(built.algorithm)[0])
    assert isinstance(sweeps.adapter_for(object()), sweeps.SeedOnlyAdapter)


@pytest.mark.parametrize("text,expected", [("0-3", [0, 1, 2, 3]), ("7", [7]),
                                           ("1,3,10-12", [1, 3, 10, 11, 12])])
def test_parse_seeds(text, expected):
    assert sweeps.parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a", "3-1", "0,0", "-1", "1-x"])
def test_parse_seeds_rejects(text):
    with pytest.raises(ConfigError):
        sweeps.parse_seeds(text)


def test_parse_grid():
    assert sweeps.parse_grid(["mutation.sigma=0.05, 0.1", "task.hidden_sizes=[8,8];[16]"]) == {
        "mutation.sigma": ["0.05", "0.1"], "task.hidden_sizes": ["[8,8]", "[16]"]}
    for bad in (["mutation.sigma"], ["mutation.sigma="], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            sweeps.parse_grid(bad)


@pytest.mark.parametrize("grid,match", [
    ({"mutation.sigmaa": [0.1]}, "unknown config key"),
    ({"run.seed": [1, 2]}, "seeds="),
    ({"mutation.sigma": []}, "non-empty"),
    ({"mutation.sigma": ["fast"]}, "expected a number"),
    ({"mutation.sigma": [-1.0]}, "sigma must be >= 0"),
])
def test_invalid_sweeps_fail_before_compiling(tmp_path, grid, match):
    with pytest.raises(ConfigError, match=match):
        sweeps.sweep("me-arm", [0], grid, out=tmp_path / "bad", overrides=OVERRIDES)
    assert not (tmp_path / "bad").exists()


def test_invalid_devices_and_experiment(tmp_path, capsys):
    with pytest.raises(ConfigError, match="devices"):
        sweeps.sweep("me-arm", [0], out=tmp_path / "d", overrides=OVERRIDES, devices=64)
    assert cli.main(["sweep", "no-such-experiment", "--out", str(tmp_path / "e")]) == 2
    assert "unknown experiment" in capsys.readouterr().err
