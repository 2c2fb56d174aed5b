"""Host loop: compile once, scan chunks of generations, log, checkpoint, resume.

The runner drives any object with the :class:`Algorithm` protocol (evosax's shape: static
structure in the object, traced hyper-parameters passed to every call)::

    class Algorithm(Protocol):
        default_hyper: Hyper                                    # a pytree of numeric scalars
        def init(self, key, hyper) -> State
        def step(self, key, state, hyper) -> tuple[State, dict[str, jax.Array]]   # scalar metrics

``State`` is a pytree (a ``flax.struct`` dataclass or NamedTuple) with an int32 scalar field
``generation`` and only numeric / bool array leaves (no PRNG keys).

Determinism. Every key derives from ``RunConfig.seed`` alone:

* init key: ``fold_in(key(seed), 2**31 - 1)`` (a generation index a run never reaches);
* the step that turns generation ``g`` into ``g + 1`` gets ``fold_in(key(seed), g)``, computed
  inside the compiled scan from ``state.generation``.

So results do not depend on ``chunk_size``, on checkpoint placement, or on resuming. The runner
owns the counter: after each step it sets ``generation`` to the input generation + 1, whatever
``step`` returned for it.

One loop. :func:`run_loop` is the only host loop: :func:`run` calls it for one run (seed and
hyper-parameters are arguments of the compiled program, as float32 / int32 scalars),
:func:`synprune_jax.sweeps.sweep` for a group of runs stacked on a leading run axis
(``jit(vmap(chunk))``, seeds and hyper-parameters traced). It compiles ``init`` and one chunk
(``jit`` of a ``lax.scan`` over ``chunk_size`` steps) ahead of time, plus one shorter final chunk
when the generations left are not a multiple of ``chunk_size``; restores, writes metrics and
checkpoints through :class:`~synprune_jax.rundir.RunDirectory` and shows progress. The files are
described in :mod:`synprune_jax.rundir`. A single run's compiled programs are kept in the process
(the last :data:`PROGRAMS_KEPT`, keyed by the algorithm's value, the hyper-parameters' structure
and dtypes, the chunk length and ``jax_disable_most_optimizations``): another seed, other
hyper-parameter values, a rerun or a resume of the same run compiles nothing again, and with JAX's
persistent compilation cache (on in the CLI) neither does a new process.

Many processes. In a ``jax.distributed`` job (:func:`~synprune_jax.sharding.initialize_distributed`,
``synprune run --distributed``) every process calls :func:`run` alike and runs the same compiled
programs on the job's global mesh (a task sharded over every process's devices). Host values
(seed, hyper-parameters, the init key) enter on the programs' input shardings, each chunk's
metrics are read back on every process, and a resume restores each process's shards of the
state the compiled chunk wants. Process 0 alone writes the metrics, ``run_config.json``,
``timing.json`` and the lock; checkpoints are saved and restored by all processes together
(orbax's multi-process saves, still synchronous), so the run directory must lie on a file system
every process sees. A stop signal received by any process stops all of them after the same chunk.
Groups of runs (:class:`_Batched`, sweeps) run in one process.

Example:
    >>> import jax, tempfile
    >>> from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    >>> from synprune_jax.archives import GridSpec
    >>> from synprune_jax.tasks import KinematicArm
    >>> algorithm = MapElites(MapElitesConfig(batch_size=8, archive=GridSpec((0.0, 0.0),
    ...     (1.0, 1.0), (4, 4))), KinematicArm(num_joints=3, genotype="mlp"))
    >>> state, metrics = run(algorithm, tempfile.mkdtemp(), RunConfig(num_generations=4,
    ...     chunk_size=2, progress=False))
    >>> metrics["generation"].tolist()
    [1, 2, 3, 4]
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import math
import os
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import checkpoint as checkpoint_lib
from synprune_jax.rundir import (
    MACHINE_FAULTS,
    METRICS_FORMATS,
    RunDirectory,
    RunLock,
    check_room,
    read_metrics,
    write_json,
)
from synprune_jax.sharding import all_processes, barrier, gather_to_host, is_primary, place
from synprune_jax.trees import strong_types

PyTree = Any
State = Any

INIT_KEY_DATA = 0x7FFFFFFF  # == -1 & 0x7fffffff; fold_in data for the init key
_POSTFIX_PREFERRED = ("qd_score", "coverage", "max_fitness")


class Algorithm(Protocol):
    """What :func:`run` needs from an algorithm."""

    @property
    def default_hyper(self) -> PyTree: ...

    def init(self, key: jax.Array, hyper: PyTree) -> State: ...

    def step(
        self, key: jax.Array, state: State, hyper: PyTree
    ) -> tuple[State, dict[str, jax.Array]]: ...


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Host-loop settings.

    Attributes:
        num_generations: total generations of the run (a resumed run continues up to it).
        seed: non-negative int; the only source of randomness (see module docstring).
        chunk_size: generations per compiled ``lax.scan``; also the logging / progress granularity.
        checkpoint_every: generations between checkpoints, rounded *up* to a multiple of
            ``chunk_size`` (checkpoints can only be taken between chunks); see
            :attr:`checkpoint_interval`. A checkpoint is also written at the end.
        metrics_format: ``"csv"`` or ``"jsonl"``.
        progress: show a tqdm progress bar (tqdm also hides it when stderr is not a TTY).
        keep_checkpoints: the most recent checkpoints kept (older ones are deleted); a resume
            falls back to the newest intact one when the latest is damaged.

    Examples:
        >>> config = RunConfig(num_generations=10, chunk_size=4)  # chunks of 4, 4 and 2 generations
        >>> config.checkpoint_interval  # checkpoint_every rounded to whole chunks
        52
    """

    num_generations: int
    seed: int = 0
    chunk_size: int = 10
    checkpoint_every: int = 50
    metrics_format: Literal["csv", "jsonl"] = "csv"
    progress: bool = True
    keep_checkpoints: int = 2

    def __post_init__(self):
        for name in ("num_generations", "chunk_size", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"RunConfig.{name} must be a positive int, got {value!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"RunConfig.seed must be an int in [0, 2**32), got {self.seed!r}")
        if self.metrics_format not in METRICS_FORMATS:
            raise ValueError(
                f"RunConfig.metrics_format must be one of {METRICS_FORMATS}, "
                f"got {self.metrics_format!r}"
            )
        if not isinstance(self.progress, bool):
            raise ValueError(f"RunConfig.progress must be a bool, got {self.progress!r}")

    @property
    def checkpoint_interval(self) -> int:
        """``checkpoint_every`` rounded up to a multiple of ``chunk_size``."""
        return math.ceil(self.checkpoint_every / self.chunk_size) * self.chunk_size


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# --------------------------------------------------------------------------------------------
# Keys and the compiled chunk.


def init_key(seed: int) -> jax.Array:
    """The key passed to ``algorithm.init`` for ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), INIT_KEY_DATA)


def generation_key(seed: int, generation) -> jax.Array:
    """The key for the step that turns ``generation`` into ``generation + 1``."""
    return jax.random.fold_in(jax.random.key(seed), generation)


def _replace_generation(state: State, generation: jax.Array) -> State:
    if hasattr(state, "replace"):  # flax.struct dataclass
        return state.replace(generation=generation)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.replace(state, generation=generation)
    if hasattr(state, "_replace"):  # NamedTuple
        return state._replace(generation=generation)
    raise TypeError(f"cannot set `generation` on a state of type {type(state).__name__}")


def scan_generations(step: Callable, seed, state: State, length: int):
    """``length`` generations of ``step`` in one ``lax.scan``, with the runner's key schedule.

    The step that turns generation ``g`` into ``g + 1`` gets ``generation_key(seed, g)``; the
    counter is then set to ``g + 1`` whatever ``step`` returned for it. This is the body of every
    compiled chunk (:func:`run_loop`), so a run gives the same numbers however it is driven.

    Args:
        step: ``(key, state) -> (state, {name: scalar})``, ``key`` a typed PRNG key.
        seed: int or uint32 scalar (traced is fine, e.g. under ``vmap``).
        state: the state at some generation ``g``: a ``flax.struct`` dataclass, dataclass or
            NamedTuple with an int scalar field ``generation``.
        length: number of generations (static).

    Returns:
        ``(state, (generations, metrics))``: the state at ``g + length``, ``generations``
        ``[length]`` (``g + 1, ..., g + length``, the dtype of ``state.generation``) and
        ``metrics`` ``{name: [length]}``, each metric stacked over the generations.

    Raises:
        TypeError: ``step`` does not return a dict of metrics, or the state has no way to
            replace ``generation`` (at trace time).
        ValueError: a metric is not a scalar (at trace time).

    Examples:
        >>> from typing import NamedTuple
        >>> class State(NamedTuple):
        ...     generation: jax.Array
        ...     total: jax.Array
        >>> def step(key, state):  # adds 1 each generation; the runner advances `generation`
        ...     total = state.total + 1.0
        ...     return state._replace(total=total), {"total": total}
        >>> start = State(generation=jnp.int32(5), total=jnp.float32(0.0))
        >>> state, (generations, metrics) = scan_generations(step, 0, start, 3)
        >>> generations.tolist(), metrics["total"].tolist(), int(state.generation)
        ([6, 7, 8], [1.0, 2.0, 3.0], 8)
    """

    def body(state, _):
        generation = state.generation
        new_state, metrics = step(generation_key(seed, generation), state)
        next_generation = jnp.asarray(generation + 1, dtype=generation.dtype)
        new_state = strong_types(_replace_generation(new_state, next_generation))
        if not isinstance(metrics, dict):
            raise TypeError(f"step must return (state, dict of metrics), got {type(metrics)}")
        scalars = {}
        for name, value in metrics.items():
            value = jnp.asarray(value)
            if value.ndim != 0:
                raise ValueError(f"metric {name!r} must be a scalar, got shape {value.shape}")
            scalars[str(name)] = value
        return new_state, (next_generation, scalars)

    return jax.lax.scan(body, state, None, length=length)


def check_state(abstract_state: PyTree) -> None:
    """Raises ``TypeError`` unless the state has an int scalar ``generation`` and no PRNG key."""
    generation = getattr(abstract_state, "generation", None)
    if generation is None:
        raise TypeError("the algorithm state must have a `generation` field (int32 scalar)")
    if generation.shape != () or not jnp.issubdtype(generation.dtype, jnp.integer):
        raise TypeError(
            f"state.generation must be an integer scalar, got {generation.dtype}{generation.shape}"
        )
    for leaf in jax.tree_util.tree_leaves(abstract_state):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise TypeError(
                "the state holds a PRNG key; keys are derived from seed + generation by the "
                "runner and must not be stored (they would not checkpoint portably)"
            )


def abstract_state(algorithm: Algorithm, hyper: PyTree | None = None) -> PyTree:
    """The state's shapes and dtypes (``jax.eval_shape`` of ``init``; compiles nothing)."""
    hyper = algorithm.default_hyper if hyper is None else hyper
    return jax.eval_shape(lambda key: strong_types(algorithm.init(key, hyper)), init_key(0))


# --------------------------------------------------------------------------------------------
# The loop.


def stack(trees: Sequence[PyTree]) -> PyTree:
    """Stacks pytrees of scalars / arrays on a new leading axis (float64 -> float32,
    int64 -> int32)."""

    def one(*leaves):
        array = np.stack([np.asarray(leaf) for leaf in leaves])
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64:
            array = array.astype(np.int32)
        return array

    return jax.tree_util.tree_map(one, *trees)


def hyper_arguments(hyper: PyTree) -> PyTree:
    """``hyper`` as the compiled programs take it: NumPy scalars, float64 -> float32 and
    int64 -> int32 (one row of :func:`stack`, as a sweep passes it).

    Example:
        >>> hyper_arguments({"sigma": 0.05})["sigma"].dtype
        dtype('float32')
    """
    return jax.tree_util.tree_map(lambda leaf: leaf[0], stack([hyper]))


def _pad(tree: PyTree, count: int) -> PyTree:
    """Appends ``count`` copies of row 0 to every leaf."""
    if count == 0:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: np.concatenate([np.asarray(leaf)] + [np.asarray(leaf)[:1]] * count), tree
    )


def _postfix(rows: dict[str, np.ndarray]) -> dict[str, str]:
    names = [name for name in _POSTFIX_PREFERRED if name in rows]
    if not names:
        names = [name for name in rows if name != "generation"][:3]
    return {name: f"{float(rows[name][-1]):.4g}" for name in names}


# Compiled programs of recent single runs, keyed by what they are built from. A rerun, a resume or
# another seed of the same algorithm and hyper-parameters in the same process reuses them.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
PROGRAMS_KEPT = 8


def _reuse(key, build: Callable):
    """``build()``, or the program an earlier call built under an equal ``key`` (the last
    :data:`PROGRAMS_KEPT` are kept; an unhashable or uncomparable key is never cached)."""
    try:
        program = _PROGRAMS.pop(key, None)
    except (TypeError, ValueError):  # an algorithm holding arrays in compared fields
        return build()
    if program is None:
        program = build()
    _PROGRAMS[key] = program
    while len(_PROGRAMS) > PROGRAMS_KEPT:
        _PROGRAMS.popitem(last=False)
    return program


class _Single:
    """One run: the seed and the hyper-parameters are arguments of the compiled programs (a run
    that differs only in their values reuses the program, and the persistent compilation cache
    serves it across processes)."""

    batched = False

    def __init__(self, algorithm, seed: int, hyper):
        self.algorithm = algorithm
        self.key = init_key(seed)
        self.seed = np.uint32(seed)
        self.hyper_args = hyper_arguments(hyper)
        self.identity = (
            algorithm,
            jax.tree_util.tree_structure(self.hyper_args),
            tuple(
                (leaf.shape, leaf.dtype.name) for leaf in jax.tree_util.tree_leaves(self.hyper_args)
            ),
            jax.config.read("jax_disable_most_optimizations"),
        )
        self._abstract = None

    def abstract(self):
        """The state's shapes (traced once: the room check and the loop both need them)."""
        if self._abstract is None:
            self._abstract = abstract_state(self.algorithm, self.hyper_args)
        return self._abstract

    def compile_init(self):
        def build():
            init = lambda key, hyper: strong_types(self.algorithm.init(key, hyper))
            return jax.jit(init).lower(self.key, self.hyper_args).compile()

        compiled = _reuse(("init", *self.identity), build)
        if jax.process_count() == 1:
            return lambda: compiled(self.key, self.hyper_args)
        # A job of several processes: every input on the program's own (global) shardings
        return lambda: compiled(*place((self.key, self.hyper_args), compiled.input_shardings[0]))

    def _compile_chunk(self, length: int, abstract):
        def build():
            def chunk(state, seed, hyper):
                step = lambda key, state: self.algorithm.step(key, state, hyper)
                return scan_generations(step, seed, state, length)

            return jax.jit(chunk).lower(abstract, self.seed, self.hyper_args).compile()

        return _reuse(("chunk", *self.identity, length), build)  # abstract: from identity

    def compile_chunk(self, length: int, abstract):
        compiled = self._compile_chunk(length, abstract)
        # A restored checkpoint lives on the default device; a program that spans a mesh (a task
        # sharded over devices) wants its state there. A no-op when it already is.
        sharding = compiled.input_shardings[0][0]
        if jax.process_count() == 1:
            return lambda state: compiled(
                jax.device_put(state, sharding), self.seed, self.hyper_args
            )
        # A job of several processes: the state (init's output, the last chunk's, or restored
        # on these shardings) spans every process; the seed and the hyper-parameters, host
        # values equal on every process, are placed on the program's shardings
        seed, hyper = place((self.seed, self.hyper_args), compiled.input_shardings[0][1:])
        return lambda state: compiled(place(state, sharding), seed, hyper)

    def placed_abstract(self, length: int, abstract):
        """``abstract`` with the shardings the compiled chunk of ``length`` generations wants
        for its state (what a restore in a job of several processes reads into)."""
        shardings = self._compile_chunk(length, abstract).input_shardings[0][0]
        return jax.tree_util.tree_map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract,
            shardings,
        )

    def restore(self, directories, generation, abstract):
        return checkpoint_lib.restore(directories[0].checkpoint_dir, generation, abstract)

    def take(self, tree, index: int):
        del index
        return tree


class _Batched:
    """A group of runs stacked on a leading run axis, split over ``mesh`` (``None``: one
    device); seeds and hyper-parameters are traced, padded with copies of the first run up to
    ``size`` runs (at least), then to a multiple of the device count. XLA may round differently
    for another run-axis length, so a group run in parts gives the numbers of the whole group when
    every part is padded to the same ``size``."""

    batched = True

    def __init__(
        self,
        algorithm,
        seeds: Sequence[int],
        hypers: Sequence[PyTree],
        mesh=None,
        *,
        size: int = 0,
    ):
        self.algorithm = algorithm
        self.num_devices = 1 if mesh is None else int(mesh.devices.size)
        self.padding = max(size - len(seeds), 0)
        self.padding += (-(len(seeds) + self.padding)) % self.num_devices
        self.put: Callable[[Any], Any]
        self.shardings: dict[str, Any]
        if mesh is None:
            self.put, self.shardings = jax.device_put, {}
        else:
            from synprune_jax import sharding

            lead = sharding.leading_axis_sharding(mesh)  # every leaf split along the run axis
            self.put = lambda tree: sharding.shard_leading_axis(tree, mesh)
            self.shardings = {"in_shardings": lead, "out_shardings": lead}
        self.seeds = self.put(_pad(np.asarray(seeds, np.uint32), self.padding))
        self.hypers = self.put(_pad(stack(hypers), self.padding))

    def _init_one(self, seed, hyper):
        return strong_types(self.algorithm.init(init_key(seed), hyper))

    def abstract(self):
        one = lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
        return jax.eval_shape(
            self._init_one, one(self.seeds), jax.tree_util.tree_map(one, self.hypers)
        )

    def compile_init(self):
        compiled = (
            jax.jit(jax.vmap(self._init_one), **self.shardings)
            .lower(self.seeds, self.hypers)
            .compile()
        )
        return lambda: compiled(self.seeds, self.hypers)

    def compile_chunk(self, length: int, abstract):
        def chunk(seed, hyper, state):
            step = lambda key, state: self.algorithm.step(key, state, hyper)
            return scan_generations(step, seed, state, length)

        size = len(self.seeds)
        batched = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct((size, *leaf.shape), leaf.dtype), abstract
        )
        compiled = (
            jax.jit(jax.vmap(chunk), **self.shardings)
            .lower(self.seeds, self.hypers, batched)
            .compile()
        )
        return lambda states: compiled(self.seeds, self.hypers, states)

    def restore(self, directories, generation, abstract):
        states = [
            checkpoint_lib.restore(d.checkpoint_dir, generation, abstract) for d in directories
        ]
        return self.put(_pad(jax.device_get(stack(states)), self.padding))

    def take(self, tree, index: int):
        return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def _first_generation(state: State) -> int:
    """``state.generation`` (a group's first run's) as an int, read from this process's own
    copy (no communication, also in a job of several processes)."""
    leaf = state.generation
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_shards[0].data
    return int(np.asarray(jax.device_get(leaf)).reshape(-1)[0])


class Stopped(Exception):
    """A run stopped at SIGTERM or a first Ctrl-C: it finished its chunk and wrote a checkpoint
    of ``generation``, so a resume continues it to the result of an uninterrupted run.

    Raised by :func:`run_loop` (so by :func:`run` and :func:`~synprune_jax.sweeps.sweep`) when
    the signal arrives (in the main thread) before the run's last chunk has finished.

    Args:
        generation: the generation checkpointed.
        signal_name: the signal that stopped the run.
        run_dirs: the run directories.

    Attributes:
        generation: the generation checkpointed.
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
        run_dirs: the run directories, to resume (a list).

    Examples:
        >>> stop = Stopped(20, "SIGTERM", ["runs/a"])
        >>> print(stop)
        stopped by SIGTERM at generation 20 after writing a checkpoint of it (runs/a)
        >>> stop.generation, stop.signal_name, stop.run_dirs
        (20, 'SIGTERM', ['runs/a'])
    """

    def __init__(self, generation: int, signal_name: str, run_dirs: Sequence[str]):
        self.generation, self.signal_name, self.run_dirs = generation, signal_name, list(run_dirs)
        super().__init__(
            f"stopped by {signal_name} at generation {generation} after writing a "
            f"checkpoint of it ({', '.join(self.run_dirs)})"
        )


def _first_signal(name: str | None) -> str | None:
    """The stop signal any process of the job received (SIGTERM before SIGINT), or ``None``
    (a collective: every process calls it after each chunk)."""
    from jax.experimental import multihost_utils

    names = (None, *_StopRequests.SIGNALS)
    codes = multihost_utils.process_allgather(np.asarray([names.index(name)], np.int32))
    return names[int(np.max(codes))]


class _StopRequests:
    """Within: SIGTERM and a first SIGINT (Ctrl-C) are recorded in ``signal_name`` instead of
    stopping the process; a second SIGINT raises ``KeyboardInterrupt`` at once. Only the main
    thread can install handlers; elsewhere nothing changes."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, number, frame):
        name = signal.Signals(number).name
        if self.signal_name == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.signal_name = self.signal_name or name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False


class RunFault(OSError):
    """The machine failed a run mid-way (a full disk, a quota, an I/O error, a read-only file
    system). The message names the last checkpoint, from which a resume continues the run to
    the result of an uninterrupted one.

    Raised by :func:`run_loop` (so by :func:`run` and :func:`~synprune_jax.sweeps.sweep`) from
    an ``OSError`` whose ``errno`` is one of :data:`~synprune_jax.rundir.MACHINE_FAULTS`, met
    while writing metrics or checkpoints; that error is chained as ``__cause__``.

    Args:
        error: the OS error.
        generation: the generation of the last checkpoint written, or ``None``.
        run_dirs: the run directories.

    Attributes:
        errno: the OS error's ``errno``.
        strerror: the whole message (also ``str()``): the OS's text, the file, the last
            checkpoint and what to do; ``filename`` is ``None``.
        generation: the generation of the last checkpoint written (``None``: none yet, a resume
            starts over).
        run_dirs: the run directories (a list).

    Examples:
        >>> import errno
        >>> error = OSError(errno.ENOSPC, "No space left on device", "runs/a/metrics.csv")
        >>> fault = RunFault(error, generation=50, run_dirs=["runs/a"])
        >>> print(fault)
        No space left on device (runs/a/metrics.csv) during the run; the last checkpoint is
        generation 50 (runs/a): free space or fix the disk, then resume from it
        >>> fault.errno == errno.ENOSPC, fault.generation, fault.run_dirs
        (True, 50, ['runs/a'])
    """

    def __init__(self, error: OSError, generation: int | None, run_dirs: Sequence[str]):
        self.generation, self.run_dirs = generation, list(run_dirs)
        where = f" ({error.filename})" if error.filename else ""
        last = (
            f"the last checkpoint is generation {generation}"
            if generation is not None
            else "no checkpoint was written yet"
        )
        super().__init__(
            error.errno,
            f"{error.strerror}{where} during the run; {last} "
            f"({', '.join(self.run_dirs)}): free space or fix the disk, "
            "then resume from it",
        )

    def __str__(self) -> str:
        return str(self.strerror)


class CheckpointsDamaged(OSError):
    """A run has checkpoints, but none of them can be restored.

    Raised by :func:`run` and :func:`~synprune_jax.sweeps.sweep` on resuming, and by
    :func:`restore_latest`, when every checkpoint step fails to restore or holds another
    generation than its name says; the message lists each step and why, and nothing is
    deleted. (When only newer ones are damaged the run resumes from the newest intact one, with
    a warning.)

    Examples:
        >>> import os, tempfile
        >>> from typing import NamedTuple
        >>> class State(NamedTuple):
        ...     generation: jax.Array
        >>> class Idle:  # a toy algorithm: its state is the generation counter
        ...     default_hyper = {}
        ...     def init(self, key, hyper):
        ...         return State(generation=jnp.int32(0))
        ...     def step(self, key, state, hyper):
        ...         return state, {}
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     os.makedirs(os.path.join(run_dir, "checkpoints", "3"))  # step 3, its files lost
        ...     restore_latest(Idle(), run_dir, RunConfig(num_generations=3))
        Traceback (most recent call last):
            ...
        synprune_jax.runner.CheckpointsDamaged: no checkpoint of the run can be restored
        (...checkpoints: step 3 (...)); nothing was deleted: restore a backup of the directory,
        or move it away and start the run again
    """


def _restore_intact(program, directories, abstract, *, move_aside: bool = True):
    """``(step, state)`` of the newest checkpoint step that every run of ``directories`` holds and
    that restores (a damaged newer one is skipped with a warning and, with ``move_aside``, moved
    to ``damaged_checkpoints/``); ``(None, None)`` when there is no checkpoint. Raises
    :class:`CheckpointsDamaged` when there are some but none restores."""
    steps = [set(checkpoint_lib.all_steps(d.checkpoint_dir)) for d in directories]
    if not any(steps):
        return None, None
    if any(s != steps[0] for s in steps):
        raise ValueError(
            f"the runs of a group are at different checkpoints {[sorted(s) for s in steps]}"
        )
    skipped, damaged = [], []
    with checkpoint_lib.quiet_orbax():  # orbax logs each unreadable file; the summary says it
        for step in sorted(steps[0], reverse=True):
            try:
                state = program.restore(directories, step, abstract)
                found = _first_generation(state)
                problem = None if found == step else f"step {step} (holds generation {found})"
            except Exception as error:  # noqa: BLE001 - orbax raises many types for a bad file
                problem = f"step {step} ({type(error).__name__}: {str(error)[:120]})"
            # a job of several processes: a step counts only where every process restored it
            if not all_processes(problem is None) and problem is None:
                problem = f"step {step} (another process could not restore it)"
            if problem is not None:
                skipped.append(problem)
                damaged.append(step)
                continue
            if skipped and move_aside and is_primary():  # kept, not deleted; the run can write
                for directory in directories:
                    aside = directory.path / "damaged_checkpoints"
                    aside.mkdir(exist_ok=True)
                    for bad in damaged:
                        os.replace(directory.checkpoint_dir / str(bad), aside / str(bad))
            if skipped:
                moved = " (moved to damaged_checkpoints/)" if move_aside else ""
                warnings.warn(
                    f"{directories[0].checkpoint_dir}: skipped damaged checkpoint(s) "
                    f"{'; '.join(skipped)}{moved}; resuming from step {step}",
                    stacklevel=3,
                )
            return step, state
    raise CheckpointsDamaged(
        f"no checkpoint of the run can be restored ({directories[0].checkpoint_dir}: "
        f"{'; '.join(skipped)}); nothing was deleted: restore a backup of the directory, or "
        "move it away and start the run again"
    )


def restore_latest(
    algorithm: Algorithm,
    run_dir: str | os.PathLike,
    run_config: RunConfig,
    *,
    hyper: PyTree | None = None,
) -> tuple[int, State]:
    """Reads a run's newest intact checkpoint without writing anything (a damaged newer one is
    skipped with a warning and left where it is).

    Returns:
        ``(generation, state)``.

    Raises:
        FileNotFoundError: the run has no checkpoint.
        CheckpointsDamaged: it has some, but none restores.
    """
    hyper = algorithm.default_hyper if hyper is None else hyper
    program = _Single(algorithm, run_config.seed, hyper)
    directory = RunDirectory(run_dir, run_config)
    step, state = _restore_intact(program, [directory], program.abstract(), move_aside=False)
    if step is None:
        raise FileNotFoundError(
            errno.ENOENT, "no checkpoint in the run", str(directory.checkpoint_dir)
        )
    return step, state


def run_loop(
    program,
    directories: Sequence[RunDirectory],
    run_config: RunConfig,
    *,
    resume: bool,
    on_chunk: Callable | None = None,
    progress: bool = False,
    description: str | None = None,
) -> tuple[State, dict]:
    """The host loop shared by :func:`run` and sweeps (see the module docstring).

    Args:
        program: ``_Single`` (one run) or ``_Batched`` (a group on a run axis).
        directories: one :class:`~synprune_jax.rundir.RunDirectory` per run, in run-axis order.
        run_config: the runs' shared settings (``num_generations``, ``chunk_size``, ...).
        resume: continue from the latest checkpoint (all runs must be at the same one); else
            start afresh.
        on_chunk: host callback ``on_chunk(state, rows)`` after each chunk of a single run.
        progress: show a tqdm bar.
        description: the bar's label.

    Returns:
        ``(state, timing)``: the final state (``[R + padding, ...]`` leaves for a group) and a
        timing dict (``init_compile_s``, ``chunk_compile_s`` per chunk length,
        ``seconds_per_generation``: median over full chunks after the first, ``wall_s``,
        ``start_generation``, ``end_generation``).

    Raises:
        Stopped: SIGTERM or a first Ctrl-C arrived (in the main thread): the current chunk was
            finished and checkpointed. A second Ctrl-C raises ``KeyboardInterrupt`` at once.
    """
    abstract = program.abstract()
    check_state(abstract)
    timing: dict[str, Any] = {
        "backend": jax.default_backend(),
        "init_compile_s": None,
        "chunk_compile_s": {},
    }
    processes = jax.process_count()
    if processes > 1 and program.batched:
        raise ValueError(
            "a group of runs (a sweep) runs in one process; in a distributed job run one "
            "experiment at a time, or give each process its own sweep"
        )
    target = abstract
    if resume and processes > 1:  # each process reads its shards of the chunk's state
        started = time.perf_counter()
        target = program.placed_abstract(run_config.chunk_size, abstract)
        timing["chunk_compile_s"][str(run_config.chunk_size)] = time.perf_counter() - started
    saved_generation, state = (
        _restore_intact(program, directories, target) if resume else (None, None)
    )
    if saved_generation is None:
        started = time.perf_counter()
        init = program.compile_init()
        timing["init_compile_s"] = time.perf_counter() - started
        state = init()
    barrier("synprune_jax.run_loop:restored")  # every process read the directory before it changes
    for directory in directories:
        directory.open(saved_generation)

    assert state is not None  # restored, or made by init
    generation = _first_generation(state)
    end_generation = run_config.num_generations
    timing["start_generation"] = generation
    if generation > end_generation:
        warnings.warn(
            f"{directories[0].path} is already at generation {generation} > "
            f"num_generations={end_generation}; returning it unchanged",
            stacklevel=3,
        )
    interval = run_config.checkpoint_interval
    chunks: dict[int, Callable] = {}
    per_generation: list[float] = []
    bar = None
    if progress and generation < end_generation and is_primary():
        from tqdm.auto import tqdm  # lazy: host only

        bar = tqdm(
            total=end_generation,
            initial=generation,
            unit="gen",
            dynamic_ncols=True,
            desc=description,
            disable=None,
        )
    started_run = time.perf_counter()
    requests = _StopRequests()
    checkpointed, completed = saved_generation, False
    try:
        requests.__enter__()
        while generation < end_generation:
            length = min(run_config.chunk_size, end_generation - generation)
            if length not in chunks:
                started = time.perf_counter()
                chunks[length] = program.compile_chunk(length, abstract)
                compile_s = timing["chunk_compile_s"].get(str(length), 0.0)  # + a restore's
                timing["chunk_compile_s"][str(length)] = compile_s + time.perf_counter() - started
            started = time.perf_counter()
            state, outputs = chunks[length](state)
            generations, metrics = gather_to_host(outputs)  # the chunk's one host round trip
            if length == run_config.chunk_size:
                per_generation.append((time.perf_counter() - started) / length)
            new_generation = generation + length
            stop = requests.signal_name  # read once: a signal arriving later stops the next chunk
            if processes > 1:  # every process stops after the same chunk
                stop = _first_signal(stop)
            save = (
                new_generation // interval > generation // interval
                or new_generation >= end_generation
                or stop is not None
            )
            host_state = jax.device_get(state) if save and program.batched else state
            try:
                for index, directory in enumerate(directories):
                    rows = {"generation": np.asarray(program.take(generations, index), np.int64)}
                    rows.update(
                        (name, np.asarray(program.take(metrics[name], index)))
                        for name in sorted(metrics)
                    )
                    directory.append(rows)
                    if save:
                        directory.save(new_generation, program.take(host_state, index))
            except OSError as error:
                if error.errno not in MACHINE_FAULTS:
                    raise
                raise RunFault(error, checkpointed, [str(d.path) for d in directories]) from error
            if save:
                checkpointed = new_generation
            if bar is not None:
                bar.set_postfix(_postfix(rows), refresh=False)
                bar.update(length)  # refreshes (rate-limited by tqdm)
            generation = new_generation
            if on_chunk is not None:
                on_chunk(state, rows)
            if stop is not None and generation < end_generation:
                raise Stopped(generation, stop, [str(d.path) for d in directories])
        completed = True
    finally:
        requests.__exit__(None, None, None)
        if bar is not None:
            bar.close()
        for directory in directories:
            try:
                directory.close()
            except OSError:  # after a failure (a full disk), the error raised says what happened
                if completed:
                    raise
        steady = per_generation[1:] or per_generation
        timing.update(
            end_generation=generation,
            wall_s=time.perf_counter() - started_run,
            seconds_per_generation=statistics.median(steady) if steady else None,
        )
    return state, timing


def run(
    algorithm: Algorithm,
    run_dir: str | os.PathLike,
    run_config: RunConfig,
    *,
    hyper: PyTree | None = None,
    resume: bool = False,
    on_chunk: Callable[[State, dict[str, np.ndarray]], None] | None = None,
) -> tuple[State, dict[str, np.ndarray]]:
    """Runs ``algorithm`` for ``run_config.num_generations`` generations, logging to ``run_dir``.

    Args:
        algorithm: see :class:`Algorithm`.
        run_dir: output folder (created if missing).
        run_config: see :class:`RunConfig`.
        hyper: the algorithm's hyper-parameters (``None``: ``algorithm.default_hyper``).
        resume: continue from the latest checkpoint in ``run_dir/checkpoints``: metrics rows past
            it (written by a run killed between checkpoints) are dropped, then the run continues
            to ``num_generations``. If the checkpoint is already at (or past) ``num_generations``
            nothing runs and its state is returned. With no checkpoint yet, starts afresh
            (discarding any metrics rows). The seed must match the original run's.
        on_chunk: host callback ``on_chunk(state, rows)`` after each chunk (after its metrics are
            written and any checkpoint saved); ``rows`` is ``{column: [chunk_length]}`` numpy
            (``generation`` plus each metric). An exception it raises stops the run.

    Returns:
        ``(final_state, metrics_history)``, the history being
        :func:`~synprune_jax.rundir.read_metrics` of the run (resumed parts included). In a job
        of several processes (module docstring, "Many processes") every process calls it and
        gets both; the state's arrays span the job
        (:func:`~synprune_jax.sharding.gather_to_host` copies them to each host).

    Raises:
        TypeError: ``run_config`` is not a :class:`RunConfig`; the algorithm's state has no
            integer scalar ``generation`` or holds a PRNG key (:func:`check_state`).
        FileExistsError: ``resume=False`` and ``run_dir`` already holds checkpoints or metrics.
        ValueError: resuming with a different seed or metrics format.
        RunDirectoryBusy: another live process is writing ``run_dir`` (:class:`RunLock`).
        RunDirectoryFull: no room for ``keep_checkpoints`` checkpoints in ``run_dir`` (checked
            before compiling).
        CheckpointsDamaged: resuming, and no checkpoint of ``run_dir`` restores.
        RunFault: the machine failed a write (a full disk, an I/O error) mid-run.
        Stopped: SIGTERM or a first Ctrl-C; the chunk was finished and checkpointed.

    Examples:
        >>> import tempfile
        >>> from flax import struct
        >>> class Count(struct.PyTreeNode):  # a state: the generation counter and a total
        ...     generation: jax.Array
        ...     total: jax.Array
        >>> class Counter:  # a toy algorithm: adds hyper["increment"] every generation
        ...     default_hyper = {"increment": 1.0}
        ...     def init(self, key, hyper):
        ...         return Count(generation=jnp.int32(0), total=jnp.float32(0.0))
        ...     def step(self, key, state, hyper):
        ...         total = state.total + hyper["increment"]
        ...         return state.replace(total=total), {"total": total}
        >>> counter, directory = Counter(), tempfile.TemporaryDirectory()
        >>> config = RunConfig(num_generations=4, chunk_size=2, progress=False)
        >>> state, metrics = run(counter, directory.name, config)  # two chunks of 2
        >>> metrics["generation"].tolist(), metrics["total"].tolist(), float(state.total)
        ([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], 4.0)
        >>> config = RunConfig(num_generations=6, chunk_size=2, progress=False)
        >>> state, metrics = run(counter, directory.name, config, resume=True)  # from 4 to 6
        >>> metrics["total"].tolist()
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        >>> run(counter, directory.name, config)  # resume=False: the directory holds a run
        Traceback (most recent call last):
            ...
        FileExistsError: run directory ... already holds a run (...); pass resume=True to
        continue it, or use a new directory
        >>> directory.cleanup()
    """
    if not isinstance(run_config, RunConfig):
        raise TypeError(f"run_config must be a RunConfig, got {type(run_config).__name__}")
    directory = RunDirectory(run_dir, run_config)
    with RunLock(run_dir):
        directory.check(resume=resume)
        hyper = algorithm.default_hyper if hyper is None else hyper
        program = _Single(algorithm, run_config.seed, hyper)
        check_room(run_dir, program.abstract(), copies=run_config.keep_checkpoints)
        state, timing = run_loop(
            program,
            [directory],
            run_config,
            resume=resume,
            on_chunk=on_chunk,
            progress=run_config.progress,
        )
        if is_primary():
            write_json(directory.path / "timing.json", timing)
    barrier("synprune_jax.run:written")  # the metrics file is complete for every process
    return state, read_metrics(run_dir) if directory.metrics.exists() else {}


__all__ = [
    "Algorithm",
    "CheckpointsDamaged",
    "RunConfig",
    "RunFault",
    "Stopped",
    "abstract_state",
    "check_state",
    "generation_key",
    "hyper_arguments",
    "init_key",
    "read_metrics",
    "restore_latest",
    "run",
    "run_loop",
    "scan_generations",
    "stack",
    "strong_types",
]
