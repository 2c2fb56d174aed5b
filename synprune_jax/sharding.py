"""Devices: meshes, population sharding, chunked evaluation, archive placement, multi-host.

Everything here wraps the engine from the outside; algorithms and tasks stay unaware of devices.
:func:`make_mesh` builds a one-axis mesh (axis type Auto, so GSPMD propagates shardings through
one-device code); :class:`ShardedTask` splits a task's population axis over it;
:class:`ChunkedTask` evaluates a population a chunk at a time; :func:`place_archive` replicates
(default) or shards an archive; :func:`initialize_distributed` joins a multi-host job, after
which :func:`devices_mesh` spans every process's devices, :func:`place` puts host values on a
program's global shardings, :func:`gather_to_host` reads global arrays back on every process and
:func:`is_primary` names the one process that writes files (``synprune run --distributed``).
docs/sweeps.md ("Devices", "Many hosts") explains when results stay bit-identical (tasks with
common random numbers: one key per batch, per-individual results independent of the batch).

Example (4 emulated CPU devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``)::

    mesh = make_mesh()                                  # Mesh over 4 devices, axis "batch"
    task = ShardedTask(KinematicArm(genotype="mlp"), mesh)
    algorithm = MapElites(MapElitesConfig(archive=spec, batch_size=64), task)
    state, metrics = run(algorithm, "runs/sharded", RunConfig(num_generations=100))
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from synprune_jax.config import AUTO
from synprune_jax.types import EvalResult, Population

PyTree = Any
DEFAULT_AXIS = "batch"
SHARD_METHODS = ("shard_map", "constraint")


# ----- meshes and placement ----------------------------------------------------------------------


def make_mesh(
    num_devices: int | None = None,
    axis_name: str = DEFAULT_AXIS,
    *,
    global_devices: bool = False,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A one-axis mesh (axis type Auto).

    Args:
        num_devices: how many devices to use (the first ``num_devices``); ``None``: all of them.
        axis_name: the mesh axis name used in partition specs.
        global_devices: use ``jax.devices()`` (every process of a multi-host job) instead of
            ``jax.local_devices()``.
        devices: explicit devices (overrides the two options above).

    Returns:
        A ``jax.sharding.Mesh`` of shape ``{axis_name: num_devices}`` over the first
        ``num_devices`` devices, in order.

    Raises:
        ValueError: ``num_devices`` is not an int in ``[1, available]``.

    Examples:
        >>> mesh = make_mesh(1)  # the first local device
        >>> mesh.axis_names, mesh.devices.shape
        (('batch',), (1,))
        >>> make_mesh(0)
        Traceback (most recent call last):
            ...
        ValueError: num_devices must be an int in [1, ...] (devices available: ...), got 0
    """
    if devices is None:
        devices = jax.devices() if global_devices else jax.local_devices()
    devices = list(devices)
    if num_devices is None:
        num_devices = len(devices)
    if not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices must be an int in [1, {len(devices)}] (devices available: "
            f"{len(devices)}), got {num_devices!r}"
        )
    return Mesh(np.asarray(devices[:num_devices]), (axis_name,))


def resolve_devices(devices: Any, population: Any = None) -> Any:
    """The device count a config's ``devices`` option stands for: ``"auto"`` is every device
    (``jax.device_count()``: those of every process of a distributed job, else the local ones;
    on a CPU, those ``synprune run`` created, one per usable core), at most ``population`` (the
    individuals one evaluation splits, when a positive int), in a job of several processes
    rounded down to a multiple of the process count; any other value is returned as given
    (:func:`devices_mesh` validates it).

    Examples:
        >>> resolve_devices(3), resolve_devices("auto", population=1)
        (3, 1)
    """
    if devices != AUTO:
        return devices
    count = jax.device_count()
    if isinstance(population, int) and not isinstance(population, bool) and population >= 1:
        count = min(count, population)
    processes = jax.process_count()
    return max(processes, count // processes * processes)


def devices_mesh(devices: Any, option: str = "devices") -> Mesh | None:
    """The mesh of a config's ``devices`` option (``task.devices``, ``train.devices``).

    One process: ``None`` for 1, else a one-axis mesh over the first ``devices`` local devices.
    A job of several processes (``jax.distributed``): a mesh over ``devices / process_count``
    devices of each process (the first of each, in process order), so every process holds its
    share of the population.

    Raises:
        ConfigError: ``devices`` is not a positive int, is more than the devices (with how to
            create CPU devices), or in a job of several processes is not a multiple of the
            process count.
    """
    from synprune_jax.config import ConfigError

    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"{option} must be a positive int, got {devices!r}")
    processes = jax.process_count()
    if processes > 1:
        if devices % processes:
            raise ConfigError(
                f"{option}={devices} in a job of {processes} processes: give a multiple of "
                f"{processes} (each process holds an equal share), or 'auto'"
            )
        per_process = devices // processes
        owned = [
            [device for device in jax.devices() if device.process_index == index]
            for index in range(processes)
        ]
        held = min(len(each) for each in owned)
        if per_process > held:
            raise ConfigError(
                f"{option}={devices} but the job's {processes} processes hold {held} device(s) "
                f"each: give at most {processes * held}, or 'auto'"
            )
        return make_mesh(devices=[device for each in owned for device in each[:per_process]])
    if devices == 1:
        return None
    available = jax.local_device_count()
    if devices > available:
        raise ConfigError(
            f"{option}={devices} but only {available} local device(s) exist. On a CPU, "
            "`synprune run` and `synprune resume` create the CPU devices first; from Python, "
            f"call jax.config.update('jax_num_cpu_devices', {devices}) right after `import jax`, "
            "before anything runs on a device"
        )
    return make_mesh(devices)


def pad_rows(tree: PyTree, multiple: int) -> tuple[PyTree, int]:
    """``(tree padded, original size)``: every leaf's leading axis padded up to a multiple of
    ``multiple`` with copies of row 0 (valid inputs whose results the caller drops)."""
    size = jax.tree_util.tree_leaves(tree)[0].shape[0]
    padded = -(-size // multiple) * multiple
    if padded == size:
        return tree, size
    index = jnp.concatenate([jnp.arange(size), jnp.zeros(padded - size, jnp.int32)])
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree), size


def leading_axis_sharding(mesh: Mesh, axis_name: str | None = None) -> NamedSharding:
    """``NamedSharding`` that splits the leading axis of an array over the mesh axis."""
    return NamedSharding(mesh, PartitionSpec(axis_name or mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding`` that keeps a full copy of an array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_leading_axis(tree: PyTree, mesh: Mesh, axis_name: str | None = None) -> PyTree:
    """``device_put`` of every leaf split along its leading axis (which must divide evenly)."""
    sharding = leading_axis_sharding(mesh, axis_name)
    size = mesh.devices.size
    for leaf in jax.tree_util.tree_leaves(tree):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] % size:
            raise ValueError(
                f"cannot split a leaf of shape {np.shape(leaf)} over {size} devices: "
                "its leading axis must be a multiple of the device count"
            )
    return jax.device_put(tree, sharding)


# ----- task wrappers -----------------------------------------------------------------------------


class _TaskWrapper:
    """Forwards the :class:`~synprune_jax.tasks.Task` protocol to ``self.task``."""

    task: Any

    @property
    def spec(self):
        return self.task.spec

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return self.task.descriptor_names

    @property
    def env_steps_per_individual(self) -> int:
        return self.task.env_steps_per_individual

    def maskable(self) -> PyTree:
        return self.task.maskable()

    def init_params(self, key: jax.Array):
        return self.task.init_params(key)

    def descriptor_bounds(self):
        return self.task.descriptor_bounds()

    def __getattr__(self, name):  # anything else (env, episode_length, ...) from the inner task
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)


@dataclasses.dataclass(frozen=True, eq=True)
class ShardedTask(_TaskWrapper):
    """A task whose ``evaluate`` splits the population axis over the devices of ``mesh``.

    Attributes:
        task: the wrapped task (frozen, hashable).
        mesh: a one-axis mesh (see :func:`make_mesh`).
        axis_name: the mesh axis the population is split over (default: the mesh's first).
        method: ``"shard_map"`` (each device evaluates its ``P / n`` slice with ``jax.shard_map``;
            ``check_vma=False`` because Brax's scan carry fails the varying-manual-axes check)
            or ``"constraint"`` (``with_sharding_constraint`` on the population and on the
            result; GSPMD partitions the unchanged program).

    When ``P`` is not a multiple of the number of devices, the population is padded with copies
    of individual 0 whose results are dropped (a little wasted work, same results).
    Results equal the wrapped task's for tasks with common random numbers, up to the last bits
    where XLA picks other kernels for the per-device batch size (docs/sweeps.md).

    Every other attribute (``spec``, ``maskable()``, ``init_params``, ``descriptor_bounds``,
    ...) is the wrapped task's, so the wrapper goes wherever the task went.

    Raises:
        ValueError: ``method`` is not one of ``"shard_map"``, ``"constraint"``, or
            ``axis_name`` is not an axis of ``mesh``.

    Examples:
        >>> from synprune_jax.types import EvalResult, Population
        >>> class SumTask:  # a toy task: the fitness is the sum of the weights
        ...     def evaluate(self, key, population):
        ...         fitness = population.params["w"].sum(axis=1)
        ...         return EvalResult(fitness, fitness[:, None], {"density": fitness * 0 + 1})
        >>> population = Population(params={"w": jnp.arange(10.0).reshape(5, 2)},
        ...                         masks={"w": jnp.ones((5, 2), bool)}, rates=jnp.zeros((5, 2)))
        >>> task = ShardedTask(SumTask(), make_mesh(1))  # make_mesh(): every local device
        >>> task.axis_name, task.num_devices, task.method
        ('batch', 1, 'shard_map')
        >>> jax.jit(task.evaluate)(jax.random.key(0), population).fitness  # [P], as SumTask's
        Array([ 1.,  5.,  9., 13., 17.], dtype=float32)
    """

    task: Any
    mesh: Mesh
    axis_name: str | None = None
    method: str = "shard_map"

    def __post_init__(self):
        if self.method not in SHARD_METHODS:
            raise ValueError(
                f"ShardedTask.method must be one of {SHARD_METHODS}, got {self.method!r}"
            )
        axis = self.axis_name or self.mesh.axis_names[0]
        if axis not in self.mesh.axis_names:
            raise ValueError(f"axis {axis!r} is not an axis of the mesh {self.mesh.axis_names}")
        object.__setattr__(self, "axis_name", axis)

    @property
    def num_devices(self) -> int:
        return int(self.mesh.shape[self.axis_name])

    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates ``population`` (leaves ``[P, ...]``) split over the mesh; see the class."""
        size = population.size
        padded, _ = pad_rows(population, self.num_devices)
        split = PartitionSpec(self.axis_name)
        if self.method == "constraint":
            sharding = NamedSharding(self.mesh, split)
            result = self.task.evaluate(key, jax.lax.with_sharding_constraint(padded, sharding))
            result = jax.lax.with_sharding_constraint(result, sharding)
        else:
            result = jax.shard_map(
                self.task.evaluate,
                mesh=self.mesh,
                in_specs=(PartitionSpec(), split),
                out_specs=split,
                check_vma=False,
            )(key, padded)
        if padded.size == size:
            return result
        return jax.tree_util.tree_map(lambda leaf: leaf[:size], result)


@dataclasses.dataclass(frozen=True, eq=True)
class ChunkedTask(_TaskWrapper):
    """A task that evaluates its population ``chunk_size`` individuals at a time.

    ``lax.map`` runs the wrapped (batched) evaluation on one ``[chunk_size]`` slice after another,
    so the peak memory of a rollout scales with ``chunk_size`` rather than ``P``. When ``P`` is not
    a multiple of ``chunk_size`` the last chunk is padded with copies of individual 0 whose
    results are dropped. Results equal the unchunked evaluation for tasks with common random
    numbers, up to the last bits where XLA picks other kernels for the chunk size.

    Every other attribute (``spec``, ``maskable()``, ``init_params``, ``descriptor_bounds``,
    ...) is the wrapped task's.

    Attributes:
        task: the wrapped task.
        chunk_size: individuals per chunk (>= 1).

    Raises:
        ValueError: ``chunk_size`` is not a positive int.

    Examples:
        >>> from synprune_jax.types import EvalResult, Population
        >>> class SumTask:  # a toy task: the fitness is the sum of the weights
        ...     def evaluate(self, key, population):
        ...         fitness = population.params["w"].sum(axis=1)
        ...         return EvalResult(fitness, fitness[:, None], {"density": fitness * 0 + 1})
        >>> population = Population(params={"w": jnp.arange(10.0).reshape(5, 2)},
        ...                         masks={"w": jnp.ones((5, 2), bool)}, rates=jnp.zeros((5, 2)))
        >>> task = ChunkedTask(SumTask(), chunk_size=2)  # 3 chunks, the last padded with row 0
        >>> jax.jit(task.evaluate)(jax.random.key(0), population).fitness  # [P], as SumTask's
        Array([ 1.,  5.,  9., 13., 17.], dtype=float32)
    """

    task: Any
    chunk_size: int

    def __post_init__(self):
        if (
            isinstance(self.chunk_size, bool)
            or not isinstance(self.chunk_size, int)
            or self.chunk_size < 1
        ):
            raise ValueError(
                f"ChunkedTask.chunk_size must be a positive int, got {self.chunk_size!r}"
            )

    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates ``population`` (leaves ``[P, ...]``) in chunks; returns ``[P]`` results."""
        size = population.size
        if size <= self.chunk_size:
            return self.task.evaluate(key, population)
        padded, _ = pad_rows(population, self.chunk_size)  # viewed as [chunks, chunk, ...]
        num_chunks = padded.size // self.chunk_size
        chunks = jax.tree_util.tree_map(
            lambda leaf: leaf.reshape(num_chunks, self.chunk_size, *leaf.shape[1:]), padded
        )
        results = jax.lax.map(lambda chunk: self.task.evaluate(key, chunk), chunks)
        return jax.tree_util.tree_map(
            lambda leaf: leaf.reshape(padded.size, *leaf.shape[2:])[:size], results
        )


def unwrap(task) -> Any:
    """The innermost task under any :class:`ShardedTask` / :class:`ChunkedTask` wrappers."""
    while isinstance(task, _TaskWrapper):
        task = task.task
    return task


# ----- archives ----------------------------------------------------------------------------------


def place_archive(archive, mesh: Mesh, *, sharded: bool = False, axis_name: str | None = None):
    """Puts an archive on the mesh: replicated (default) or split over cells.

    Replicated: every device holds all ``C`` cells; parent sampling and insertion need no
    communication beyond gathering the ``[P]`` evaluation results. Sharded over cells: each
    device holds ``C / n`` cells (``C`` must be a multiple of ``n``); GSPMD partitions
    :func:`~synprune_jax.archives.add`'s scatters and :func:`~synprune_jax.archives.sample`'s
    gathers, with the same result (tested). Use it only when the archive does not fit one
    device (see :func:`archive_memory`).
    """
    if not sharded:
        return jax.device_put(archive, replicated_sharding(mesh))
    return shard_leading_axis(archive, mesh, axis_name)


def archive_memory(archive, num_devices: int) -> dict[str, int]:
    """Bytes an archive costs per device, replicated versus sharded over cells.

    Args:
        archive: an :class:`~synprune_jax.archives.Archive` (or its ``jax.eval_shape``).
        num_devices: ``n``.

    Returns:
        ``{"total_bytes", "replicated_per_device_bytes", "sharded_per_device_bytes"}``; the
        sharded figure is ``ceil(C / n)`` cells' worth of every leaf.
    """
    total = int(
        sum(
            math.prod(np.shape(leaf)) * np.dtype(leaf.dtype).itemsize
            for leaf in jax.tree_util.tree_leaves(archive)
        )
    )
    num_cells = int(archive.fitness.shape[0])
    per_cell = total / num_cells
    return {
        "total_bytes": total,
        "replicated_per_device_bytes": total,
        "sharded_per_device_bytes": int(math.ceil(num_cells / num_devices) * per_cell),
    }


# ----- multi-host --------------------------------------------------------------------------------

#: The environment variables :func:`initialize_distributed` reads, in the order of the arguments:
#: the coordinator's ``host:port`` (the one ``jax.distributed.initialize`` itself reads), the
#: number of processes and this process's index.
DISTRIBUTED_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
#: Older names of :data:`DISTRIBUTED_VARIABLES` (0.2.0), still read when those are unset, with a
#: ``FutureWarning``; they are removed in 0.4.0.
_OLD_DISTRIBUTED_VARIABLES = (
    "SYNPRUNE_COORDINATOR",
    "SYNPRUNE_NUM_PROCESSES",
    "SYNPRUNE_PROCESS_ID",
)


def distributed_settings(environ: Any = None) -> tuple[str | None, int | None, int | None]:
    """``(coordinator_address, num_processes, process_id)`` from the environment.

    Each value comes from :data:`DISTRIBUTED_VARIABLES` (``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else from its deprecated older name
    (``SYNPRUNE_COORDINATOR``, ``SYNPRUNE_NUM_PROCESSES``, ``SYNPRUNE_PROCESS_ID``: a
    ``FutureWarning``; removed in 0.4.0); ``None`` where neither is set (or set to the empty
    string).

    Args:
        environ: a mapping of environment variables (``None``: ``os.environ``).

    Raises:
        ConfigError: a count or index is not a non-negative int (the message names the
            variable).

    Examples:
        >>> distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        ...                       "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
        ('10.0.0.1:1234', 2, 1)
        >>> distributed_settings({})
        (None, None, None)
        >>> distributed_settings({"JAX_NUM_PROCESSES": "two"})
        Traceback (most recent call last):
            ...
        synprune_jax.config.ConfigError: JAX_NUM_PROCESSES must be a non-negative int, got 'two'
    """
    from synprune_jax.config import ConfigError

    environ = os.environ if environ is None else environ
    values: list[Any] = []
    for index, (name, old) in enumerate(
        zip(DISTRIBUTED_VARIABLES, _OLD_DISTRIBUTED_VARIABLES, strict=True)
    ):
        variable = name if environ.get(name) else old
        value = environ.get(variable) or None
        if value is not None and variable == old:
            warnings.warn(
                f"{old} is deprecated and removed in 0.4.0: set {name}", FutureWarning, stacklevel=2
            )
        if value is not None and index > 0:  # the count and the index are ints
            if not value.strip().isdigit():
                raise ConfigError(f"{variable} must be a non-negative int, got {value!r}")
            value = int(value)
        values.append(value)
    return values[0], values[1], values[2]


def _distributed_state():
    # jax.distributed keeps the job in this object; reading it starts no backend (unlike
    # jax.process_index()), so the CLI can join the job and still choose the CPU devices
    from jax._src import distributed

    return distributed.global_state


def process_index() -> int:
    """This process's index in the job (0 without one), read without starting a JAX backend
    when none has started (afterwards: ``jax.process_index()``)."""
    try:  # JAX's private state (pinned jax<0.11); should it move, jax.process_index() is right
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return jax.process_index()
        state = _distributed_state()
        return int(state.process_id) if state.client is not None else 0
    except (ImportError, AttributeError):
        return jax.process_index()


def is_primary() -> bool:
    """Whether this process writes a run's files (metrics, plots, reports, ``config.json``,
    ``timing.json``, the lock): process 0 of a distributed job, or the only process.

    Examples:
        >>> is_primary()  # one process: it writes everything
        True
    """
    return process_index() == 0


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    required: bool = False,
    **kwargs,
) -> tuple[int, int]:
    """Joins a multi-process job (``jax.distributed.initialize``); returns ``(index, count)``.

    Call it once per process, before any other JAX call (it starts no backend itself, so CPU
    devices can still be chosen after it). Each argument left ``None`` is read from the
    environment (:func:`distributed_settings`: ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); what is still missing JAX detects on Cloud TPU
    pods, SLURM (``srun``) and Open MPI (``mpirun``) clusters. With ``num_processes == 1``
    nothing is initialised and ``(0, 1)`` is returned; likewise when nothing is set and no
    cluster is detected, unless ``required``. A job already joined is returned as it is.

    On CPU the processes' collectives use gloo (``jax_cpu_collectives_implementation``, unless
    another implementation was chosen).

    Args:
        coordinator_address: ``host:port`` of process 0 (every process gives the same).
        num_processes: number of processes in the job.
        process_id: this process's index, ``0 .. num_processes - 1``.
        required: raise instead of returning ``(0, 1)`` when no job can be formed (the CLI's
            ``--distributed``).
        **kwargs: more arguments of ``jax.distributed.initialize`` (``local_device_ids``,
            ``initialization_timeout``, ...).

    Returns:
        ``(process_index, process_count)``.

    Raises:
        ConfigError: ``required`` and no job can be formed (the message names what to set), a
            setting is malformed, JAX already started (the job must be joined first), or the
            coordinator could not be reached.

    Examples:
        >>> initialize_distributed(num_processes=1)  # one process: nothing to join
        (0, 1)
    """
    from synprune_jax.config import ConfigError

    state = _distributed_state()
    if state.client is not None:
        return int(state.process_id), int(state.num_processes)
    environment = distributed_settings()
    coordinator_address = coordinator_address or environment[0]
    num_processes = environment[1] if num_processes is None else num_processes
    process_id = environment[2] if process_id is None else process_id
    if num_processes == 1:
        return 0, 1
    if getattr(jax.config, "jax_cpu_collectives_implementation", None) is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    given = (coordinator_address, num_processes, process_id)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            **kwargs,
        )
    except (ValueError, TypeError) as error:  # a setting neither given nor detected, or invalid
        if not required and given == (None, None, None):
            return 0, 1  # no job: one process
        missing = [
            name for name, value in zip(DISTRIBUTED_VARIABLES, given, strict=True) if value is None
        ]
        if missing:
            raise ConfigError(
                f"no distributed job can be formed: {', '.join(missing)} not set and no "
                "cluster detected (SLURM srun, Open MPI mpirun, a Cloud TPU pod); set "
                "JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
                "JAX_PROCESS_ID on every process"
            ) from None
        raise ConfigError(f"cannot form the distributed job: {error}") from None
    except RuntimeError as error:
        if "must be called before" not in str(error):  # the coordinator did not answer
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(
                f"could not join the distributed job at {coordinator_address} as process "
                f"{process_id} of {num_processes} ({first}): start every process, and check "
                "the address and that its port is open"
            ) from None
        if not required and given == (None, None, None):  # JAX started, knows its processes
            return jax.process_index(), jax.process_count()
        raise ConfigError(
            "the distributed job must be joined before JAX starts: call "
            "initialize_distributed() before any other JAX call"
        ) from None
    state = _distributed_state()
    if state.client is None:  # jax.distributed.initialize stood in for (tests)
        return process_id or 0, num_processes or 1
    return int(state.process_id), int(state.num_processes)


def all_processes(flag: bool) -> bool:
    """Whether ``flag`` is true on every process of the job (a collective: every process must
    call it); ``flag`` itself in one process."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([bool(flag)]))
    return bool(np.all(flags))


def barrier(name: str) -> None:
    """Waits until every process of the job reaches the barrier ``name`` (nothing in one
    process). Every process must pass the same barriers in the same order."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def gather_to_host(tree: PyTree) -> PyTree:
    """NumPy copy of a (possibly multi-process) global pytree, on every process.

    Single process: ``jax.device_get``. In a job of several processes each leaf that spans
    devices of other processes is all-gathered first
    (``multihost_utils.process_allgather(..., tiled=True)``; a collective: every process must
    call it with the same tree); a leaf this process holds entirely (fully addressable, or a
    NumPy value) is copied as it is.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return multihost_utils.process_allgather(leaf, tiled=True)
        return jax.device_get(leaf)

    return jax.tree_util.tree_map(one, tree)


def place(tree: PyTree, shardings: PyTree) -> PyTree:
    """``tree`` on ``shardings`` (a sharding per leaf, e.g. a compiled program's
    ``input_shardings``): ``jax.device_put`` in one process. In a job of several processes a
    leaf already spanning the job's devices is resharded; any other (NumPy, a typed key or a
    process-local array, the same value on every process) is cut into the shards this process
    holds, with no communication; a leaf whose sharding is ``None`` (an input the program
    drops) is left as it is."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(leaf, sharding):
        if sharding is None:  # an input the compiled program does not use
            return leaf
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                return leaf
            return jax.jit(lambda value: value, out_shardings=sharding)(leaf)
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))  # a key's bits, wrapped on the devices
            bits = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
            return jax.random.wrap_key_data(bits, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree, shardings)
