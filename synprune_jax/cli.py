"""Command-line interface: ``synprune run | resume | list | plot | inspect | export | replay |
sweep | compare-pruning``.

    synprune run [EXPERIMENT] [--set key.path=value ...] [--out DIR] [--config FILE] [--distributed]
    synprune resume DIR [--restart] [--distributed]
    synprune list
    synprune plot DIR
    synprune sweep EXPERIMENT [--seeds 0-7] [--grid key=v1,v2 ...] [--set key=value ...] [--out DIR]
                   [--share I/N | --cluster ray|ray://HOST:PORT ...]

``--distributed`` joins a ``jax.distributed`` job (one run over every process's devices);
``--cluster`` runs a sweep's groups as Ray tasks; ``--share`` runs one share of a sweep (a SLURM
array job). docs/sweeps.md ("Many hosts") describes all three.

Every command takes ``--verbose`` (keep other libraries' import noise; see
:func:`quiet_third_party`).

Configs are validated (unknown keys, wrong types, unknown env / backend / descriptor names) before
anything is compiled. The run directory holds ``config.json`` (the resolved config), metrics,
``checkpoints/``, ``timing.json``, ``summary.md`` / ``summary.json`` and the plots.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import sys
import traceback
import warnings
from pathlib import Path

from synprune_jax.config import AUTO, requested_devices

# Third-party output that says nothing about the user's run; `--verbose` keeps it. Lines printed
# on stdout (mujoco.mjx when warp is not installed) and Python warnings (message, module).
NOISE_LINES = ("Failed to import warp:", "Failed to import mujoco_warp:")
NOISE_WARNINGS = ((r".*not actively being maintained", r"brax\."),)
MUJOCO_LOG = "MUJOCO_LOG.TXT"
DISTRIBUTED_HELP = (
    "one run across the processes of a jax.distributed job (start the same command on "
    "every host): JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID, "
    "or detected under srun / mpirun / on a TPU pod; the population is split over every "
    "device of every process, process 0 writes the run directory (on a file system all "
    "processes share)"
)


class _DropLines(io.TextIOBase):
    """A text stream that forwards every line to ``stream`` except those starting with one of
    ``prefixes``; a line is held until its newline (or a flush)."""

    def __init__(self, stream, prefixes):
        self.stream, self.prefixes, self.pending = stream, tuple(prefixes), ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if not line.startswith(self.prefixes):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not self.pending.startswith(self.prefixes):
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()


@contextlib.contextmanager
def quiet_third_party(verbose: bool = False):
    """Within: :data:`NOISE_LINES` dropped from stdout and :data:`NOISE_WARNINGS` ignored (our
    own warnings never are); ``verbose`` changes nothing."""
    if verbose:
        yield
        return
    stdout = sys.stdout
    with warnings.catch_warnings():
        for message, module in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, module=module)
        sys.stdout = _DropLines(stdout, NOISE_LINES)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stdout = stdout


class MujocoLog:
    """MuJoCo's warnings, which it would append to ``MUJOCO_LOG.TXT`` in the working directory:
    held until :meth:`into` names a directory, then appended to ``DIRECTORY/MUJOCO_LOG.TXT``
    (and echoed to stderr with ``verbose``). :meth:`install` hands it to MuJoCo."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.directory: str | None = None
        self.messages: list[str] = []
        self.installed = False

    def install(self, config: dict | None) -> None:
        """Becomes MuJoCo's warning handler when ``config``'s task is simulated by MuJoCo (Brax)
        and no handler is set."""
        task = config.get("task") if isinstance(config, dict) else None
        if not (isinstance(task, dict) and task.get("name") == "brax"):
            return
        try:
            import mujoco
        except ImportError:  # the task's builder says what to install
            return
        if mujoco.get_mju_user_warning() is None:
            mujoco.set_mju_user_warning(self)
            self.installed = True

    def uninstall(self) -> None:
        """Gives MuJoCo its default warning handler back if :meth:`install` set this one."""
        if self.installed:
            import mujoco

            mujoco.set_mju_user_warning(None)
            self.installed = False

    def __call__(self, message: str) -> None:
        stamp = datetime.datetime.now().strftime("%a %b %d %H:%M:%S %Y")
        self.messages.append(f"WARNING {stamp}: {message}")
        if self.verbose:
            print(f"MuJoCo warning: {message}", file=sys.stderr)
        self._write()

    def into(self, directory: str) -> None:
        """From now on (and for what was held) the log is ``directory/MUJOCO_LOG.TXT``."""
        self.directory = directory
        self._write()

    def _write(self) -> None:
        if self.directory is None or not self.messages or not os.path.isdir(self.directory):
            return
        with open(os.path.join(self.directory, MUJOCO_LOG), "a") as handle:
            handle.write("".join(line + "\n" for line in self.messages))
        self.messages.clear()


def _enable_compilation_cache() -> None:
    """Persistent XLA cache: a second run of the same shapes skips most compile time."""
    import jax

    if os.environ.get("SYNPRUNE_NO_CACHE"):
        return
    directory = os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "synprune_jax")
    )
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _claim_cpu_devices(config: dict) -> None:
    """Creates ``task.devices`` / ``train.devices`` CPU devices before JAX starts (one per
    usable core for ``"auto"``; a no-op for other backends).

    ``jax_num_cpu_devices`` only counts before the first JAX operation, so this runs before the
    config is built. On a GPU / TPU the accelerator's own devices are used and this changes
    nothing for them.
    """
    _, devices = requested_devices(config)
    if devices == AUTO:
        devices = usable_cores()
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        _set_cpu_devices(devices)


def devices_line(option: str, count: int) -> str:
    """The line ``synprune run`` prints when ``option`` was ``"auto"`` and resolved to ``count``."""
    import jax

    what = (
        "one per usable CPU core"
        if jax.default_backend() == "cpu"
        else f"the local {jax.default_backend().upper()}s"
    )
    return (
        f"synprune: {option}=auto -> {count} device(s) ({what}, at most one per individual "
        f"evaluated together), saved in config.json; results depend on the count in the "
        f"last bits: `--set {option}=1` gives the same numbers on any machine"
    )


def _set_cpu_devices(count: int) -> None:
    import jax

    # JAX already started (e.g. called from Python): keep its devices
    with contextlib.suppress(RuntimeError):
        jax.config.update("jax_num_cpu_devices", count)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else
    ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def sweep_cpu_devices(requested: int | None, num_runs: int) -> int:
    """How many CPU devices ``synprune sweep`` creates: ``--devices`` when given, otherwise one
    per usable core up to the number of runs (each device then advances its share of the run
    axis on its own core; XLA:CPU runs one program's small operations on one thread)."""
    if requested is not None:
        return requested
    return max(1, min(usable_cores(), num_runs))


def _claim_sweep_cpu_devices(requested: int | None, num_runs: int) -> None:
    """Before JAX starts: :func:`sweep_cpu_devices` CPU devices, unless the user already fixed
    the CPU device count (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or
    ``JAX_NUM_CPU_DEVICES``), which is kept."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or os.environ.get(
        "JAX_NUM_CPU_DEVICES"
    ):
        return
    count = sweep_cpu_devices(requested, num_runs)
    if count > 1:
        _set_cpu_devices(count)


def _default_out(name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{stamp}")


def _finish(built, run_dir: str, state, metrics) -> None:
    summary = built.report(run_dir, state, metrics)
    print(f"\nRun directory: {run_dir}")
    print(built.describe(summary))


def _join_job(config: dict) -> None:
    """``--distributed``: joins the job (``initialize_distributed(required=True)``, before any
    other JAX call), then creates this process's share of the CPU devices: one per usable core
    for ``"auto"``, else ``devices / processes`` (rounded up); a no-op for other backends."""
    from synprune_jax.sharding import initialize_distributed

    _, processes = initialize_distributed(required=True)
    _, devices = requested_devices(config)
    if devices == AUTO:
        devices = usable_cores()
    elif isinstance(devices, int) and not isinstance(devices, bool):
        devices = -(-devices // processes)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        _set_cpu_devices(devices)


def _finish_job(built, run_dir: str, state, metrics) -> None:
    """The end of a ``--distributed`` run: the final state copied to every process (a
    collective), then process 0 alone writes the report and the plots and prints them."""
    from synprune_jax.sharding import gather_to_host, is_primary, process_index

    state = gather_to_host(state)
    if is_primary():
        _finish(built, run_dir, state, metrics)
    else:
        print(f"synprune: process {process_index()} done; process 0 wrote {run_dir}", flush=True)


def command_run(args) -> int:
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import DEFAULT_EXPERIMENT, get_experiment
    from synprune_jax.rundir import RunLock, prepare_directory
    from synprune_jax.runner import run
    from synprune_jax.sharding import barrier, is_primary

    if args.config:
        config = config_lib.load(args.config)
        name = config.get("experiment", args.experiment or DEFAULT_EXPERIMENT)
        if args.experiment and args.experiment != name:
            raise config_lib.ConfigError(
                f"--config is for experiment {name!r} but {args.experiment!r} was named"
            )
    else:
        name = args.experiment or DEFAULT_EXPERIMENT
    experiment = get_experiment(name)
    base = config if args.config else experiment.default_config()
    config = config_lib.apply_overrides(base, args.set or [])
    config["experiment"] = name
    distributed = getattr(args, "distributed", False)
    if distributed:
        _join_job(config)
    else:
        _claim_cpu_devices(config)
    args.mujoco_log.install(config)
    option, requested = requested_devices(config)
    built = experiment.build(config)  # validates before anything compiles; resolves "auto"
    run_dir = args.out or _default_out(name)
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise config_lib.ConfigError(
            f"{run_dir} already holds a run; use `synprune resume {run_dir}` or another --out"
        )
    prepare_directory(run_dir)
    barrier("synprune_jax.cli:checked")  # a distributed job: every process checked --out
    with RunLock(run_dir):  # a distributed job: process 0 writes the files, all checkpoint
        if is_primary():
            args.mujoco_log.into(run_dir)
            config_lib.save(config, os.path.join(run_dir, "config.json"))
            print(f"synprune: running {name!r} into {run_dir}", flush=True)
            if requested == AUTO:
                print(devices_line(option, requested_devices(config)[1]), flush=True)
        _enable_compilation_cache()
        state, metrics = run(built.algorithm, run_dir, built.run_config, hyper=built.hyper)
        (_finish_job if distributed else _finish)(built, run_dir, state, metrics)
    return 0


def _load_run(run_dir: str, mujoco_log: MujocoLog, *, distributed: bool = False):
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment
    from synprune_jax.sharding import is_primary

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise config_lib.ConfigError(f"{run_dir} is not a run directory (no config.json)")
    config = config_lib.load(path)
    if distributed:
        _join_job(config)
    else:
        _claim_cpu_devices(config)
    mujoco_log.install(config)
    if is_primary():
        mujoco_log.into(run_dir)
    return get_experiment(config["experiment"]).build(config)


def command_resume(args) -> int:
    from synprune_jax import checkpoint
    from synprune_jax.config import ConfigError
    from synprune_jax.rundir import RunLock, metrics_path
    from synprune_jax.runner import run
    from synprune_jax.sharding import barrier, is_primary

    distributed = getattr(args, "distributed", False)
    built = _load_run(args.run_dir, args.mujoco_log, distributed=distributed)
    with RunLock(args.run_dir):  # a distributed job: process 0 writes the files
        directory = os.path.join(os.path.abspath(args.run_dir), "checkpoints")
        resume = checkpoint.latest_step(directory) is not None
        if not resume and not args.restart:
            raise ConfigError(
                f"no checkpoint to resume from ({directory}): nothing was lost, "
                f"but nothing can continue; `synprune resume --restart "
                f"{args.run_dir}` runs it again from generation 0 (the old "
                "metrics kept as .bak)"
            )
        barrier("synprune_jax.cli:checked")  # a distributed job: every process looked
        if not resume and is_primary():
            metrics_file = str(metrics_path(args.run_dir, built.run_config.metrics_format))
            if os.path.exists(metrics_file):
                os.replace(metrics_file, metrics_file + ".bak")
        barrier("synprune_jax.cli:moved")
        _enable_compilation_cache()
        state, metrics = run(
            built.algorithm, args.run_dir, built.run_config, hyper=built.hyper, resume=resume
        )
        (_finish_job if distributed else _finish)(built, args.run_dir, state, metrics)
    return 0


def command_plot(args) -> int:
    from synprune_jax.config import ConfigError
    from synprune_jax.runner import read_metrics, restore_latest

    built = _load_run(args.run_dir, args.mujoco_log)
    try:
        _, state = restore_latest(
            built.algorithm, args.run_dir, built.run_config, hyper=built.hyper
        )
    except FileNotFoundError as error:
        raise ConfigError(
            f"no checkpoint to plot from ({error.filename}): plots are drawn from "
            f"the run's last checkpoint; `synprune resume {args.run_dir}` "
            "writes one"
        ) from error
    for path in built.plot(args.run_dir, state, read_metrics(args.run_dir)):
        print(path)
    return 0


def command_inspect(args) -> int:
    from synprune_jax.export import inspect_run

    table = inspect_run(args.run_dir, cost=args.cost)
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} rows to {args.csv}")
    shown = table if args.all else table.head(args.rows)
    print(shown.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    if len(shown) < len(table):
        print(f"... {len(table) - len(shown)} more rows (--all, or --csv FILE for the whole table)")
    return 0


def command_export(args) -> int:
    from synprune_jax.export import export_network

    paths = export_network(
        args.run_dir, args.out, density=args.density, cell=args.cell, rank=args.rank
    )
    for path in paths.values():
        print(path)
    return 0


def command_replay(args) -> int:
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless: MuJoCo's renderer needs EGL (or osmesa)
    path = os.path.join(args.run_dir, "config.json")
    if os.path.exists(path):  # the run's devices, so that each evaluates its share again
        from synprune_jax import config as config_lib

        _claim_cpu_devices(config_lib.load(path))
    from synprune_jax.replays import replay

    result = replay(
        args.run_dir,
        args.out,
        density=args.density,
        cell=args.cell,
        rank=args.rank,
        episodes=args.episodes,
        seed=args.seed,
        video=not args.no_video,
    )
    returns = ", ".join(f"{value:.6g}" for value in result.returns)
    verdict = {True: "equal to", False: "NOT equal to", None: "beside"}[result.exact]
    print(
        f"replayed {len(result.returns)} episode(s): returns {returns}; fitness "
        f"{result.fitness:.6g} {verdict} the archived {result.archived_fitness:.6g}"
    )
    if result.note:
        print(f"note: {result.note}")
    for path in result.files.values():
        print(path)
    return 0


def command_list(args) -> int:
    from synprune_jax.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS

    width = max(len(name) for name in EXPERIMENTS)
    for name, experiment in sorted(EXPERIMENTS.items()):
        marker = " (default)" if name == DEFAULT_EXPERIMENT else ""
        print(f"{name:<{width}}  {experiment.description}{marker}")
    return 0


CLUSTER_OPTIONS = ("cpus_per_task", "gpus_per_task", "runs_per_task", "max_retries", "storage")


def command_sweep(args) -> int:
    from synprune_jax import config as config_lib
    from synprune_jax import sweeps

    config = config_lib.load(args.config) if args.config else None
    if config is not None and config.get("experiment", args.experiment) != args.experiment:
        raise config_lib.ConfigError(
            f"--config is for experiment {config.get('experiment')!r} but {args.experiment!r} "
            "was named"
        )
    seeds = sweeps.parse_seeds(args.seeds)
    grid = sweeps.parse_grid(args.grid or [])
    cluster = None
    options = {
        name: getattr(args, name) for name in CLUSTER_OPTIONS if getattr(args, name) is not None
    }
    if args.cluster is not None:
        cluster = sweeps.RayCluster.parse(args.cluster, **options)
    else:
        if options:
            option = "--" + next(iter(options)).replace("_", "-")
            raise config_lib.ConfigError(f"{option} is an option of --cluster")
        _claim_sweep_cpu_devices(args.devices, len(seeds) * _grid_points(grid))
    share = None
    if args.share is not None:
        share = sweeps.parse_share(args.share)
        if args.out is None:
            raise config_lib.ConfigError("--share needs --out: every share writes into it")
    out = args.out or _default_out(f"sweep-{args.experiment}")
    from synprune_jax.experiments import get_experiment

    args.mujoco_log.install(config or get_experiment(args.experiment).default_config())
    _enable_compilation_cache()
    result = sweeps.sweep(
        args.experiment,
        seeds,
        grid,
        out=out,
        overrides=args.set or [],
        config=config,
        devices=args.devices,
        report=not args.no_report,
        progress=True,
        log=lambda message: print(message, flush=True),
        cluster=cluster,
        share=share,
    )
    args.mujoco_log.into(out)
    if result.skipped:
        print(f"already finished, not rerun: {len(result.skipped)} runs")
    if result.table is None:
        print(
            f"\nShare {args.share} done in {out}; the same command without --share gathers "
            "the table (it reruns nothing that finished)"
        )
        return 0
    print(f"\nSweep directory: {out}  (results.csv, results.parquet, plots/, runs/)")
    print(sweeps.format_summary(sweeps.summarize(result.table, list(grid)), list(grid)))
    return 0


def command_compare_pruning(args) -> int:
    from synprune_jax import comparison, sweeps
    from synprune_jax.config import ConfigError

    seeds = sweeps.parse_seeds(args.seeds)
    try:
        densities = [float(d) for d in args.densities.split(",")]
    except ValueError:
        raise ConfigError(
            f"--densities must be numbers separated by commas, got {args.densities!r}"
        ) from None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    _claim_sweep_cpu_devices(args.devices, len(seeds) * len(densities))
    out = args.out or _default_out("compare-pruning")
    _enable_compilation_cache()
    table = comparison.compare_pruning(
        out,
        budget=args.budget,
        seeds=seeds,
        densities=densities,
        methods=methods,
        overrides=args.set or [],
        episodes=args.episodes,
        devices=args.devices,
        log=lambda message: print(message, flush=True),
    )
    del table
    print(f"\nComparison directory: {out}  (comparison.csv, comparison.md, return_vs_density.png)")
    print(Path(out, "comparison.md").read_text())
    return 0


def _grid_points(grid: dict) -> int:
    count = 1
    for values in grid.values():
        count *= len(values)
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synprune", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error too (also SYNPRUNE_DEBUG=1); for bug reports",
    )
    common.add_argument(
        "--verbose",
        action="store_true",
        help="keep other libraries' import messages and warnings, and echo "
        f"MuJoCo's warnings (always written to the run's {MUJOCO_LOG})",
    )

    def add_parser(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    run_parser = add_parser("run", help="run an experiment (default: me-prune)")
    run_parser.add_argument("experiment", nargs="?", help="experiment name (see `synprune list`)")
    run_parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. run.num_generations=50 (repeatable)",
    )
    run_parser.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    run_parser.add_argument(
        "--config", help="start from a saved config.json instead of the experiment's defaults"
    )
    run_parser.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)
    run_parser.set_defaults(handler=command_run)

    resume_parser = add_parser("resume", help="continue a run from its last checkpoint")
    resume_parser.add_argument("run_dir")
    resume_parser.add_argument(
        "--restart",
        action="store_true",
        help="a run without any checkpoint: start it again from "
        "generation 0 (its metrics file is kept as .bak)",
    )
    resume_parser.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)
    resume_parser.set_defaults(handler=command_resume)

    list_parser = add_parser("list", help="list experiments")
    list_parser.set_defaults(handler=command_list)

    plot_parser = add_parser("plot", help="redraw a run's plots from its checkpoint")
    plot_parser.add_argument("run_dir")
    plot_parser.set_defaults(handler=command_plot)

    inspect_parser = add_parser(
        "inspect", help="tabulate the networks a run holds (density, units, fitness, ...)"
    )
    inspect_parser.add_argument("run_dir")
    inspect_parser.add_argument("--csv", help="write the whole table to this CSV file")
    inspect_parser.add_argument("--rows", type=int, default=20, help="rows shown (default 20)")
    inspect_parser.add_argument("--all", action="store_true", help="show every row")
    inspect_parser.add_argument(
        "--cost",
        action="store_true",
        help="add bytes and an energy estimate per forward pass for the dense, masked, compact "
        "and CSR forms (docs/export.md)",
    )
    inspect_parser.set_defaults(handler=command_inspect)

    export_parser = add_parser(
        "export", help="write one network of a run, compacted (npz, flax msgpack, json)"
    )
    export_parser.add_argument("run_dir")
    choice = export_parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--density", type=float, help="the best network with at most this density")
    choice.add_argument("--cell", type=int, help="the elite of this archive cell")
    choice.add_argument("--rank", type=int, help="the K-th best network (0: the best)")
    export_parser.add_argument("--out", help="directory (default: RUN/export/CHOICE)")
    export_parser.set_defaults(handler=command_export)

    replay_parser = add_parser(
        "replay",
        help="roll one network of a run out in its task: trajectory, return, figure, viewer, video",
    )
    replay_parser.add_argument("run_dir")
    choice = replay_parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--density", type=float, help="the best network with at most this density")
    choice.add_argument("--cell", type=int, help="the elite of this archive cell")
    choice.add_argument("--rank", type=int, help="the K-th best network (0: the best)")
    replay_parser.add_argument(
        "--episodes",
        type=int,
        help="episodes (default: the task's, which repeats the archived evaluation exactly)",
    )
    replay_parser.add_argument(
        "--seed", type=int, help="new episodes from this key instead of the archived evaluation's"
    )
    replay_parser.add_argument("--no-video", action="store_true", help="skip video.gif")
    replay_parser.add_argument("--out", help="directory (default: RUN/replay/CHOICE)")
    replay_parser.set_defaults(handler=command_replay)

    sweep_parser = add_parser(
        "sweep",
        help="run seeds x a grid of settings, vmapped in one program per shape group; "
        "rerun the same command to resume",
    )
    sweep_parser.add_argument("experiment", help="experiment name (see `synprune list`)")
    sweep_parser.add_argument("--seeds", default="0", help="seeds, e.g. 0-7 or 0,2,5-6")
    sweep_parser.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="swept config key and its values (repeatable; list values: "
        "task.hidden_sizes=[8,8];[16,16])",
    )
    sweep_parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override applied to every run (repeatable)",
    )
    sweep_parser.add_argument("--out", help="sweep directory (default: runs/sweep-NAME-TIMESTAMP)")
    sweep_parser.add_argument("--config", help="start from a saved config.json")
    sweep_parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="local devices to split the run axis over (default: all; "
        "on a CPU host one CPU device per core, up to the number of "
        "runs)",
    )
    sweep_parser.add_argument(
        "--no-report",
        action="store_true",
        help="skip each run's summary and plots (the sweep plots are kept)",
    )
    sweep_parser.add_argument(
        "--share",
        metavar="I/N",
        help="run only share I of N (from 0) of every group, e.g. one job of a SLURM array "
        '(--share "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"); then the same command '
        "without --share gathers the table",
    )
    cluster_options = sweep_parser.add_argument_group(
        "on a Ray cluster (pip install 'synprune-jax[ray]'; docs/sweeps.md, Many hosts)"
    )
    cluster_options.add_argument(
        "--cluster",
        metavar="ray|ray://HOST:PORT",
        help="run the groups as Ray tasks: `ray` joins RAY_ADDRESS or starts Ray on this "
        "machine; ray://HOST:PORT (Ray Client) or HOST:PORT names a cluster",
    )
    cluster_options.add_argument(
        "--cpus-per-task", type=int, help="CPUs (CPU devices) per task (default 1)"
    )
    cluster_options.add_argument(
        "--gpus-per-task",
        type=int,
        help="GPUs per task (default: 1 when the cluster has GPUs, else 0)",
    )
    cluster_options.add_argument(
        "--runs-per-task",
        type=int,
        help="runs per task (default: each group spread evenly over the task slots)",
    )
    cluster_options.add_argument(
        "--max-retries",
        type=int,
        help="resubmissions of a task whose worker or node died (default 3)",
    )
    cluster_options.add_argument(
        "--storage",
        choices=("auto", "shared", "copy"),
        help="shared: tasks write into --out (a file system all nodes see); copy: tasks send "
        "their run directories back; auto (default): shared where a task sees --out",
    )
    sweep_parser.set_defaults(handler=command_sweep)

    compare_parser = add_parser(
        "compare-pruning",
        help="MAP-Elites, ES and PPO with GMP / static / SET / RigL pruning at equal env-step "
        "budgets: return against density (docs/ppo.md)",
    )
    compare_parser.add_argument(
        "--budget", type=int, default=1_024_000, help="env steps per run (default 1024000)"
    )
    compare_parser.add_argument("--seeds", default="0-2", help="seeds, e.g. 0-2 (default)")
    compare_parser.add_argument(
        "--densities", default="0.05,0.1,0.25,0.5,1.0", help="density bounds / targets"
    )
    compare_parser.add_argument(
        "--methods",
        default="map-elites,es,gmp,static,set,rigl,dense",
        help="a subset of map-elites,es,gmp,static,set,rigl,dense",
    )
    compare_parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override for the experiments that have its section, e.g. task.env_name=walker2d "
        "(repeatable)",
    )
    compare_parser.add_argument(
        "--episodes", type=int, default=16, help="evaluation episodes per network (default 16)"
    )
    compare_parser.add_argument("--out", help="directory (default: runs/compare-pruning-TIME)")
    compare_parser.add_argument(
        "--devices", type=int, default=None, help="local devices each sweep uses (default: all)"
    )
    compare_parser.set_defaults(handler=command_compare_pruning)
    return parser


def main(argv=None) -> int:
    """Runs the command line ``argv`` and returns the exit status: 0 done; 2 bad input (one line
    ``synprune: error: ...``, nothing written; also an optional extra the task needs that is not
    installed); 1 a fault during the run (disk full, I/O error)
    or a bug (a line saying so, then the traceback); 143 / 130 stopped by SIGTERM / a first
    Ctrl-C after checkpointing the current chunk (a second Ctrl-C: at once, 130). ``--debug`` or
    ``SYNPRUNE_DEBUG=1`` prints the traceback of an error too (docs/failures.md).

    Example:
        >>> main(["list"])  # doctest: +SKIP
        0
    """
    from synprune_jax.config import ConfigError

    args = build_parser().parse_args(argv)
    args.mujoco_log = MujocoLog(args.verbose)
    debug = args.debug or os.environ.get("SYNPRUNE_DEBUG", "0") not in ("", "0")
    try:
        with quiet_third_party(args.verbose):
            return args.handler(args)
    except (ValueError, TypeError, OSError, ImportError) as error:  # ConfigError: a ValueError
        if (
            isinstance(error, (ValueError, TypeError, ImportError))
            and not isinstance(error, ConfigError)
            and not _raised_by_us(error)
        ):
            return _bug(error)
        if debug:
            traceback.print_exc()
        print(f"synprune: error: {_message(error, _resume_hint(args))}", file=sys.stderr)
        return 1 if _during_run(error) else 2
    except KeyboardInterrupt:
        print("synprune: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - anything else is a bug: say so, keep the trace
        runner = sys.modules.get("synprune_jax.runner")  # only it raises Stopped
        if runner is not None and isinstance(error, runner.Stopped):
            how = (
                "the same `synprune sweep` command"
                if args.command == "sweep"
                else f"`synprune resume {error.run_dirs[0]}`"
            )
            print(
                f"synprune: stopped by {error.signal_name} at generation {error.generation}, "
                f"checkpoint written: {how} continues it",
                file=sys.stderr,
            )
            return 143 if error.signal_name == "SIGTERM" else 130
        return _bug(error)
    finally:
        args.mujoco_log.uninstall()


def _during_run(error: BaseException) -> bool:
    from synprune_jax.rundir import MACHINE_FAULTS

    return isinstance(error, OSError) and error.errno in MACHINE_FAULTS


def _resume_hint(args) -> str:
    """How this command's run continues after a fault: the same sweep command, or
    ``synprune resume`` with the run directory (once it is known)."""
    if args.command == "sweep":
        return "the same `synprune sweep` command"
    run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None) or "RUN_DIR"
    return f"`synprune resume {run_dir}`"


def _message(error: BaseException, resume: str) -> str:
    """The one line for ``error``: our messages as they are; an OS error as what failed, on
    which file, and what to do (``resume``: how the run continues after a machine fault)."""
    runner = sys.modules.get("synprune_jax.runner")
    if runner is not None and isinstance(error, runner.RunFault):
        return f"{error}: {resume}"
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        if _during_run(error):
            return (
                f"{error.strerror}{where} during the run: free space or fix the disk, then "
                f"{resume} continues from the last checkpoint"
            )
        return f"{error.strerror}{where}: check the path and its permissions"
    return str(error)


def _raised_by_us(error: BaseException) -> bool:
    """Whether ``error`` was raised in synprune_jax's own code (validation of the user's input:
    the algorithms raise ValueError / TypeError for bad settings), not inside a library."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and os.path.dirname(__file__) in last


def _bug(error: BaseException) -> int:
    print(
        "synprune: internal error: this is a bug in synprune_jax. Please report it with the "
        "command, the run's config.json and the traceback below.",
        file=sys.stderr,
    )
    traceback.print_exception(error)
    return 1


if __name__ == "__main__":
    sys.exit(main())
