"""Bad input and faults on the command line: one line, the right exit status, nothing lost.

Every case runs ``synprune`` in-process on a directory prepared by the test and checks the exit
status (2: the user's input; 1: a fault during the run or a bug), the message, that no traceback
is printed (except with ``--debug`` and for bugs), and that every file that existed before is
byte-identical afterwards. They fail before anything compiles, so the battery is fast.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from synprune_jax import cli

ARM = [
    "me-arm",
    "--set",
    "map_elites.batch_size=8",
    "--set",
    "map_elites.initial_batch_size=8",
    "--set",
    "run.chunk_size=2",
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.progress=false",
]


def _snapshot(root: Path) -> dict:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _prepare(root: Path) -> dict:
    """Files the cases point at: configs, data files, a finished tiny run, a run without
    checkpoints."""
    files = {
        "missing.json": None,
        "broken.json": b'{"experiment": "me-arm", ',
        "list.json": b"[1, 2, 3]",
        "transfer.json": json.dumps({"experiment": "mo-prune-transfer"}).encode(),
        "a_file": b"not a directory",
        "garbage.npz": b"this is not a zip archive",
        "no_labels.npz": None,  # written below
        "pickled.npz": None,
    }
    for name, content in files.items():
        if content is not None:
            (root / name).write_bytes(content)
    np.savez(root / "no_labels.npz", features=np.zeros((4, 3), np.float32))
    np.savez(
        root / "nan.npz",
        features=np.array([[0.0, np.nan]] * 4, np.float32),
        labels=np.array([0, 1, 0, 1]),
    )
    np.savez(root / "one_class.npz", features=np.zeros((4, 2), np.float32), labels=np.zeros(4))
    np.savez(root / "empty.npz", features=np.zeros((0, 2), np.float32), labels=np.zeros(0))
    np.savez(
        root / "float_labels.npz",
        features=np.zeros((4, 2), np.float32),
        labels=np.array([0.5, 1, 0, 1]),
    )
    np.savez(root / "text.npz", features=np.array([["a", "b"]] * 4), labels=np.array([0, 1, 0, 1]))
    np.savez(root / "rank.npz", features=np.zeros((4, 2, 2), np.float32), labels=np.arange(4))
    (root / "mnist_bad").mkdir()
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (root / "mnist_bad" / stem).write_bytes(b"\x08\x03not an idx file")
    (root / "mnist_empty").mkdir()
    np.savez(
        root / "pickled.npz",
        labels=np.array([{"a": 1}, None], dtype=object),
        features=np.zeros((2, 3)),
    )
    (root / "nocheckpoint").mkdir()
    (root / "nocheckpoint" / "config.json").write_text(
        json.dumps({**_arm_config(), "experiment": "me-arm"})
    )
    (root / "nocheckpoint" / "metrics.csv").write_text("generation,qd_score\n1,0.5\n")
    for name, config in (
        ("broken_run", '{"experiment": "me-arm"'),
        ("badkey_run", json.dumps({**_arm_config(), "experiment": "me-arm", "extra": {"x": 1}})),
    ):
        (root / name).mkdir()
        (root / name / "config.json").write_text(config)
    # a live other process (this one's parent) writes these directories
    for name in ("busy", "busy_sweep"):
        (root / name).mkdir()
        (root / name / ".lock").write_text(str(os.getppid()))
    shutil.copytree(root / "nocheckpoint", root / "busy_run")
    (root / "busy_run" / ".lock").write_text(str(os.getppid()))
    (root / "other_sweep").mkdir()
    (root / "other_sweep" / "sweep.json").write_text(json.dumps({"experiment": "ga-arm"}))
    (root / "broken_sweep").mkdir()
    (root / "broken_sweep" / "sweep.json").write_text("{")
    return _snapshot(root)


def _arm_config() -> dict:
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment

    config = get_experiment("me-arm").default_config()
    return config_lib.apply_overrides(config, ["task.devices=1", "run.progress=false"])


# (argv with {root}, exit status, words the message must hold)
CASES = {
    "config-missing": (
        ["run", "--config", "{root}/missing.json"],
        2,
        ["cannot read the config file", "missing.json"],
    ),
    "config-not-json": (["run", "--config", "{root}/broken.json"], 2, ["not JSON", "broken.json"]),
    "config-not-object": (
        ["run", "--config", "{root}/list.json"],
        2,
        ["JSON list, not an object", "list.json"],
    ),
    "config-other-experiment": (
        ["run", "me-arm", "--config", "{root}/transfer.json"],
        2,
        ["mo-prune-transfer", "me-arm"],
    ),
    "unknown-experiment": (["run", "no-such-experiment"], 2, ["unknown experiment"]),
    "unknown-key": (["run", *ARM, "--set", "run.num_generation=3"], 2, ["num_generations"]),
    "wrong-type": (
        ["run", *ARM, "--set", "run.num_generations=many"],
        2,
        ["run.num_generations", "integer"],
    ),
    "malformed-override": (["run", *ARM, "--set", "run.num_generations"], 2, ["key.path=value"]),
    "devices-not-a-count": (
        ["run", *ARM, "--set", "task.devices=many"],
        2,
        ["task.devices", "integer"],
    ),
    "devices-too-many": (
        ["run", *ARM, "--set", "task.devices=64"],
        2,
        ["task.devices=64", "local device"],
    ),
    "out-is-a-file": (["run", *ARM, "--out", "{root}/a_file"], 2, ["names a file", "a_file"]),
    "out-under-a-file": (
        ["run", *ARM, "--out", "{root}/a_file/run"],
        2,
        ["cannot create the output directory", "a_file/run"],
    ),
    "out-holds-a-run": (
        ["run", *ARM, "--out", "{root}/nocheckpoint"],
        2,
        ["already holds a run", "synprune resume"],
    ),
    "resume-not-a-run": (["resume", "{root}/nowhere"], 2, ["not a run directory"]),
    "resume-without-checkpoint": (
        ["resume", "{root}/nocheckpoint"],
        2,
        ["no checkpoint to resume from", "--restart"],
    ),
    "plot-not-a-run": (["plot", "{root}/nowhere"], 2, ["not a run directory"]),
    "sweep-unknown-experiment": (
        ["sweep", "no-such-experiment", "--out", "{root}/s"],
        2,
        ["unknown experiment"],
    ),
    "sweep-bad-seeds": (
        ["sweep", "me-arm", "--seeds", "zero", "--out", "{root}/s"],
        2,
        ["bad seed list", "zero"],
    ),
    "sweep-bad-grid": (
        ["sweep", "me-arm", "--grid", "mutation.sigma", "--out", "{root}/s"],
        2,
        ["grid"],
    ),
    "data-missing": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/none.npz"],
        2,
        ["none.npz", "does not exist"],
    ),
    "data-not-npz": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/garbage.npz"],
        2,
        ["not a readable .npz", "garbage.npz"],
    ),
    "data-pickled": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/pickled.npz"],
        2,
        ["not a readable .npz", "pickled.npz"],
    ),
    "data-no-labels": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/no_labels.npz"],
        2,
        ["needs 'labels'"],
    ),
    "data-nan": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/nan.npz"],
        2,
        ["nan.npz", "4 NaN / inf values"],
    ),
    "data-one-class": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/one_class.npz"],
        2,
        ["one_class.npz", "at least two"],
    ),
    "data-empty": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/empty.npz"],
        2,
        ["empty.npz", "no examples"],
    ),
    "data-float-labels": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/float_labels.npz"],
        2,
        ["integer class indices"],
    ),
    "data-text": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/text.npz"],
        2,
        ["text.npz", "not numbers"],
    ),
    "data-wrong-rank": (
        ["run", "mo-prune-transfer", "--set", "data.source={root}/rank.npz"],
        2,
        ["features must be [N, F]"],
    ),
    "mnist-not-idx": (
        [
            "run",
            "cluster-synthesis",
            "--set",
            "data.name=mnist",
            "--set",
            "data.mnist_dir={root}/mnist_bad",
        ],
        2,
        ["not an IDX file"],
    ),
    "mnist-missing-files": (
        [
            "run",
            "cluster-synthesis",
            "--set",
            "data.name=mnist",
            "--set",
            "data.mnist_dir={root}/mnist_empty",
        ],
        2,
        ["no train-images-idx3-ubyte", "mnist_empty"],
    ),
    # run settings, every experiment family
    "keep-no-checkpoint": (
        ["run", *ARM, "--set", "run.keep_checkpoints=0"],
        2,
        ["keep_checkpoints", "positive"],
    ),
    "chunk-size-zero": (["run", *ARM, "--set", "run.chunk_size=0"], 2, ["chunk_size", "positive"]),
    "negative-generations": (
        ["run", *ARM, "--set", "run.num_generations=-1"],
        2,
        ["num_generations", "positive"],
    ),
    "metrics-format": (
        ["run", *ARM, "--set", "run.metrics_format=xml"],
        2,
        ["metrics_format", "'xml'"],
    ),
    "brax-unknown-key": (
        ["run", "me-prune", "--set", "task.env=hopper"],
        2,
        ["task.env", "env_name"],
    ),
    "archive-kind": (["run", *ARM, "--set", "archive.kind=hex"], 2, ["unknown archive kind 'hex'"]),
    "negative-sigma": (
        ["run", *ARM, "--set", "mutation.sigma=-1"],
        2,
        ["mutation.sigma must be >= 0"],
    ),
    "no-flips-with-rates": (
        ["run", *ARM, "--set", "map_elites.flips=false"],
        2,
        ["flips=False skips the prune / reconnect flips"],
    ),
    "me-es-unknown-section": (
        ["run", "me-es", "--set", "es.strategy=Open_ES"],
        2,
        ["'es' is not in <top level>", "es_emitter"],
    ),
    "es-unknown-strategy": (
        ["run", "es-prune-arm", "--set", "es.strategy=NoSuch"],
        2,
        ["unknown evosax strategy 'NoSuch'"],
    ),
    "ga-population": (
        ["run", "ga-arm", "--set", "ga.population_size=1"],
        2,
        ["population_size must be >= 2"],
    ),
    "ga-archive-missing": (
        ["run", "ga-pruned-init", "--set", "ga.init=archive"],
        2,
        ["needs ga.archive_dir"],
    ),
    "ga-archive-not-a-run": (
        [
            "run",
            "ga-pruned-init",
            "--set",
            "ga.init=archive",
            "--set",
            "ga.archive_dir={root}/nowhere",
        ],
        2,
        ["not a run directory", "nowhere"],
    ),
    "es-info-needs-brax": (["run", "es-info", "--set", "task.name=arm"], 2, ["needs a Brax task"]),
    "transfer-algorithm": (
        ["run", "mo-prune-transfer", "--set", "algorithm=nope"],
        2,
        ["unknown algorithm 'nope'"],
    ),
    "transfer-objectives": (
        ["run", "mo-prune-transfer", "--set", "objectives.names=[accuracy]"],
        2,
        ["NSGA-II needs at least two objectives"],
    ),
    "ae-setting": (["run", "ae-prune", "--set", "setting=nope"], 2, ["unknown setting 'nope'"]),
    "ae-grid-shape": (
        ["run", "ae-coevolution", "--set", "coevolution.grid_shape=3"],
        2,
        ["grid_shape"],
    ),
    "ae-data-seed": (
        ["run", "ae-prune", "--set", "data.seed=-1"],
        2,
        ["data.seed must be a non-negative int"],
    ),
    "synthesis-dataset": (
        ["run", "cluster-synthesis", "--set", "data.name=cifar"],
        2,
        ["unknown dataset 'cifar'"],
    ),
    # one writer per directory, and what a run directory must hold
    "run-busy": (["run", *ARM, "--out", "{root}/busy"], 2, ["another process (pid", "{root}/busy"]),
    "resume-busy": (["resume", "{root}/busy_run"], 2, ["another process (pid", "busy_run"]),
    "resume-config-not-json": (
        ["resume", "{root}/broken_run"],
        2,
        ["not JSON", "broken_run/config.json"],
    ),
    "resume-config-unknown-key": (["resume", "{root}/badkey_run"], 2, ["extra"]),
    "plot-no-checkpoint": (["plot", "{root}/nocheckpoint"], 2, ["no checkpoint to plot from"]),
    "plot-config-not-json": (["plot", "{root}/broken_run"], 2, ["not JSON"]),
    # sweeps
    "sweep-out-is-a-file": (
        ["sweep", "me-arm", "--out", "{root}/a_file"],
        2,
        ["names a file", "a_file"],
    ),
    "sweep-out-under-a-file": (
        ["sweep", "me-arm", "--out", "{root}/a_file/s"],
        2,
        ["cannot create the output directory", "a_file/s"],
    ),
    "sweep-config-missing": (
        ["sweep", "me-arm", "--config", "{root}/missing.json", "--out", "{root}/s"],
        2,
        ["cannot read the config file"],
    ),
    "sweep-config-other": (
        ["sweep", "me-arm", "--config", "{root}/transfer.json", "--out", "{root}/s"],
        2,
        ["mo-prune-transfer"],
    ),
    "sweep-unknown-key": (
        ["sweep", "me-arm", "--set", "run.num_generation=3", "--out", "{root}/s"],
        2,
        ["num_generations"],
    ),
    "sweep-grid-unknown-key": (
        ["sweep", "me-arm", "--grid", "mutation.nosuch=1,2", "--out", "{root}/s"],
        2,
        ["mutation.nosuch"],
    ),
    "sweep-seed-in-grid": (
        ["sweep", "me-arm", "--grid", "run.seed=1,2", "--out", "{root}/s"],
        2,
        ["--seeds"],
    ),
    "sweep-repeated-seeds": (
        ["sweep", "me-arm", "--seeds", "1,1", "--out", "{root}/s"],
        2,
        ["repeated seeds"],
    ),
    "sweep-too-many-devices": (
        ["sweep", "me-arm", "--devices", "64", "--out", "{root}/s"],
        2,
        ["devices must be an int in [1, "],
    ),
    "sweep-other-definition": (
        ["sweep", "me-arm", "--out", "{root}/other_sweep"],
        2,
        ["holds a different sweep"],
    ),
    "sweep-broken-definition": (
        ["sweep", "me-arm", "--out", "{root}/broken_sweep"],
        2,
        ["cannot read the sweep's definition"],
    ),
    "sweep-busy": (
        ["sweep", "me-arm", "--out", "{root}/busy_sweep"],
        2,
        ["another process (pid", "busy_sweep"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNPRUNE_DEBUG", raising=False)
    root = tmp_path / "files"
    root.mkdir()
    before = _prepare(root)
    argv, status, words = CASES[case]
    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) would land here
    assert cli.main([arg.replace("{root}", str(root)) for arg in argv]) == status
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synprune: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word.replace("{root}", str(root)) in lines[0], (word, lines[0])
    assert _snapshot(root) == before  # nothing written, moved or deleted
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "experiment, module",
    [("me-prune-gymnax", "gymnax"), ("me-prune-playground", "mujoco_playground")],
)
def test_a_missing_extra_is_one_line_naming_it(experiment, module, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert cli.main(["run", experiment, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("synprune: error: task ") and 'pip install -e ".[tasks]"' in err
    assert not (tmp_path / "run").exists()


def test_debug_prints_the_traceback_too(tmp_path, capsys, monkeypatch):
    for how in ("flag", "environment"):
        argv = ["run", "--config", str(tmp_path / "missing.json")]
        if how == "flag":
            argv.append("--debug")
        else:
            monkeypatch.setenv("SYNPRUNE_DEBUG", "1")
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("synprune: error:")


def test_an_internal_error_is_reported_as_a_bug(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("an invariant broke")

    monkeypatch.setattr(cli, "command_list", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("synprune: internal error: this is a bug")
    assert "Traceback" in err and "an invariant broke" in err
    # a ValueError raised inside a library (not by our validation) is a bug too
    monkeypatch.setattr(cli, "command_list", lambda args: np.zeros(2).reshape(3))
    assert cli.main(["list"]) == 1
    assert "this is a bug" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_mid_run_names_the_last_checkpoint_and_resume_finishes_it(
    where, tmp_path, capsys, monkeypatch
):
    # the disk fills up at generation 6 (orbax's RESOURCE_EXHAUSTED while saving, or a metrics
    # write): exit 1, one line naming the last checkpoint (4); nothing torn; space freed, the
    # resumed run ends with the metrics of a run never stopped
    import orbax.checkpoint as ocp

    from synprune_jax import rundir

    argv = ["run", *ARM, "--set", "task.devices=1", "--set", "run.num_generations=8"]
    assert cli.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    run_dir = tmp_path / "run"
    if where == "checkpoint":
        real_save = ocp.CheckpointManager.save

        def save(self, step, *args, **kwargs):
            if step == 6:
                raise ValueError(
                    f'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at '
                    f'local file "{self.directory}/6.orbax-checkpoint-tmp/": Failed '
                    "to write 655860 bytes to file 15: No space left on device "
                    "[os_error_code='28']"
                )
            return real_save(self, step, *args, **kwargs)

        monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    else:
        real_append = rundir.append_whole

        def append(path, data):
            if data.startswith(b"5,"):
                os.truncate(path, os.path.getsize(path))
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_append(path, data)

        monkeypatch.setattr(rundir, "append_whole", append)
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("synprune: error: No space left on device (")
    assert "the last checkpoint is generation 4" in lines[0]
    assert f"`synprune resume {run_dir}`" in lines[0]
    rows = (run_dir / "metrics.csv").read_text()
    assert rows.endswith("\n") and rows.count("\n") == (7 if where == "checkpoint" else 5)
    assert not list((run_dir / "checkpoints").glob("*tmp*"))  # the partial save was removed
    monkeypatch.undo()
    assert cli.main(["resume", str(run_dir)]) == 0
    assert (run_dir / "metrics.csv").read_bytes() == (
        tmp_path / "whole" / "metrics.csv"
    ).read_bytes()


def test_a_full_disk_outside_the_generations_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import synprune_jax.runner as runner

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x"))

    monkeypatch.setattr(runner, "run", disk_full)
    run_dir = tmp_path / "run"
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("synprune: error: No space left on device")
    assert f"`synprune resume {run_dir}`" in err and "Traceback" not in err


def test_resume_refuses_a_run_whose_checkpoints_are_gone_and_restart_redoes_it(tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    assert (
        cli.main(
            [
                "run",
                *ARM,
                "--set",
                "task.devices=1",
                "--set",
                "run.num_generations=2",
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    shutil.rmtree(run_dir / "checkpoints")
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert cli.main(["resume", str(run_dir)]) == 2  # refuses: it would start again silently
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert _snapshot(run_dir) == before
    assert cli.main(["resume", "--restart", str(run_dir)]) == 0
    assert (run_dir / "metrics.csv.bak").read_bytes() == before["metrics.csv"]
    assert (run_dir / "metrics.csv").read_bytes() == before["metrics.csv"]  # same seed, same run


@pytest.mark.parametrize(
    "signal_name, status",
    [("SIGTERM", 143), pytest.param("SIGINT", 130, marks=pytest.mark.slow)],  # the same path
)
def test_a_signal_finishes_the_chunk_checkpoints_and_resumes_identically(
    signal_name, status, tmp_path
):
    # what a scheduler sends before preempting a job, and a first Ctrl-C: the run finishes its
    # chunk, checkpoints it, says how to resume and exits; the resumed run equals a run never
    # stopped
    import signal
    import subprocess
    import sys
    import time

    argv = [
        "run",
        *ARM,
        "--set",
        "task.devices=1",
        "--set",
        "run.num_generations=20000",
        "--set",
        "run.chunk_size=50",
        "--set",
        "run.checkpoint_every=5000",
    ]
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from synprune_jax.cli import main; sys.exit(main(sys.argv[1:]))",
            *argv,
            "--out",
            str(stopped),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = stopped / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") > 1):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=300)
    assert process.returncode == status, err
    assert f"stopped by {signal_name} at generation" in err and "synprune resume" in err, err
    assert "Traceback" not in err
    generation = int(err.split("at generation ")[1].split(",")[0])
    assert 0 < generation < 20000 and generation % 50 == 0
    from synprune_jax import checkpoint

    assert checkpoint.latest_step(str(stopped / "checkpoints")) == generation
    # resume it to 100 generations past the stop (not the 20000 that made sure the signal came
    # mid-run), and compare with a run of that length never stopped
    end = generation + 100
    config = json.loads((stopped / "config.json").read_text())
    config["run"]["num_generations"] = end
    (stopped / "config.json").write_text(json.dumps(config))
    assert cli.main(["resume", str(stopped)]) == 0
    assert (
        cli.main([*argv, "--set", f"run.num_generations={end}", "--out", str(tmp_path / "whole")])
        == 0
    )
    assert metrics.read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()


def test_one_writer_per_run_directory(tmp_path, capsys):
    import subprocess
    import sys
    import warnings

    from synprune_jax.rundir import LOCK_FILE, RunDirectoryBusy, RunLock

    run_dir = tmp_path / "run"
    assert (
        cli.main(
            [
                "run",
                *ARM,
                "--set",
                "task.devices=1",
                "--set",
                "run.num_generations=2",
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    assert not (run_dir / LOCK_FILE).exists()  # released after the run
    # a live other process holds the lock: resume refuses, and touches nothing
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_FILE).write_text(str(holder.pid))
        before = _snapshot(run_dir)
        capsys.readouterr()
        assert cli.main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"another process (pid {holder.pid}) is writing this directory" in err
        assert "Traceback" not in err and _snapshot(run_dir) == before
        with pytest.raises(RunDirectoryBusy), RunLock(run_dir):
            pass
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the stale lock is taken over with a warning, then released
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RunLock(run_dir):
            assert (run_dir / LOCK_FILE).read_text() == str(os.getpid())
    assert any("stale lock" in str(w.message) for w in caught)
    assert not (run_dir / LOCK_FILE).exists()


def test_a_failed_metrics_write_leaves_whole_rows(tmp_path, monkeypatch):
    # a disk that fills up mid-write: the rows written so far are cut back, never left torn
    from synprune_jax import rundir

    path = tmp_path / "metrics.csv"
    path.write_bytes(b"generation,x\n1,0.5\n")
    real_write = os.write

    def full_after(limit):
        written = {"bytes": 0}

        def write(handle, data):
            if written["bytes"] >= limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            count = real_write(handle, bytes(data[: limit - written["bytes"]]))
            written["bytes"] += count
            return count

        return write

    monkeypatch.setattr(rundir.os, "write", full_after(5))
    with pytest.raises(OSError, match="No space left"):
        rundir.append_whole(path, b"2,0.25\n3,0.125\n")
    assert path.read_bytes() == b"generation,x\n1,0.5\n"
    monkeypatch.setattr(rundir.os, "write", real_write)
    rundir.append_whole(path, b"2,0.25\n")
    assert path.read_bytes() == b"generation,x\n1,0.5\n2,0.25\n"


def test_no_room_for_the_checkpoints_is_refused_before_compiling(tmp_path, capsys, monkeypatch):
    import collections

    from synprune_jax import rundir

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(2**30, 2**30, 2**20))
    run_dir = tmp_path / "run"
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synprune: error: not enough room for the run") and "1.0 MiB free" in err
    assert "Traceback" not in err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()
    with pytest.raises(rundir.RunDirectoryFull):
        rundir.check_room(tmp_path, {"x": np.zeros(2**20, np.float32)}, margin=0)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    # the latest checkpoint damaged: resume warns, restores the one before and ends with the
    # metrics of an uninterrupted run; every checkpoint damaged: a clear error, nothing deleted
    run_dir, whole = tmp_path / "run", tmp_path / "whole"
    argv = [*ARM, "--set", "task.devices=1", "--set", "run.keep_checkpoints=3"]
    assert cli.main(["run", *argv, "--set", "run.num_generations=6", "--out", str(whole)]) == 0
    assert cli.main(["run", *argv, "--set", "run.num_generations=4", "--out", str(run_dir)]) == 0
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    for path in (run_dir / "checkpoints" / "4").rglob("*"):
        if path.is_file():
            path.write_bytes(b"damaged")
    config = json.loads((run_dir / "config.json").read_text())
    config["run"]["num_generations"] = 6
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.warns(
        UserWarning, match="skipped damaged checkpoint.*step 4.*resuming from step 2"
    ):
        assert cli.main(["resume", str(run_dir)]) == 0
    assert (run_dir / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()
    for step in (run_dir / "checkpoints").iterdir():
        for path in step.rglob("*"):
            if path.is_file():
                path.write_bytes(b"damaged")
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert cli.main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint of the run can be restored" in err and "nothing was deleted" in err
    assert "Traceback" not in err and _snapshot(run_dir) == before


def _can_mount_tmpfs() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow  # a fresh process twice (~15 s); the injected failures above run by default
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a user namespace here")
def test_a_real_full_disk_stops_the_run_and_resume_finishes_it(tmp_path):
    # a small tmpfs (in a private mount namespace) that another process fills up mid-run: the run
    # stops with exit 1 and one line; once the filler is deleted, resume ends with the metrics of
    # a run never stopped. Everything happens inside the namespace; metrics.csv is copied out.
    import subprocess
    import sys

    argv = [
        "run",
        *ARM,
        "--set",
        "task.devices=1",
        "--set",
        "run.num_generations=1500",
        "--set",
        "run.chunk_size=50",
        "--set",
        "run.checkpoint_every=100",
    ]
    synprune = (
        f"{sys.executable} -c 'import sys; from synprune_jax.cli import main; "
        "sys.exit(main(sys.argv[1:]))'"
    )
    args = " ".join(argv)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size=24m tmpfs {disk}
{synprune} {args} --out {disk}/run 2> {tmp_path}/run.err &
pid=$!
until [ -f {disk}/run/metrics.csv ] && [ $(wc -l < {disk}/run/metrics.csv) -gt 200 ]; do
  kill -0 $pid 2>/dev/null || break; sleep 0.05; done
dd if=/dev/urandom of={disk}/filler bs=64k 2>/dev/null
wait $pid; echo $? > {tmp_path}/run.status
cp {disk}/run/metrics.csv {tmp_path}/torn.csv
rm {disk}/filler
{synprune} resume {disk}/run 2> {tmp_path}/resume.err; echo $? > {tmp_path}/resume.status
cp {disk}/run/metrics.csv {tmp_path}/resumed.csv
"""
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "run.err").read_text()
    assert (tmp_path / "run.status").read_text().strip() == "1", err
    line = [line for line in err.splitlines() if line.startswith("synprune: error:")]
    assert line and "No space left on device" in line[0] and "Traceback" not in err, err
    last = int(line[0].split("the last checkpoint is generation ")[1].split(" ")[0])
    assert last >= 200 and last % 100 == 0, line[0]
    assert (tmp_path / "torn.csv").read_text().endswith("\n")
    assert (tmp_path / "resume.status").read_text().strip() == "0", (
        tmp_path / "resume.err"
    ).read_text()
    assert cli.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert (tmp_path / "resumed.csv").read_bytes() == (
        tmp_path / "whole" / "metrics.csv"
    ).read_bytes()


def test_the_python_api_raises_the_documented_types_with_the_same_messages(tmp_path, capsys):
    import synprune_jax as sj
    from synprune_jax.experiments import get_experiment

    (tmp_path / "a_file").write_text("x")
    overrides = ["map_elites.batch_size=8", "map_elites.initial_batch_size=8"]
    with pytest.raises(sj.ConfigError, match="names a file, not a directory"):
        sj.sweep("me-arm", out=tmp_path / "a_file", overrides=overrides)
    assert cli.main(["sweep", "me-arm", "--out", str(tmp_path / "a_file")]) == 2
    assert "names a file, not a directory" in capsys.readouterr().err
    with pytest.raises(sj.ConfigError, match="run.num_generations: expected an integer"):
        sj.sweep("me-arm", out=tmp_path / "s", overrides=["run.num_generations=many"])

    built = get_experiment("me-arm").build(_arm_config())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(str(os.getppid()))
    with pytest.raises(sj.RunDirectoryBusy, match="another process"):
        sj.run(built.algorithm, busy, built.run_config, hyper=built.hyper)
    with pytest.raises(sj.RunDirectoryBusy, match="another process"):
        sj.sweep("me-arm", out=busy, overrides=overrides)
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]
    documented = (Path(__file__).parents[1] / "docs" / "failures.md").read_text()
    for name in (
        "ConfigError",
        "RunDirectoryBusy",
        "RunDirectoryFull",
        "RunFault",
        "CheckpointsDamaged",
        "Stopped",
    ):
        assert name in sj.__all__ and f"`{name}`" in documented, name
    assert issubclass(sj.RunFault, OSError) and issubclass(sj.ConfigError, ValueError)
