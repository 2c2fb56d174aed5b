"""Orbax checkpoints of algorithm states (host side).

A state is any pytree of numeric / bool arrays (``flax.struct`` dataclasses included). States hold
no PRNG keys: the runner derives every key from ``seed`` and ``state.generation``, so saving the
arrays is enough to resume bit-exactly.

Layout: ``directory/<step>/...`` as written by :class:`orbax.checkpoint.CheckpointManager`, one
item per step saved with ``args.StandardSave`` and read back with ``args.StandardRestore``. Saves
are synchronous (``enable_async_checkpointing=False``): a checkpoint is complete on disk when
:func:`save` returns, which is what a run that may be killed at any moment needs.

In a job of several processes (``jax.distributed``) a :class:`CheckpointWriter` spans them all:
every process calls :meth:`CheckpointWriter.save` with the same global arrays, writes its own
shards, and process 0 (orbax's primary host) writes the metadata and commits the step, with
barriers between; the folder must be on a file system all processes share. Readers
(:func:`all_steps`, :func:`restore`) are each process's own: a restore reads this process's
shards of the target's shardings (an abstract state whose leaves carry global shardings).

Example::

    save("/tmp/run/checkpoints", 50, state)
    step = latest_step("/tmp/run/checkpoints")                       # 50
    abstract = jax.eval_shape(algorithm.init, key)
    state = restore("/tmp/run/checkpoints", step, abstract)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

DEFAULT_MAX_TO_KEEP = 2

#: State fields added after checkpoints were first written, with the value an older checkpoint
#: (which lacks them) restores them to. ``evaluated_at`` (MAP-Elites, GA) and
#: ``best_evaluated_at`` (ES): -1, "evaluation generation unknown".
ADDED_FIELDS: dict[str, int] = {"evaluated_at": -1, "best_evaluated_at": -1}


def _absolute(directory: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(directory))


@contextlib.contextmanager
def quiet_orbax():
    """Within: orbax's log records (absl) below CRITICAL are dropped. Orbax logs every failed
    read or write with a traceback before raising it; the caller reports the raised error."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)


def _manager(directory: str | os.PathLike, *, max_to_keep: int | None, create: bool):
    # Readers use create=False rather than orbax's read_only=True, which only adds log warnings;
    # they never call save, so nothing is written or deleted.
    import orbax.checkpoint as ocp  # lazy: heavy import, host only

    # cleanup_tmp_directories: a save cut short (a full disk, a killed process) leaves
    # `<step>.orbax-checkpoint-tmp*`, removed when the next writer opens the directory
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=create,
        cleanup_tmp_directories=create,
        enable_async_checkpointing=False,
        multiprocessing_options=_multiprocessing_options(ocp, writer=create),
    )
    return ocp.CheckpointManager(_absolute(directory), options=options)


def _multiprocessing_options(ocp, *, writer: bool):
    """Orbax's multi-process settings. A writer spans every process of the job (saves are
    collective: each process writes its shards, process 0 the metadata and the commit, with
    barriers between). A reader is this process's own (steps, restores: no barrier, so a
    process can look at a directory on its own; a restore reads this process's shards of the
    target shardings). One process: orbax's defaults, which it treats alike."""
    if writer or jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions(primary_host=0)
    index = jax.process_index()
    return ocp.options.MultiprocessingOptions(
        primary_host=index,
        active_processes={index},
        barrier_sync_key_prefix=f"synprune_reader_{index}",
    )


class CheckpointWriter:
    """Keeps one ``CheckpointManager`` open for repeated saves (what the runner uses).

    Args:
        directory: checkpoint folder (created if missing).
        max_to_keep: how many of the most recent steps to keep; older ones are deleted.

    Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = DEFAULT_MAX_TO_KEEP):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self._manager = _manager(directory, max_to_keep=max_to_keep, create=True)

    def save(self, step: int, state: PyTree) -> None:
        """Saves ``state`` as ``step`` (blocking). Overwrites nothing: a step that exists raises."""
        import orbax.checkpoint as ocp

        step = int(step)
        if step in self._manager.all_steps():
            raise FileExistsError(
                f"checkpoint step {step} already exists in {self._manager.directory}"
            )
        try:
            with quiet_orbax():
                self._manager.save(step, args=ocp.args.StandardSave(_stand_ins(state)), force=True)
                self._manager.wait_until_finished()
        except Exception as error:
            # the partial save is garbage: free its space now (the steps before are intact)
            for name in os.listdir(self._manager.directory):
                if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    shutil.rmtree(os.path.join(self._manager.directory, name), ignore_errors=True)
            raise storage_error(error, str(self._manager.directory / str(step))) from error

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def storage_error(error: BaseException, path: str) -> BaseException:
    """``error`` as an ``OSError`` with its errno where it reports one of the machine's storage
    (orbax / TensorStore raise ``ValueError("RESOURCE_EXHAUSTED: ... No space left on device
    [os_error_code='28']")`` for a full disk); any other error unchanged."""
    if isinstance(error, OSError):
        return error
    text = str(error)
    code = re.search(r"os_error_code='(\d+)'", text)
    if code is not None:
        number = int(code.group(1))
    elif "RESOURCE_EXHAUSTED" in text:
        number = errno.ENOSPC
    else:
        return error
    return OSError(number, os.strerror(number), path)


def save(
    directory: str | os.PathLike,
    step: int,
    state: PyTree,
    *,
    max_to_keep: int = DEFAULT_MAX_TO_KEEP,
) -> None:
    """Saves ``state`` under ``directory/<step>`` and keeps only the last ``max_to_keep`` steps.

    Args:
        directory: checkpoint folder (created if missing).
        step: non-negative int, usually the number of completed generations.
        state: pytree of arrays (no PRNG keys).
        max_to_keep: most recent steps kept after this save.

    Raises:
        FileExistsError: if ``step`` is already saved there.
    """
    with CheckpointWriter(directory, max_to_keep=max_to_keep) as writer:
        writer.save(step, state)


def latest_step(directory: str | os.PathLike) -> int | None:
    """The largest saved step in ``directory``, or ``None`` if it has none (or does not exist)."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def all_steps(directory: str | os.PathLike) -> list[int]:
    """Every saved step in ``directory``, ascending (empty if none)."""
    if not os.path.isdir(_absolute(directory)):
        return []
    manager = _manager(directory, max_to_keep=None, create=False)
    try:
        return sorted(int(step) for step in manager.all_steps())
    finally:
        manager.close()


def _with_default_sharding(abstract_state: PyTree) -> PyTree:
    """Gives every abstract leaf a sharding (single default device where it has none).

    ``jax.eval_shape`` returns ``ShapeDtypeStruct`` leaves without sharding; orbax wants one to
    know where to place restored arrays.
    """
    device_sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(value):
        if isinstance(value, jax.ShapeDtypeStruct):
            if getattr(value, "sharding", None) is not None:
                return value
            return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=device_sharding)
        if isinstance(value, jax.Array):
            return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
        return value

    return jax.tree_util.tree_map(leaf, abstract_state)


def restore(directory: str | os.PathLike, step: int | None, abstract_state: PyTree) -> PyTree:
    """Restores the state saved as ``step`` (``None``: the latest one).

    Args:
        directory: checkpoint folder.
        step: step to restore, or ``None`` for :func:`latest_step`.
        abstract_state: pytree with the target structure, shapes and dtypes, e.g.
            ``jax.eval_shape(algorithm.init, key)``; concrete arrays work too. A leaf's
            ``sharding`` (a ``jax.ShapeDtypeStruct``'s or an array's) is where it is restored
            to; without one, this process's first device.

    Returns:
        A pytree with the structure of ``abstract_state`` holding the saved arrays. A checkpoint
        written before a field of :data:`ADDED_FIELDS` existed restores that field filled with
        its value there; any other difference of structure raises orbax's error.

    Raises:
        FileNotFoundError: if there is no such checkpoint.
    """
    import orbax.checkpoint as ocp

    if not os.path.isdir(_absolute(directory)):
        raise FileNotFoundError(f"no checkpoint directory at {_absolute(directory)}")
    manager = _manager(directory, max_to_keep=None, create=False)
    try:
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {_absolute(directory)}")
        elif int(step) not in manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint step {step} in {_absolute(directory)}; "
                f"available: {sorted(manager.all_steps())}"
            )
        target = _with_default_sharding(_stand_ins(abstract_state))
        try:
            restored = manager.restore(int(step), args=ocp.args.StandardRestore(target))
        except ValueError as error:
            if "structures do not match" not in str(error):
                raise
            raw = manager.restore(int(step), args=ocp.args.StandardRestore())
            restored = _fill_added_fields(raw, target)
            if restored is None:
                raise
        return _without_stand_ins(restored, abstract_state)
    finally:
        manager.close()


def _stand_ins(tree: PyTree) -> PyTree:
    """``tree`` with each zero-size leaf (e.g. MJX's ``act`` of a model without actuator
    states, ``[..., 0]``) replaced by a one-element zero array of its dtype: orbax cannot save
    zero-size arrays. :func:`_without_stand_ins` undoes it on restore."""

    def one(leaf):
        if math.prod(leaf.shape) != 0:
            return leaf
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,), leaf.dtype)
        return np.zeros((1,), leaf.dtype)

    return jax.tree_util.tree_map(one, tree)


def _without_stand_ins(restored: PyTree, abstract_state: PyTree) -> PyTree:
    """The zero-size leaves of ``abstract_state`` back in place of their stand-ins."""
    return jax.tree_util.tree_map(
        lambda leaf, like: (
            jnp.zeros(like.shape, like.dtype) if math.prod(like.shape) == 0 else leaf
        ),
        restored,
        abstract_state,
    )


def _fill_added_fields(raw: PyTree, target: PyTree) -> PyTree | None:
    """``target``'s structure filled from ``raw`` (orbax's nested dicts and lists), leaves
    named in :data:`ADDED_FIELDS` that ``raw`` lacks filled with their value; ``None`` when
    anything else differs (a missing or extra leaf, another shape or dtype)."""
    from synprune_jax.sharding import place

    leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    used = 0
    values = []
    for path, leaf in leaves:
        node, name = raw, None
        for entry in path:
            name = getattr(entry, "name", getattr(entry, "key", getattr(entry, "idx", None)))
            in_dict = isinstance(node, dict) and name in node
            in_list = isinstance(node, (list, tuple)) and isinstance(name, int) and name < len(node)
            if in_dict or in_list:
                node = node[name]
            else:
                node = None
                break
        if node is None:
            if name not in ADDED_FIELDS:
                return None
            value = np.full(leaf.shape, ADDED_FIELDS[name], leaf.dtype)
        else:
            if tuple(np.shape(node)) != tuple(leaf.shape) or np.dtype(node.dtype) != leaf.dtype:
                return None
            value, used = node, used + 1
        values.append(place(value, leaf.sharding))
    if used != len(jax.tree_util.tree_leaves(raw)):
        return None  # the checkpoint holds leaves the target does not have
    return jax.tree_util.tree_unflatten(treedef, values)
