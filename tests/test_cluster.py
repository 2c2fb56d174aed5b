"""Sweeps on Ray (``synprune_jax.sweeps.cluster``): options, task planning, and sweeps on Ray
clusters started on this machine (a local instance in the default suite; a head and two worker
nodes, each its own raylet process, a worker killed, the driver killed, in the slow tests)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pandas as pd
import pytest

from synprune_jax import sweeps
from synprune_jax.cli import main
from synprune_jax.config import ConfigError
from synprune_jax.sweeps.cluster import RayCluster, plan_tasks, require_ray

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["run.num_generations=4", "run.chunk_size=2", "run.checkpoint_every=2"]


def test_cluster_options_are_checked_before_anything_runs():
    assert RayCluster.parse("ray") == RayCluster()
    assert RayCluster.parse("ray://head:10001", cpus_per_task=2).address == "ray://head:10001"
    assert RayCluster.parse("10.0.0.1:6379").address == "10.0.0.1:6379"
    with pytest.raises(ConfigError, match="--cluster takes ray"):
        RayCluster.parse("slurm")
    with pytest.raises(ConfigError, match="cpus_per_task must be an int >= 1, got 0"):
        RayCluster(cpus_per_task=0)
    with pytest.raises(ConfigError, match="runs_per_task must be an int >= 1 or None"):
        RayCluster(runs_per_task=0)
    with pytest.raises(ConfigError, match="storage must be one of"):
        RayCluster(storage="nfs")
    with pytest.raises(ConfigError, match="devices is for a sweep on this machine"):
        sweeps.sweep("me-arm", out="unused", cluster="ray", devices=1)


def test_a_missing_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'synprune-jax\[ray\]'"):
        require_ray()


def test_tasks_split_each_group_evenly_and_pad_to_the_whole_groups_share():
    groups = [list(range(8)), list(range(8, 11))]
    pending = [(0, -1, list(range(8))), (1, 20, [9, 10])]  # group 1: two runs left, resumed
    tasks, sizes = plan_tasks(groups, pending, slots=3, runs_per_task=None)
    assert [(task.group, task.members) for task in tasks] == [
        (0, [0, 1, 2]),
        (0, [3, 4, 5]),
        (0, [6, 7]),
        (1, [9]),
        (1, [10]),
    ]
    assert sizes == {0: 3, 1: 1}  # ceil(8 / 3), ceil(3 / 3): from whole groups
    assert plan_tasks(groups, pending, slots=3, runs_per_task=1)[1] == {0: 1, 1: 1}
    assert len(plan_tasks(groups, pending, slots=3, runs_per_task=1)[0]) == 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--storage", "copy"], "--storage is an option of --cluster"),
        (["--cluster", "slurm"], "--cluster takes ray"),
        (["--cluster", "ray", "--devices", "1"], "devices is for a sweep on this machine"),
        (["--cluster", "ray", "--max-retries", "-1"], "max_retries must be an int >= 0"),
    ],
)
def test_the_command_line_refuses_bad_cluster_options_in_one_line(
    tmp_path, capsys, arguments, message
):
    code = main(["sweep", "me-arm", "--out", str(tmp_path / "s"), *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def _table(out) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "results.parquet")


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # Ray starts its processes
def test_a_sweep_on_a_local_ray_instance_equals_the_local_sweep(tmp_path, monkeypatch):
    """The default suite's smoke test: Ray started in this process with one CPU; the task's
    run directories come back as an archive (storage='copy') and give the local sweep's table.
    The worker inherits the suite's compilation cache, so it loads the local sweep's program."""
    ray = require_ray()
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    local = sweeps.sweep(
        "me-arm",
        seeds=[0, 1],
        out=tmp_path / "local",
        overrides=SHORT,
        devices=1,
        plots=False,
        report=False,
    )
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        result = sweeps.sweep(
            "me-arm",
            seeds=[0, 1],
            out=tmp_path / "ray",
            overrides=SHORT,
            plots=False,
            cluster=RayCluster(storage="copy"),
        )
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_table(tmp_path / "ray"), _table(tmp_path / "local"))
    assert len(result.table) == len(local.table) == 8
    assert (tmp_path / "ray" / "runs" / "run-001" / "summary.json").exists()  # reported there
    assert sorted(os.listdir(tmp_path / "ray" / "runs")) == ["run-000", "run-001"]
    assert not (tmp_path / "ray" / ".cluster-probe").exists()


# ----- a cluster of a head and two worker nodes on this machine (slow) --------------------------

LONG = ["run.num_generations=300", "run.chunk_size=10", "run.checkpoint_every=50"]


def _environment(**extra) -> dict:
    """The suite's JAX settings (they reach Ray's workers through the raylets' environment),
    the persistent compilation cache (a task's second compile of a program is a cache hit),
    Ray without token authentication (loopback only)."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        RAY_AUTH_MODE="disabled",
        JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"),
        **extra,
    )


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node (no CPUs: it schedules nothing) and two worker nodes of one CPU each, every
    node its own raylet process on this machine (``ray.cluster_utils.Cluster``; the nodes and the
    driver use the machine's own address: a driver finds its node's raylet by that address)."""
    require_ray()
    import socket

    from ray.cluster_utils import Cluster

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        client_port = probe.getsockname()[1]
    saved = dict(os.environ)
    os.environ.update(_environment())
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "ray_client_server_port": client_port,
            },
        )
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    cluster.client_address = f"ray://127.0.0.1:{client_port}"  # Ray Client, from outside
    yield cluster
    cluster.shutdown()


def _sweep_command(out, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "synprune_jax.cli",
        "sweep",
        "me-arm",
        "--seeds",
        "0-7",
        "--out",
        str(out),
        "--no-report",
        *[part for item in LONG for part in ("--set", item)],
        *extra,
    ]


def _run(command, **extra) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        command, cwd=ROOT, env=_environment(**extra), capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    """The local sweep the cluster sweeps must equal: 8 runs over 4 CPU devices, 2 runs each
    (the cluster sweeps below run tasks of 2 runs on one device)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    _run(
        _sweep_command(out, "--devices", "4"),
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
    )
    return _table(out)


def _cluster_sweep(cluster, out, *extra, address=None) -> subprocess.Popen:
    address = address or cluster.address
    return subprocess.Popen(
        _sweep_command(out, "--cluster", address, "--runs-per-task", "2", *extra),
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _task_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::run_task"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _wait_for(condition, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _checkpointed(out) -> bool:
    return any(Path(out).glob("runs/*/checkpoints/50"))


@pytest.mark.slow
def test_a_ray_sweep_equals_the_local_sweep_and_survives_a_killed_worker(
    ray_cluster, local_table, tmp_path
):
    # through Ray Client, the run directories sent back to the driver (no shared storage)
    complete = _cluster_sweep(
        ray_cluster,
        tmp_path / "complete",
        "--storage",
        "copy",
        address=ray_cluster.client_address,
    )
    output = complete.communicate(timeout=900)[0]
    assert complete.returncode == 0, output[-3000:]
    assert "ray: 8 runs in 4 task(s) over 2 slot(s)" in output
    pd.testing.assert_frame_equal(_table(tmp_path / "complete"), local_table)
    timing = pd.read_json(tmp_path / "complete" / "timing.json", typ="series")
    assert not any(task["shared"] for task in timing["tasks"])
    assert all(
        (tmp_path / "complete" / "runs" / f"run-00{i}" / "checkpoints").is_dir() for i in range(8)
    )

    driver = _cluster_sweep(ray_cluster, tmp_path / "killed")
    _wait_for(lambda: _checkpointed(tmp_path / "killed") and _task_pids())
    os.kill(_task_pids()[0], signal.SIGKILL)  # a worker process, mid-task
    output = driver.communicate(timeout=900)[0]
    assert driver.returncode == 0, output[-3000:]
    assert "WorkerCrashedError, submitted again (attempt 2)" in output
    timing = pd.read_json(tmp_path / "killed" / "timing.json", typ="series")
    assert timing["cluster"]["retried_runs"] == 2
    pd.testing.assert_frame_equal(_table(tmp_path / "killed"), local_table)


@pytest.mark.slow
def test_a_killed_driver_reruns_only_what_did_not_finish(ray_cluster, local_table, tmp_path):
    from synprune_jax.rundir import completed_generation

    out = tmp_path / "sweep"
    driver = _cluster_sweep(ray_cluster, out)

    def finished() -> int:
        return sum(completed_generation(run_dir) == 300 for run_dir in (out / "runs").glob("run-*"))

    _wait_for(lambda: finished() >= 2 and _task_pids())  # a task done, others running
    driver.kill()
    driver.wait()
    _wait_for(lambda: not _task_pids(), timeout=60)  # Ray stops the dead driver's tasks
    done = finished()
    rerun = _run(_sweep_command(out, "--cluster", ray_cluster.address, "--runs-per-task", "2"))
    assert f"already finished, not rerun: {done} runs" in rerun.stdout
    assert f"ray: {8 - done} runs in" in rerun.stdout
    pd.testing.assert_frame_equal(_table(out), local_table)


def test_a_share_takes_consecutive_parts_of_every_group_without_finished_runs():
    from synprune_jax.sweeps import _share_of, parse_share

    groups = [list("abcdefg"), list("xyz")]
    pending = [(0, -1, list("abcdeg")), (1, -1, list("xyz"))]  # f finished
    assert _share_of(groups, pending, (0, 3)) == (
        [(0, -1, list("abc")), (1, -1, ["x"])],
        {0: 3, 1: 1},
    )
    assert _share_of(groups, pending, (1, 3))[0] == [(0, -1, list("de")), (1, -1, ["y"])]
    assert _share_of(groups, pending, (2, 3))[0] == [(0, -1, ["g"]), (1, -1, ["z"])]
    assert parse_share("0/1") == (0, 1)
    for text in ("3/3", "-1/2", "1", "a/b"):
        with pytest.raises(ConfigError, match="--share takes I/N"):
            parse_share(text)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--share", "0/2"], "--share needs --out"),
        (["--share", "2/2", "--out", "x"], "--share takes I/N"),
        (["--share", "0/2", "--out", "x", "--cluster", "ray"], "give share or cluster"),
    ],
)
def test_the_command_line_refuses_bad_shares_in_one_line(
    tmp_path, capsys, monkeypatch, arguments, message
):
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "me-arm", *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_tasks_own_error_reaches_the_driver_in_one_line():
    from synprune_jax.sweeps.cluster import _Task, _task_error

    class Spec:
        def __init__(self, run_id):
            self.run_id = run_id

    class Member:
        def __init__(self, run_id):
            self.spec = Spec(run_id)

    class RayTaskError(Exception):  # what ray.get raises: the task's exception as ``cause``
        def __init__(self, cause):
            super().__init__("traceback of the worker ...")
            self.cause = cause

    task = _Task(index=3, group=0, members=[Member("run-006"), Member("run-007")])
    error = _task_error(RayTaskError(ConfigError("this node runs other versions")), task)
    assert isinstance(error, ConfigError)
    assert str(error) == "task 3 (run-006, run-007): this node runs other versions"
    full = OSError(28, "No space left on device")
    assert _task_error(RayTaskError(full), task) is full  # the CLI words machine faults itself
    unknown = _task_error(RayTaskError(None), task)
    assert isinstance(unknown, RuntimeError) and str(unknown).startswith(
        "task 3 (run-006, run-007) failed"
    )


def test_task_slots_follow_the_clusters_resources_and_a_full_one_is_one_line():
    from types import SimpleNamespace

    from synprune_jax.sweeps.cluster import _slots

    def ray_with(**resources):
        return SimpleNamespace(cluster_resources=lambda: resources)

    assert _slots(ray_with(CPU=8.0), RayCluster(cpus_per_task=3)) == (2, 3, 0)
    assert _slots(ray_with(CPU=8.0, GPU=2.0), RayCluster()) == (2, 1, 1)  # a GPU per task
    assert _slots(ray_with(CPU=8.0, GPU=2.0), RayCluster(gpus_per_task=0)) == (8, 1, 0)
    with pytest.raises(ConfigError, match=r"no room for a task asking for 2 CPU\(s\) and 0 GPU"):
        _slots(ray_with(CPU=1.0), RayCluster(cpus_per_task=2))
