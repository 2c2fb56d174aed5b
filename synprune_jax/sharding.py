"""Devices: meshes, population sharding, chunked evaluation, archive placement, multi-host.

Everything here wraps the engine from the outside; algorithms and tasks stay unaware of devices.
:func:`make_mesh` builds a one-axis mesh (axis type Auto, so GSPMD propagates shardings through
one-device code); :class:`ShardedTask` splits a task's population axis over it;
:class:`ChunkedTask` evaluates a population a chunk at a time; :func:`place_archive` replicates
(default) or shards an archive; :func:`initialize_distributed` joins a multi-host job.
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
    """The device count a config's ``devices`` option stands for: ``"auto"`` is every local
    device (on a CPU, those ``synprune run`` created, one per usable core), at most
    ``population`` (the individuals one evaluation splits, when a positive int); any other value
    is returned as given (:func:`devices_mesh` validates it).

    Example:
        >>> resolve_devices(3), resolve_devices("auto", population=1)
        (3, 1)
    """
    if devices != AUTO:
        return devices
    count = jax.local_device_count()
    if isinstance(population, int) and not isinstance(population, bool) and population >= 1:
        count = min(count, population)
    return count


def devices_mesh(devices: Any, option: str = "devices") -> Mesh | None:
    """The mesh of a config's ``devices`` option (``task.devices``, ``train.devices``):
    ``None`` for 1, else a one-axis mesh over the first ``devices`` local devices.

    Raises:
        ConfigError: ``devices`` is not a positive int, or more than the local devices (with
            how to create CPU devices).
    """
    from synprune_jax.config import ConfigError

    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"{option} must be a positive int, got {devices!r}")
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


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs,
) -> tuple[int, int]:
    """Joins a multi-host job (``jax.distributed.initialize``); returns ``(index, count)``.

    Call it once per process, before any other JAX call. On Cloud TPU pods and on SLURM / Open
    MPI clusters the arguments are auto-detected (call it with none); elsewhere pass the
    coordinator's ``host:port`` and the process count / index (or set
    ``SYNPRUNE_COORDINATOR``, ``SYNPRUNE_NUM_PROCESSES``, ``SYNPRUNE_PROCESS_ID``). With
    ``num_processes == 1`` (or the environment variable unset on a single machine) nothing is
    initialised and ``(0, 1)`` is returned, so the same script runs on a laptop.

    Extra keyword arguments (e.g. ``local_device_ids``) go to ``jax.distributed.initialize``.
    """
    coordinator_address = coordinator_address or os.environ.get("SYNPRUNE_COORDINATOR")
    if num_processes is None and "SYNPRUNE_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["SYNPRUNE_NUM_PROCESSES"])
    if process_id is None and "SYNPRUNE_PROCESS_ID" in os.environ:
        process_id = int(os.environ["SYNPRUNE_PROCESS_ID"])
    if num_processes == 1:
        return 0, 1
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return jax.process_index(), jax.process_count()


def gather_to_host(tree: PyTree) -> PyTree:
    """NumPy copy of a (possibly multi-host) global pytree, on every process.

    Single process: ``jax.device_get``. Multi-host: arrays that span devices of other processes
    are all-gathered first (``multihost_utils.process_allgather(..., tiled=True)``).
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
