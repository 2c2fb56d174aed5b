"""Evaluation tasks: the :class:`Task` protocol, the kinematic arm and Brax environments.

Example:
    >>> task = make_task("arm", num_joints=4)
    >>> task.descriptor_names
    ('end_effector_x', 'end_effector_y')
"""

from __future__ import annotations

from synprune_jax.tasks import descriptors
from synprune_jax.tasks.arm import KinematicArm, forward_kinematics
from synprune_jax.tasks.base import Task
from synprune_jax.tasks.brax_task import BACKENDS, FEET, BraxTask, env_names, make_env
from synprune_jax.tasks.descriptors import DESCRIPTORS, DescriptorContext

TASKS: dict[str, type] = {"brax": BraxTask, "arm": KinematicArm}


def make_task(name: str, **kwargs) -> Task:
    """Builds a task by registry name (``"brax"`` or ``"arm"``) with its keyword arguments.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or invalid arguments.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "BACKENDS", "BraxTask", "DESCRIPTORS", "DescriptorContext", "FEET", "KinematicArm", "TASKS",
    "Task", "descriptors", "env_names", "forward_kinematics", "make_env", "make_task",
]
