"""Dataset sources and formats, as TRL and verl users already keep them.

A source is a `.jsonl` / `.json` file, a `.parquet` file, a folder written by `datasets`'
`save_to_disk`, or a hub id that `datasets.load_dataset` resolves (from the user's cache, or the hub
where it is reachable). Rows are plain dicts. A prompt is a string or a list of chat messages
(`[{"role": "system"|"user"|"assistant", "content": str}, ...]`, TRL's conversational format and
verl's parquet); a column may be named by a dotted path into nested dicts (`reward_model.ground_truth`).

Example: rows = read_rows("data/gsm8k.parquet"); answer = column(rows[0], "reward_model.ground_truth")
"""
from __future__ import annotations

import json
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
ROLES = ("system", "user", "assistant", "tool")


def read_rows(source: str | Path, split: str = "train", key: str = "task.path") -> list[dict]:
    """All rows of a source (see the module docstring). -> list of dicts, one per row."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_disk(path, split, key)
    if path.exists():
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq
            return pq.read_table(path).to_pylist()
        return _json_rows(path)
    if path.suffix in (".jsonl", ".json", ".parquet") or not _HUB_ID.match(str(source)):
        raise FileNotFoundError(f"{key}: {str(source)!r} does not exist")
    return _from_hub(str(source), split, key)


def _json_rows(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad} is not an object (each row must be a JSON object)")
    return rows


def _from_disk(path: Path, split: str, key: str) -> list[dict]:
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{key}: {str(path)!r} is a folder but not one written by datasets' "
                                "save_to_disk (no dataset_info.json / dataset_dict.json)") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{key}: {str(path)!r} has splits {sorted(ds)}, not {split!r} (set task.split)")
        ds = ds[split]
    return ds.to_list()


def _from_hub(name: str, split: str, key: str) -> list[dict]:
    import datasets
    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the message names the source
        raise FileNotFoundError(f"{key}: {name!r} is not a local file or folder, and datasets could not load "
                                f"it as a hub id ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def column(row: dict, dotted: str):
    """row["a"]["b"] for "a.b" (a top-level key that itself contains dots wins). KeyError names the path."""
    if dotted in row:
        return row[dotted]
    value = row
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(value, dict) or part not in value:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            if i == 0:
                raise KeyError(f"no column {part!r} (columns: {have})")
            raise KeyError(f"no {part!r} under {'.'.join(dotted.split('.')[:i])} (has {have})")
        value = value[part]
    return value


def as_prompt(value, where: str) -> str | list[dict]:
    """A string, or chat messages kept as they are (roles and order); anything else names `where`."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy arrays from some parquet readers
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise ValueError(f"{where}: a prompt must be a string or a non-empty list of {{role, content}} messages "
                     f"with roles in {ROLES}; got {str(value)[:80]!r}")


def prompt_text(prompt: str | list[dict]) -> str:
    """One string for a prompt (for embeddings, logs and keys): the messages' contents, one per line."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def completion_text(completion) -> str:
    """A completion as text: a string as is; TRL's conversational form ([{"role": "assistant",
    "content": ...}]) as its assistant contents joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")
