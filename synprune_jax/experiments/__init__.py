"""Named, documented experiments: ``synprune list`` shows them, ``synprune run NAME`` runs one.

An experiment is a default config (a nested dict, see :mod:`synprune_jax.config`) plus a builder
that turns a config into an algorithm, a run configuration and a reporter (summary table and
plots). Every module of this package that defines ``EXPERIMENTS`` (a tuple of
:class:`~synprune_jax.experiments.base.Experiment`) is collected here, so a new method registers
itself by adding a module. ``DEFAULT_EXPERIMENT`` is what ``synprune run`` runs with no name.
"""

from __future__ import annotations

import importlib
import pkgutil

from synprune_jax.config import ConfigError
from synprune_jax.experiments.base import Built, Experiment


def _collect() -> dict[str, Experiment]:
    found: dict[str, Experiment] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base" or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for experiment in getattr(module, "EXPERIMENTS", ()):
            if experiment.name in found:
                raise RuntimeError(f"experiment {experiment.name!r} is registered twice")
            found[experiment.name] = experiment
    return found


EXPERIMENTS: dict[str, Experiment] = _collect()

DEFAULT_EXPERIMENT = "me-prune"


def get_experiment(name: str) -> Experiment:
    """Looks an experiment up by name; the error lists the valid names."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; valid: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


__all__ = ["Built", "DEFAULT_EXPERIMENT", "EXPERIMENTS", "Experiment", "get_experiment"]
