"""The one JSONL record reader/writer: metrics.jsonl, rollouts.jsonl (per-prompt outcomes of a run),
preference pairs and V0 context files all go through it, so a bad line is reported the same way.

Example: for line_no, row in read_jsonl("runs/q/rollouts.jsonl"): ...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator


def read_jsonl(path: str | Path, error: type[Exception] = ValueError, prefix: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-empty line; a line that is not a JSON object raises `error`
    naming `prefix` (e.g. the recipe key), the file and the line."""
    path = Path(path)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{prefix}{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{prefix}{path}:{n}: each line must be a JSON object")
        yield n, row


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with open(path, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
