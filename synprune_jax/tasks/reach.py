"""Reach and avoid: a planar arm whose tip must reach a target while its links avoid obstacles.

The arm has ``n`` revolute joints at the origin and along the chain (link lengths
``link_lengths``, total ``L``; by default ``n`` equal links with ``L = 1``). Joint ``i`` turns
by ``q_i`` relative to link ``i - 1``; the episode starts stretched along ``+x`` (``q = 0``).
The policy (a tanh MLP, rolled out by :class:`~synprune_jax.tasks.rollout.EpisodeTask`) sees
Cartesian coordinates, not pixels:

    observation = [cos q (n), sin q (n), tip (2), target (2), obstacles (k x [x, y, radius])]

and its ``n`` outputs in ``[-1, 1]`` move the joints by ``max_joint_step * output`` radians.

Per episode (drawn from the episode key): the target at an angle ``theta`` with
``|theta| ~ U(0.5 pi, 0.9 pi)`` (either side) and radius ``~ U(0.5, 0.9) L``; obstacle ``j``
(circles; pillars seen from above) on the way, at angle ``theta * U(0.35, 0.65)`` and radius
``~ U(0.35, 0.8) L``, of radius ``~ U(*obstacle_radius) L``. Sweeping the stretched arm straight
towards the target hits them: the policy has to fold the arm around.

Reward per step: progress ``(d_before - d_after) / L`` towards the target, minus
``collision_penalty`` when any link intersects any obstacle (segment-circle distance below the
radius), plus ``success_bonus`` on the step the tip comes within ``tolerance * L`` of the target,
which ends the episode (success). Fitness is the summed reward; ``extras`` add ``success``
(fraction of episodes), ``collision_steps`` (mean colliding steps) and ``final_distance``.

Descriptors: the mask-based ones, ``final_end_effector`` (tip at the last alive step, in
``[-L, L]^2``) and ``obstacle_distance`` (smallest clearance over the episode, in ``[0, L]``).

In 3-D (``dims=3``) the base also turns the chain's vertical plane about ``z`` (one more
control, :func:`joint_positions_3d`), the target gets an elevation, the obstacles are spheres
on the way (``[x, y, z, radius]``) and positions have three coordinates.

Backends:

* ``"kinematic"``: the joints move exactly as commanded; collisions are the geometric test
  above (pure JAX: millions of steps per second on a CPU).
* ``"mjx"``: the same arm as a MuJoCo model simulated by MJX (:func:`arm_mjcf`: capsule links,
  hinge joints with position servos, the obstacles as vertical capsules on mocap bodies placed
  per episode, no gravity in the plane): the action moves each servo's set point by
  ``max_joint_step * output``, ``physics_steps`` physics steps of ``timestep`` follow, the links
  are blocked by the pillars they touch, and a collision is a MuJoCo contact with negative
  distance. The obstacles' radius is the middle of ``obstacle_radius`` (a model constant).
  With ``robot`` set (``dims=3``), a real arm instead: a ``mujoco-menagerie`` arm by name
  (``"franka_emika_panda"``, ``"kuka_iiwa_14"``, ...) or any serial arm's ``.xml`` file, with
  pillars added to its scene (:mod:`synprune_jax.tasks.robot_arm`). The observation is then
  ``[cos q, sin q (n), tip (3), target (3), pillars (k x [x, y, radius])]``, positions relative
  to the arm's shoulder, and the clearance is measured from the links' collision capsules.

Example:
    >>> import jax
    >>> task = ReachAvoidArm(num_joints=2)
    >>> task.spec.input_size, task.spec.output_size
    (11, 2)
    >>> [round(float(v), 3) for v in joint_positions(jax.numpy.zeros(2),
    ...                                                jax.numpy.array([0.5, 0.5]))[-1]]
    [1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.tasks.robot_arm import RobotArm, load_robot_arm
from synprune_jax.tasks.rollout import EpisodeTask, check_choice, check_episodes, policy_spec

BACKENDS = ("kinematic", "mjx")
PLANAR = "planar"  # ``robot``: the built-in arm of ``arm_mjcf`` / the kinematic chain
LINK_RADIUS = 0.04  # metres: the collision capsules along a robot arm's links


def joint_positions(angles: jax.Array, lengths: jax.Array) -> jax.Array:
    """Positions ``[n + 1, 2]`` of the base, every joint after it and the tip, for joint angles
    ``[n]`` (radians, each relative to the previous link) and link lengths ``[n]``."""
    cumulative = jnp.cumsum(angles)
    steps = lengths[:, None] * jnp.stack([jnp.cos(cumulative), jnp.sin(cumulative)], axis=-1)
    return jnp.concatenate([jnp.zeros((1, 2), steps.dtype), jnp.cumsum(steps, axis=0)])


def joint_positions_3d(angles: jax.Array, lengths: jax.Array) -> jax.Array:
    """Positions ``[n + 1, 3]`` of the 3-D arm: ``angles[0]`` turns the arm's vertical plane
    about ``z`` (the base's yaw); ``angles[1:]`` (``[n]``) are the joints of the planar chain in
    that plane (:func:`joint_positions`, its ``y`` becoming the height ``z``)."""
    planar = joint_positions(angles[1:], lengths)  # [n + 1, 2]: (r, z)
    yaw = angles[0]
    return jnp.stack(
        [planar[:, 0] * jnp.cos(yaw), planar[:, 0] * jnp.sin(yaw), planar[:, 1]], axis=-1
    )


def clearance(points: jax.Array, obstacles: jax.Array) -> jax.Array:
    """Smallest distance between the links (segments between consecutive ``points [n + 1, d]``)
    and the obstacles' surfaces (``obstacles [k, d + 1]``: centre, radius: circles in the plane,
    spheres in 3-D); negative when a link enters an obstacle."""
    start, end = points[:-1, None, :], points[1:, None, :]  # [n, 1, d]
    centre, radius = obstacles[None, :, :-1], obstacles[None, :, -1]  # [1, k, d], [1, k]
    segment = end - start
    t = jnp.sum((centre - start) * segment, -1) / jnp.maximum(jnp.sum(segment**2, -1), 1e-12)
    closest = start + jnp.clip(t, 0.0, 1.0)[..., None] * segment
    return jnp.min(jnp.linalg.norm(closest - centre, axis=-1) - radius)


def arm_mjcf(
    link_lengths: tuple[float, ...],
    num_obstacles: int,
    obstacle_radius: float,
    timestep: float = 0.01,
    link_radius: float = 0.02,
    kp: float = 20.0,
    damping: float = 1.0,
) -> str:
    """The MuJoCo model (MJCF text) of the planar arm: ``n`` capsule links on hinge joints about
    ``z`` with position servos, a ``tip`` site, and ``num_obstacles`` vertical capsules of radius
    ``obstacle_radius`` on mocap bodies (links collide with obstacles only)."""
    bodies, closing = [], []
    for index, length in enumerate(link_lengths):
        position = "0 0 0" if index == 0 else f"{link_lengths[index - 1]} 0 0"
        bodies.append(
            f'<body name="link{index}" pos="{position}">'
            f'<joint name="joint{index}" type="hinge" axis="0 0 1" damping="{damping}"/>'
            f'<geom type="capsule" fromto="0 0 0 {length} 0 0" size="{link_radius}" '
            'contype="1" conaffinity="0"/>'
        )
        closing.append("</body>")
    tip = f'<site name="tip" pos="{link_lengths[-1]} 0 0"/>'
    pillars = "".join(
        f'<body name="obstacle{j}" mocap="true" pos="0 0 -5"><geom type="capsule" '
        f'fromto="0 0 -0.5 0 0 0.5" size="{obstacle_radius}" contype="0" conaffinity="1"/>'
        "</body>"
        for j in range(num_obstacles)
    )
    actuators = "".join(
        f'<position joint="joint{index}" kp="{kp}"/>' for index in range(len(link_lengths))
    )
    return (
        f'<mujoco model="reach_arm"><option timestep="{timestep}" gravity="0 0 0" '
        f'integrator="implicitfast"/><worldbody>{"".join(bodies)}{tip}{"".join(closing)}'
        f"{pillars}</worldbody><actuator>{actuators}</actuator></mujoco>"
    )


@functools.cache
def _mjx_model(
    link_lengths: tuple[float, ...], num_obstacles: int, obstacle_radius: float, timestep: float
):
    """``(MjModel, mjx.Model)`` of :func:`arm_mjcf` (built once per argument tuple)."""
    import mujoco
    from mujoco import mjx

    model = mujoco.MjModel.from_xml_string(
        arm_mjcf(link_lengths, num_obstacles, obstacle_radius, timestep)
    )
    with jax.ensure_compile_time_eval():
        return model, mjx.put_model(model, impl="jax")


@functools.cache
def _robot_model(robot: str, num_obstacles: int, obstacle_radius: float):
    """``(RobotArm, MjModel, mjx.Model)`` of a robot arm with its pillars (built once)."""
    from mujoco import mjx

    arm, model = load_robot_arm(robot, num_obstacles, obstacle_radius, LINK_RADIUS)
    with jax.ensure_compile_time_eval():
        return arm, model, mjx.put_model(model, impl="jax")


@dataclasses.dataclass(frozen=True)
class ReachAvoidArm(EpisodeTask):
    """Reach a target, avoid obstacles (module docstring).

    Attributes:
        num_joints: joints / links ``n`` of the chain.
        dims: 2 (planar) or 3: the chain moves in a vertical plane that the base turns about
            ``z`` (one more control, :func:`joint_positions_3d`), obstacles are spheres, the
            target has an elevation (``kinematic`` backend only).
        link_lengths: ``n`` lengths, or ``None`` for ``n`` links of ``1 / n``.
        num_obstacles: obstacles ``k`` per episode.
        obstacle_radius: ``(low, high)`` radius range, as fractions of the arm's length ``L``.
        max_joint_step: radians a joint turns per step at output 1.
        tolerance: success distance, as a fraction of ``L``.
        collision_penalty: subtracted per colliding step.
        success_bonus: added on the step that reaches the target.
        backend: ``"kinematic"`` or ``"mjx"`` (module docstring).
        robot: ``mjx`` only: ``"planar"`` (the built-in arm of :func:`arm_mjcf`), a
            ``mujoco-menagerie`` arm (``"NAME"`` or ``"NAME/ENTRY"``) or an ``.xml`` path of a
            serial arm with position servos (:mod:`synprune_jax.tasks.robot_arm`; needs
            ``dims=3``; ``num_joints`` and ``link_lengths`` are then unused: the robot's own
            servos and reach count).
        physics_steps: ``mjx`` only: physics steps of ``timestep`` seconds per env step.
        timestep: ``mjx`` only: the physics time step.
        episode_length: steps per episode (``T``); num_episodes: episodes (targets) per
            individual (``E``), averaged.
        hidden_sizes: hidden widths of the tanh policy.
        descriptors: ``sparsity``, ``disconnected_fraction``, ``layer_density``,
            ``final_end_effector``, ``obstacle_distance``.
        keep_trajectories: also return observations, actions and alive flags in ``extras``.
    """

    num_joints: int = 3
    dims: int = 2
    link_lengths: tuple[float, ...] | None = None
    num_obstacles: int = 1
    obstacle_radius: tuple[float, float] = (0.08, 0.15)
    max_joint_step: float = 0.1
    tolerance: float = 0.05
    collision_penalty: float = 0.1
    success_bonus: float = 1.0
    backend: str = "kinematic"
    robot: str = PLANAR
    physics_steps: int = 5
    timestep: float = 0.01
    episode_length: int = 100
    num_episodes: int = 4
    hidden_sizes: tuple[int, ...] = (16, 16)
    descriptors: tuple[str, ...] = ("sparsity", "disconnected_fraction")
    keep_trajectories: bool = False

    def __post_init__(self):
        owner = f"ReachAvoidArm(num_joints={self.num_joints})"
        check_choice("reach", "backend", self.backend, BACKENDS)
        check_choice("reach", "dims", self.dims, (2, 3))
        if self.robot != PLANAR:
            if self.backend != "mjx" or int(self.dims) != 3:
                raise ValueError(
                    f"{owner}: a robot arm ({self.robot!r}) needs backend='mjx' and dims=3, "
                    f"got backend={self.backend!r}, dims={self.dims}"
                )
        elif self.backend == "mjx" and self.dims != 2:
            raise ValueError(f"{owner}: the built-in mjx arm is planar (dims=2)")
        check_episodes(owner, self.episode_length, self.num_episodes)
        if isinstance(self.num_joints, bool) or int(self.num_joints) < 1:
            raise ValueError(f"{owner}: num_joints must be >= 1")
        lengths = (
            self.link_lengths
            if self.link_lengths is not None
            else (1.0 / int(self.num_joints),) * int(self.num_joints)
        )
        lengths = tuple(float(x) for x in lengths)
        if len(lengths) != int(self.num_joints) or min(lengths) <= 0:
            raise ValueError(
                f"{owner}: link_lengths must be {self.num_joints} positive numbers, "
                f"got {self.link_lengths}"
            )
        object.__setattr__(self, "link_lengths", lengths)
        if int(self.num_obstacles) < 0:
            raise ValueError(f"{owner}: num_obstacles must be >= 0")
        low, high = (float(x) for x in self.obstacle_radius)
        if not 0 < low <= high < 0.5:
            raise ValueError(
                f"{owner}: obstacle_radius must be 0 < low <= high < 0.5, got "
                f"{self.obstacle_radius}"
            )
        object.__setattr__(self, "obstacle_radius", (low, high))
        for field in ("max_joint_step", "tolerance", "timestep"):
            if not float(getattr(self, field)) > 0:
                raise ValueError(f"{owner}: {field} must be > 0")
        if isinstance(self.physics_steps, bool) or int(self.physics_steps) < 1:
            raise ValueError(f"{owner}: physics_steps must be an integer >= 1")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if self.robot != PLANAR:  # loads it: a missing or unsuitable model fails here
            self._robot()
        names = descriptors_lib.validate(self.descriptors, self._context(with_spec=False), owner)
        object.__setattr__(self, "descriptors", names)

    @property
    def length(self) -> float:
        """The arm's total length ``L`` (a robot arm's reach, :class:`RobotArm`)."""
        if self.robot != PLANAR:
            return self.robot_arm.reach
        assert self.link_lengths is not None  # set in __post_init__
        return float(sum(self.link_lengths))

    @property
    def robot_arm(self) -> RobotArm:
        """The loaded robot arm (``robot`` set; module docstring)."""
        return self._robot()[0]

    def _robot(self):
        # the pillars' radius in metres from the planar arm's fractions of L (known after load)
        arm, _ = load_robot_arm(self.robot, 0, 1.0, LINK_RADIUS)
        radius = arm.reach * sum(self.obstacle_radius) / 2
        return _robot_model(self.robot, int(self.num_obstacles), radius)

    @property
    def observation_size(self) -> int:
        dims = int(self.dims)
        per_obstacle = 3 if self.robot != PLANAR else dims + 1  # pillars: x, y, radius
        return 2 * self.num_controls + 2 * dims + per_obstacle * int(self.num_obstacles)

    @property
    def spec(self) -> MLPSpec:
        return policy_spec(self.observation_size, self.num_controls, self.hidden_sizes)

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset({descriptors_lib.SPEC, descriptors_lib.REACH}),
            spec=self.spec if with_spec else None,
            xy_bound=self.length,
            dims=int(self.dims),
        )

    # ----- the scene -------------------------------------------------------------------------
    def scene(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(target [d], obstacles [k, d + 1])`` of one episode (module docstring; in 3-D the
        target's elevation is ``U(-0.4, 0.6)`` rad and each obstacle sits at a fraction
        ``U(0.35, 0.65)`` of it)."""
        length = self.length
        side, angle, radius, key = jax.random.split(key, 4)
        theta = jnp.where(jax.random.bernoulli(side), 1.0, -1.0) * jax.random.uniform(
            angle, minval=0.5 * np.pi, maxval=0.9 * np.pi
        )
        distance = length * jax.random.uniform(radius, minval=0.5, maxval=0.9)
        k = int(self.num_obstacles)
        fraction, where, size, height, lift = jax.random.split(key, 5)
        phi = theta * jax.random.uniform(fraction, (k,), minval=0.35, maxval=0.65)
        rho = length * jax.random.uniform(where, (k,), minval=0.35, maxval=0.8)
        low, high = self.obstacle_radius
        sizes = length * jax.random.uniform(size, (k,), minval=low, maxval=high)
        if int(self.dims) == 2:
            target = distance * jnp.stack([jnp.cos(theta), jnp.sin(theta)])
            obstacles = jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi), sizes], axis=-1)
        else:
            elevation = jax.random.uniform(height, minval=-0.4, maxval=0.6)
            target = distance * jnp.stack(
                [
                    jnp.cos(elevation) * jnp.cos(theta),
                    jnp.cos(elevation) * jnp.sin(theta),
                    jnp.sin(elevation),
                ]
            )
            tilt = elevation * jax.random.uniform(lift, (k,), minval=0.35, maxval=0.65)
            obstacles = jnp.stack(
                [
                    rho * jnp.cos(tilt) * jnp.cos(phi),
                    rho * jnp.cos(tilt) * jnp.sin(phi),
                    rho * jnp.sin(tilt),
                    sizes,
                ],
                axis=-1,
            )
        return target.astype(jnp.float32), obstacles.astype(jnp.float32)

    @property
    def num_controls(self) -> int:
        """Joints the policy moves: ``num_joints``, plus the base's yaw in 3-D (a robot arm:
        its servos on hinge joints)."""
        if self.robot != PLANAR:
            return self.robot_arm.num_controls
        return int(self.num_joints) + (int(self.dims) == 3)

    def _points(self, angles) -> jax.Array:
        lengths = jnp.asarray(self.link_lengths, jnp.float32)
        return (
            joint_positions(angles, lengths)
            if int(self.dims) == 2
            else joint_positions_3d(angles, lengths)
        )

    def _measure(self, points, target, obstacles) -> dict:
        """Tip, distance to the target and clearance of the arm whose joints and tip are
        ``points [n + 1, 2]``."""
        if not int(self.num_obstacles):
            gap = jnp.asarray(self.length, jnp.float32)
        elif self.robot != PLANAR:  # pillars: the links' distance in the plane, less their radius
            gap = clearance(points[:, :2], obstacles) - LINK_RADIUS
        else:
            gap = clearance(points, obstacles)
        return {
            "tip": points[-1],
            "distance": jnp.linalg.norm(points[-1] - target),
            "clearance": gap,
        }

    def _reward_and_end(self, before, after) -> tuple[jax.Array, jax.Array]:
        success = after["distance"] < self.tolerance * self.length
        reward = (
            (before["distance"] - after["distance"]) / self.length
            - self.collision_penalty * after["collided"].astype(jnp.float32)
            + self.success_bonus * success.astype(jnp.float32)
        )
        return reward.astype(jnp.float32), success

    def _scene(self, key: jax.Array):
        target, obstacles = self.scene(key)
        if self.robot != PLANAR:  # vertical pillars through the spheres' centres
            obstacles = obstacles[:, jnp.array([0, 1, 3])]
        if self.backend == "mjx":  # the model's radius (a constant of the MuJoCo model)
            obstacles = obstacles.at[:, -1].set(self.length * sum(self.obstacle_radius) / 2)
        return target, obstacles

    # ----- one episode (EpisodeTask) -----------------------------------------------------------
    def _reset(self, key: jax.Array):
        target, obstacles = self._scene(key)
        angles = jnp.zeros((self.num_controls,), jnp.float32)
        if self.robot != PLANAR:  # the servos' set points at the start pose
            arm = self.robot_arm
            angles = jnp.asarray(arm.home_ctrl, jnp.float32)[jnp.asarray(arm.actuators)]
        state = {
            "angles": angles,
            "target": target,
            "obstacles": obstacles,
            "reward": jnp.zeros((), jnp.float32),
            "done": jnp.asarray(False),
            "collided": jnp.asarray(False),
        }
        if self.backend == "mjx":
            return {**state, **self._mjx_reset(obstacles, target)}
        return {**state, **self._measure(self._points(angles), target, obstacles)}

    def _step(self, state, action: jax.Array, key):
        move = self.max_joint_step * jnp.clip(action, -1.0, 1.0)
        if self.backend == "mjx":
            after = self._mjx_step(state, move)
        else:
            angles = state["angles"] + move
            after = {
                **state,
                "angles": angles,
                **self._measure(self._points(angles), state["target"], state["obstacles"]),
            }
            after["collided"] = after["clearance"] < 0.0
        reward, success = self._reward_and_end(state, after)
        return {**after, "reward": reward, "done": success}

    # ----- the MuJoCo backend ------------------------------------------------------------------
    def _model(self):
        """``(MjModel, mjx.Model)`` of the arm with its obstacles."""
        if self.robot != PLANAR:
            return self._robot()[1:]
        radius = self.length * sum(self.obstacle_radius) / 2
        return _mjx_model(self.link_lengths, int(self.num_obstacles), radius, float(self.timestep))

    def _mjx_points(self, data) -> jax.Array:
        """Joint positions (the link bodies' origins) and the tip, from MuJoCo: ``[n + 1, 2]``
        (a robot arm: chain bodies and end effector relative to the shoulder, ``[n + 1, 3]``)."""
        if self.robot != PLANAR:
            arm = self.robot_arm
            bodies = jnp.asarray(arm.chain_bodies)
            end = data.xpos[arm.end_body] + data.xmat[arm.end_body].reshape(3, 3) @ jnp.asarray(
                arm.end_offset, data.xpos.dtype
            )
            points = jnp.concatenate([data.xpos[bodies], end[None]])
            return (points - jnp.asarray([arm.shoulder], points.dtype)).astype(jnp.float32)
        n = int(self.num_joints)
        return jnp.concatenate([data.xpos[1 : n + 1, :2], data.site_xpos[:1, :2]]).astype(
            jnp.float32
        )

    def _mjx_reset(self, obstacles, target) -> dict:
        from mujoco import mjx

        _, model = self._model()
        data = mjx.make_data(model, impl="jax")
        base = np.zeros(3)
        if self.robot != PLANAR:
            arm = self.robot_arm
            base = np.array([arm.shoulder[0], arm.shoulder[1], arm.shoulder[2]])
            data = data.replace(
                qpos=jnp.asarray(arm.home_qpos, data.qpos.dtype),
                ctrl=jnp.asarray(arm.home_ctrl, data.ctrl.dtype),
            )
        if int(self.num_obstacles):
            k = int(self.num_obstacles)
            data = data.replace(
                mocap_pos=jnp.concatenate([obstacles[:, :2], jnp.zeros((k, 1))], axis=1)
                + jnp.asarray(base[None, :], jnp.float32)
            )
        with jax.numpy_rank_promotion("allow"):  # MJX broadcasts implicitly
            data = mjx.forward(model, data)
        return {"data": data, **self._measure(self._mjx_points(data), target, obstacles)}

    def _mjx_step(self, state, move) -> dict:
        from mujoco import mjx

        _, model = self._model()
        goal = state["angles"] + move  # the servos' set points
        if self.robot != PLANAR:
            arm = self.robot_arm
            goal = jnp.clip(goal, jnp.asarray(arm.ctrl_low), jnp.asarray(arm.ctrl_high))
            ctrl = state["data"].ctrl.at[jnp.asarray(arm.actuators)].set(goal)
            data = state["data"].replace(ctrl=ctrl)
        else:
            data = state["data"].replace(ctrl=goal)

        def physics(carry, _):
            data, touched = carry
            data = mjx.step(model, data)
            if int(self.num_obstacles):
                touched = touched | jnp.any(data._impl.contact.dist < 0)
            return (data, touched), None

        with jax.numpy_rank_promotion("allow"):  # MJX broadcasts implicitly
            (data, touched), _ = jax.lax.scan(
                physics, (data, jnp.asarray(False)), None, length=int(self.physics_steps)
            )
        return {
            **state,
            "angles": goal,
            "data": data,
            "collided": touched,
            **self._measure(self._mjx_points(data), state["target"], state["obstacles"]),
        }

    def _observation(self, state) -> jax.Array:
        if self.robot != PLANAR:
            angles = state["data"].qpos[jnp.asarray(self.robot_arm.joint_qpos)]
        else:
            angles = state["data"].qpos if self.backend == "mjx" else state["angles"]
        angles = angles.astype(jnp.float32)
        return jnp.concatenate(
            [
                jnp.cos(angles),
                jnp.sin(angles),
                state["tip"],
                state["target"],
                state["obstacles"].reshape(-1),
            ]
        )

    def _reward(self, state) -> jax.Array:
        return state["reward"]

    def _done(self, state) -> jax.Array:
        return state["done"]

    def _last(self, state) -> dict:
        return {
            "final_tip": state["tip"],
            "final_distance": state["distance"],
            "success": state["done"].astype(jnp.float32),
        }

    def view_model(self):
        return self._model()[0] if self.backend == "mjx" else None

    def _view(self, state) -> dict:
        view = {name: state[name] for name in ("tip", "target", "obstacles")}
        if self.backend == "mjx":
            data = state["data"]
            view.update(qpos=data.qpos, body_pos=data.xpos[1:], body_quat=data.xquat[1:])
            if int(self.num_obstacles):
                view["mocap_pos"] = data.mocap_pos
        return view

    def _summed(self, state) -> dict:
        return {"collision_steps": state["collided"].astype(jnp.float32)}

    def _lowest(self, state) -> dict:
        return {"clearance": state["clearance"]}

    def _descriptor_inputs(self, out: dict, steps: jax.Array) -> dict:
        return {
            "final_end_effector": jnp.mean(out["final_tip"], axis=1),
            "obstacle_distance": jnp.min(out["clearance"], axis=1),
        }

    def _extras(self, out: dict, steps: jax.Array) -> dict:
        return {
            "success": jnp.mean(out["success"], axis=1),
            "collision_steps": jnp.mean(out["collision_steps"], axis=1),
            "final_distance": jnp.mean(out["final_distance"], axis=1),
        }


__all__ = [
    "BACKENDS",
    "PLANAR",
    "ReachAvoidArm",
    "arm_mjcf",
    "clearance",
    "joint_positions",
    "joint_positions_3d",
]
