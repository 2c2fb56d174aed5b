"""Run directories: the files of one run, written only by the host loop.

A run directory holds:

* ``metrics.csv`` or ``metrics.jsonl``: one row per generation, appended after every chunk.
  Column ``generation`` counts *completed* generations (rows ``1..N``); the row with
  ``generation == g`` holds the metrics of the step that produced generation ``g`` (the state
  saved as checkpoint step ``g``). The other columns are the step's metrics in sorted order.
  Floats are written with ``repr`` (exact round trip), bools as 0/1.
* ``checkpoints/<g>``: orbax checkpoints (:mod:`synprune_jax.checkpoint`), the last
  ``RunConfig.keep_checkpoints`` (default 2) kept.
* ``run_config.json``: the :class:`~synprune_jax.runner.RunConfig` of the latest call.
* ``timing.json``: compile seconds and steady-state seconds per generation (single runs).

:class:`RunDirectory` is what :func:`synprune_jax.runner.run_loop` writes through, for a single
run and for every run of a sweep group alike.

Example::

    directory = RunDirectory("runs/a", run_config)
    directory.check(resume=False)               # FileExistsError if it holds a run
    directory.open(None)                        # None: start afresh (else the restored step)
    directory.append({"generation": np.array([1, 2]), "loss": np.array([0.5, 0.4])})
    directory.save(2, state)
    directory.close()
    read_metrics("runs/a")["loss"]               # array([0.5, 0.4])
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from synprune_jax import checkpoint as checkpoint_lib

METRICS_FORMATS = ("csv", "jsonl")
LOCK_FILE = ".lock"
# errno values that mean the machine, not the user's input, failed a run
MACHINE_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


class RunDirectoryBusy(OSError):
    """Another live process holds the run directory's lock.

    Raised by :class:`RunLock` (so by :func:`~synprune_jax.runner.run`,
    :func:`~synprune_jax.sweeps.sweep` and the CLI) when ``.lock`` names the pid of another
    process that is still alive; the message names the pid and the directory. A lock left by a
    process that is gone is taken over instead.

    Examples:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _ = (Path(run_dir) / LOCK_FILE).write_text(str(os.getppid()))  # a live process
        ...     with RunLock(run_dir):
        ...         pass
        Traceback (most recent call last):
            ...
        synprune_jax.rundir.RunDirectoryBusy: another process (pid ...) is writing this
        directory (...): wait for it to finish or stop it
    """


class RunDirectoryFull(OSError):
    """The run directory's file system has no room for the run's checkpoints.

    Raised by :func:`check_room` (so by :func:`~synprune_jax.runner.run` and
    :func:`~synprune_jax.sweeps.sweep`, before anything is compiled); the message gives the
    free and the needed MiB.

    Examples:
        >>> import tempfile
        >>> state = {"w": jax.ShapeDtypeStruct((1000,), jnp.float32)}  # 4000 bytes a checkpoint
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     check_room(run_dir, state)  # 2 checkpoints + 16 MiB fit: nothing raised
        ...     check_room(run_dir, state, margin=2**60)  # an exbibyte for metrics and plots
        Traceback (most recent call last):
            ...
        synprune_jax.rundir.RunDirectoryFull: not enough room for the run (...): ... MiB free,
        it needs about 1099511627776.0 MiB (2 checkpoints of 0.0 MiB and the metrics and
        plots); free space or choose another --out
    """


def check_room(
    path: str | os.PathLike, abstract_state, copies: int = 2, margin: int = 16 * 2**20
) -> None:
    """Raises :class:`RunDirectoryFull` unless ``path``'s file system has room for ``copies``
    checkpoints of a state shaped like ``abstract_state`` (a pytree of arrays or
    ``jax.ShapeDtypeStruct``) plus ``margin`` bytes for metrics and plots."""
    import shutil

    import jax

    size = sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree_util.tree_leaves(abstract_state)
        if hasattr(leaf, "dtype")
    )
    need, free = copies * size + margin, shutil.disk_usage(path).free
    if free < need:
        raise RunDirectoryFull(
            f"not enough room for the run ({path}): {free / 2**20:.1f} MiB free, it needs "
            f"about {need / 2**20:.1f} MiB ({copies} checkpoints of {size / 2**20:.1f} MiB "
            "and the metrics and plots); free space or choose another --out"
        )


def prepare_directory(path: str | os.PathLike, option: str = "--out") -> None:
    """Creates the output directory ``path`` (and its parents) and checks that it is writable;
    ``option`` names where it came from in the message.

    Raises:
        ConfigError: it names a file, lies under a file, cannot be created or is not writable.
    """
    from synprune_jax.config import ConfigError

    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(
            f"{option} names a file, not a directory ({path}): give a new or empty directory"
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the output directory ({path}): "
            f"{error.strerror or error}; choose another {option}"
        ) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the output directory is not writable ({path}): choose another {option}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_HELD_LOCKS: set[Path] = set()  # run directories this process holds (a nested RunLock: no-op)


class RunLock:
    """One writer per run directory: ``path/.lock`` holds the writing process's pid while the
    ``with`` block runs (created with ``O_EXCL``). A lock of a live other process raises
    :class:`RunDirectoryBusy`; a stale one (its process is gone, e.g. killed) is taken over with
    a warning. Nested in the same process (the CLI's lock around :func:`~synprune_jax.run`'s),
    the inner one does nothing. In a job of several processes (``jax.distributed``) the primary
    process (process 0) holds it for the job; on the others it does nothing.

    Example:
        >>> with RunLock(tmp_dir):  # doctest: +SKIP
        ...     ...  # write the run
    """

    def __init__(self, path: str | os.PathLike):
        self.file = Path(path).absolute() / LOCK_FILE
        self.nested = False

    def __enter__(self) -> RunLock:
        import warnings

        from synprune_jax.sharding import is_primary

        if self.file.parent in _HELD_LOCKS or not is_primary():
            self.nested = True  # held already, or by the primary process of this job
            return self
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                handle = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = self.file.read_text().strip() if self.file.exists() else ""
                pid = int(text) if text.isdigit() else None
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise RunDirectoryBusy(
                        f"another process (pid {pid}) is writing this directory "
                        f"({self.file.parent}): wait for it to finish or stop it"
                    ) from None
                warnings.warn(
                    f"taking over the stale lock {self.file} (process {pid} is gone)", stacklevel=2
                )
                self.file.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as lock:
                lock.write(str(os.getpid()))
            _HELD_LOCKS.add(self.file.parent)
            return self

    def __exit__(self, *exc) -> None:
        if self.nested:
            return
        _HELD_LOCKS.discard(self.file.parent)
        try:
            if self.file.read_text().strip() == str(os.getpid()):
                self.file.unlink()
        except OSError:
            pass


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Writes ``payload`` as indented, key-sorted JSON, atomically (temporary file + rename)."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # writers never share one
    with open(temporary, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(temporary, path)


def metrics_path(run_dir: str | os.PathLike, metrics_format: str) -> Path:
    """``run_dir/metrics.<format>``."""
    return Path(run_dir) / f"metrics.{metrics_format}"


def _format_value(value) -> int | float:
    value = np.asarray(value)
    if value.dtype == np.bool_ or np.issubdtype(value.dtype, np.integer):
        return int(value)
    return float(value)


def _format_line(columns: list[str], values: list, metrics_format: str) -> str:
    if metrics_format == "csv":
        return ",".join(repr(value) for value in values)
    return json.dumps(dict(zip(columns, values, strict=True)))


class MetricsWriter:
    """Appends chunks of rows to ``metrics.csv`` / ``metrics.jsonl`` (open, write, close).

    Args:
        path: the metrics file.
        metrics_format: ``"csv"`` or ``"jsonl"``.
        columns: the columns already in the file (``None``: none yet; the first
            :meth:`append` writes the CSV header).
    """

    def __init__(self, path: Path, metrics_format: str, columns: list[str] | None):
        self.path = Path(path)
        self.metrics_format = metrics_format
        self.columns = columns

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Appends ``rows`` (``{column: [n]}``, ``generation`` first) as ``n`` lines."""
        columns = list(rows)
        header = ""
        if self.columns is None:
            if self.metrics_format == "csv":
                header = ",".join(columns) + "\n"
        elif columns != self.columns:
            raise ValueError(
                f"metric names changed: file {self.path} has {self.columns}, step returns {columns}"
            )
        lines = [
            _format_line(
                columns, [_format_value(rows[name][index]) for name in columns], self.metrics_format
            )
            for index in range(len(rows["generation"]))
        ]
        append_whole(self.path, (header + "".join(line + "\n" for line in lines)).encode())
        self.columns = columns


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Appends ``data`` to ``path`` entirely or not at all: a failed write (a full disk) cuts the
    file back to its previous end and raises, so a metrics file never ends mid-row."""
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(handle, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
        except OSError:
            os.ftruncate(handle, start)
            raise
    finally:
        os.close(handle)


def _parse_token(token: str) -> int | float:
    try:
        return int(token)
    except ValueError:
        return float(token)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Complete, parseable rows (a torn last line from a killed run is dropped)."""
    columns: list[str] = []
    rows: list[dict[str, Any]] = []
    text = Path(path).read_text()
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
                rows.append(
                    dict(zip(columns, (_parse_token(token) for token in tokens), strict=True))
                )
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

    Only complete rows are read: a last line cut mid-write (a run killed while appending) and
    rows that do not parse are left out.

    Args:
        run_dir: the run directory (:func:`~synprune_jax.runner.run`'s ``run_dir``, or one run
            of a sweep, ``<out>/runs/<run_id>``).

    Returns:
        ``{column: [num_rows]}`` in the file's column order: ``generation`` and every
        integer-only column as int64, the rest as float64 (exact copies of the float32 values
        written).

    Raises:
        FileNotFoundError: if neither file exists.
        ValueError: if both do.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     writer = MetricsWriter(metrics_path(run_dir, "csv"), "csv", columns=None)
        ...     writer.append({"generation": np.array([1, 2]), "loss": np.float32([0.5, 0.1])})
        ...     print(metrics_path(run_dir, "csv").read_text(), end="")
        ...     metrics = read_metrics(run_dir)
        generation,loss
        1,0.5
        2,0.10000000149011612
        >>> metrics["generation"].tolist(), metrics["loss"].tolist()
        ([1, 2], [0.5, 0.10000000149011612])
        >>> metrics["generation"].dtype, metrics["loss"].dtype
        (dtype('int64'), dtype('float64'))
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     read_metrics(empty)
        Traceback (most recent call last):
            ...
        FileNotFoundError: no metrics.csv or metrics.jsonl in ...
    """
    run_dir = Path(run_dir)
    existing = [
        path for path in (metrics_path(run_dir, fmt) for fmt in METRICS_FORMATS) if path.exists()
    ]
    if not existing:
        raise FileNotFoundError(f"no metrics.csv or metrics.jsonl in {run_dir}")
    if len(existing) > 1:
        raise ValueError(f"both metrics.csv and metrics.jsonl exist in {run_dir}")
    return _columns_to_arrays(*_read_rows(existing[0]))


def truncate_metrics(path: Path, last_generation: int) -> list[str] | None:
    """Keeps rows with ``generation <= last_generation``; returns the columns (None if no file)."""
    if not path.exists():
        return None
    columns, rows = _read_rows(path)
    metrics_format = path.suffix[1:]
    lines = [",".join(columns)] if metrics_format == "csv" and columns else []
    lines += [
        _format_line(columns, [row[name] for name in columns], metrics_format)
        for row in rows
        if int(row["generation"]) <= last_generation
    ]
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # writers never share one
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, path)
    return columns or None


def completed_generation(run_dir: str | os.PathLike) -> int | None:
    """The generation of the latest checkpoint in ``run_dir`` (``None``: no checkpoint)."""
    return checkpoint_lib.latest_step(Path(run_dir) / "checkpoints")


class RunDirectory:
    """The files of one run: metrics rows, checkpoints and ``run_config.json``.

    In a job of several processes (``jax.distributed``) every process makes one; only the
    primary one (process 0, :attr:`primary`) writes the metrics and ``run_config.json``, and
    all of them write the checkpoints together (each its own shards, orbax's primary host the
    metadata), so the directory must lie on a file system every process sees.

    Args:
        path: the run directory (created by :meth:`open`).
        run_config: the run's :class:`~synprune_jax.runner.RunConfig`.

    Attributes:
        primary: whether this process writes the metrics and ``run_config.json``
            (:func:`~synprune_jax.sharding.is_primary`, read when the object is made).
    """

    def __init__(self, path: str | os.PathLike, run_config):
        from synprune_jax.sharding import is_primary

        self.path = Path(path)
        self.run_config = run_config
        self.metrics = metrics_path(self.path, run_config.metrics_format)
        self.primary = is_primary()
        self._writer: MetricsWriter | None = None
        self._checkpoints: checkpoint_lib.CheckpointWriter | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def check(self, *, resume: bool) -> None:
        """Refuses what the run would overwrite or could not continue.

        Raises:
            FileExistsError: ``resume=False`` and the directory already holds checkpoints or
                metrics.
            ValueError: resuming with another seed or metrics format than the run had.
        """
        others = [
            metrics_path(self.path, fmt)
            for fmt in METRICS_FORMATS
            if fmt != self.run_config.metrics_format
        ]
        if not resume:
            existing = [str(path) for path in [self.metrics, *others] if path.exists()]
            saved = completed_generation(self.path)
            if saved is not None:
                existing.insert(0, f"{self.checkpoint_dir} (step {saved})")
            if existing:
                raise FileExistsError(
                    f"run directory {self.path} already holds a run ({', '.join(existing)}); "
                    "pass resume=True to continue it, or use a new directory"
                )
            return
        config_path = self.path / "run_config.json"
        if config_path.exists():
            previous = json.loads(config_path.read_text()).get("seed")
            if previous != self.run_config.seed:
                raise ValueError(
                    f"cannot resume {self.path} with seed {self.run_config.seed}: "
                    f"it was run with seed {previous}"
                )
        for path in others:
            if path.exists():
                raise ValueError(
                    f"cannot resume {self.path} with metrics_format="
                    f"{self.run_config.metrics_format!r}: it holds {path.name}"
                )

    def open(self, saved_generation: int | None) -> None:
        """Creates the directory, writes ``run_config.json`` and prepares the metrics file:
        rows past ``saved_generation`` (the restored checkpoint) are dropped; with ``None``
        (a fresh start) any old metrics file is removed. In a job of several processes only
        the primary one (:attr:`primary`) touches these files; every process opens the
        checkpoints (orbax saves collectively)."""
        if self.primary:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "run_config.json", dataclasses.asdict(self.run_config))
            if saved_generation is None:
                if self.metrics.exists():
                    self.metrics.unlink()
                columns = None
            else:
                columns = truncate_metrics(self.metrics, saved_generation)
            self._writer = MetricsWriter(self.metrics, self.run_config.metrics_format, columns)
        self._checkpoints = checkpoint_lib.CheckpointWriter(
            self.checkpoint_dir, max_to_keep=self.run_config.keep_checkpoints
        )

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Appends one chunk's rows (see :class:`MetricsWriter`); nothing on a process other
        than the primary one."""
        if not self.primary:
            return
        if self._writer is None:
            raise RuntimeError("RunDirectory.append before open()")
        self._writer.append(rows)

    def save(self, generation: int, state) -> None:
        """Checkpoints ``state`` as step ``generation`` (blocking; in a job of several
        processes every process calls it, each writing its shards)."""
        if self._checkpoints is None:
            raise RuntimeError("RunDirectory.save before open()")
        self._checkpoints.save(generation, state)

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
