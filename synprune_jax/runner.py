"""Host loop: compile once, scan chunks of generations, log, checkpoint, resume.

The runner drives any object with the :class:`Algorithm` protocol::

    class Algorithm(Protocol):
        def init(self, key) -> State
        def step(self, key, state) -> tuple[State, dict[str, jax.Array]]   # scalar metrics

``State`` is a pytree (a ``flax.struct`` dataclass or NamedTuple) with an int32 scalar field
``generation`` and only numeric / bool array leaves (no PRNG keys).

Determinism. Every key derives from ``RunConfig.seed`` alone:

* init key: ``fold_in(key(seed), 2**31 - 1)`` (a generation index a run never reaches);
* the step that turns generation ``g`` into ``g + 1`` gets ``fold_in(key(seed), g)``, computed
  inside the compiled scan from ``state.generation``.

So results do not depend on ``chunk_size``, on checkpoint placement, or on resuming. The runner
owns the counter: after each step it sets ``generation`` to the input generation + 1, whatever
``step`` returned for it (an algorithm that increments it itself is unaffected).

Compilation. ``init`` and one chunk function (``jax.jit`` of a ``lax.scan`` over ``chunk_size``
steps) are compiled ahead of time (``jit(...).lower(...).compile()``), once per call to
:func:`run`. When the generations left are not a multiple of ``chunk_size``, the final, shorter
chunk compiles one more program (at most two chunk compilations per call). Compile and steady-state
times go to ``run_dir/timing.json``.

Files in ``run_dir``:

* ``metrics.csv`` or ``metrics.jsonl``: one row per generation, appended and flushed after every
  chunk. Column ``generation`` counts *completed* generations, so rows are numbered ``1..N``; the
  row with ``generation == g`` holds the metrics returned by the step that produced generation
  ``g`` (i.e. the state saved in checkpoint step ``g``). Other columns are the step's metrics in
  sorted order. Floats are written with ``repr`` (exact round trip), bools as 0/1.
* ``checkpoints/<g>``: orbax checkpoints (see :mod:`synprune_jax.checkpoint`), the last two kept.
* ``run_config.json``: the :class:`RunConfig` of the latest call.
* ``timing.json``: compile seconds and steady-state seconds per generation of the latest call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import checkpoint as checkpoint_lib

PyTree = Any
State = Any

INIT_KEY_DATA = 0x7FFFFFFF  # == -1 & 0x7fffffff; fold_in data for the init key
CHECKPOINTS_TO_KEEP = 2
METRICS_FORMATS = ("csv", "jsonl")
_POSTFIX_PREFERRED = ("qd_score", "coverage", "max_fitness")


class Algorithm(Protocol):
    """What :func:`run` needs from an algorithm."""

    def init(self, key: jax.Array) -> State: ...

    def step(self, key: jax.Array, state: State) -> tuple[State, dict[str, jax.Array]]: ...


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
    """

    num_generations: int
    seed: int = 0
    chunk_size: int = 10
    checkpoint_every: int = 50
    metrics_format: Literal["csv", "jsonl"] = "csv"
    progress: bool = True

    def __post_init__(self):
        for name in ("num_generations", "chunk_size", "checkpoint_every"):
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
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(state, generation=generation)
    if hasattr(state, "_replace"):  # NamedTuple
        return state._replace(generation=generation)
    raise TypeError(f"cannot set `generation` on a state of type {type(state).__name__}")


def _strong_types(tree: PyTree) -> PyTree:
    """Drops weak types (e.g. from Python scalars) so the scan carry and AOT signatures agree."""
    return jax.tree_util.tree_map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), tree)


def _make_init(algorithm: Algorithm) -> Callable:
    def init(key):
        return _strong_types(algorithm.init(key))

    return init


def scan_generations(step: Callable, seed, state: State, length: int):
    """``length`` generations of ``step`` in one ``lax.scan``, with the runner's key schedule.

    The step that turns generation ``g`` into ``g + 1`` gets ``generation_key(seed, g)``; the
    counter is then set to ``g + 1`` whatever ``step`` returned for it. This is the body of every
    compiled chunk, in :func:`run` and in :mod:`synprune_jax.sweeps` (which vmaps it over runs), so
    a run gives the same numbers whichever way it is driven.

    Args:
        step: ``(key, state) -> (state, {name: scalar})``.
        seed: int or uint32 scalar (traced is fine, e.g. under ``vmap``).
        state: the state at some generation ``g`` (int scalar field ``generation``).
        length: number of generations (static).

    Returns:
        ``(state, (generations [length] int, metrics {name: [length]}))``.
    """

    def body(state, _):
        generation = state.generation
        new_state, metrics = step(generation_key(seed, generation), state)
        next_generation = jnp.asarray(generation + 1, dtype=generation.dtype)
        new_state = _strong_types(_replace_generation(new_state, next_generation))
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


def _make_chunk(algorithm: Algorithm, length: int) -> Callable:
    """``(state, seed) -> (state, (generations[length], metrics{name: [length]}))``, not yet
    jitted. The seed is an argument (a uint32 scalar), not a constant of the program, so runs that
    differ only in their seed compile to the same program (and hit the persistent compilation
    cache that the CLI turns on)."""

    def chunk(state, seed):
        return scan_generations(algorithm.step, seed, state, length)

    return chunk


def _check_state(abstract_state: PyTree) -> None:
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


# --------------------------------------------------------------------------------------------
# Metrics files.


def _format_value(value) -> str | int | float:
    value = np.asarray(value)
    if value.dtype == np.bool_:
        return int(value)
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    return float(value)


def _metrics_path(run_dir: Path, metrics_format: str) -> Path:
    return run_dir / f"metrics.{metrics_format}"


class _MetricsWriter:
    """Appends chunks of rows to ``metrics.csv`` / ``metrics.jsonl`` (open, write, flush, close)."""

    def __init__(self, path: Path, metrics_format: str, columns: list[str] | None):
        self.path = path
        self.metrics_format = metrics_format
        self.columns = columns  # CSV header once known

    def append(self, rows: dict[str, np.ndarray]) -> None:
        columns = list(rows)
        if self.columns is None:
            self.columns = columns
            if self.metrics_format == "csv":
                with open(self.path, "w") as file:
                    file.write(",".join(columns) + "\n")
        elif columns != self.columns:
            raise ValueError(
                f"metric names changed: file {self.path} has {self.columns}, step returns {columns}"
            )
        num_rows = len(rows["generation"])
        lines = []
        for index in range(num_rows):
            values = [_format_value(rows[name][index]) for name in columns]
            if self.metrics_format == "csv":
                lines.append(",".join(repr(value) for value in values))
            else:
                lines.append(json.dumps(dict(zip(columns, values))))
        with open(self.path, "a") as file:
            file.write("".join(line + "\n" for line in lines))
            file.flush()


def _parse_token(token: str) -> int | float:
    try:
        return int(token)
    except ValueError:
        return float(token)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Complete, parseable rows (a torn last line from a killed run is dropped)."""
    columns: list[str] = []
    rows: list[dict[str, Any]] = []
    with open(path) as file:
        text = file.read()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # last line was cut mid-write
    if path.suffix == ".csv":
        if not lines or not lines[0]:
            return columns, rows
        columns = lines[0].split(",")
        for line in lines[1:]:
            tokens = line.split(",")
            if len(tokens) != len(columns):
                continue
            try:
                rows.append(dict(zip(columns, (_parse_token(token) for token in tokens))))
            except ValueError:
                continue
    else:
        for line in lines:
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not columns:
                columns = list(row)
            rows.append(row)
    return columns, rows


def _columns_to_arrays(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    history = {}
    for name in columns:
        values = [row[name] for row in rows]
        if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            history[name] = np.asarray(values, dtype=np.int64)
        else:
            history[name] = np.asarray(values, dtype=np.float64)
    return history


def read_metrics(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads ``run_dir/metrics.csv`` or ``run_dir/metrics.jsonl``.

    Returns:
        ``{column: [num_rows]}``: ``generation`` and every integer-only column as int64, the rest
        as float64 (exact copies of the float32 values written).

    Raises:
        FileNotFoundError: if neither file exists. ValueError: if both do.
    """
    run_dir = Path(run_dir)
    paths = [_metrics_path(run_dir, fmt) for fmt in METRICS_FORMATS]
    existing = [path for path in paths if path.exists()]
    if not existing:
        raise FileNotFoundError(f"no metrics.csv or metrics.jsonl in {run_dir}")
    if len(existing) > 1:
        raise ValueError(f"both metrics.csv and metrics.jsonl exist in {run_dir}")
    return _columns_to_arrays(*_read_rows(existing[0]))


def _truncate_metrics(path: Path, last_generation: int) -> list[str] | None:
    """Keeps rows with ``generation <= last_generation``; returns the columns (None if no file)."""
    if not path.exists():
        return None
    columns, rows = _read_rows(path)
    kept = [row for row in rows if int(row["generation"]) <= last_generation]
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as file:
        if path.suffix == ".csv" and columns:
            file.write(",".join(columns) + "\n")
        for row in kept:
            values = [row[name] for name in columns]
            if path.suffix == ".csv":
                file.write(",".join(repr(value) for value in values) + "\n")
            else:
                file.write(json.dumps(dict(zip(columns, values))) + "\n")
    os.replace(temporary, path)
    return columns or None


# --------------------------------------------------------------------------------------------
# The loop.


def _write_json(path: Path, payload: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(temporary, path)


def _postfix(rows: dict[str, np.ndarray]) -> dict[str, str]:
    names = [name for name in _POSTFIX_PREFERRED if name in rows]
    if not names:
        names = [name for name in rows if name != "generation"][:3]
    return {name: f"{float(rows[name][-1]):.4g}" for name in names}


def run(
    algorithm: Algorithm,
    run_dir: str | os.PathLike,
    run_config: RunConfig,
    *,
    resume: bool = False,
    on_chunk: Callable[[State, dict[str, np.ndarray]], None] | None = None,
) -> tuple[State, dict[str, np.ndarray]]:
    """Runs ``algorithm`` for ``run_config.num_generations`` generations, logging to ``run_dir``.

    Args:
        algorithm: see :class:`Algorithm`.
        run_dir: output folder (created if missing).
        run_config: see :class:`RunConfig`.
        resume: continue from the latest checkpoint in ``run_dir/checkpoints``: metrics rows past
            it (written by a run killed between checkpoints) are dropped, then the run continues
            to ``num_generations``. If the checkpoint is already at (or past) ``num_generations``
            nothing runs and its state is returned. With no checkpoint yet, starts afresh
            (discarding any metrics rows). The seed must match the original run's.
        on_chunk: host callback ``on_chunk(state, rows)`` after each chunk (after its metrics are
            written and any checkpoint saved); ``rows`` is ``{column: [chunk_length]}`` numpy
            (``generation`` plus each metric). An exception it raises stops the run.

    Returns:
        ``(final_state, metrics_history)``, the history being :func:`read_metrics` of the run
        (every row of the run, resumed parts included).

    Raises:
        FileExistsError: ``resume=False`` and ``run_dir`` already holds checkpoints or metrics.
        ValueError: resuming with a different seed or metrics format.
    """
    if not isinstance(run_config, RunConfig):
        raise TypeError(f"run_config must be a RunConfig, got {type(run_config).__name__}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = run_dir / "checkpoints"
    metrics_path = _metrics_path(run_dir, run_config.metrics_format)
    config_path = run_dir / "run_config.json"
    seed = run_config.seed
    other_metrics = [
        _metrics_path(run_dir, fmt) for fmt in METRICS_FORMATS if fmt != run_config.metrics_format
    ]

    saved_step = checkpoint_lib.latest_step(checkpoint_dir)
    if not resume:
        existing = [str(path) for path in [metrics_path, *other_metrics] if path.exists()]
        if saved_step is not None:
            existing.insert(0, f"{checkpoint_dir} (step {saved_step})")
        if existing:
            raise FileExistsError(
                f"run directory {run_dir} already holds a run ({', '.join(existing)}); "
                "pass resume=True to continue it, or use a new directory"
            )
    else:
        if config_path.exists():
            previous = json.loads(config_path.read_text())
            if previous.get("seed") != seed:
                raise ValueError(
                    f"cannot resume {run_dir} with seed {seed}: it was run with seed "
                    f"{previous.get('seed')}"
                )
        for path in other_metrics:
            if path.exists():
                raise ValueError(
                    f"cannot resume {run_dir} with metrics_format="
                    f"{run_config.metrics_format!r}: it holds {path.name}"
                )
    _write_json(config_path, dataclasses.asdict(run_config))

    key = init_key(seed)
    traced_seed = np.uint32(seed)
    init = _make_init(algorithm)
    abstract_state = jax.eval_shape(init, key)
    _check_state(abstract_state)
    timing: dict[str, Any] = {"backend": jax.default_backend(), "init_compile_s": None}

    if resume and saved_step is not None:
        state = checkpoint_lib.restore(checkpoint_dir, saved_step, abstract_state)
        if int(state.generation) != saved_step:
            raise ValueError(
                f"checkpoint step {saved_step} holds a state at generation {int(state.generation)}"
            )
        columns = _truncate_metrics(metrics_path, saved_step)
    else:
        if metrics_path.exists():  # resume=True before the first checkpoint: start afresh
            metrics_path.unlink()
        columns = None
        started = time.perf_counter()
        compiled_init = jax.jit(init).lower(key).compile()
        timing["init_compile_s"] = time.perf_counter() - started
        state = compiled_init(key)
        saved_step = None

    start_generation = int(state.generation)
    end_generation = run_config.num_generations
    timing.update(start_generation=start_generation, chunk_compile_s={})
    if start_generation >= end_generation:
        if start_generation > end_generation:
            warnings.warn(
                f"{run_dir} is already at generation {start_generation} > num_generations="
                f"{end_generation}; returning it unchanged",
                stacklevel=2,
            )
        return state, read_metrics(run_dir) if metrics_path.exists() else {}

    writer = _MetricsWriter(metrics_path, run_config.metrics_format, columns)
    interval = run_config.checkpoint_interval
    compiled_chunks: dict[int, Callable] = {}
    per_generation_seconds: list[float] = []
    progress_bar = None
    if run_config.progress:
        from tqdm.auto import tqdm  # lazy: host only

        progress_bar = tqdm(
            total=end_generation, initial=start_generation, unit="gen", dynamic_ncols=True,
            disable=None,
        )
    run_started = time.perf_counter()
    generation = start_generation
    try:
        with checkpoint_lib.CheckpointWriter(
            checkpoint_dir, max_to_keep=CHECKPOINTS_TO_KEEP
        ) as checkpoints:
            while generation < end_generation:
                length = min(run_config.chunk_size, end_generation - generation)
                if length not in compiled_chunks:
                    started = time.perf_counter()
                    compiled_chunks[length] = (
                        jax.jit(_make_chunk(algorithm, length))
                        .lower(abstract_state, traced_seed)
                        .compile()
                    )
                    timing["chunk_compile_s"][str(length)] = time.perf_counter() - started
                    # A restored checkpoint lives on the default device; a program that spans a
                    # mesh (a task sharded over devices) wants its state replicated there. A
                    # no-op when the state is already where the program expects it.
                    state = jax.device_put(state, compiled_chunks[length].input_shardings[0][0])
                started = time.perf_counter()
                state, outputs = compiled_chunks[length](state, traced_seed)
                generations, metrics = jax.device_get(outputs)  # the chunk's one host round trip
                elapsed = time.perf_counter() - started
                if length == run_config.chunk_size:
                    per_generation_seconds.append(elapsed / length)
                rows = {"generation": np.asarray(generations, dtype=np.int64)}
                rows.update((name, np.asarray(metrics[name])) for name in sorted(metrics))
                writer.append(rows)
                new_generation = generation + length
                if new_generation // interval > generation // interval or (
                    new_generation >= end_generation
                ):
                    checkpoints.save(new_generation, state)
                if progress_bar is not None:
                    progress_bar.set_postfix(_postfix(rows), refresh=False)
                    progress_bar.update(length)  # refreshes (rate-limited by tqdm)
                generation = new_generation
                if on_chunk is not None:
                    on_chunk(state, rows)
    finally:
        if progress_bar is not None:
            progress_bar.close()
        # steady state: drop the first full chunk (warm-up) when there are others
        steady = per_generation_seconds[1:] or per_generation_seconds
        timing.update(
            end_generation=generation,
            wall_s=time.perf_counter() - run_started,
            seconds_per_generation=statistics.median(steady) if steady else None,
        )
        _write_json(run_dir / "timing.json", timing)
    return state, read_metrics(run_dir)
