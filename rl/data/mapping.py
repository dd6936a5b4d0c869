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
        section = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(section) == 1:  # `Section | None` given a mapping: its own errors
            return build(section[0], value, path, renamed)
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
    """A YAML file that must hold a non-empty mapping; a missing, unreadable or empty file, bad YAML (with
    its line and column), a duplicated key or another shape is a ConfigError.
    kind: "recipe" | "sweep spec"; shape: what the mapping holds, for the error."""
    import yaml
    from pathlib import Path
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{kind} {str(path)!r} not found")
    if path.is_dir():
        raise ConfigError(f"{kind} {str(path)!r} is a folder, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a {kind} is a YAML file") from None
    try:
        data = yaml.load(text, Loader=_loader())  # safe_load, refusing duplicate keys
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({e.problem or e.context})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        raise ConfigError(f"{path}: the {kind} is empty (write at least one section; an empty mapping {{}} "
                          "means all defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {kind} is a mapping of {shape}")
    return data


def _unique_mapping(loader, node, deep=False):
    import yaml
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1}; the second would silently "
                f"replace it)", mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _loader():
    """yaml.SafeLoader with duplicate mapping keys refused."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass
    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
    return UniqueKeyLoader


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
