"""Bad input and faults on the command line: one line, the right exit status, nothing lost.

Every case runs ``synprune`` in-process on a directory prepared by the test and checks the exit
status (2: the user's input; 1: a fault during the run or a bug), the message, that no traceback
is printed (except with ``--debug`` and for bugs), and that every file that existed before is
byte-identical afterwards. They fail before anything compiles, so the battery is fast.
"""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from synprune_jax import cli

ARM = ["me-arm", "--set", "map_elites.batch_size=8", "--set", "map_elites.initial_batch_size=8",
       "--set", "run.chunk_size=2", "--set", "run.checkpoint_every=2", "--set",
       "run.progress=false"]


def _snapshot(root: Path) -> dict:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file()}


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
    np.savez(root / "nan.npz", features=np.array([[0.0, np.nan]] * 4, np.float32),
             labels=np.array([0, 1, 0, 1]))
    np.savez(root / "one_class.npz", features=np.zeros((4, 2), np.float32), labels=np.zeros(4))
    np.savez(root / "empty.npz", features=np.zeros((0, 2), np.float32), labels=np.zeros(0))
    np.savez(root / "float_labels.npz", features=np.zeros((4, 2), np.float32),
             labels=np.array([0.5, 1, 0, 1]))
    np.savez(root / "text.npz", features=np.array([["a", "b"]] * 4), labels=np.array([0, 1, 0, 1]))
    np.savez(root / "rank.npz", features=np.zeros((4, 2, 2), np.float32), labels=np.arange(4))
    (root / "mnist_bad").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (root / "mnist_bad" / stem).write_bytes(b"\x08\x03not an idx file")
    (root / "mnist_empty").mkdir()
    np.savez(root / "pickled.npz", labels=np.array([{"a": 1}, None], dtype=object),
             features=np.zeros((2, 3)))
    (root / "nocheckpoint").mkdir()
    (root / "nocheckpoint" / "config.json").write_text(json.dumps(
        {**_arm_config(), "experiment": "me-arm"}))
    (root / "nocheckpoint" / "metrics.csv").write_text("generation,qd_score\n1,0.5\n")
    return _snapshot(root)


def _arm_config() -> dict:
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment

    config = get_experiment("me-arm").default_config()
    return config_lib.apply_overrides(config, ["task.devices=1", "run.progress=false"])


# (argv with {root}, exit status, words the message must hold)
CASES = {
    "config-missing": (["run", "--config", "{root}/missing.json"], 2,
                       ["cannot read the config file", "missing.json"]),
    "config-not-json": (["run", "--config", "{root}/broken.json"], 2,
                        ["not JSON", "broken.json"]),
    "config-not-object": (["run", "--config", "{root}/list.json"], 2,
                          ["JSON list, not an object", "list.json"]),
    "config-other-experiment": (["run", "me-arm", "--config", "{root}/transfer.json"], 2,
                                ["mo-prune-transfer", "me-arm"]),
    "unknown-experiment": (["run", "no-such-experiment"], 2, ["unknown experiment"]),
    "unknown-key": (["run", *ARM, "--set", "run.num_generation=3"], 2, ["num_generations"]),
    "wrong-type": (["run", *ARM, "--set", "run.num_generations=many"], 2,
                   ["run.num_generations", "integer"]),
    "malformed-override": (["run", *ARM, "--set", "run.num_generations"], 2,
                           ["key.path=value"]),
    "devices-not-a-count": (["run", *ARM, "--set", "task.devices=many"], 2,
                            ["task.devices", "integer"]),
    "devices-too-many": (["run", *ARM, "--set", "task.devices=64"], 2,
                         ["task.devices=64", "local device"]),
    "out-is-a-file": (["run", *ARM, "--out", "{root}/a_file"], 2,
                      ["names a file", "a_file"]),
    "out-under-a-file": (["run", *ARM, "--out", "{root}/a_file/run"], 2,
                         ["cannot create the run directory", "a_file/run"]),
    "out-holds-a-run": (["run", *ARM, "--out", "{root}/nocheckpoint"], 2,
                        ["already holds a run", "synprune resume"]),
    "resume-not-a-run": (["resume", "{root}/nowhere"], 2, ["not a run directory"]),
    "resume-without-checkpoint": (["resume", "{root}/nocheckpoint"], 2,
                                  ["no checkpoint to resume from", "--restart"]),
    "plot-not-a-run": (["plot", "{root}/nowhere"], 2, ["not a run directory"]),
    "sweep-unknown-experiment": (["sweep", "no-such-experiment", "--out", "{root}/s"], 2,
                                 ["unknown experiment"]),
    "sweep-bad-seeds": (["sweep", "me-arm", "--seeds", "zero", "--out", "{root}/s"], 2,
                        ["bad seed list", "zero"]),
    "sweep-bad-grid": (["sweep", "me-arm", "--grid", "mutation.sigma", "--out", "{root}/s"], 2,
                       ["grid"]),
    "data-missing": (["run", "mo-prune-transfer", "--set", "data.source={root}/none.npz"], 2,
                     ["none.npz", "does not exist"]),
    "data-not-npz": (["run", "mo-prune-transfer", "--set", "data.source={root}/garbage.npz"], 2,
                     ["not a readable .npz", "garbage.npz"]),
    "data-pickled": (["run", "mo-prune-transfer", "--set", "data.source={root}/pickled.npz"], 2,
                     ["not a readable .npz", "pickled.npz"]),
    "data-no-labels": (["run", "mo-prune-transfer", "--set",
                        "data.source={root}/no_labels.npz"], 2, ["needs 'labels'"]),
    "data-nan": (["run", "mo-prune-transfer", "--set", "data.source={root}/nan.npz"], 2,
                 ["nan.npz", "4 NaN / inf values"]),
    "data-one-class": (["run", "mo-prune-transfer", "--set", "data.source={root}/one_class.npz"],
                       2, ["one_class.npz", "at least two"]),
    "data-empty": (["run", "mo-prune-transfer", "--set", "data.source={root}/empty.npz"], 2,
                   ["empty.npz", "no examples"]),
    "data-float-labels": (["run", "mo-prune-transfer", "--set",
                           "data.source={root}/float_labels.npz"], 2, ["integer class indices"]),
    "data-text": (["run", "mo-prune-transfer", "--set", "data.source={root}/text.npz"], 2,
                  ["text.npz", "not numbers"]),
    "data-wrong-rank": (["run", "mo-prune-transfer", "--set", "data.source={root}/rank.npz"], 2,
                        ["features must be [N, F]"]),
    "mnist-not-idx": (["run", "cluster-synthesis", "--set", "data.name=mnist", "--set",
                       "data.mnist_dir={root}/mnist_bad"], 2, ["not an IDX file"]),
    "mnist-missing-files": (["run", "cluster-synthesis", "--set", "data.name=mnist", "--set",
                             "data.mnist_dir={root}/mnist_empty"], 2,
                            ["no train-images-idx3-ubyte", "mnist_empty"]),
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


def test_a_full_disk_during_the_run_is_a_fault_that_says_how_to_resume(tmp_path, capsys,
                                                                       monkeypatch):
    import synprune_jax.runner as runner

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x"))

    monkeypatch.setattr(runner, "run", disk_full)
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("synprune: error: No space left on device")
    assert "synprune resume" in err and "Traceback" not in err


def test_resume_refuses_a_run_whose_checkpoints_are_gone_and_restart_redoes_it(tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--set", "run.num_generations=2",
                     "--out", str(run_dir)]) == 0
    shutil.rmtree(run_dir / "checkpoints")
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert cli.main(["resume", str(run_dir)]) == 2  # refuses: it would start again silently
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert _snapshot(run_dir) == before
    assert cli.main(["resume", "--restart", str(run_dir)]) == 0
    assert (run_dir / "metrics.csv.bak").read_bytes() == before["metrics.csv"]
    assert (run_dir / "metrics.csv").read_bytes() == before["metrics.csv"]  # same seed, same run


@pytest.mark.parametrize("signal_name, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_finishes_the_chunk_checkpoints_and_resumes_identically(signal_name, status,
                                                                         tmp_path):
    # what a scheduler sends before preempting a job, and a first Ctrl-C: the run finishes its
    # chunk, checkpoints it, says how to resume and exits; the resumed run equals a run never
    # stopped
    import signal
    import subprocess
    import sys
    import time

    argv = ["run", *ARM, "--set", "task.devices=1", "--set", "run.num_generations=20000",
            "--set", "run.chunk_size=50", "--set", "run.checkpoint_every=5000"]
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from synprune_jax.cli import main; "
                               "sys.exit(main(sys.argv[1:]))", *argv, "--out", str(stopped)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    assert cli.main(["resume", str(stopped)]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert metrics.read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()


def test_one_writer_per_run_directory(tmp_path, capsys):
    import subprocess
    import sys
    import warnings

    from synprune_jax.rundir import LOCK_FILE, RunDirectoryBusy, RunLock

    run_dir = tmp_path / "run"
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--set", "run.num_generations=2",
                     "--out", str(run_dir)]) == 0
    assert not (run_dir / LOCK_FILE).exists()  # released after the run
    # a live other process holds the lock: resume refuses, and touches nothing
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_FILE).write_text(str(holder.pid))
        before = _snapshot(run_dir)
        capsys.readouterr()
        assert cli.main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"another process (pid {holder.pid}) is writing this run directory" in err
        assert "Traceback" not in err and _snapshot(run_dir) == before
        with pytest.raises(RunDirectoryBusy):
            with RunLock(run_dir):
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
            count = real_write(handle, bytes(data[:limit - written["bytes"]]))
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
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(2 ** 30, 2 ** 30, 2 ** 20))
    run_dir = tmp_path / "run"
    assert cli.main(["run", *ARM, "--set", "task.devices=1", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synprune: error: not enough room for the run") and "1.0 MiB free" in err
    assert "Traceback" not in err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()
    with pytest.raises(rundir.RunDirectoryFull):
        rundir.check_room(tmp_path, {"x": np.zeros(2 ** 20, np.float32)}, margin=0)


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
    with pytest.warns(UserWarning, match="skipped damaged checkpoint.*step 4.*resuming from step 2"):
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
