"""The command line, end to end on the fast arm experiment (and one tiny Brax run, `-m slow`)."""

import json
import os

import jax
import numpy as np
import pytest

from synprune_jax import checkpoint
from synprune_jax.cli import main
from synprune_jax.runner import read_metrics

ARM = [
    "me-arm",
    "--set",
    "map_elites.batch_size=64",
    "--set",
    "map_elites.initial_batch_size=64",
    "--set",
    "run.chunk_size=5",
    "--set",
    "run.checkpoint_every=10",
]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "me-prune" in out and "(default)" in out and "me-arm" in out


def test_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *ARM, "--set", "run.num_generations=20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| density <= |" in printed
    for name in (
        "config.json",
        "metrics.csv",
        "timing.json",
        "summary.json",
        "summary.md",
        "archive_heatmap.png",
        "curves.png",
        "fitness_vs_density.png",
    ):
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["num_generations"] == 20 and config["experiment"] == "me-arm"
    assert config["archive"]["lower"] == [0.0, 0.0]  # resolved from the task
    metrics = read_metrics(out)
    np.testing.assert_array_equal(metrics["generation"], np.arange(1, 21))
    assert checkpoint.latest_step(os.path.join(out, "checkpoints")) == 20
    summary = json.loads((out / "summary.json").read_text())
    assert [row["max_density"] for row in summary["table"]] == [0.1, 0.25, 0.5, 1.0]
    # refuses to overwrite; plot redraws from the checkpoint
    assert main(["run", *ARM, "--out", str(out)]) == 2
    os.remove(out / "curves.png")
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").exists()


def test_resume_matches_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", *ARM, "--set", "run.num_generations=30", "--out", str(full)]) == 0
    # "killed" after 20 generations: a run of 20, then its config asks for 30 and it resumes
    assert main(["run", *ARM, "--set", "run.num_generations=20", "--out", str(cut)]) == 0
    config = json.loads((cut / "config.json").read_text())
    config["run"]["num_generations"] = 30
    (cut / "config.json").write_text(json.dumps(config))
    assert main(["resume", str(cut)]) == 0
    assert (full / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    assert json.loads((full / "summary.json").read_text()) == json.loads(
        (cut / "summary.json").read_text()
    )


def test_cvt_archive_and_jsonl_metrics(tmp_path):
    out = tmp_path / "cvt"
    assert (
        main(
            [
                "run",
                *ARM,
                "--set",
                "archive.kind=cvt",
                "--set",
                "archive.num_cells=50",
                "--set",
                "archive.num_samples=2000",
                "--set",
                "run.metrics_format=jsonl",
                "--set",
                "run.num_generations=10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = read_metrics(out)
    np.testing.assert_array_equal(metrics["generation"], np.arange(1, 11))
    assert (out / "metrics.jsonl").exists() and (out / "archive_heatmap.png").exists()
    assert 0 < metrics["coverage"][-1] <= 1


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["run", "me-arm", "--set", "run.num_generation=3", "--out", str(tmp_path / "x")]) == 2
    )
    assert "num_generations" in capsys.readouterr().err
    assert main(["run", "not-an-experiment"]) == 2
    assert "valid" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "x").exists()  # nothing written for a config that failed


# Brax MAP-Elites runs end to end from the command line by default in
# test_cli_uses_every_core_and_prints_no_noise (halfcheetah, split over every core; the quickstart
# notebook runs it on hopper with -m slow); the CLI's run path is tested on the arm.
@pytest.mark.slow
def test_tiny_brax_run(tmp_path, capsys):
    out = tmp_path / "brax"
    assert (
        main(
            [
                "run",
                "--set",
                "task.episode_length=10",
                "--set",
                "task.hidden_sizes=4",
                "--set",
                "map_elites.batch_size=8",
                "--set",
                "map_elites.initial_batch_size=8",
                "--set",
                "run.num_generations=2",
                "--set",
                "run.chunk_size=2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 2 and summary["evaluations"] == 8 + 2 * 8
    assert np.isfinite(summary["max_fitness"])


# ----- a quiet start, the machine used by default ------------------------------------------------


def test_quiet_start_drops_only_third_party_noise(capsys):
    import warnings

    from synprune_jax.cli import quiet_third_party

    def noisy():
        print("Failed to import warp: No module named 'warp'")
        print("ours", end="")
        print(" continues")
        warnings.warn_explicit(
            "Brax System, piplines and environments are not actively being maintained.",
            UserWarning,
            "mjcf.py",
            480,
            module="brax.io.mjcf",
        )
        warnings.warn_explicit("our own warning", UserWarning, "x.py", 1, module="synprune_jax.x")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_third_party():
            noisy()
        assert capsys.readouterr().out == "ours continues\n"
        assert [str(w.message) for w in caught] == ["our own warning"]
        caught.clear()
        with quiet_third_party(verbose=True):
            noisy()
        assert capsys.readouterr().out.startswith("Failed to import warp")
        assert len(caught) == 2


def test_mujoco_warnings_go_to_the_run_directory(tmp_path, monkeypatch):
    import mujoco

    from synprune_jax.cli import MUJOCO_LOG, MujocoLog

    monkeypatch.chdir(tmp_path)
    log = MujocoLog()
    log.install({"task": {"name": "arm"}})  # no MuJoCo task: nothing installed
    assert mujoco.get_mju_user_warning() is None
    log.install({"task": {"name": "brax"}})
    try:
        assert mujoco.get_mju_user_warning() is log
        # a deprecated compiler attribute makes MuJoCo warn while it compiles the model
        mujoco.MjModel.from_xml_string(
            '<mujoco><compiler settotalmass="2"/><worldbody><body>'
            '<freejoint/><geom size="0.1"/></body></worldbody>'
            "</mujoco>"
        )
    finally:
        mujoco.set_mju_user_warning(None)
    assert not (tmp_path / MUJOCO_LOG).exists()  # not in the working directory
    assert len(log.messages) == 1 and "settotalmass" in log.messages[0]  # held
    (tmp_path / "run").mkdir()
    log.into(str(tmp_path / "run"))
    log("a second warning")
    lines = (tmp_path / "run" / MUJOCO_LOG).read_text().splitlines()
    assert len(lines) == 2 and "settotalmass" in lines[0] and lines[1].endswith("a second warning")
    assert log.messages == []


def test_devices_default_to_auto_resolved_and_saved(tmp_path, capsys):
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment
    from synprune_jax.sharding import resolve_devices

    for name in ("me-prune", "me-arm", "me-es", "es-prune", "ga-arm", "es-info"):
        assert get_experiment(name).default_config()["task"]["devices"] == "auto", name
    for name in ("mo-prune-transfer", "ga-prune-transfer"):
        assert get_experiment(name).default_config()["train"]["devices"] == "auto", name
    # --set takes "auto" or a count
    config = get_experiment("me-arm").default_config()
    assert config_lib.apply_overrides(config, ["task.devices=2"])["task"]["devices"] == 2
    assert config_lib.apply_overrides(config, ["task.devices=auto"])["task"]["devices"] == "auto"
    with pytest.raises(config_lib.ConfigError, match="task.devices: expected an integer"):
        config_lib.apply_overrides(config, ["task.devices=many"])
    assert resolve_devices("auto") == jax.local_device_count()
    assert resolve_devices("auto", population=1) == 1 and resolve_devices(5, population=1) == 5
    # the CLI resolves it (this process has one CPU device), says so, and saves the count
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                *ARM,
                "--set",
                "run.num_generations=5",
                "--set",
                "run.progress=false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "task.devices=auto -> 1 device(s)" in printed and "--set task.devices=1" in printed
    assert json.loads((out / "config.json").read_text())["task"]["devices"] == 1


def test_cli_uses_every_core_and_prints_no_noise(tmp_path, run_report):
    # a fresh process, as a user starts it: one CPU device per usable core (capped by the
    # batch), no third-party lines on stdout / stderr, MuJoCo's log in the run directory
    code = f"""
import contextlib, io, json, os, sys
os.chdir({str(tmp_path)!r})
from synprune_jax.cli import main, usable_cores
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(["run", "--set", "task.env_name=halfcheetah", "--set", "task.episode_length=5",
                 "--set", "task.hidden_sizes=2", "--set", "map_elites.batch_size=4",
                 "--set", "map_elites.initial_batch_size=4", "--set", "run.num_generations=1",
                 "--set", "run.progress=false", "--out", "run"])
config = json.load(open("run/config.json"))
print("REPORT " + json.dumps(dict(code=code, out=out.getvalue(), err=err.getvalue(),
                                  cores=usable_cores(), devices=config["task"]["devices"],
                                  files=sorted(os.listdir("."))
                                  , log=os.path.exists("run/MUJOCO_LOG.TXT"))))
"""
    report = run_report(code)
    assert report["code"] == 0 and report["devices"] == min(report["cores"], 4)
    assert "Failed to import" not in report["out"] + report["err"]
    assert "not actively" not in report["err"] and "settotalmass" not in report["err"]
    assert report["files"] == ["run"] and report["log"]
