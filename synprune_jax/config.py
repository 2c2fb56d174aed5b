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
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration or override that cannot be used.

    A ``ValueError`` whose message is one line saying what is wrong and how to fix it: the CLI
    prints it instead of a traceback. Raised by :func:`apply_overrides`, :func:`from_section`,
    :func:`load`, the experiments' builders (through :func:`config_errors`) and
    :func:`~synprune_jax.sweeps.sweep`, among others.

    Examples:
        >>> apply_overrides({"run": {"seed": 0}}, ["run.seed=one"])
        Traceback (most recent call last):
            ...
        synprune_jax.config.ConfigError: run.seed: expected an integer, got 'one'
        >>> try:
        ...     apply_overrides({"run": {"seed": 0}}, ["run.sed=1"])
        ... except ValueError as error:  # a ConfigError is a ValueError
        ...     print(error)
        unknown config key 'run.sed': 'sed' is not in run; valid keys there: ['seed']
    """


@contextlib.contextmanager
def config_errors(*also: type[Exception]):
    """Re-raises ``TypeError`` / ``ValueError`` (and any ``also`` types) as :class:`ConfigError`.

    Builders wrap the construction of tasks, algorithms and run configs in it, so a bad value
    reaches the CLI as one clear line instead of a traceback; a :class:`ConfigError` passes as is.
    """
    errors: tuple[type[Exception], ...] = (TypeError, ValueError, *also)
    try:
        yield
    except ConfigError:
        raise
    except errors as error:
        raise ConfigError(str(error)) from error


# The value of an option resolved when the run is built (``task.devices``, ``train.devices``):
# ``--set`` takes it or an integer.
AUTO = "auto"


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
        if isinstance(value, str):  # not JSON: a,b or [a,b] with bare words
            inner = text.strip()
            inner = inner[1:-1] if inner.startswith("[") and inner.endswith("]") else inner
            value = [_parse_scalar(part.strip()) for part in inner.split(",") if part.strip()]
        if not isinstance(value, list):
            value = [value]
        if default:
            value = [
                _coerce(key, json.dumps(v) if not isinstance(v, str) else v, default[0])
                for v in value
            ]
        return value
    value = _parse_scalar(text)
    if default is None or value is None:
        return value
    if default == AUTO:  # "auto" or a count
        return value if value == AUTO else _coerce(key, text, 1)
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

    ``task.name=NAME`` naming another task than the config's replaces the ``task`` section by
    that task's defaults (:func:`synprune_jax.tasks.task_section`, keeping ``devices``), applied
    before the other overrides: ``--set task.name=gymnax --set task.env_name=Pendulum-v1``.

    Raises:
        ConfigError: malformed override, unknown key (the message lists the valid keys), or a
            value of the wrong type.
    """
    config = copy.deepcopy(config)
    overrides = list(overrides)
    # task.name first: a new task name brings that task's own section (below), which the other
    # task.* overrides then change
    overrides.sort(key=lambda override: override.split("=", 1)[0].strip() != "task.name")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        path, text = override.split("=", 1)
        keys = path.strip().split(".")
        if (
            keys == ["task", "name"]
            and isinstance(config.get("task"), dict)
            and config["task"].get("name") != text.strip()
        ):
            config["task"] = _task_section(text.strip(), config["task"])
            continue
        node = config
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[:depth]) or "<top level>"
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(
                    f"unknown config key {path!r}: {key!r} is not in {where}; "
                    f"valid keys there: {valid}"
                )
            if depth == len(keys) - 1:
                if isinstance(node[key], dict):
                    raise ConfigError(
                        f"{path} is a section; set one of its keys: {sorted(node[key])}"
                    )
                node[key] = _coerce(path, text, node[key])
            else:
                node = node[key]
    return config


def _task_section(name: str, old: dict) -> dict:
    from synprune_jax.tasks import task_section

    try:
        section = task_section(name)
    except ValueError as error:
        raise ConfigError(f"task.name: {error}") from None
    if "devices" in old:
        section["devices"] = old["devices"]
    return section


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


def _default(field, base=None):
    """A field's default (``base``: the instance whose value is the default)."""
    if base is not None:
        return getattr(base, field.name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _split(part) -> tuple[type, Any]:
    return part if isinstance(part, tuple) else (part, ())


def _keys(classes) -> dict[str, tuple]:
    """``{key: (class, type hint, default)}`` of the section of ``classes`` (as in
    :func:`section_defaults`), in field order."""
    keys: dict[str, tuple] = {}

    def add(cls, leave_out=(), base=None):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.init or field.name in leave_out:
                continue
            default = _default(field, base)
            if dataclasses.is_dataclass(default):
                add(type(default), base=default)
            elif field.name in keys:
                raise ValueError(f"two fields {field.name!r} in one section")
            else:
                keys[field.name] = (cls, hints[field.name], default)

    for part in classes:
        add(*_split(part))
    return keys


def section_defaults(*classes, **values) -> dict:
    """The config section of one or more dataclasses: every field, in order, with its default
    (``values`` replace defaults; tuples become lists, so the section is JSON). A class may be
    given as ``(cls, names)`` to leave those fields out (the builder supplies them); a field whose
    default is a dataclass contributes that dataclass's fields in its place. The dataclasses are
    the one source of the section's keys, defaults and types.

    Example:
        >>> from synprune_jax.variation import MutationHyper
        >>> defaults = section_defaults(MutationHyper, sigma=0.1)
        >>> defaults["sigma"], len(section_defaults(MutationHyper))
        (0.1, 6)
    """
    keys = _keys(classes)
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(
            f"{[_split(part)[0].__name__ for part in classes]} have no fields {unknown}"
        )
    section = {}
    for key, (cls, _, default) in keys.items():
        value = values.get(key, default)
        if value is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{key} has no default; pass it")
        section[key] = list(value) if isinstance(value, tuple) else value
    return section


def _typed(where: str, value, hint, default):
    """``value`` checked against a field's type hint (``Any``: the type of its default)."""
    if hint is Any:
        hint = type(default)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return value
        hint = options[0] if len(options) == 1 else Any
    if hint is tuple or typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        element = (typing.get_args(hint) or (Any,))[0]
        return tuple(_typed(where, item, element, None) for item in value)
    expected = {
        float: (numbers.Real, "a number"),
        int: (numbers.Integral, "an integer"),
        bool: (bool, "true or false"),
        str: (str, "a string"),
    }.get(hint)
    if expected is None:
        return tuple(value) if isinstance(value, list) else value
    if not isinstance(value, expected[0]) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {expected[1]}, got {value!r}")
    if hint is float:
        assert isinstance(value, numbers.Real)  # checked above
        return float(value)
    return value


def _build(cls, given, values: dict, base=None):
    """``cls`` from checked section values; ``given`` as in :func:`from_section`."""
    kwargs = dict(given) if isinstance(given, dict) else {}
    for field in dataclasses.fields(cls):
        if not field.init or field.name in given:
            continue
        default = _default(field, base)
        if dataclasses.is_dataclass(default):
            kwargs[field.name] = _build(type(default), (), values, default)
        elif field.name in values:
            kwargs[field.name] = values[field.name]
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def from_section(section: dict, name: str, *classes, extra: Iterable[str] = ()):
    """Builds the dataclasses of a config section (the inverse of :func:`section_defaults`).

    Each of ``classes`` is a dataclass or ``(cls, {field: value})``: those fields are given, not
    read from the section (``(cls, names)``: they keep their defaults). The section's keys must
    be the classes' other fields (plus ``extra``, keys the caller reads itself); a missing key
    takes its default. Each value is checked against its field's type before the classes see
    it: a number for a float (an int becomes a float), an int, a bool, a str, a list for a tuple
    (it becomes a tuple); ``None`` only where the field is optional.

    Returns:
        the instance, or a tuple of one instance per class.

    Raises:
        ConfigError: an unknown or missing key, a value of the wrong type.
        ValueError / TypeError: what the classes themselves refuse (wrap in
            :func:`config_errors`).

    Example:
        >>> from synprune_jax.runner import RunConfig
        >>> from_section({"num_generations": 5, "seed": 1}, "run", RunConfig).seed
        1
    """
    keys = _keys(classes)
    require_keys(section, name, [*keys, *extra])
    missing = sorted(
        key
        for key, (_, _, default) in keys.items()
        if key not in section and default is dataclasses.MISSING
    )
    if missing:
        raise ConfigError(f"missing keys in {name}: {missing}")
    values = {
        key: _typed(f"{name}.{key}", value, *keys[key][1:])
        for key, value in section.items()
        if key in keys
    }
    built = tuple(_build(*_split(part), values) for part in classes)
    return built[0] if len(built) == 1 else built


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
        if (
            isinstance(config, dict)
            and isinstance(config.get(section), dict)
            and key in config[section]
        ):
            return option, config[section][key]
    return DEVICE_OPTIONS[0], 1


def save(config: dict, path) -> None:
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")


def load(path) -> dict:
    """The JSON object in the config file ``path``.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or holds no JSON object (the message
            names the file and what to do).
    """
    try:
        with open(path) as handle:
            config = json.load(handle)
    except OSError as error:
        raise ConfigError(
            f"cannot read the config file ({path}): {error.strerror or error}; "
            "give the path of a config.json (a run directory holds one)"
        ) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"the config file is not JSON ({path}): {error}; give a config.json "
            "written by synprune or a JSON object of the same sections"
        ) from error
    if not isinstance(config, dict):
        raise ConfigError(
            f"the config file holds a JSON {type(config).__name__}, not an object "
            f"({path}); a config is an object of sections, like a run's "
            "config.json"
        )
    return config
