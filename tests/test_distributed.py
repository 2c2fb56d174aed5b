"""One run across processes (``jax.distributed``): ``synprune run / resume --distributed``.

The slow tests start two processes with two CPU devices each on 127.0.0.1 (a free port each
time; gloo CPU collectives), as two hosts would run, and check that they write one run
directory, that a run killed in both processes resumes to the numbers of an uninterrupted one,
and that the numbers match one process with four devices. The fast ones check the settings,
the error line and the one-writer logic in this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TEST_XLA_FLAGS

from synprune_jax import checkpoint, sharding
from synprune_jax.config import ConfigError
from synprune_jax.rundir import LOCK_FILE, RunDirectory, read_metrics
from synprune_jax.runner import RunConfig, run

VARIABLES = sharding.DISTRIBUTED_VARIABLES + (
    "SYNPRUNE_COORDINATOR",
    "SYNPRUNE_NUM_PROCESSES",
    "SYNPRUNE_PROCESS_ID",
)
GENERATIONS = 40
# A small me-arm run: 20 chunks of 2 generations, a checkpoint every 4 (10 of them), 16
# offspring a generation split over 4 devices (2 processes x 2).
ARGUMENTS = [
    "--set",
    f"run.num_generations={GENERATIONS}",
    "--set",
    "run.chunk_size=2",
    "--set",
    "run.checkpoint_every=4",
    "--set",
    "map_elites.batch_size=16",
    "--set",
    "map_elites.initial_batch_size=32",
    "--set",
    "archive.resolution=[8,8]",
]
TIMEOUT = 300  # seconds per command


def _environment(devices: int, **extra: str) -> dict[str, str]:
    """A CPU-only environment with ``devices`` CPU devices and the suite's compiler flags,
    without any distributed setting of the caller's."""
    environment = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    environment.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}".strip(),
        **extra,
    )
    environment.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    return environment


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "synprune_jax.cli", *arguments]


def _run_alone(devices: int, *arguments: str) -> subprocess.CompletedProcess:
    """``synprune ARGUMENTS`` as one process (no job) with ``devices`` CPU devices."""
    return subprocess.run(
        _command(*arguments),
        cwd=ROOT,
        env=_environment(devices),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@contextlib.contextmanager
def _job(*arguments: str, processes: int = 2, log: Path):
    """Starts ``synprune ARGUMENTS`` as ``processes`` processes of one job (2 CPU devices
    each; output in ``log.<index>.out`` / ``.err``); yields their ``Popen`` objects and kills
    any still running on the way out (also on failure)."""
    port = _free_port()
    started = []
    try:
        for index in range(processes):
            environment = _environment(
                2,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(index),
            )
            with open(f"{log}.{index}.out", "w") as out, open(f"{log}.{index}.err", "w") as err:
                started.append(
                    subprocess.Popen(
                        _command(*arguments), cwd=ROOT, env=environment, stdout=out, stderr=err
                    )
                )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        for process in started:
            process.wait(timeout=60)


def _wait(processes, log: Path) -> list[str]:
    """Waits for every process; fails with their stderr unless all exit 0; returns stdouts."""
    deadline = time.monotonic() + TIMEOUT
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    errors = [Path(f"{log}.{index}.err").read_text() for index in range(len(processes))]
    codes = [process.returncode for process in processes]
    assert codes == [0] * len(processes), "\n".join(e[-3000:] for e in errors)
    return [Path(f"{log}.{index}.out").read_text() for index in range(len(processes))]


def _distributed_run(out: Path, log: Path) -> list[str]:
    with _job("run", "me-arm", "--distributed", "--out", str(out), *ARGUMENTS, log=log) as job:
        return _wait(job, log)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted two-process run: ``(run directory, stdout of each process, seconds)``."""
    base = tmp_path_factory.mktemp("distributed")
    started = time.perf_counter()
    outputs = _distributed_run(base / "run", base / "log")
    return base / "run", outputs, time.perf_counter() - started


def _abstract_state(run_dir: Path):
    """The run's state shapes, built in this one-device process (``task.devices=1``)."""
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment
    from synprune_jax.runner import abstract_state

    config = config_lib.load(run_dir / "config.json")
    config["task"]["devices"] = 1
    built = get_experiment(config["experiment"]).build(config)
    return abstract_state(built.algorithm, built.hyper)


# ------------------------------------------------------------------------------------------
# Two processes x two CPU devices (loopback).


@pytest.mark.slow
def test_two_processes_write_one_run_directory(uninterrupted):
    run_dir, outputs, seconds = uninterrupted
    print(f"two-process run of {GENERATIONS} generations: {seconds:.1f} s")
    names = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "run_config.json", "metrics.csv", "timing.json"} <= names
    assert {"summary.json", "summary.md", "checkpoints"} <= names
    assert "metrics.jsonl" not in names and LOCK_FILE not in names  # the lock was released
    metrics = read_metrics(run_dir)
    assert metrics["generation"].tolist() == list(range(1, GENERATIONS + 1))  # each row once
    # process 0 wrote and reported; process 1 printed nothing of the run
    assert "Run directory:" in outputs[0] and "Run directory:" not in outputs[1]
    assert f"synprune: process 1 done; process 0 wrote {run_dir}" in outputs[1]
    assert '"devices": 4' in (run_dir / "config.json").read_text()  # "auto": the job's devices
    # the checkpoints restore in one process (each leaf written once, whole)
    steps = checkpoint.all_steps(run_dir / "checkpoints")
    assert steps == [GENERATIONS - 4, GENERATIONS]
    state = checkpoint.restore(run_dir / "checkpoints", GENERATIONS, _abstract_state(run_dir))
    assert int(state.generation) == GENERATIONS
    assert int(state.num_evaluations) == int(metrics["num_evaluations"][-1])


@pytest.mark.slow
def test_both_processes_killed_resume_to_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    arguments = ("run", "me-arm", "--distributed", "--out", str(run_dir), *ARGUMENTS)
    started = time.perf_counter()
    with _job(*arguments, log=tmp_path / "killed") as job:
        deadline = time.monotonic() + TIMEOUT
        while not checkpoint.all_steps(run_dir / "checkpoints"):
            assert all(p.poll() is None for p in job), "a process ended before a checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for process in job:
            os.kill(process.pid, signal.SIGKILL)
    saved = checkpoint.latest_step(run_dir / "checkpoints")
    assert saved is not None and saved < GENERATIONS  # killed mid-run
    with _job("resume", str(run_dir), "--distributed", log=tmp_path / "resumed") as job:
        _wait(job, tmp_path / "resumed")
    print(f"killed at step {saved}, resumed: {time.perf_counter() - started:.1f} s")
    resumed, expected = read_metrics(run_dir), read_metrics(uninterrupted[0])
    assert list(resumed) == list(expected)
    for name in expected:  # bit for bit: the key schedule ignores where a run resumed
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_after_the_same_chunk(tmp_path):
    run_dir = tmp_path / "run"
    arguments = ("run", "me-arm", "--distributed", "--out", str(run_dir), *ARGUMENTS)
    with _job(*arguments, log=tmp_path / "stopped") as job:
        deadline = time.monotonic() + TIMEOUT
        while not checkpoint.all_steps(run_dir / "checkpoints"):
            assert all(p.poll() is None for p in job), "a process ended before a checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job[1].send_signal(signal.SIGTERM)  # what a scheduler may send to one host
        codes = [process.wait(timeout=TIMEOUT) for process in job]
    stderr = (tmp_path / "stopped.0.err").read_text()
    assert codes == [143, 143], stderr[-3000:]
    saved = checkpoint.latest_step(run_dir / "checkpoints")
    assert saved is not None and saved < GENERATIONS
    assert read_metrics(run_dir)["generation"].tolist() == list(range(1, saved + 1))
    assert f"stopped by SIGTERM at generation {saved}, checkpoint written" in stderr
    assert not (run_dir / LOCK_FILE).exists()


# The largest difference of any metric between the two-process run and one process with four
# CPU devices, measured with the suite's compiler settings (2026-12-07): 0.0 for every metric
# (bit-identical). Each device evaluates the same 4 individuals either way and the archive is
# replicated; only the collectives' transport differs (gloo between processes), which moves
# data without rounding. The tolerance allows a few float32 ulps should a backend reduce in
# another order across processes.
RELATIVE_TOLERANCE = 1e-6


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(uninterrupted, tmp_path):
    out = tmp_path / "one"
    completed = _run_alone(
        4, "run", "me-arm", "--out", str(out), *ARGUMENTS, "--set", "task.devices=4"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = read_metrics(out), read_metrics(uninterrupted[0])
    assert list(one) == list(two)
    differences = {
        name: float(np.max(np.abs(one[name] - two[name]))) for name in one if name != "generation"
    }
    print("largest |one process - two processes| per metric:", differences)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=RELATIVE_TOLERANCE, err_msg=name)


# ------------------------------------------------------------------------------------------
# Fast: settings, the error line, the one-writer logic (this process).


@pytest.fixture(name="no_job")
def no_job_fixture(monkeypatch):
    """No distributed setting in the environment; ``jax.distributed.initialize`` answers as
    JAX does when it can neither read nor detect a job."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []

    def initialize(**kwargs):
        calls.append(kwargs)
        if kwargs["coordinator_address"] is None:
            raise ValueError("coordinator_address should be defined.")
        if kwargs["num_processes"] is None:
            raise ValueError("Number of processes must be defined.")
        if kwargs["process_id"] is None:
            raise ValueError("The process id of the current process must be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    return calls


def test_distributed_settings_read_jax_names_then_the_old_ones():
    read = sharding.distributed_settings
    assert read({}) == (None, None, None)
    jax_names = {
        "JAX_COORDINATOR_ADDRESS": "h0:1234",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    assert read(jax_names) == ("h0:1234", 4, 3)
    old = {"SYNPRUNE_COORDINATOR": "h1:99", "SYNPRUNE_NUM_PROCESSES": "2"}
    with pytest.warns(FutureWarning) as caught:
        assert read(old) == ("h1:99", 2, None)
    assert [str(warning.message) for warning in caught] == [
        "SYNPRUNE_COORDINATOR is deprecated and removed in 0.4.0: set JAX_COORDINATOR_ADDRESS",
        "SYNPRUNE_NUM_PROCESSES is deprecated and removed in 0.4.0: set JAX_NUM_PROCESSES",
    ]
    assert read({**old, **jax_names}) == ("h0:1234", 4, 3)  # JAX's names first, no warning
    with pytest.warns(FutureWarning, match="set JAX_PROCESS_ID"):
        assert read({"JAX_PROCESS_ID": "", "SYNPRUNE_PROCESS_ID": "1"}) == (None, None, 1)
    for bad in ("-1", "1.5", "two"):
        with pytest.raises(ConfigError, match=f"JAX_PROCESS_ID must be a non-negative int.*{bad}"):
            read({"JAX_PROCESS_ID": bad})


def test_initialize_distributed_reads_the_environment(no_job, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert sharding.initialize_distributed(required=True) == (1, 2)
    assert no_job == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]
    assert jax.config.jax_cpu_collectives_implementation == "gloo"
    assert sharding.initialize_distributed(num_processes=1, required=True) == (0, 1)
    assert len(no_job) == 1  # one process: nothing joined


def test_initialize_distributed_without_a_job(no_job, monkeypatch):
    assert sharding.initialize_distributed() == (0, 1)  # a laptop: one process
    with pytest.raises(ConfigError) as caught:
        sharding.initialize_distributed(required=True)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("no distributed job can be formed")
    assert "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID not set" in message
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")  # partly set: names what is missing
    with pytest.raises(ConfigError, match="JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID not set"):
        sharding.initialize_distributed()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError("jax.distributed.initialize() must be called before any JAX calls"),
            "must be joined before JAX starts",
        ),
        (
            RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\nmore"),
            r"could not join the distributed job at h0:1 as process 0 of 2 \(DEADLINE_EXCEEDED: "
            r"Barrier timed out\): start every process",
        ),
        (ValueError("process_id and num_processes must be ..."), "cannot form the distributed"),
    ],
)
def test_initialize_distributed_failures_are_one_line(monkeypatch, error, expected):
    def initialize(**kwargs):
        raise error

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    with pytest.raises(ConfigError, match=expected) as caught:
        sharding.initialize_distributed("h0:1", 2, 0, required=True)
    assert "\n" not in str(caught.value)


def test_cli_distributed_without_a_job_says_so_in_one_line(tmp_path):
    out = tmp_path / "run"
    completed = _run_alone(1, "run", "me-arm", "--distributed", "--out", str(out))
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "synprune: error: no distributed job can be formed: JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"
    ), completed.stderr
    assert not out.exists()  # nothing written


class _CountState(NamedTuple):
    generation: jax.Array
    total: jax.Array


class _Count:
    """A toy algorithm: the state counts generations and adds 1 to a total."""

    default_hyper: dict = {}

    def init(self, key, hyper):
        return _CountState(generation=jnp.int32(0), total=jnp.float32(0.0))

    def step(self, key, state, hyper):
        total = state.total + 1.0
        return state._replace(total=total), {"total": total}


@pytest.mark.parametrize("index", [0, 1])
def test_only_process_zero_writes_the_run_files(monkeypatch, tmp_path, index):
    monkeypatch.setattr(sharding, "process_index", lambda: index)
    config = RunConfig(num_generations=4, chunk_size=2, checkpoint_every=2, progress=False)
    directory = RunDirectory(tmp_path, config)
    assert directory.primary == (index == 0)
    state, metrics = run(_Count(), tmp_path, config)
    assert float(state.total) == 4.0
    written = {path.name for path in tmp_path.iterdir()}
    assert checkpoint.all_steps(tmp_path / "checkpoints") == [2, 4]  # every process saves
    if index == 0:
        assert written == {"checkpoints", "metrics.csv", "run_config.json", "timing.json"}
        assert metrics["total"].tolist() == [1.0, 2.0, 3.0, 4.0]
    else:  # neither metrics nor run_config.json, timing.json or the lock
        assert written == {"checkpoints"} and metrics == {}


def test_devices_in_a_job_span_every_process(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    assert sharding.resolve_devices("auto") == 4  # every device of the job
    assert sharding.resolve_devices("auto", population=3) == 2  # a multiple of the processes
    assert sharding.resolve_devices("auto", population=1) == 2
    with pytest.raises(ConfigError, match="task.devices=3 in a job of 2 processes"):
        sharding.devices_mesh(3, "task.devices")
    with pytest.raises(ConfigError, match="task.devices=1 in a job of 2 processes"):
        sharding.devices_mesh(1, "task.devices")
    with pytest.raises(ConfigError, match=r"processes hold 0 device\(s\) each"):
        sharding.devices_mesh(2, "task.devices")  # this process's one device: none of process 1
