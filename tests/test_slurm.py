"""The SLURM recipes of ``examples/slurm`` run on this machine as far as it allows: the scripts'
own commands, with SLURM's variables set as sbatch and srun set them (``srun`` emulated by a
script that starts ``SLURM_NTASKS`` local processes, so JAX's own SLURM detection forms the
``jax.distributed`` job)."""

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "slurm"
SHORT = "--set run.num_generations=6 --set run.chunk_size=2 --set run.checkpoint_every=2"

FAKE_SRUN = """#!/bin/bash
# srun on one machine: SLURM_NTASKS processes of the command, with the variables srun sets
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 \\
        "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _environment(tmp_path, **extra) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "synprune").symlink_to(Path(sys.executable).parent / "synprune")
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"),
        **extra,
    )


def _bash(script: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(RECIPES / script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_the_sweep_array_recipe_gathers_the_local_sweeps_table(tmp_path):
    env = _environment(
        tmp_path,
        EXPERIMENT="me-arm",
        SEEDS="0-3",
        OUT=str(tmp_path / "sweep"),
        SWEEP_OPTIONS=f"{SHORT} --no-report --devices 1",
        SLURM_ARRAY_TASK_COUNT="2",
    )
    shares = [_bash("sweep_array.sbatch", dict(env, SLURM_ARRAY_TASK_ID=str(i))) for i in (0, 1)]
    outputs = [_finish(share) for share in shares]  # the two array jobs at once
    assert all("Share " in output and "done" in output for output in outputs)
    assert not (tmp_path / "sweep" / "results.parquet").exists()
    gathered = _finish(_bash("sweep_gather.sbatch", env))
    assert "already finished, not rerun: 4 runs" in gathered
    # the same sweep on 2 devices holds 2 runs per device, as each share ran 2 on one
    local = tmp_path / "local"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "synprune_jax.cli",
            "sweep",
            "me-arm",
            "--seeds",
            "0-3",
            *SHORT.split(),
            "--no-report",
            "--devices",
            "2",
            "--out",
            str(local),
        ],
        cwd=ROOT,
        env=dict(
            env,
            XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
        ),
        check=True,
        capture_output=True,
        timeout=600,
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "sweep" / "results.parquet"),
        pd.read_parquet(local / "results.parquet"),
    )


@pytest.mark.slow
def test_the_distributed_recipe_runs_then_resumes_through_slurms_variables(tmp_path):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = _environment(
        tmp_path,
        EXPERIMENT="me-arm",
        OUT=str(tmp_path / "run"),
        RUN_OPTIONS=f"{SHORT} --set task.devices=auto",
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        JAX_COORDINATOR_PORT=str(port),  # SLURM's default port derives from the job id
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
    )
    output = _finish(_bash("distributed_run.sbatch", env))
    assert "process 1 done" in output
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"devices": 4' in config  # 2 processes x 2 CPU devices
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["generation"].tolist() == [1, 2, 3, 4, 5, 6]
    # submitted again: the script resumes the run (finished: nothing left to do)
    again = _finish(_bash("distributed_run.sbatch", env))
    assert "Run directory:" in again
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "metrics.csv"), metrics)
