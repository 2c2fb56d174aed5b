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

Backends: ``"kinematic"`` (this module, pure JAX: thousands of episodes per second on a CPU).
A MuJoCo arm from ``mujoco-menagerie`` with a pillar in the scene is planned (``docs/tasks.md``).

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

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.tasks.rollout import EpisodeTask, check_choice, check_episodes, policy_spec

BACKENDS = ("kinematic",)


def joint_positions(angles: jax.Array, lengths: jax.Array) -> jax.Array:
    """Positions ``[n + 1, 2]`` of the base, every joint after it and the tip, for joint angles
    ``[n]`` (radians, each relative to the previous link) and link lengths ``[n]``."""
    cumulative = jnp.cumsum(angles)
    steps = lengths[:, None] * jnp.stack([jnp.cos(cumulative), jnp.sin(cumulative)], axis=-1)
    return jnp.concatenate([jnp.zeros((1, 2), steps.dtype), jnp.cumsum(steps, axis=0)])


def clearance(points: jax.Array, obstacles: jax.Array) -> jax.Array:
    """Smallest distance between the links (segments between consecutive ``points [n + 1, 2]``)
    and the obstacles' edges (``obstacles [k, 3]``: x, y, radius); negative when a link enters
    an obstacle."""
    start, end = points[:-1, None, :], points[1:, None, :]                # [n, 1, 2]
    centre, radius = obstacles[None, :, :2], obstacles[None, :, 2]        # [1, k, 2], [1, k]
    segment = end - start
    t = jnp.sum((centre - start) * segment, -1) / jnp.maximum(jnp.sum(segment ** 2, -1), 1e-12)
    closest = start + jnp.clip(t, 0.0, 1.0)[..., None] * segment
    return jnp.min(jnp.linalg.norm(closest - centre, axis=-1) - radius)


@dataclasses.dataclass(frozen=True)
class ReachAvoidArm(EpisodeTask):
    """Reach a target, avoid obstacles (module docstring).

    Attributes:
        num_joints: joints / links ``n``.
        link_lengths: ``n`` lengths, or ``None`` for ``n`` links of ``1 / n``.
        num_obstacles: obstacles ``k`` per episode.
        obstacle_radius: ``(low, high)`` radius range, as fractions of the arm's length ``L``.
        max_joint_step: radians a joint turns per step at output 1.
        tolerance: success distance, as a fraction of ``L``.
        collision_penalty: subtracted per colliding step.
        success_bonus: added on the step that reaches the target.
        backend: ``"kinematic"``.
        episode_length: steps per episode (``T``); num_episodes: episodes (targets) per
            individual (``E``), averaged.
        hidden_sizes: hidden widths of the tanh policy.
        descriptors: ``sparsity``, ``disconnected_fraction``, ``layer_density``,
            ``final_end_effector``, ``obstacle_distance``.
        keep_trajectories: also return observations, actions and alive flags in ``extras``.
    """

    num_joints: int = 3
    link_lengths: tuple[float, ...] | None = None
    num_obstacles: int = 1
    obstacle_radius: tuple[float, float] = (0.08, 0.15)
    max_joint_step: float = 0.1
    tolerance: float = 0.05
    collision_penalty: float = 0.1
    success_bonus: float = 1.0
    backend: str = "kinematic"
    episode_length: int = 100
    num_episodes: int = 4
    hidden_sizes: tuple[int, ...] = (16, 16)
    descriptors: tuple[str, ...] = ("sparsity", "disconnected_fraction")
    keep_trajectories: bool = False

    def __post_init__(self):
        owner = f"ReachAvoidArm(num_joints={self.num_joints})"
        check_choice("reach", "backend", self.backend, BACKENDS)
        check_episodes(owner, self.episode_length, self.num_episodes)
        if isinstance(self.num_joints, bool) or int(self.num_joints) < 1:
            raise ValueError(f"{owner}: num_joints must be >= 1")
        lengths = (self.link_lengths if self.link_lengths is not None
                   else (1.0 / int(self.num_joints),) * int(self.num_joints))
        lengths = tuple(float(x) for x in lengths)
        if len(lengths) != int(self.num_joints) or min(lengths) <= 0:
            raise ValueError(f"{owner}: link_lengths must be {self.num_joints} positive numbers, "
                             f"got {self.link_lengths}")
        object.__setattr__(self, "link_lengths", lengths)
        if int(self.num_obstacles) < 0:
            raise ValueError(f"{owner}: num_obstacles must be >= 0")
        low, high = (float(x) for x in self.obstacle_radius)
        if not 0 < low <= high < 0.5:
            raise ValueError(f"{owner}: obstacle_radius must be 0 < low <= high < 0.5, got "
                             f"{self.obstacle_radius}")
        object.__setattr__(self, "obstacle_radius", (low, high))
        for field in ("max_joint_step", "tolerance"):
            if not float(getattr(self, field)) > 0:
                raise ValueError(f"{owner}: {field} must be > 0")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(self.descriptors, self._context(with_spec=False), owner)
        object.__setattr__(self, "descriptors", names)

    @property
    def length(self) -> float:
        """The arm's total length ``L``."""
        return float(sum(self.link_lengths))

    @property
    def observation_size(self) -> int:
        return 2 * int(self.num_joints) + 4 + 3 * int(self.num_obstacles)

    @property
    def spec(self) -> MLPSpec:
        return policy_spec(self.observation_size, int(self.num_joints), self.hidden_sizes)

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset({descriptors_lib.SPEC, descriptors_lib.REACH}),
            spec=self.spec if with_spec else None, xy_bound=self.length)

    # ----- the scene -------------------------------------------------------------------------
    def scene(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(target [2], obstacles [k, 3])`` of one episode (module docstring)."""
        length = self.length
        side, angle, radius, key = jax.random.split(key, 4)
        theta = jnp.where(jax.random.bernoulli(side), 1.0, -1.0) * jax.random.uniform(
            angle, minval=0.5 * np.pi, maxval=0.9 * np.pi)
        distance = length * jax.random.uniform(radius, minval=0.5, maxval=0.9)
        target = distance * jnp.stack([jnp.cos(theta), jnp.sin(theta)])
        k = int(self.num_obstacles)
        fraction, where, size = jax.random.split(key, 3)
        phi = theta * jax.random.uniform(fraction, (k,), minval=0.35, maxval=0.65)
        rho = length * jax.random.uniform(where, (k,), minval=0.35, maxval=0.8)
        low, high = self.obstacle_radius
        obstacles = jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi),
                               length * jax.random.uniform(size, (k,), minval=low, maxval=high)],
                              axis=-1)
        return target.astype(jnp.float32), obstacles.astype(jnp.float32)

    def _state(self, angles, target, obstacles, reward, done, collided):
        points = joint_positions(angles, jnp.asarray(self.link_lengths, jnp.float32))
        gap = clearance(points, obstacles) if int(self.num_obstacles) else jnp.asarray(
            self.length, jnp.float32)
        return {"angles": angles, "target": target, "obstacles": obstacles,
                "tip": points[-1], "distance": jnp.linalg.norm(points[-1] - target),
                "clearance": gap, "reward": reward, "done": done, "collided": collided}

    # ----- one episode (EpisodeTask) -----------------------------------------------------------
    def _reset(self, key: jax.Array):
        target, obstacles = self.scene(key)
        angles = jnp.zeros((int(self.num_joints),), jnp.float32)
        return self._state(angles, target, obstacles, jnp.zeros((), jnp.float32),
                           jnp.asarray(False), jnp.asarray(False))

    def _step(self, state, action: jax.Array, key):
        angles = state["angles"] + self.max_joint_step * jnp.clip(action, -1.0, 1.0)
        new = self._state(angles, state["target"], state["obstacles"], jnp.zeros(()),
                          jnp.asarray(False), jnp.asarray(False))
        collided = new["clearance"] < 0.0
        success = new["distance"] < self.tolerance * self.length
        reward = ((state["distance"] - new["distance"]) / self.length
                  - self.collision_penalty * collided.astype(jnp.float32)
                  + self.success_bonus * success.astype(jnp.float32))
        return {**new, "reward": reward.astype(jnp.float32), "done": success,
                "collided": collided}

    def _observation(self, state) -> jax.Array:
        angles = state["angles"]
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles), state["tip"], state["target"],
                                state["obstacles"].reshape(-1)])

    def _reward(self, state) -> jax.Array:
        return state["reward"]

    def _done(self, state) -> jax.Array:
        return state["done"]

    def _last(self, state) -> dict:
        return {"final_tip": state["tip"], "final_distance": state["distance"],
                "success": state["done"].astype(jnp.float32)}

    def _summed(self, state) -> dict:
        return {"collision_steps": state["collided"].astype(jnp.float32)}

    def _lowest(self, state) -> dict:
        return {"clearance": state["clearance"]}

    def _descriptor_inputs(self, out: dict, steps: jax.Array) -> dict:
        return {"final_end_effector": jnp.mean(out["final_tip"], axis=1),
                "obstacle_distance": jnp.min(out["clearance"], axis=1)}

    def _extras(self, out: dict, steps: jax.Array) -> dict:
        return {"success": jnp.mean(out["success"], axis=1),
                "collision_steps": jnp.mean(out["collision_steps"], axis=1),
                "final_distance": jnp.mean(out["final_distance"], axis=1)}


__all__ = ["BACKENDS", "ReachAvoidArm", "clearance", "joint_positions"]
