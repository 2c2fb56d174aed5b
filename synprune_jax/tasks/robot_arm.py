"""A real robot arm for the reach-and-avoid task: any serial arm in MJCF, by name or by file.

:class:`~synprune_jax.tasks.reach.ReachAvoidArm` with ``backend="mjx"`` and ``robot`` set to a
``mujoco-menagerie`` arm (``"franka_emika_panda"``, ``"kuka_iiwa_14"``, ``"universal_robots_ur5e"``,
... : ``mujoco_menagerie.robots("arm")``; ``"NAME/ENTRY"`` picks another entry point, e.g.
``"franka_emika_panda/mjx_panda_nohand"``) or to the path of an ``.xml`` file loads that arm
into MuJoCo (:func:`load_robot_arm`) and edits the scene:

* **Controls**: the actuators that drive hinge joints (a gripper's slide joints and tendons are
  left where the model puts them). They must be position servos (MuJoCo's ``position`` or
  ``general`` actuators with an affine bias); the policy's outputs move their set points.
* **The chain**: the bodies of those joints, in actuator order, must form one serial chain;
  the *shoulder* is the first one's origin and the *end effector* is the first site in the last
  chain body's subtree (menagerie's ``attachment_site``), else that body's origin.
* **Collisions**: the model's own geoms stop colliding (they stay for viewing); a capsule of
  radius ``link_radius`` is added along each link, from a chain body's origin to the next one
  (or to the end effector), and the obstacles are vertical pillars (capsules on mocap bodies,
  spanning every height the arm can reach) that collide with those capsules only. A collision
  is a MuJoCo contact with negative distance.
* **Start**: the model's ``home`` keyframe when it has one, else its default pose clipped into
  the joint ranges; the servos' set points start at the pose. Gravity, time step and integrator
  are the model's own.

Positions in the task (tip, target, obstacles) are relative to the shoulder, so the task's
geometry is the 3-D reach arm's (``dims=3``): reach ``L`` is the summed length of the link
segments at the start pose.

``mujoco-menagerie`` (the ``[tasks]`` extra) downloads a robot's meshes on first use into its
cache; offline, point ``MENAGERIE_ROOT`` at a Menagerie checkout (or prefetch on a connected
machine with ``python -c "import mujoco_menagerie as m; m.prefetch(['franka_emika_panda'])"`` and
copy the cache, ``MENAGERIE_CACHE_DIR``).

Example:
    >>> import pathlib, tempfile
    >>> xml = '''<mujoco><worldbody><body name="l0" pos="0 0 0.2">
    ...   <joint name="j0" axis="0 0 1"/><geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.02"/>
    ...   <body name="l1" pos="0.3 0 0"><joint name="j1" axis="0 1 0"/>
    ...     <geom type="capsule" fromto="0 0 0 0.2 0 0" size="0.02"/>
    ...     <site name="tip" pos="0.2 0 0"/></body></body></worldbody>
    ...   <actuator><position joint="j0" kp="50"/><position joint="j1" kp="50"/></actuator>
    ... </mujoco>'''
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "arm.xml"
    >>> _ = path.write_text(xml)
    >>> arm, model = load_robot_arm(str(path), num_obstacles=1, obstacle_radius=0.05)
    >>> arm.num_controls, round(arm.reach, 3), arm.shoulder
    (2, 0.5, (0.0, 0.0, 0.2))
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

ARM_CATEGORY = "arm"
HOME_KEY = "home"


@dataclasses.dataclass(frozen=True)
class RobotArm:
    """What the reach task needs to know about a loaded arm (:func:`load_robot_arm`).

    Attributes:
        robot: the name or path it was loaded from.
        joint_qpos: ``qpos`` addresses of the controlled joints, ``n`` ints.
        actuators: the controlled actuators' indices, ``n`` ints (in the model's order).
        ctrl_low: lower ends of their control ranges (``n``; ``-inf`` where unlimited).
        ctrl_high: upper ends (``n``; ``inf`` where unlimited).
        home_qpos: the start pose, all ``nq`` coordinates.
        home_ctrl: the start controls, all ``nu`` (the set points at the start pose).
        chain_bodies: body indices of the ``n`` chain bodies, shoulder first.
        end_body: the body that carries the end effector.
        end_offset: the end effector in ``end_body``'s frame, 3 floats.
        shoulder: the shoulder's world position at the start pose, 3 floats.
        reach: ``L``, the summed length of the link segments (shoulder to end effector).
    """

    robot: str
    joint_qpos: tuple[int, ...]
    actuators: tuple[int, ...]
    ctrl_low: tuple[float, ...]
    ctrl_high: tuple[float, ...]
    home_qpos: tuple[float, ...]
    home_ctrl: tuple[float, ...]
    chain_bodies: tuple[int, ...]
    end_body: int
    end_offset: tuple[float, float, float]
    shoulder: tuple[float, float, float]
    reach: float

    @property
    def num_controls(self) -> int:
        """``n``, the controlled joints."""
        return len(self.actuators)


def menagerie_arms() -> list[str]:
    """The names of ``mujoco-menagerie``'s arms (its registry; no download).

    Raises:
        ImportError: ``mujoco-menagerie`` is not installed (the ``[tasks]`` extra).
    """
    return [robot.name for robot in _menagerie().robots(ARM_CATEGORY)]


def _menagerie():
    try:
        import mujoco_menagerie
    except ImportError as error:
        raise ImportError(
            "robot arms by name need mujoco-menagerie: pip install -e '.[tasks]' "
            "(or give the path of an .xml file)"
        ) from error
    return mujoco_menagerie


def robot_spec(robot: str):
    """The ``mujoco.MjSpec`` of ``robot``: a path to an MJCF file (it ends in ``.xml``), or a
    ``mujoco-menagerie`` name, ``"NAME"`` (its default model) or ``"NAME/ENTRY"``.

    Raises:
        ValueError: an unknown name or entry point, or a file that does not exist; a model
            that cannot be fetched (offline), with what to do instead.
    """
    import mujoco

    if robot.endswith(".xml"):
        if not os.path.isfile(robot):
            raise ValueError(f"reach: robot file {robot!r} does not exist")
        return mujoco.MjSpec.from_file(robot)
    menagerie = _menagerie()
    name, _, entry = robot.partition("/")
    arms = menagerie_arms()
    if name not in arms:
        raise ValueError(
            f"reach: unknown robot {name!r}; mujoco-menagerie's arms: {', '.join(arms)} "
            "(or the path of an .xml file)"
        )
    record = menagerie.get(name)
    entry = entry or record.default_model
    if entry not in record.entry_names:
        raise ValueError(
            f"reach: {name} has no entry point {entry!r}; its entry points: "
            f"{', '.join(record.entry_names)}"
        )
    try:
        return record.spec(entry)
    except menagerie.MenagerieError as error:
        raise ValueError(
            f"reach: cannot load {name} from mujoco-menagerie ({error}); its meshes are "
            "downloaded on first use: offline, set MENAGERIE_ROOT to a Menagerie checkout or "
            "MENAGERIE_CACHE_DIR to a cache prefetched elsewhere"
        ) from error


@functools.cache
def load_robot_arm(
    robot: str, num_obstacles: int, obstacle_radius: float, link_radius: float = 0.04
):
    """Loads ``robot`` and edits its scene for the reach task (module docstring).

    Args:
        robot: a ``mujoco-menagerie`` arm (``"NAME"`` or ``"NAME/ENTRY"``) or an ``.xml`` path.
        num_obstacles: pillars added (mocap bodies, placed per episode through ``mocap_pos``).
        obstacle_radius: the pillars' radius in metres.
        link_radius: the radius of the collision capsules along the links, in metres.

    Returns:
        ``(RobotArm, mujoco.MjModel)``; the model's pillars are mocap bodies ``0 .. k - 1``.

    Raises:
        ValueError: the model cannot be loaded, or is not a serial arm driven by position
            servos on hinge joints (the message says which).
    """
    import mujoco

    spec = robot_spec(robot)
    model = spec.compile()
    arm = _describe(robot, model)
    # collision capsules along the links (in each chain body's frame, from the start pose)
    points, frames = _chain_points(
        model, arm.home_qpos, arm.chain_bodies, arm.end_body, arm.end_offset, frames=True
    )
    for geom in spec.geoms:  # the model's own geoms are for viewing only
        geom.contype, geom.conaffinity = 0, 0
    for pair in list(spec.pairs):
        spec.delete(pair)
    names = [model.body(b).name for b in arm.chain_bodies]
    for index, body_name in enumerate(names):
        end = frames[index].T @ (points[index + 1] - points[index])
        if np.linalg.norm(end) < 1e-6:
            continue
        spec.body(body_name).add_geom(
            name=f"reach_link{index}",
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[0.0, 0.0, 0.0, *end.tolist()],
            size=[link_radius, 0.0, 0.0],
            contype=2,
            conaffinity=0,
            group=3,
            mass=0.0,
        )
    height = arm.reach + obstacle_radius + link_radius
    for j in range(int(num_obstacles)):
        body = spec.worldbody.add_body(name=f"reach_obstacle{j}", mocap=True, pos=[0, 0, -10])
        body.add_geom(
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[0.0, 0.0, -height, 0.0, 0.0, height],
            size=[obstacle_radius, 0.0, 0.0],
            contype=0,
            conaffinity=2,
            rgba=[0.8, 0.3, 0.3, 1.0],
        )
    return arm, spec.compile()


def _chain_points(model, qpos, bodies, end_body, end_offset, frames: bool = False):
    """World positions ``[n + 1, 3]`` of the chain bodies' origins and the end effector at the
    pose ``qpos`` (MuJoCo's forward kinematics), and the chain bodies' rotations if ``frames``."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    end = data.xpos[end_body] + data.xmat[end_body].reshape(3, 3) @ np.asarray(end_offset)
    points = np.stack([*(data.xpos[b] for b in bodies), end])
    if frames:
        return points, [data.xmat[b].reshape(3, 3).copy() for b in bodies]
    return points


def _describe(robot: str, model) -> RobotArm:
    """The controlled joints, chain, end effector and start pose of a compiled arm."""
    import mujoco

    hinge = mujoco.mjtJoint.mjJNT_HINGE
    actuators = [
        a
        for a in range(model.nu)
        if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
        and model.jnt_type[model.actuator_trnid[a, 0]] == hinge
    ]
    if not actuators:
        raise ValueError(f"reach: robot {robot!r} has no actuator on a hinge joint")
    for a in actuators:
        if model.actuator_biastype[a] != mujoco.mjtBias.mjBIAS_AFFINE:
            raise ValueError(
                f"reach: robot {robot!r}: actuator {model.actuator(a).name or a} is not a "
                "position servo (the task moves servo set points)"
            )
    joints = [int(model.actuator_trnid[a, 0]) for a in actuators]
    if any(model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE for j in range(model.njnt)):
        raise ValueError(f"reach: robot {robot!r} has a free joint: the task needs a fixed base")
    bodies = [int(model.jnt_bodyid[j]) for j in joints]
    for parent, child in zip(bodies[:-1], bodies[1:], strict=True):
        ancestor = child
        while ancestor not in (0, parent):
            ancestor = int(model.body_parentid[ancestor])
        if ancestor != parent:
            raise ValueError(
                f"reach: robot {robot!r} is not a serial arm: body {model.body(child).name!r} "
                f"does not hang below {model.body(parent).name!r}"
            )
    end_body, end_offset = bodies[-1], np.zeros(3)
    subtree = {bodies[-1]}
    for body in range(bodies[-1] + 1, model.nbody):  # MuJoCo numbers bodies depth-first
        if int(model.body_parentid[body]) in subtree:
            subtree.add(body)
    for site in range(model.nsite):
        if int(model.site_bodyid[site]) in subtree:
            end_body, end_offset = int(model.site_bodyid[site]), np.array(model.site_pos[site])
            break
    key = next((k for k in range(model.nkey) if model.key(k).name == HOME_KEY), None)
    if key is not None:
        qpos = np.array(model.key_qpos[key], dtype=np.float64)
    else:
        qpos = np.array(model.qpos0, dtype=np.float64)
        limited = model.jnt_limited.astype(bool)
        for j in np.flatnonzero(limited):
            address = model.jnt_qposadr[j]
            qpos[address] = np.clip(qpos[address], *model.jnt_range[j])
    ctrl = np.zeros(model.nu) if key is None else np.array(model.key_ctrl[key], np.float64)
    addresses = [int(model.jnt_qposadr[j]) for j in joints]
    low = np.where(
        model.actuator_ctrllimited[actuators], model.actuator_ctrlrange[actuators, 0], -np.inf
    )
    high = np.where(
        model.actuator_ctrllimited[actuators], model.actuator_ctrlrange[actuators, 1], np.inf
    )
    ctrl[actuators] = np.clip(qpos[addresses], low, high)
    points = _chain_points(model, qpos, bodies, end_body, end_offset)
    reach = float(sum(np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:], strict=True)))
    if reach <= 0:
        raise ValueError(f"reach: robot {robot!r}: its links have no length")
    return RobotArm(
        robot=robot,
        joint_qpos=tuple(addresses),
        actuators=tuple(actuators),
        ctrl_low=tuple(float(x) for x in low),
        ctrl_high=tuple(float(x) for x in high),
        home_qpos=tuple(float(x) for x in qpos),
        home_ctrl=tuple(float(x) for x in ctrl),
        chain_bodies=tuple(bodies),
        end_body=end_body,
        end_offset=(float(end_offset[0]), float(end_offset[1]), float(end_offset[2])),
        shoulder=(float(points[0][0]), float(points[0][1]), float(points[0][2])),
        reach=reach,
    )


__all__ = ["RobotArm", "load_robot_arm", "menagerie_arms", "robot_spec"]
