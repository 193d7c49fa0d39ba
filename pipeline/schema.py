"""Schema machinery: strict validation of plain YAML data against dataclass type hints.

`param(...)` declares a field with bounds, documentation and provenance (paper / official / assumed).
`build_dataclass(cls, values, where)` validates recursively and raises ConfigError with one line naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal, get_args, get_origin


from pipeline.errors import CxrbenchError, suggest


class ConfigError(CxrbenchError, ValueError):
    """A one-line, user-facing configuration error (names the file, the key and the fix)."""


def param(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, min: float | None = None,
          max: float | None = None, doc: str = "", source: str = "", choices: tuple | None = None,
          result: bool = True) -> Any:
    """A dataclass field with validation metadata: inclusive bounds, documentation, provenance (paper/official/assumed)
    and `result`: whether the value changes what a run computes (False: logging, checkpoint cadence, threads...; a
    checkpoint of another such value still resumes, see `result_values`)."""
    meta = {"min": min, "max": max, "doc": doc, "source": source, "choices": choices, "result": result}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def result_values(obj: Any) -> dict[str, Any]:
    """The plain values of a params dataclass that change a run's result (fields declared with result=False left
    out): what a checkpoint fingerprint is built from."""
    return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("result", True)}


# --------------------------------------------------------------------------------------------------------------------
# Generic validation of plain data (from YAML) against dataclass type hints.
# --------------------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp`; return it (ints widened to float where a float is expected)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: must be {_type_name(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {_describe(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        key_tp, val_tp = get_args(tp) or (str, Any)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {_describe(k)}")
            out[k] = _coerce(v, val_tp, f"{where}.{k}")
        return out
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        return build_dataclass(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {_describe(value)}")
        if not math.isfinite(value):  # a NaN passes every range check (all comparisons are false)
            raise ConfigError(f"{where}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {_describe(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _check_range(value: Any, meta: typing.Mapping, where: str) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and v < lo:
            raise ConfigError(f"{where}: must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ConfigError(f"{where}: must be <= {hi}, got {v}")
    choices = meta.get("choices")
    if choices is not None:
        for v in items:
            if v not in choices:
                raise ConfigError(f"{where}: must be one of {', '.join(map(str, choices))}, got {v!r}")


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Validate `values` against dataclass `cls` (recursively) and instantiate it. `where` prefixes error messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{where}.{unknown[0]}: unknown key{suggest(unknown[0], fields)} (known keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], key)
            _check_range(kwargs[name], f.metadata, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing required key")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where)
    return obj


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists: what goes into YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
