"""Sweeps on a Ray cluster: the planner's groups split into Ray tasks, gathered on the driver.

``sweep(..., cluster="ray")`` (``synprune sweep ... --cluster ray``) runs the same plan as a local
sweep, but each group's unfinished runs are cut into *tasks* of ``runs_per_task`` runs; a task is
one ``jit(vmap(...))`` program on one Ray worker, the run axis split over the worker's devices
(``gpus_per_task`` GPUs, or ``cpus_per_task`` CPU devices). The driver keeps the sweep directory
(``sweep.json``, ``runs.csv``, ``runs/``, ``results.csv`` / ``.parquet``, ``plots/``), exactly as a
local sweep lays it out.

Same numbers as a local sweep. XLA may round differently for another run-axis length, so every
task is padded (with copies of its first run) to ``runs_per_task`` runs; by default
``runs_per_task = ceil(group size / task slots)``, which is the share of each device in a local
sweep over as many devices as the cluster has task slots. A local sweep over ``D`` devices and a
cluster sweep over ``D`` one-device slots give identical tables (tested).

Storage. Before submitting, the driver writes a probe file into ``out``; a task that sees it (the
same path on its node: a shared file system, or the driver's own machine) writes its runs straight
into ``out/runs/<run_id>`` and a retried task resumes them from their last checkpoints. A task
that does not see it runs in a scratch directory of its node and returns the run directories as
a tar archive, which the driver unpacks into ``out/runs``; a retry on another node starts those
runs again (on the same node, from the scratch's checkpoints). ``storage="shared"`` or ``"copy"``
forces one of the two.

Faults. A task whose worker or node dies is submitted again (up to ``max_retries`` times per
task); its runs then end exactly as if nothing had happened (the runner's key schedule makes
results independent of where a run resumed). An error raised by the task itself (a bad config,
a full disk) stops the sweep with that error. A driver killed mid-sweep loses nothing that
finished: the same command again skips finished runs.

Example::

    result = sweep("me-arm", seeds=range(64), out="runs/arm", cluster="ray")
    result = sweep("me-arm", seeds=range(64), out="runs/arm",
                   cluster=RayCluster(address="ray://head:10001", gpus_per_task=1))
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import secrets
import shutil
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from synprune_jax.config import ConfigError

PROBE_FILE = ".cluster-probe"
STORAGE_MODES = ("auto", "shared", "copy")


@dataclasses.dataclass(frozen=True)
class RayCluster:
    """Where and how a sweep runs on Ray.

    Attributes:
        address: ``None`` (``RAY_ADDRESS`` if set, else a Ray instance started on this machine
            for the sweep and stopped after it), a cluster address ``host:port`` or a Ray Client
            address ``ray://host:port``.
        cpus_per_task: CPUs each task asks for; a CPU-only task runs on that many CPU devices.
        gpus_per_task: GPUs each task asks for (``None``: 1 when the cluster has GPUs, else 0);
            with GPUs, the task's run axis is split over them.
        runs_per_task: runs per task (``None``: a group's runs spread evenly over the task
            slots, ``ceil(group size / slots)``).
        max_retries: times a task whose worker or node died is submitted again.
        storage: ``"auto"`` (shared when a task sees the driver's directory), ``"shared"`` or
            ``"copy"`` (see the module docstring).

    Examples:
        >>> RayCluster.parse("ray://head:10001").address
        'ray://head:10001'
        >>> RayCluster.parse("slurm")
        Traceback (most recent call last):
            ...
        synprune_jax.config.ConfigError: --cluster takes ray, ray://host:port or host:port (a Ray
        cluster), got 'slurm'
    """

    address: str | None = None
    cpus_per_task: int = 1
    gpus_per_task: int | None = None
    runs_per_task: int | None = None
    max_retries: int = 3
    storage: str = "auto"

    def __post_init__(self):
        for name, low in (("cpus_per_task", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("gpus_per_task", "runs_per_task"):
            value = getattr(self, name)
            low = 0 if name == "gpus_per_task" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ConfigError(f"{name} must be an int >= {low} or None, got {value!r}")
        if self.storage not in STORAGE_MODES:
            raise ConfigError(f"storage must be one of {STORAGE_MODES}, got {self.storage!r}")
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(f"the Ray address must be a non-empty string, got {self.address!r}")

    @classmethod
    def parse(cls, text: str, **options) -> RayCluster:
        """``"ray"`` -> ``RAY_ADDRESS`` or a local instance; ``"ray://host:port"`` (Ray Client)
        or ``"host:port"`` -> that cluster; ``options`` are the other attributes."""
        text = str(text).strip()
        if text == "ray":
            return cls(address=None, **options)
        if text.startswith("ray://") or (":" in text and "/" not in text):
            return cls(address=text, **options)
        raise ConfigError(
            f"--cluster takes ray, ray://host:port or host:port (a Ray cluster), got {text!r}"
        )


def require_ray():
    """The ``ray`` module, or one clear line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--cluster ray needs Ray: pip install 'synprune-jax[ray]' (on the driver and on "
            "every node of the cluster)"
        ) from None
    return ray


# --------------------------------------------------------------------------------------------
# The worker side.


@dataclasses.dataclass
class TaskRequest:
    """What one Ray task runs: some runs of one group (their specs), where, and how."""

    experiment: str
    specs: list  # [RunSpec]
    out: str  # the sweep directory on the driver's machine
    probe: str  # the token the driver wrote into out/PROBE_FILE
    storage: str
    size: int  # run-axis length the task pads to (runs_per_task)
    devices: int  # devices the run axis is split over on the worker
    report: bool
    versions: dict  # the driver's synprune_jax / jax versions
    sweep_key: str  # names the task's scratch directory (copy mode)


def _versions() -> dict:
    import jax

    import synprune_jax

    return {"synprune_jax": synprune_jax.__version__, "jax": jax.__version__}


def _sees_driver(out: str, probe: str) -> bool:
    try:
        return (Path(out) / PROBE_FILE).read_text() == probe
    except OSError:
        return False


def _pack(run_dirs: Sequence[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for run_dir in run_dirs:
            archive.add(run_dir, arcname=run_dir.name)
    return buffer.getvalue()


def run_task(request: TaskRequest, board=None, key=None) -> dict:
    """Runs a task on a worker (what each Ray task calls); returns what the driver gathers.

    Returns:
        ``{"timing": [...], "node": hostname, "shared": bool, "archive": bytes | None,
        "task_s": seconds}``; the archive holds the run directories when they were written to
        the node's scratch.

    Raises:
        ConfigError: versions differ from the driver's, or ``storage="shared"`` and the
            driver's directory is not visible here.
    """
    import socket

    import jax

    from synprune_jax import sweeps

    started = time.perf_counter()
    if board is not None:
        board.start.remote(key)
    if _versions() != request.versions:
        raise ConfigError(
            f"this node runs {_versions()}, the driver {request.versions}: install the same "
            "versions on every node"
        )
    shared = request.storage != "copy" and _sees_driver(request.out, request.probe)
    if request.storage == "shared" and not shared:
        raise ConfigError(
            f"storage='shared', but {request.out} is not visible on node {socket.gethostname()}"
        )
    root = Path(request.out) if shared else _scratch(request.sweep_key)
    members = sweeps.build_members(request.experiment, request.specs, root)
    devices = jax.local_devices()
    if len(devices) < request.devices:
        raise ConfigError(
            f"node {socket.gethostname()} gives the task {len(devices)} device(s), it asked "
            f"for {request.devices}"
        )
    mesh = None
    if request.devices > 1:
        from synprune_jax import sharding

        mesh = sharding.make_mesh(devices=devices[: request.devices], axis_name="runs")
    pending, _ = sweeps._pending([members])
    timing = []
    for _, _, subgroup in pending:
        group_timing, states = sweeps.run_group(subgroup, mesh=mesh, size=request.size)
        timing.append(group_timing)
        if request.report:
            sweeps.report_runs(subgroup, states)
    archive = None
    if not shared:
        archive = _pack([member.run_dir for member in members])
        for member in members:
            shutil.rmtree(member.run_dir, ignore_errors=True)
    return {
        "timing": timing,
        "node": socket.gethostname(),
        "shared": shared,
        "archive": archive,
        "task_s": time.perf_counter() - started,
    }


def _scratch(sweep_key: str) -> Path:
    """The task's scratch root on its node: the same for a retry on the node (it resumes)."""
    return Path(tempfile.gettempdir()) / "synprune-ray" / sweep_key


class _Board:
    """A Ray actor the tasks tell when they start (the driver's "running" count)."""

    def __init__(self):
        self.started: set = set()

    def start(self, key) -> None:
        self.started.add(key)

    def snapshot(self) -> set:
        return set(self.started)


# --------------------------------------------------------------------------------------------
# The driver side.


@dataclasses.dataclass
class _Task:
    index: int
    group: int
    members: list
    attempt: int = 0
    submitted: float = 0.0


def plan_tasks(groups: Sequence[list], pending, slots: int, runs_per_task: int | None):
    """``(tasks, sizes)``: each pending subgroup cut into tasks of at most ``runs_per_task``
    runs; ``sizes[group]`` is the run-axis length of that group's tasks (default
    ``ceil(len(group) / slots)``, the whole group's count, so a resumed part pads like before).

    Examples:
        >>> tasks, sizes = plan_tasks([list(range(8))], [(0, -1, list(range(8)))], 3, None)
        >>> [task.members for task in tasks], sizes
        ([[0, 1, 2], [3, 4, 5], [6, 7]], {0: 3})
    """
    sizes: dict[int, int] = {}
    tasks: list[_Task] = []
    for group_index, _, subgroup in pending:
        size = runs_per_task or math.ceil(len(groups[group_index]) / max(slots, 1))
        sizes[group_index] = size
        for first in range(0, len(subgroup), size):
            tasks.append(_Task(len(tasks), group_index, list(subgroup[first : first + size])))
    return tasks, sizes


def _unpack(archive: bytes, runs_dir: Path) -> None:
    """Unpacks run directories into ``runs_dir``, each replacing its old copy whole."""
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=runs_dir))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(incoming, filter="data")
        for run_dir in incoming.iterdir():
            target = runs_dir / run_dir.name
            if target.exists():
                shutil.rmtree(target)
            os.replace(run_dir, target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _connect(ray, cluster: RayCluster) -> bool:
    """Connects (or starts a local instance); True when this call started it."""
    if ray.is_initialized():
        return False
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    with warnings.catch_warnings():  # JAX warns that Ray forks (to exec its processes)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        if address is None:
            ray.init(log_to_driver=False, include_dashboard=False)
            return True
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {error}") from error
    return False


def _slots(ray, cluster: RayCluster) -> tuple[int, int, int]:
    """``(slots, cpus, gpus)`` per task: how many tasks the cluster runs at once."""
    resources = ray.cluster_resources()
    gpus = cluster.gpus_per_task
    if gpus is None:
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    slots = int(resources.get("CPU", 0) // cluster.cpus_per_task)
    if gpus:
        slots = min(slots, int(resources.get("GPU", 0) // gpus))
    if slots < 1:
        raise ConfigError(
            f"the Ray cluster has {resources.get('CPU', 0)} CPU(s) and "
            f"{resources.get('GPU', 0)} GPU(s): no room for a task asking for "
            f"{cluster.cpus_per_task} CPU(s) and {gpus} GPU(s)"
        )
    return slots, cluster.cpus_per_task, gpus


def run_on_ray(
    out: Path,
    experiment: str,
    groups: Sequence[list],
    pending,
    skipped: Sequence[str],
    cluster: RayCluster,
    *,
    report: bool,
    progress: bool,
    log: Callable[[str], None] | None,
) -> tuple[list[dict], dict]:
    """Runs the pending subgroups as Ray tasks and gathers their run directories into ``out``.

    Returns:
        ``(timing, summary)``: one timing dict per task (:func:`run_group`'s for each part, plus
        ``task``, ``group``, ``runs``, ``node``, ``shared``, ``attempts``, ``task_s``: the
        task's own seconds on its worker, ``overhead_s``: the driver's seconds from (the last)
        submission to the result, minus ``task_s``: scheduling, worker start, transfers) and
        ``{"tasks", "slots", "runs_per_task", "retried_runs", "wall_s"}``.

    Raises:
        ConfigError: no Ray, unreachable cluster, a task's own error that is the user's
            (versions differ, bad storage); other errors a task raised are raised again here.
        RuntimeError: a task's worker died more than ``max_retries`` times.
    """
    ray = require_ray()
    started_ray = _connect(ray, cluster)
    board = None
    futures: dict = {}
    try:
        slots, cpus, gpus = _slots(ray, cluster)
        tasks, sizes = plan_tasks(groups, pending, slots, cluster.runs_per_task)
        devices = gpus or cpus
        probe = secrets.token_hex(8)
        (out / PROBE_FILE).write_text(probe)
        (out / "runs").mkdir(exist_ok=True)
        sweep_key = hashlib.sha1(f"{out.resolve()}:{probe}".encode()).hexdigest()[:16]
        remote_options: dict = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0}
        if not gpus and cpus > 1:
            remote_options["runtime_env"] = {"env_vars": {"JAX_NUM_CPU_DEVICES": str(cpus)}}
        function = ray.remote(run_task).options(**remote_options)
        board = ray.remote(num_cpus=0)(_Board).remote()
        versions = _versions()

        def submit(task: _Task) -> None:
            request = TaskRequest(
                experiment=experiment,
                specs=[member.spec for member in task.members],
                out=str(out.resolve()),
                probe=probe,
                storage=cluster.storage,
                size=sizes[task.group],
                devices=devices,
                report=report,
                versions=versions,
                sweep_key=f"{sweep_key}-task{task.index}",
            )
            task.submitted = time.perf_counter()
            futures[function.remote(request, board, (task.index, task.attempt))] = task

        if log is not None:
            runs = sum(len(task.members) for task in tasks)
            log(
                f"ray: {runs} runs in {len(tasks)} task(s) over {slots} slot(s) "
                f"({cpus} CPU, {gpus} GPU each)"
            )
        for task in tasks:
            submit(task)
        total = sum(len(group) for group in groups)
        bar = _Bar(total, len(skipped), progress)
        timing: list[dict] = []
        retried = 0
        started_at = time.perf_counter()
        try:
            while futures:
                ready, _ = ray.wait(list(futures), num_returns=1, timeout=1.0)
                for ref in ready:
                    task = futures.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:
                        raise _task_error(error, task) from None
                    except ray.exceptions.RayError as error:  # the worker or its node died
                        if task.attempt >= cluster.max_retries:
                            raise RuntimeError(
                                f"task {task.index} ({_ids(task)}) lost its worker "
                                f"{task.attempt + 1} times; last: {type(error).__name__}; "
                                "rerun the same command to continue"
                            ) from error
                        task.attempt += 1
                        retried += len(task.members)
                        if log is not None:
                            log(
                                f"task {task.index} ({_ids(task)}): {type(error).__name__}, "
                                f"submitted again (attempt {task.attempt + 1})"
                            )
                        submit(task)
                        continue
                    latency = time.perf_counter() - task.submitted
                    if result["archive"] is not None:
                        _unpack(result["archive"], out / "runs")
                    timing.append(
                        {
                            "task": task.index,
                            "group": task.group,
                            "runs": _ids(task).split(", "),
                            "node": result["node"],
                            "shared": result["shared"],
                            "attempts": task.attempt + 1,
                            "task_s": result["task_s"],
                            "overhead_s": latency - result["task_s"],
                            "parts": result["timing"],
                        }
                    )
                    bar.finished += len(task.members)
                    if log is not None:
                        log(
                            f"task {task.index}: {len(task.members)} runs done on "
                            f"{result['node']} in {latency:.1f} s"
                        )
                started = ray.get(board.snapshot.remote())
                running = [t for t in futures.values() if (t.index, t.attempt) in started]
                bar.show(running=sum(len(t.members) for t in running), retried=retried)
        finally:
            bar.close()
        summary = {
            "tasks": len(tasks),
            "slots": slots,
            "runs_per_task": sizes,
            "retried_runs": retried,
            "wall_s": time.perf_counter() - started_at,
        }
        return timing, summary
    finally:
        for ref in futures:
            ray.cancel(ref, force=True)
        (out / PROBE_FILE).unlink(missing_ok=True)
        if started_ray:
            ray.shutdown()


def _ids(task: _Task) -> str:
    return ", ".join(member.spec.run_id for member in task.members)


def _task_error(error, task: _Task) -> BaseException:
    """The error a task raised, as the driver raises it (the user's errors in one line)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ConfigError):
        return ConfigError(f"task {task.index} ({_ids(task)}): {cause}")
    if isinstance(cause, BaseException):
        return cause
    return RuntimeError(f"task {task.index} ({_ids(task)}) failed: {error}")


class _Bar:
    """One tqdm bar over all runs: finished / running / retried counts."""

    def __init__(self, total: int, finished: int, enabled: bool):
        self.finished, self._shown = finished, finished
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=finished, unit="run", disable=None)

    def show(self, *, running: int, retried: int) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix(
            {"finished": self.finished, "running": running, "retried": retried}, refresh=False
        )
        self._bar.update(self.finished - self._shown)
        self._shown = self.finished
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
