"""Experiment configuration as plain nested dicts (JSON-serialisable), with typed overrides.

Every experiment defines a complete default config; a user changes it with dotted overrides
(``run.num_generations=50``, ``task.hidden_sizes=32,32``). Overrides are type-checked against the
default value and unknown keys are rejected with the list of valid ones, all before anything is
built or compiled. The objects built from a config (tasks, archive specs, algorithm configs) are
frozen dataclasses that validate their own fields as well.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from typing import Any, Iterable


class ConfigError(ValueError):
    """A configuration or override that cannot be used."""


@contextlib.contextmanager
def config_errors(*also: type[Exception]):
    """Re-raises ``TypeError`` / ``ValueError`` (and any ``also`` types) as :class:`ConfigError`.

    Builders wrap the construction of tasks, algorithms and run configs in it, so a bad value
    reaches the CLI as one clear line instead of a traceback; a :class:`ConfigError` passes as is.
    """
    try:
        yield
    except ConfigError:
        raise
    except (TypeError, ValueError, *also) as error:
        raise ConfigError(str(error)) from error


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on"):
            return True
        if lowered in ("false", "no", "off"):
            return False
        if lowered in ("none", "null"):
            return None
        return text


def _coerce(key: str, text: str, default: Any) -> Any:
    """Parses ``text`` into the type of ``default``."""
    if isinstance(default, (list, tuple)):
        value = _parse_scalar(text)
        if isinstance(value, str):
            value = [_parse_scalar(part) for part in text.split(",") if part.strip()]
        if not isinstance(value, list):
            value = [value]
        if default:
            value = [_coerce(key, json.dumps(v) if not isinstance(v, str) else v, default[0])
                     for v in value]
        return value
    value = _parse_scalar(text)
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {text!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{key}: expected an integer, got {text!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {text!r}")
        return float(value)
    if isinstance(default, str):
        return text
    return value


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    """Returns a copy of ``config`` with ``key.path=value`` overrides applied.

    Raises:
        ConfigError: malformed override, unknown key (the message lists the valid keys), or a
            value of the wrong type.
    """
    config = copy.deepcopy(config)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        path, text = override.split("=", 1)
        keys = path.strip().split(".")
        node = config
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[:depth]) or "<top level>"
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"unknown config key {path!r}: {key!r} is not in {where}; "
                                  f"valid keys there: {valid}")
            if depth == len(keys) - 1:
                if isinstance(node[key], dict):
                    raise ConfigError(f"{path} is a section; set one of its keys: "
                                      f"{sorted(node[key])}")
                node[key] = _coerce(path, text, node[key])
            else:
                node = node[key]
    return config


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (for tables and logs)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def section_defaults(cls, **values) -> dict:
    """The config section of a dataclass ``cls``: every field with its default, ``values``
    applied (tuples become lists, so the section is JSON). The dataclass is the one source of
    the section's keys, defaults and types.

    Example:
        >>> from synprune_jax.variation import MutationHyper
        >>> section_defaults(MutationHyper, sigma=0.1)["sigma"], len(section_defaults(MutationHyper))
        (0.1, 6)
    """
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    section = {}
    for field in dataclasses.fields(cls):
        if field.name in values:
            value = values[field.name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            raise ValueError(f"{cls.__name__}.{field.name} has no default; pass it")
        section[field.name] = list(value) if isinstance(value, tuple) else value
    return section


def from_section(cls, section: dict, name: str, **fixed):
    """Builds the dataclass ``cls`` from a config section (the inverse of
    :func:`section_defaults`): the section's keys must be ``cls``'s fields less those given in
    ``fixed``; an int given for a float field becomes a float, a list for a tuple field a tuple.

    Raises:
        ConfigError: an unknown or missing key.
        ValueError / TypeError: what ``cls`` itself refuses (wrap in :func:`config_errors`).
    """
    fields = {field.name: field for field in dataclasses.fields(cls) if field.name not in fixed}
    require_keys(section, name, fields)
    missing = sorted(key for key, field in fields.items() if key not in section
                     and field.default is dataclasses.MISSING
                     and field.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"missing keys in {name}: {missing}")
    values = {}
    for key, value in section.items():
        default = fields[key].default
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values, **fixed)


def require_keys(section: dict, name: str, allowed: Iterable[str]) -> None:
    """Rejects keys a builder does not know (typos in hand-written config files)."""
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown keys in {name}: {unknown}; valid: {sorted(allowed)}")


DEVICE_OPTIONS = ("task.devices", "train.devices")


def requested_devices(config: dict) -> tuple[str, Any]:
    """``(option, value)`` of the config's population-sharding option: ``task.devices`` (the
    MAP-Elites / ES / GA experiments) or ``train.devices`` (the transfer experiments), ``1``
    when it has neither (the first of the two present wins; no experiment has both). The value
    is returned unvalidated (builders validate it); read without importing JAX, so the CLI can
    create CPU devices before JAX starts."""
    for option in DEVICE_OPTIONS:
        section, key = option.split(".")
        if isinstance(config, dict) and isinstance(config.get(section), dict) \
                and key in config[section]:
            return option, config[section][key]
    return DEVICE_OPTIONS[0], 1


def save(config: dict, path) -> None:
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")


def load(path) -> dict:
    with open(path) as handle:
        return json.load(handle)
