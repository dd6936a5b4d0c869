"""Typed dataclasses from sparse YAML mappings: the recipe parser under rl/config.py.

Unknown keys get the closest valid one (or the new name of a renamed key), wrong types the expected
type, both as a `ConfigError` naming the dotted key. Example: build(RunConfig, {"seed": 1}) -> RunConfig(seed=1)
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A recipe problem, reported as one line naming the key (`rl: config error: ...`, exit 2)."""
    label = "config error"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, renamed: dict) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, path, renamed)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path, renamed)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{path}.{i}", renamed) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        key_tp, item = typing.get_args(tp)
        return {_coerce(k, key_tp, path, renamed): _coerce(v, item, f"{path}.{k}", renamed) for k, v in value.items()}
    if tp is type(None) and value is None:
        return None
    if tp is float and (isinstance(value, (int, float)) and not isinstance(value, bool) or _is_float(value)):
        return float(value)  # YAML 1.1 reads 3e-6 (no dot) as a string
    if tp is Any or (tp is bool and isinstance(value, bool)) or \
            (tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _is_float(text) -> bool:
    try:
        return isinstance(text, str) and float(text) is not None and \
            text.strip().lower() not in ("nan", "inf", "-inf", "infinity")
    except ValueError:
        return False


def build(cls: type, data: dict, path: str = "", renamed: dict[str, str] | None = None) -> Any:
    """Builds dataclass `cls` from a sparse mapping, checking keys and types; `renamed`: old dotted key ->
    new one, so a recipe with an old key gets the new name."""
    renamed = renamed or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in names and dotted in renamed:
            raise ConfigError(f"unknown key '{dotted}': it was renamed; did you mean '{renamed[dotted]}'?")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{(path + '.' if path else '') + close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{dotted}'{hint} (valid: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], dotted, renamed)
    return cls(**kwargs)


def load_yaml_mapping(path, kind: str, shape: str) -> dict:
    """A YAML file that must hold a mapping; a missing file, bad YAML or another shape is a ConfigError.
    kind: "recipe" | "sweep spec"; shape: what the mapping holds, for the error."""
    import yaml
    from pathlib import Path
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{kind} {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {kind} is a mapping of {shape}")
    return data


def parse_override_value(raw: str):
    """The YAML value of a `key=value` override, kept a string unless it parses cleanly as a scalar, or
    as a list or mapping written with [ ] / { }: "Answer: 42" stays a string; a YAML tag is refused."""
    import yaml
    if raw == "":
        return ""
    if raw.lstrip().startswith("!"):
        raise ConfigError(f"override value {raw!r}: YAML tags are not allowed")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, (dict, list)) and not raw.lstrip().startswith(("{", "[")):
        return raw
    return value


def list_index(items: list, part: str, key: str, grow: bool) -> int:
    """A list index from an override path. Index == length names a new item: appended here ({}) when
    `grow` (a path goes on through it), else left to the caller to append its value."""
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"{key}: {part!r} is not a list index") from None
    if idx == len(items):
        if grow:
            items.append({})
        return idx
    if not 0 <= idx < len(items):
        raise ConfigError(f"{key}: index {idx} outside a list of {len(items)} items (index {len(items)} appends one)")
    return idx
