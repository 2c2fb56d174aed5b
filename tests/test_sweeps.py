"""Sweeps: vmapped groups equal the runner's single runs, the tidy table, resume, CLI, errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from synprune_jax import cli, runner, sweeps
from synprune_jax import config as config_lib
from synprune_jax.config import ConfigError
from synprune_jax.experiments import get_experiment

OVERRIDES = [
    "map_elites.batch_size=16",
    "map_elites.initial_batch_size=32",
    "archive.resolution=8,8",
    "task.num_joints=6",
    "run.num_generations=6",
    "run.chunk_size=3",
    "run.checkpoint_every=3",
    "run.progress=false",
]
SIGMAS = (0.05, 0.2)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 4-run sweep (2 seeds x 2 sigmas) run through the CLI: one compiled group."""
    out = tmp_path_factory.mktemp("sweep") / "arm"
    argv = [
        "sweep",
        "me-arm",
        "--seeds",
        "0-1",
        "--grid",
        "mutation.sigma=0.05,0.2",
        "--out",
        str(out),
        "--devices",
        "1",
        "--no-report",
    ]
    for override in OVERRIDES:
        argv += ["--set", override]
    assert cli.main(argv) == 0
    return out


def _runner_metrics(tmp_path, seed, sigma):
    config = config_lib.apply_overrides(
        get_experiment("me-arm").default_config(),
        OVERRIDES + [f"run.seed={seed}", f"mutation.sigma={sigma}"],
    )
    built = get_experiment("me-arm").build(config)
    _, metrics = runner.run(
        built.algorithm, tmp_path / f"single-{seed}-{sigma}", built.run_config, hyper=built.hyper
    )
    return metrics


@pytest.mark.parametrize("seed,sigma", [(0, 0.05), (1, 0.2)])
def test_vmapped_sweep_equals_runs_one_by_one(sweep_dir, tmp_path, seed, sigma):
    table = pd.read_parquet(sweep_dir / "results.parquet")
    rows = table[(table["seed"] == seed) & (table["mutation.sigma"] == sigma)]
    expected = _runner_metrics(tmp_path, seed, sigma)
    assert len(rows) == 6
    for name, values in expected.items():
        np.testing.assert_allclose(
            rows[name].to_numpy(np.float64), values, rtol=1e-5, atol=1e-5, err_msg=name
        )
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
    for _run_id, frame in table.groupby("run_id"):
        assert frame["generation"].tolist() == [1, 2, 3, 4, 5, 6]
    index = pd.read_csv(sweep_dir / "runs.csv")
    assert index[["seed", "mutation.sigma"]].values.tolist() == [
        [0, 0.05],
        [1, 0.05],
        [0, 0.2],
        [1, 0.2],
    ]
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
    kwargs = dict(
        seeds=SEEDS,
        grid={"mutation.sigma": ["0.05", "0.2"]},
        overrides=OVERRIDES,
        devices=1,
        report=False,
        plots=False,
    )
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
        sweeps.sweep(
            "me-arm",
            seeds=[0, 1, 2],
            grid={"mutation.sigma": ["0.05", "0.2"]},
            out=sweep_dir,
            overrides=OVERRIDES,
            report=False,
            plots=False,
        )


def test_cli_plot_works_on_a_sweep_run(sweep_dir, capsys):
    assert cli.main(["plot", str(sweep_dir / "runs" / "run-000")]) == 0
    assert "archive_heatmap.png" in capsys.readouterr().out


def test_groups_follow_static_shapes():
    # traced knobs share one program; a structural key makes one group per value
    groups = sweeps.plan_groups(
        "me-arm",
        [0, 1],
        {"mutation.sigma": [0.05, 0.1], "mutation.p_connect": [0.0, 0.02]},
        OVERRIDES,
    )
    assert [len(group) for group in groups] == [8]
    groups = sweeps.plan_groups(
        "me-arm",
        [0, 1],
        {"map_elites.batch_size": [8, 16], "mutation.sigma": [0.05, 0.1]},
        OVERRIDES,
    )
    assert groups == [
        ["run-000", "run-001", "run-002", "run-003"],
        ["run-004", "run-005", "run-006", "run-007"],
    ]


def test_plan_runs_order_values_and_types():
    runs = sweeps.plan_runs("me-arm", [3, 5], {"map_elites.batch_size": ["8", "16"]}, OVERRIDES)
    assert [(run.run_id, run.seed, run.values["map_elites.batch_size"]) for run in runs] == [
        ("run-000", 3, 8),
        ("run-001", 5, 8),
        ("run-002", 3, 16),
        ("run-003", 5, 16),
    ]
    assert runs[3].config["run"]["seed"] == 5 and runs[3].config["run"]["num_generations"] == 6


def test_algorithms_hold_static_structure_and_hyper_is_separate():
    from synprune_jax.algorithms.map_elites import MapElites
    from synprune_jax.variation import MutationHyper

    entry = get_experiment("me-arm")
    build = lambda extra: entry.build(
        config_lib.apply_overrides(entry.default_config(), OVERRIDES + extra)
    )
    first, second = build(["mutation.sigma=0.05"]), build(["mutation.sigma=0.2"])
    assert isinstance(first.algorithm, MapElites)
    assert first.algorithm == second.algorithm and hash(first.algorithm) == hash(second.algorithm)
    assert first.hyper == MutationHyper(sigma=0.05) and second.hyper.sigma == 0.2
    assert build(["map_elites.batch_size=8"]).algorithm != first.algorithm


@pytest.mark.parametrize(
    "text,expected", [("0-3", [0, 1, 2, 3]), ("7", [7]), ("1,3,10-12", [1, 3, 10, 11, 12])]
)
def test_parse_seeds(text, expected):
    assert sweeps.parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a", "3-1", "0,0", "-1", "1-x"])
def test_parse_seeds_rejects(text):
    with pytest.raises(ConfigError):
        sweeps.parse_seeds(text)


def test_parse_grid():
    assert sweeps.parse_grid(["mutation.sigma=0.05, 0.1", "task.hidden_sizes=[8,8];[16]"]) == {
        "mutation.sigma": ["0.05", "0.1"],
        "task.hidden_sizes": ["[8,8]", "[16]"],
    }
    for bad in (["mutation.sigma"], ["mutation.sigma="], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            sweeps.parse_grid(bad)


@pytest.mark.parametrize(
    "grid,match",
    [
        ({"mutation.sigmaa": [0.1]}, "unknown config key"),
        ({"run.seed": [1, 2]}, "seeds="),
        ({"mutation.sigma": []}, "non-empty"),
        ({"mutation.sigma": ["fast"]}, "expected a number"),
        ({"mutation.sigma": [-1.0]}, "sigma must be >= 0"),
        ({"task.devices": [2]}, "places whole runs on devices itself"),
    ],
)
def test_invalid_sweeps_fail_before_compiling(tmp_path, grid, match):
    with pytest.raises(ConfigError, match=match):
        sweeps.sweep("me-arm", [0], grid, out=tmp_path / "bad", overrides=OVERRIDES)
    assert not (tmp_path / "bad").exists()


def test_cli_sweep_puts_runs_on_one_cpu_device_per_core(sweep_dir, tmp_path, run_report):
    # `synprune sweep` without --devices, in a fresh process: one CPU device per core (up to the
    # 4 runs), the run axis split over them, and the same table as the one-device sweep.
    import textwrap

    out = tmp_path / "cores"
    argv = [
        "sweep",
        "me-arm",
        "--seeds",
        "0-1",
        "--grid",
        "mutation.sigma=0.05,0.2",
        "--out",
        str(out),
        "--no-report",
    ]
    for override in OVERRIDES:
        argv += ["--set", override]
    report = run_report(
        textwrap.dedent(f"""
        import json, jax
        from synprune_jax.cli import main
        assert main({argv!r}) == 0
        print("REPORT " + json.dumps({{"devices": jax.local_device_count()}}))
    """)
    )
    expected = cli.sweep_cpu_devices(None, 4)
    assert expected == min(cli.usable_cores(), 4)
    assert report == {"devices": expected}
    timing = json.loads((out / "timing.json").read_text())["groups"]
    assert [group["num_devices"] for group in timing] == [expected]
    sharded = pd.read_parquet(out / "results.parquet")
    single = pd.read_parquet(sweep_dir / "results.parquet")
    assert list(sharded.columns) == list(single.columns)
    for column in single.columns:
        if pd.api.types.is_float_dtype(single[column]):
            np.testing.assert_allclose(
                sharded[column].to_numpy(np.float64),
                single[column].to_numpy(np.float64),
                rtol=1e-5,
                atol=1e-5,
                err_msg=column,
            )
        else:
            assert sharded[column].tolist() == single[column].tolist(), column


def test_sweep_cpu_device_count(monkeypatch):
    monkeypatch.setattr(cli, "usable_cores", lambda: 6)
    assert cli.sweep_cpu_devices(None, 4) == 4  # no more devices than runs
    assert cli.sweep_cpu_devices(None, 40) == 6  # one per core
    assert cli.sweep_cpu_devices(3, 40) == 3  # --devices wins
    claimed = []
    monkeypatch.setattr(cli, "_set_cpu_devices", claimed.append)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    cli._claim_sweep_cpu_devices(None, 8)  # the user's XLA flag is kept
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "3")
    cli._claim_sweep_cpu_devices(None, 8)  # so is the user's JAX setting
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES")
    cli._claim_sweep_cpu_devices(None, 1)  # one run: nothing to split
    cli._claim_sweep_cpu_devices(None, 8)
    assert claimed == [6]


def test_usable_cores_follows_the_affinity(monkeypatch):
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert cli.usable_cores() == 3


def test_invalid_devices_and_experiment(tmp_path, capsys):
    with pytest.raises(ConfigError, match="devices"):
        sweeps.sweep("me-arm", [0], out=tmp_path / "d", overrides=OVERRIDES, devices=64)
    assert cli.main(["sweep", "no-such-experiment", "--out", str(tmp_path / "e")]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    # the transfer experiments' population-sharding option is refused like task.devices, before
    # any data or compile work
    with pytest.raises(ConfigError, match=r"train.devices=2.*leave train.devices at 1"):
        sweeps.sweep(
            "mo-prune-transfer",
            [0],
            {"train.devices": [2]},
            out=tmp_path / "t",
            overrides=["run.progress=false"],
        )
    assert not (tmp_path / "t").exists()


def test_requested_devices_reads_either_option():
    from synprune_jax.config import requested_devices

    assert requested_devices({"task": {"devices": 3}}) == ("task.devices", 3)
    assert requested_devices({"train": {"devices": 2}, "task": {"name": "x"}}) == (
        "train.devices",
        2,
    )
    assert requested_devices({"task": {"name": "x"}}) == ("task.devices", 1)
    assert requested_devices(None) == ("task.devices", 1)


# --------------------------------------------------------------------------------------------
# Traced hyper-parameters of the other methods: ES, truncation GA, NSGA-II / steady-state GA on
# the transfer problem. For each, 2 grid values x 2 seeds form ONE compiled group, and each run of
# the vmapped sweep equals the same run done alone through the runner.

_TINY_RUN = [
    "run.num_generations=4",
    "run.chunk_size=2",
    "run.checkpoint_every=2",
    "run.progress=false",
]
_TINY_TRANSFER = [
    "data.backbone=pixels",
    "head.num_hidden=4",
    "train.epochs=3",
    "nsga2.population_size=6",
    "nsga2.memo_capacity=64",
    "ga.population_size=6",
    "ga.memo_capacity=64",
]
METHODS = {
    # experiment: (overrides, swept key and its two values, every traced key with two values)
    "es-prune-arm": (
        [
            "task.num_joints=4",
            "task.hidden_sizes=[8]",
            "es.population_size=8",
            "es.prune_every=2",
            "es.prune_start=2",
            "es.prune_end=6",
            "es.prune_criterion=magnitude",
            "es.prune_schedule=constant",
        ]
        + _TINY_RUN,
        ("es.sigma_init", [0.05, 0.2]),
        {
            "es.sigma_init": [0.05, 0.1],
            "es.learning_rate": [0.01, 0.05],
            "es.prune_amount": [0.1, 0.3],
            "es.target_density": [0.2, 0.5],
            "es.init_density": [1.0, 0.8],
            "es.sigma_min": [0.0, 0.01],
        },
    ),
    "ga-arm": (
        [
            "task.num_joints=4",
            "task.hidden_sizes=[8]",
            "ga.population_size=8",
            "ga.crossover=uniform",
        ]
        + _TINY_RUN,
        ("mutation.sigma", [0.05, 0.2]),
        {
            "mutation.sigma": [0.05, 0.1],
            "mutation.p_disconnect": [0.01, 0.05],
            "mutation.p_connect": [0.0, 0.02],
            "ga.crossover_rate": [0.3, 0.7],
        },
    ),
    "me-es": (
        [
            "task.num_joints=4",
            "task.hidden_sizes=[8]",
            "map_elites.batch_size=8",
            "map_elites.initial_batch_size=16",
            "archive.resolution=[4,4]",
            "es_emitter.population_size=8",
            "es_emitter.restart_every=2",
        ]
        + _TINY_RUN,
        ("es_emitter.sigma_init", [0.05, 0.2]),
        {
            "es_emitter.sigma_init": [0.05, 0.1],
            "es_emitter.learning_rate": [0.01, 0.05],
            "mutation.sigma": [0.05, 0.1],
            "mutation.p_disconnect": [0.01, 0.05],
        },
    ),
    "cluster-synthesis": (
        [
            "network.widths=3,4,8,6",
            "data.max_train=96",
            "synthesis.epochs=1",
            "synthesis.ancestor_epochs=1",
            "synthesis.num_offspring=2",
        ]
        + _TINY_RUN,
        ("encoding.synapse_rate", [0.25, 1.0]),
        {
            "synthesis.learning_rate": [3e-3, 1e-2],
            "synthesis.tolerance": [0.02, 0.05],
            "encoding.synapse_factor": [1.0, 0.8],
            "encoding.cluster_factor": [1.0, 0.9],
            "encoding.truncation": [0.1, 0.2],
            "encoding.synapse_rate": [0.25, 1.0],
            "encoding.cluster_rate": [0.1, 1.0],
        },
    ),
    "mo-prune-transfer": (
        _TINY_TRANSFER + _TINY_RUN,
        ("nsga2.mutation_rate", [0.02, 0.2]),
        {
            "nsga2.mutation_rate": [0.02, 0.1],
            "nsga2.crossover_rate": [0.5, 0.9],
            "train.learning_rate": [0.01, 0.02],
            "train.momentum": [0.8, 0.9],
            "objectives.temperature": [1.0, 1000.0],
        },
    ),
    "ga-prune-transfer": (
        _TINY_TRANSFER + _TINY_RUN,
        ("ga.mutation_probability", [0.0, 1.0]),
        {
            "ga.mutation_probability": [0.07, 0.5],
            "train.learning_rate": [0.01, 0.02],
            "objectives.temperature": [1.0, 1000.0],
        },
    ),
}


@pytest.fixture
def transfer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNPRUNE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("experiment", sorted(METHODS))
def test_traced_keys_share_one_group(experiment, transfer_cache):
    overrides, _, traced = METHODS[experiment]
    for key, values in traced.items():  # grouping is by equality: each key alone suffices
        groups = sweeps.plan_groups(experiment, [0, 1], {key: values}, overrides)
        assert [len(group) for group in groups] == [4], key  # one compiled program


def test_static_keys_still_split_groups(transfer_cache):
    overrides, _, _ = METHODS["es-prune-arm"]
    groups = sweeps.plan_groups(
        "es-prune-arm",
        [0],
        {"es.population_size": [8, 16], "es.sigma_init": [0.05, 0.1]},
        overrides,
    )
    assert groups == [["run-000", "run-001"], ["run-002", "run-003"]]
    overrides, _, _ = METHODS["mo-prune-transfer"]
    groups = sweeps.plan_groups("mo-prune-transfer", [0], {"train.epochs": [2, 3]}, overrides)
    assert len(groups) == 2


def _single_run(tmp_path, experiment, overrides):
    entry = get_experiment(experiment)
    built = entry.build(config_lib.apply_overrides(entry.default_config(), overrides))
    _, metrics = runner.run(
        built.algorithm, tmp_path / "single", built.run_config, hyper=built.hyper
    )
    return metrics


def test_cli_sweep_of_a_traced_es_key(tmp_path, capsys):
    overrides, _, _ = METHODS["es-prune-arm"]
    argv = [
        "sweep",
        "es-prune-arm",
        "--seeds",
        "0",
        "--grid",
        "es.learning_rate=0.01,0.05",
        "--out",
        str(tmp_path / "es"),
        "--devices",
        "1",
        "--no-report",
    ]
    for override in overrides + ["run.num_generations=2"]:
        argv += ["--set", override]
    assert cli.main(argv) == 0
    assert "es.learning_rate" in capsys.readouterr().out
    timing = json.loads((tmp_path / "es" / "timing.json").read_text())["groups"]
    assert len(timing) == 1 and timing[0]["runs"] == ["run-000", "run-001"]


@pytest.mark.parametrize(
    "strategy", ["sep_cma_es", pytest.param("simple_ga", marks=pytest.mark.slow)]
)
def test_es_sweep_over_sigma_with_other_evosax_strategies(strategy, tmp_path):
    # Sep-CMA-ES takes sigma through params.std_init, SimpleGA through its initial population and
    # a decaying std schedule (sigma_min traced inside optax's exponential_decay). Full CMA-ES is
    # left out on purpose: its covariance starts at I, so the eigendecomposition after the first
    # update is ill-conditioned and a last-bit difference (constant vs traced sigma) rotates its
    # eigenvectors; sweep and single run are then statistically equivalent, not equal.
    overrides = METHODS["es-prune-arm"][0] + [
        f"es.strategy={strategy}",
        "es.sigma_decay=0.9",
        "run.num_generations=2",
    ]
    result = sweeps.sweep(
        "es-prune-arm",
        seeds=[1],
        grid={"es.sigma_init": [0.05, 0.2], "es.sigma_min": [0.01, 0.1]},
        out=tmp_path / "sweep",
        overrides=overrides,
        devices=1,
        report=False,
        plots=False,
    )
    assert len(result.timing) == 1
    table = result.table
    rows = table[(table["es.sigma_init"] == 0.2) & (table["es.sigma_min"] == 0.1)]
    expected = _single_run(
        tmp_path,
        "es-prune-arm",
        overrides + ["run.seed=1", "es.sigma_init=0.2", "es.sigma_min=0.1"],
    )
    for name, column in expected.items():
        np.testing.assert_allclose(
            rows[name].to_numpy(np.float64),
            column,
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{strategy}: {name}",
        )
    first = table[(table["es.sigma_init"] == 0.05) & (table["es.sigma_min"] == 0.01)]
    assert not np.array_equal(first["mean_std"].to_numpy(), rows["mean_std"].to_numpy())


def test_summary_metrics_follow_the_method():
    import pandas as pd

    base = {
        "run_id": ["run-000", "run-001"],
        "group": [0, 0],
        "seed": [0, 1],
        "generation": [4, 4],
        "mutation.sigma": [0.1, 0.2],
    }
    map_elites = pd.DataFrame(
        {**base, "qd_score": [1.0, 2.0], "coverage": [0.1, 0.2], "num_inserted": [3, 4]}
    )
    assert sweeps.summary_metrics(map_elites) == ["qd_score", "coverage"]
    autoencoder = pd.DataFrame(
        {**base, "l1_train": [0.3, 0.2], "kept_fraction": [0.9, 0.8], "lr_mean": [1e-5, 1e-5]}
    )
    assert sweeps.summary_metrics(autoencoder) == ["l1_train", "kept_fraction"]
    other = pd.DataFrame(
        {**base, "a": [1.0, 2.0], "b": [3, 4], "c": [5.0, 6.0], "d": [7, 8], "label": ["x", "y"]}
    )
    assert sweeps.summary_metrics(other, ["mutation.sigma"]) == ["a", "b", "c"]
    summary = sweeps.summarize(autoencoder, ["mutation.sigma"])
    assert summary["l1_train_mean"].tolist() == [0.3, 0.2]
    text = sweeps.format_summary(summary, ["mutation.sigma"])
    assert "final l1_train" in text and "final kept_fraction" in text and "lr_mean" not in text
