"""Named, documented experiments: ``synprune list`` shows them, ``synprune run NAME`` runs one.

An experiment is a default config (a nested dict, see :mod:`synprune_jax.config`) plus a builder
that turns a config into an algorithm, a run configuration and a reporter (summary table and
plots). ``DEFAULT_EXPERIMENT`` is what ``synprune run`` runs with no name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from synprune_jax.config import ConfigError
from synprune_jax.experiments import map_elites as _map_elites


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: the name used on the command line.
        description: one line for ``synprune list``.
        default_config: returns a fresh default config dict.
        build: config dict -> :class:`~synprune_jax.experiments.map_elites.Built`.
    """

    name: str
    description: str
    default_config: Callable[[], dict]
    build: Callable[[dict], object]


EXPERIMENTS: dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        Experiment("me-prune", "MAP-Elites synaptic pruning of a tanh MLP on Brax hopper "
                   "(descriptors: sparsity x disconnected fraction); about 5 min on 2 CPU cores",
                   _map_elites.default_config_brax, _map_elites.build),
        Experiment("me-prune-feet", "MAP-Elites pruning on Brax halfcheetah with feet-contact "
                   "descriptors (behavioural diversity); reports density bands as well",
                   _map_elites.default_config_feet, _map_elites.build),
        Experiment("me-arm", "MAP-Elites on the kinematic planar arm (direct masked joint "
                   "angles; end-effector descriptors): the quick QD benchmark, seconds on CPU",
                   _map_elites.default_config_arm, _map_elites.build),
    )
}

DEFAULT_EXPERIMENT = "me-prune"


def get_experiment(name: str) -> Experiment:
    """Looks an experiment up by name; the error lists the valid names."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; valid: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]
