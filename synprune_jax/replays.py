"""Watch a run's network act: roll it out in its task again, to the archived fitness.

:func:`replay` picks one network of a finished run (as :func:`synprune_jax.export_network`
does: ``density``, ``cell`` or ``rank``), rolls it out in the run's task and writes what it did
to a directory:

* ``trajectory.npz``: every step of every episode (``[E, T, ...]``): ``observations``,
  ``actions``, ``alive`` (alive before the step), ``rewards`` (the counted rewards, summing to
  the return) and what the task shows of its state (``qpos``, ``body_pos``, ``body_quat`` for
  MuJoCo bodies; ``tip``, ``target``, ``obstacles`` for the reach-and-avoid arm), plus
  ``returns [E]``;
* ``replay.json``: the returns, the archived fitness, whether they agree, and the evaluation the
  replay repeated (generation, key, batch size);
* ``trajectory.png``: the path (the end effector's for an arm, the root body's otherwise, in
  its two widest coordinates; the observations for tasks without bodies), the actions over time
  and the cumulative reward;
* ``viewer.html``: Brax's HTML viewer of the first episode, for tasks on a MuJoCo model (Brax,
  MuJoCo Playground, the arm's ``mjx`` backend); it loads its JavaScript from a CDN when opened;
* ``video.gif``: the first episode rendered by MuJoCo, where it can open an OpenGL context
  (``MUJOCO_GL=egl`` or ``osmesa`` on a machine without a display; ``docs/export.md``).

**The replayed return equals the archived fitness.** Every individual of a batch sees the same
episode keys, and the run records for each network the generation whose evaluation gave its
fitness (``evaluated_at``), so the key of that evaluation follows from the run's seed
(:func:`synprune_jax.runner.init_key`, :func:`~synprune_jax.runner.generation_key` and the
algorithm's ``evaluation``). The replay evaluates copies of the network in a batch of the size
it was evaluated in: XLA compiles a batch of one differently, and chaotic physics turns the last
bit of difference into another return (hopper: 198.79537 instead of 198.79078). It is exact for
a run evaluated on one device in this process's program (a run, not a sweep's vmapped group;
the same JAX and XLA); otherwise ``exact`` is ``False`` and the note says why it may differ.

Examples:
    >>> result = replay("runs/default", density=0.1)  # doctest: +SKIP
    >>> result.fitness, result.archived_fitness, result.exact  # doctest: +SKIP
    (244.15, 244.15, True)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: Frames at most in ``video.gif`` (longer episodes are strided).
MAX_VIDEO_FRAMES = 200


@dataclasses.dataclass
class Replay:
    """What :func:`replay` measured and wrote.

    Attributes:
        returns: ``[E]`` float32, each episode's return.
        fitness: the replayed fitness (the mean of ``returns``, as the task computes it).
        archived_fitness: the fitness the run stored for the network.
        exact: ``fitness == archived_fitness``; ``None`` when the replay could not repeat the
            evaluation (another number of episodes, or an unknown evaluation generation).
        note: why ``exact`` is ``None`` or ``False`` (empty when exact).
        evaluation: the repeated evaluation: ``generation``, ``seed``, ``batch_size``,
            ``episodes``.
        trajectory: the first network's arrays, ``[E, T, ...]`` (``trajectory.npz``).
        files: what was written, by kind (``npz``, ``json``, ``figure``, ``viewer``,
            ``video``).
    """

    returns: np.ndarray
    fitness: float
    archived_fitness: float
    exact: bool | None
    note: str
    evaluation: dict[str, Any]
    trajectory: dict[str, np.ndarray]
    files: dict[str, str]


def _evaluation(networks, row: int, episodes: int, seed: int | None):
    """``(key, batch_size, info, note)`` of the evaluation to repeat for ``row``."""
    from synprune_jax import runner

    generation = int(networks.evaluated_at[row])
    task = networks.task
    if seed is None and generation >= 0 and episodes == int(task.num_episodes):
        run_key = (
            runner.init_key(networks.seed)
            if generation == 0
            else runner.generation_key(networks.seed, generation - 1)
        )
        key, batch_size = networks.algorithm.evaluation(run_key, generation)
        info = {"generation": generation, "seed": networks.seed, "batch_size": int(batch_size)}
        return key, int(batch_size), info, ""
    if seed is not None:
        note = f"new episodes (key {seed}), not the archived evaluation's"
    elif generation < 0:
        note = (
            "no recorded evaluation of this network to repeat (an ES's final mean is never "
            "evaluated; checkpoints written before runs recorded it): new episodes (key 0)"
        )
    else:
        note = (
            f"{episodes} episodes instead of the evaluation's {task.num_episodes}: new "
            "episodes (key 0)"
        )
    seed = 0 if seed is None else int(seed)
    info = {"generation": None, "seed": seed, "batch_size": 1}
    return jax.random.key(seed), 1, info, note


def _compiled_evaluate(evaluator):
    """``jax.jit(evaluator.evaluate)``, one per equal evaluator in this process (tasks compare by
    value), so replaying several networks of a run compiles each batch size once."""
    try:
        return _jitted_evaluate(evaluator)
    except TypeError:  # an unhashable task: no reuse
        return jax.jit(evaluator.evaluate)


@functools.lru_cache(maxsize=8)
def _jitted_evaluate(evaluator):
    return jax.jit(evaluator.evaluate)


def _rewrapped(wrapper, task):
    """``wrapper`` (a chain of task wrappers with a ``task`` field) around ``task`` instead of
    the task it wraps."""
    if not hasattr(wrapper, "task"):
        return task
    return dataclasses.replace(wrapper, task=_rewrapped(wrapper.task, task))


def replay(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    density: float | None = None,
    cell: int | None = None,
    rank: int | None = None,
    episodes: int | None = None,
    seed: int | None = None,
    video: bool = True,
    networks=None,
) -> Replay:
    """Rolls the chosen network of a run out in its task and writes the trajectory, its return,
    a figure, a viewer and a video (module docstring).

    Args:
        run_dir: a run directory (``config.json`` and ``checkpoints/``).
        out: where to write (default ``RUN/replay/<choice>``).
        density: the best network with at most this density (:func:`~synprune_jax.export.
            select_network`; exactly one of ``density``, ``cell``, ``rank``).
        cell: an archive cell.
        rank: a position in the fitness order (0: the best).
        episodes: episodes to roll out (default: the task's, which repeats the archived
            evaluation; another number draws new episodes).
        seed: draw new episodes from this key instead of repeating the archived evaluation.
        video: try to render ``video.gif`` (needs a MuJoCo model and an OpenGL context).
        networks: the run's :func:`~synprune_jax.export.open_run` if already opened, or
            :func:`~synprune_jax.export.run_networks` for a run made from Python.

    Returns:
        A :class:`Replay`.

    Raises:
        FileNotFoundError: no run directory or checkpoint.
        ValueError: the choice (:func:`~synprune_jax.export.select_network`), a run whose task
            has no episodes (e.g. the kinematic arm, supervised tasks), ``episodes < 1``.

    Examples:
        >>> result = replay("runs/me-prune-reach-tiny", rank=0)  # doctest: +SKIP
        >>> result.exact, sorted(result.files)  # doctest: +SKIP
        (True, ['figure', 'json', 'npz', 'viewer', 'video'])
    """
    from synprune_jax.export import choice_name, open_run, select_network
    from synprune_jax.tasks.rollout import EpisodeTask
    from synprune_jax.types import Population

    networks = networks or open_run(run_dir, as_run=True)
    row = select_network(networks, density=density, cell=cell, rank=rank)
    task = networks.task
    if not isinstance(task, EpisodeTask):
        raise ValueError(
            f"the run in {run_dir} evaluates on {type(task).__name__}, which has no episodes "
            "to replay (environment tasks: Brax, Playground, gymnax, the reach-and-avoid arm)"
        )
    episodes = int(task.num_episodes if episodes is None else episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    key, batch_size, info, note = _evaluation(networks, row, episodes, seed)
    info["episodes"] = episodes

    params, masks = networks.network(row)
    copies = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda leaf: jnp.broadcast_to(jnp.asarray(leaf), (batch_size, *np.shape(leaf))), tree
    )
    population = Population(
        params=copies(params), masks=copies(masks), rates=jnp.zeros((batch_size, 2), jnp.float32)
    )
    replay_task = dataclasses.replace(  # type: ignore[type-var]  # every suite is a dataclass
        task, keep_trajectories=True, num_episodes=episodes
    )
    # the run's wrappers (ShardedTask over its devices, ChunkedTask) around the replay's task, so
    # that each device evaluates the share it evaluated in the run
    evaluator = _rewrapped(getattr(networks.algorithm, "task", task), replay_task)
    result = jax.device_get(_compiled_evaluate(evaluator)(key, population))
    fitness = float(result.fitness[0])
    archived = float(networks.fitness[row])
    exact: bool | None = None
    if not note:
        exact = bool(np.float32(fitness) == np.float32(archived))
        if not exact:
            from synprune_jax.config import requested_devices

            _, devices = requested_devices(networks.config)
            here = getattr(evaluator, "num_devices", 1)
            where = (
                f"on {devices} devices, replayed on {here} (this process has {jax.device_count()})"
                if devices != here
                else "by another program (vmapped with other runs in a sweep, or another JAX / "
                "XLA / machine / compile settings)"
            )
            note = (
                f"replayed {fitness!r} != archived {archived!r}: the run was evaluated {where}, "
                "and float rounding differs between the two programs"
            )
    trajectory = {
        name: np.asarray(value[0])
        for name, value in result.extras.items()
        if np.ndim(value) >= 3 or name in ("alive", "rewards")
    }
    # float32 in step order, as the rollout accumulates them
    returns = np.cumsum(trajectory["rewards"], axis=1, dtype=np.float32)[:, -1]

    choice = choice_name(density, cell, rank)
    out = os.fspath(out or os.path.join(os.fspath(run_dir), "replay", choice))
    os.makedirs(out, exist_ok=True)
    files = {"npz": os.path.join(out, "trajectory.npz")}
    arrays: dict[str, Any] = {"returns": returns, **trajectory}
    np.savez_compressed(files["npz"], **arrays)
    title = (
        f"{networks.experiment} {networks.kind} "
        f"{'cell' if networks.kind == 'archive' else 'member'} {int(networks.index[row])}: "
        f"return {fitness:.4g} (archived {archived:.4g})"
    )
    files["figure"] = trajectory_figure(trajectory, os.path.join(out, "trajectory.png"), title)
    notes = [note] if note else []
    model = task.view_model() if "body_pos" in trajectory else None
    if model is not None:
        files["viewer"] = viewer_html(model, trajectory, os.path.join(out, "viewer.html"))
        if video:
            path, why = render_gif(model, trajectory, os.path.join(out, "video.gif"))
            if path is None:
                notes.append(f"no video: {why}")
            else:
                files["video"] = path
    summary = {
        "run": os.path.abspath(os.fspath(run_dir)),
        "experiment": networks.experiment,
        "kind": networks.kind,
        ("cell" if networks.kind == "archive" else "member"): int(networks.index[row]),
        "returns": [float(value) for value in returns],
        "fitness": fitness,
        "archived_fitness": archived,
        "exact": exact,
        "note": "; ".join(notes),
        "evaluation": info,
        "files": {kind: os.path.basename(path) for kind, path in files.items()},
    }
    files["json"] = os.path.join(out, "replay.json")
    with open(files["json"], "w") as handle:
        json.dump(summary, handle, indent=2)
    return Replay(
        returns=returns,
        fitness=fitness,
        archived_fitness=archived,
        exact=exact,
        note="; ".join(notes),
        evaluation=info,
        trajectory=trajectory,
        files=files,
    )


# ----- figure, viewer, video (host only) ---------------------------------------------------------

_GL_PROBE = (
    "import mujoco; model = mujoco.MjModel.from_xml_string('<mujoco/>'); "
    "mujoco.Renderer(model, 8, 8).close()"
)


@functools.cache
def gl_problem() -> str:
    """Why MuJoCo cannot render in this process (``""`` when it can), in one line.

    Without ``MUJOCO_GL`` (or with ``glfw``) and without a ``DISPLAY`` it cannot; otherwise a
    child process opens a renderer with this environment (a failing OpenGL backend may abort the
    process that tries, so the check never runs here). Cached per process.

    Examples:
        >>> isinstance(gl_problem(), str)
        True
    """
    gl = os.environ.get("MUJOCO_GL", "")
    advice = "on a machine without a display set MUJOCO_GL=egl or osmesa (docs/export.md)"
    if gl in ("", "glfw") and not os.environ.get("DISPLAY"):
        return f"MuJoCo has no OpenGL context (MUJOCO_GL={gl or 'unset'}, no DISPLAY); {advice}"
    try:
        child = subprocess.run(
            [sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not check MuJoCo's rendering ({error}); {advice}"
    if child.returncode != 0:
        lines = [line for line in child.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {child.returncode}"
        return f"MuJoCo could not open an OpenGL context (MUJOCO_GL={gl}: {last}); {advice}"
    return ""


def _alive_steps(trajectory: dict[str, np.ndarray], episode: int = 0) -> int:
    return max(1, int(np.sum(trajectory["alive"][episode])))


def trajectory_figure(trajectory: dict[str, np.ndarray], path: str, title: str = "") -> str:
    """Draws episode 0 of a replay: its path, actions and cumulative reward; returns ``path``.

    The path is the end effector's (``tip``, with the target and obstacles) where the task keeps
    one, else the first body's (``body_pos``) in its two widest coordinates, else the
    observations over time.

    Args:
        trajectory: arrays ``[E, T, ...]`` as in ``trajectory.npz`` (``alive``, ``actions``,
            ``rewards``, ``observations``, optional view arrays).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``.

    Examples:
        >>> T = 5
        >>> trajectory = {"alive": np.ones((1, T), bool), "actions": np.zeros((1, T, 2)),
        ...               "rewards": np.ones((1, T)), "observations": np.zeros((1, T, 3))}
        >>> import tempfile; folder = tempfile.mkdtemp()
        >>> os.path.basename(trajectory_figure(trajectory, os.path.join(folder, "t.png")))
        't.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _alive_steps(trajectory)
    figure, (path_axes, action_axes, reward_axes) = plt.subplots(1, 3, figsize=(15, 4.2))
    if "tip" in trajectory:
        tip = trajectory["tip"][0, :steps]
        path_axes.plot(tip[:, 0], tip[:, 1], "-", color="tab:blue", label="end effector")
        path_axes.plot(tip[0, 0], tip[0, 1], "o", color="tab:blue")
        target = trajectory["target"][0, 0]
        path_axes.plot(target[0], target[1], "*", color="tab:red", markersize=14, label="target")
        for obstacle in trajectory["obstacles"][0, 0]:
            path_axes.add_patch(
                plt.Circle((obstacle[0], obstacle[1]), obstacle[-1], color="gray", alpha=0.5)
            )
        path_axes.set_aspect("equal")
        path_axes.set_xlabel("x")
        path_axes.set_ylabel("y")
        path_axes.set_title("end-effector path (top view)")
        path_axes.legend(loc="best", fontsize=8)
    elif "body_pos" in trajectory:
        root = trajectory["body_pos"][0, :steps, 0]
        first, second = np.sort(np.argsort(-np.ptp(root, axis=0))[:2])
        names = "xyz"
        path_axes.plot(root[:, first], root[:, second], "-", color="tab:blue")
        path_axes.plot(root[0, first], root[0, second], "o", color="tab:blue")
        path_axes.set_xlabel(names[first])
        path_axes.set_ylabel(names[second])
        path_axes.set_aspect("equal", adjustable="datalim")
        path_axes.set_title("root body path")
    else:
        path_axes.plot(trajectory["observations"][0, :steps])
        path_axes.set_xlabel("step")
        path_axes.set_title("observations")
    action_axes.plot(trajectory["actions"][0, :steps])
    action_axes.set_xlabel("step")
    action_axes.set_title("actions")
    reward_axes.plot(np.cumsum(trajectory["rewards"][0, :steps]))
    reward_axes.set_xlabel("step")
    reward_axes.set_title("cumulative reward")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def viewer_html(model, trajectory: dict[str, np.ndarray], path: str) -> str:
    """Brax's HTML viewer of episode 0 (``body_pos`` / ``body_quat``) on the system Brax builds
    from ``model`` (a ``mujoco.MjModel``); returns ``path``. The page loads the viewer's
    JavaScript from a CDN when opened."""
    from types import SimpleNamespace

    from brax.base import Transform
    from brax.io import html, mjcf

    system = mjcf.load_model(model)
    steps = _alive_steps(trajectory)
    positions = trajectory["body_pos"][0, :steps]
    rotations = trajectory["body_quat"][0, :steps]
    states = [
        SimpleNamespace(x=Transform(pos=jnp.asarray(pos), rot=jnp.asarray(rot)))
        for pos, rot in zip(positions, rotations, strict=True)
    ]
    with open(path, "w") as handle:
        handle.write(html.render(system, states))
    return path


def render_gif(
    model, trajectory: dict[str, np.ndarray], path: str, *, height: int = 240, width: int = 320
) -> tuple[str | None, str]:
    """Renders episode 0 (``qpos``, and ``mocap_pos`` if kept) with MuJoCo into a GIF.

    At most :data:`MAX_VIDEO_FRAMES` frames (longer episodes are strided), 25 frames a second,
    the camera following the centre of mass.

    Returns:
        ``(path, "")``, or ``(None, why)`` when MuJoCo cannot render here (:func:`gl_problem`:
        set ``MUJOCO_GL=egl`` or ``osmesa`` before Python starts).
    """
    why = gl_problem()
    if why:
        return None, why
    import mujoco
    from PIL import Image

    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        data = mujoco.MjData(model)
        camera = mujoco.MjvCamera()
        first = trajectory["body_pos"][0, 0]  # the bodies at the start: the robot's size
        camera.distance = 3.0 * max(float(np.max(np.ptp(first, axis=0))), 0.3)
        camera.elevation = -35.0
        camera.azimuth = 90.0
        steps = _alive_steps(trajectory)
        stride = max(1, -(-steps // MAX_VIDEO_FRAMES))
        frames = []
        for step in range(0, steps, stride):
            data.qpos[:] = trajectory["qpos"][0, step]
            if "mocap_pos" in trajectory:
                data.mocap_pos[:] = trajectory["mocap_pos"][0, step]
            mujoco.mj_forward(model, data)
            camera.lookat[:] = data.subtree_com[0]  # the centre of mass of everything
            renderer.update_scene(data, camera=camera)
            frames.append(Image.fromarray(renderer.render()))
    finally:
        renderer.close()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return path, ""
