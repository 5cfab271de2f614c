"""Dataclasses built from plain (YAML) data, with errors that name the field and the fix.

`build_dataclass(cls, data, where)` checks every key against the dataclass's fields (unknown
keys get a difflib "did you mean" suggestion) and every value against its annotation (ints
are accepted for floats, nested dataclasses recurse); every problem is a `ConfigError`
whose message starts with the dotted field name. Shared by the run config (`config`) and the
learners config (`training.fit_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        key, item = typing.get_args(tp)
        return f"a mapping of {_type_name(key)} to {_type_name(item)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} = {value!r}: expected null")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(
                f"{where} = {value!r}: expected {_type_name(tp)}; write it as a YAML list, "
                f"e.g. [{value!r}]"
            )
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where} = {value!r}: expected {_type_name(tp)}; write it as a YAML mapping, "
                "e.g. {patrol: 2.0}"
            )
        key_type, item = typing.get_args(tp)
        return {
            _coerce(k, key_type, f"{where} key"): _coerce(v, item, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} = {value!r}: expected a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: expected a string")
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"{where}{key}: unknown key; {hint}valid keys here: {', '.join(known)}")


def build_dataclass(cls: Any, data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise _unknown_key(str(key), known, where)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_dataclass(tp, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)
