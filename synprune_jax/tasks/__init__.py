"""Evaluation tasks: the :class:`Task` protocol, the kinematic arm, and the environment suites
rolled out by one :class:`~synprune_jax.tasks.rollout.EpisodeTask`: Brax, MuJoCo Playground,
gymnax and the reach-and-avoid arm (``docs/tasks.md``).

Example:
    >>> task = make_task("arm", num_joints=4)
    >>> task.descriptor_names
    ('end_effector_x', 'end_effector_y')
"""

from __future__ import annotations

from typing import Any

from synprune_jax.tasks import descriptors
from synprune_jax.tasks.arm import KinematicArm, forward_kinematics
from synprune_jax.tasks.base import Task
from synprune_jax.tasks.brax_task import BACKENDS, FEET, BraxTask, env_names, make_env
from synprune_jax.tasks.descriptors import DESCRIPTORS, DescriptorContext
from synprune_jax.tasks.gymnax_task import GymnaxTask
from synprune_jax.tasks.playground_task import PlaygroundTask
from synprune_jax.tasks.reach import ReachAvoidArm, clearance, joint_positions, joint_positions_3d
from synprune_jax.tasks.rollout import EpisodeTask

TASKS: dict[str, type] = {
    "brax": BraxTask,
    "arm": KinematicArm,
    "playground": PlaygroundTask,
    "gymnax": GymnaxTask,
    "reach": ReachAvoidArm,
}


def make_task(name: str, **kwargs) -> Task:
    """Builds a task by registry name (a key of :data:`TASKS`) with its keyword arguments.

    Args:
        name: a key of :data:`TASKS` (``"arm"``, ``"reach"``, ``"brax"``, ``"playground"``,
            ``"gymnax"``).
        **kwargs: fields of that task class (passed to its constructor).

    Returns:
        The task instance (``TASKS[name](**kwargs)``).

    Raises:
        ValueError: unknown name (the message lists the valid ones), or invalid arguments.
        TypeError: a keyword that the task class does not take.

    Examples:
        >>> type(make_task("arm", num_joints=3)).__name__
        'KinematicArm'
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def task_section(name: str) -> dict:
    """The config ``task`` section of task ``name``: every field of its class at its default
    (tuples as lists), plus ``name``.

    Example:
        >>> task_section("reach")["num_joints"]
        3
    """
    import dataclasses

    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    section: dict[str, Any] = {"name": name}
    for field in dataclasses.fields(TASKS[name]):
        if field.name == "keep_trajectories":  # an API option, not an experiment setting
            continue
        if field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:  # a required field has no default to write
            continue
        section[field.name] = list(value) if isinstance(value, tuple) else value
    return section


__all__ = [
    "BACKENDS",
    "BraxTask",
    "DESCRIPTORS",
    "DescriptorContext",
    "EpisodeTask",
    "FEET",
    "GymnaxTask",
    "KinematicArm",
    "PlaygroundTask",
    "ReachAvoidArm",
    "TASKS",
    "Task",
    "clearance",
    "descriptors",
    "env_names",
    "forward_kinematics",
    "joint_positions",
    "joint_positions_3d",
    "make_env",
    "make_task",
    "task_section",
]
