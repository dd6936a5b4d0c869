"""Atomic checkpoints: written to a temp dir, then renamed, so a kill mid-write leaves the previous
checkpoint intact. A checkpoint holds the learner (model, optimizer, scheduler, RNG states, in
learner.pt) and the driver state (next step, data position, allocator state, in driver.json)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import ray


class Checkpointer:
    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), max(1, keep)

    def save(self, step: int, learners, driver_state: dict) -> Path:
        """`learners`: one actor or a list (policy, critic, ...), each with save(dir)/load(dir)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:06d}"
        tmp = self.root / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if _as_list(learners):
            ray.get([a.save.remote(str(tmp)) for a in _as_list(learners)])
        (tmp / "driver.json").write_text(json.dumps(driver_state))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in self.all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def all(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob("step-*") if (p / "driver.json").exists())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def load(self, path: Path, actors: list) -> None:
        """Loads checkpoint `path` into every actor (each with load(dir))."""
        if _as_list(actors):
            ray.get([a.load.remote(str(path)) for a in _as_list(actors)])


def _as_list(actors) -> list:
    return list(actors) if isinstance(actors, (list, tuple)) else [actors]
