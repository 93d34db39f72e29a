"""Typed config dataclasses from plain values, with the project's one-line messages.

``build`` makes a dataclass from a nested mapping (a dict in a notebook); ``setting_type`` and
``coerce`` check one ``key=value`` against a dataclass schema (what ``jobs/`` does to each
command-line override before Hydra sees it). Both refuse an unknown key with the closest known
key, and a value of the wrong type or outside an Enum's choices with the key and the fix.
Pure Python: no Hydra or OmegaConf, and no import of the config module itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from typing import Any, Mapping

from lmdbshard.errors import ConfigError


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """``cls(**data)``, every value checked against its field's type; ``prefix`` names nested keys."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        _known(cls, str(key), prefix)
        kwargs[key] = coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def setting_type(cls: type, dotted: str) -> Any:
    """The type of setting ``dotted`` (``"transform.resize_shorter"``) in ``cls``; ``Any`` below a free mapping
    or a list. Raises ConfigError naming the closest known key when there is no such setting."""
    tp: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        tp = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(tp):
            return Any   # source.kwargs.<anything>, augment.ops.0.p: the value is checked when composed
        _known(tp, part, "".join(p + "." for p in parts[:i]))
        tp = typing.get_type_hints(tp)[part]
    return tp


def coerce(tp: Any, value: Any, name: str) -> Any:
    """``value`` as type ``tp`` (a dataclass, Enum, Optional, list, dict or scalar), or ConfigError for ``name``."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {value!r}; write {name}={{key: value}}")
        return {str(k): coerce(args[1], v, f"{name}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return coerce(_unwrap_optional(tp), value, name)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}; write {name}=[a,b]")
        return [coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, f"{name}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, str) and value in tp._value2member_map_:
            return tp(value)
        raise ConfigError(f"{name} must be one of {', '.join(m.value for m in tp)}; got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}; set {name}=N")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}; set {name}=X")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {name}")  # a bug in the schema, not user input


def _known(cls: type, key: str, prefix: str) -> None:
    known = sorted(f.name for f in dataclasses.fields(cls))
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys: {', '.join(known)}"
        raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
        raise TypeError(f"unsupported config type {tp!r}")   # a bug in the schema, not user input
    return tp
