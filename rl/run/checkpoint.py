"""Atomic checkpoints: written to a temp dir, then renamed, so a kill mid-write leaves the previous
checkpoint intact. A checkpoint holds the learner (model, optimizer, scheduler, RNG states, in
learner.pt) and the driver state (next step, data position, allocator state, in driver.json).

Every checkpoint ends with manifest.json (written last: each file's size and CRC32). `latest_intact`
checks the newest against it and falls back to the newest intact one, saying on stderr which it
skipped and why; when none is intact it is a CheckpointError (exit 2). A checkpoint from before
manifests is used as it is, with a note.
"""
from __future__ import annotations

import json
import shutil
import sys
import zlib
from pathlib import Path

import ray

from rl.config import ConfigError

MANIFEST = "manifest.json"


class CheckpointError(ConfigError):
    """No intact checkpoint to resume from."""


def file_crc32(path: Path, chunk_bytes: int = 16 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            crc = zlib.crc32(block, crc)
    return crc


def write_manifest(folder: Path) -> dict:
    """{relative path: {bytes, crc32}} of every file under `folder`, written to folder/manifest.json."""
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "crc32": file_crc32(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    return files


def damage(folder: Path) -> str | None:
    """Why `folder` is not the checkpoint its manifest describes, or None (intact)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"its manifest is unreadable ({type(e).__name__})"
    for rel, want in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != want["bytes"]:
            return f"{rel} is {p.stat().st_size} bytes, the manifest says {want['bytes']} (truncated?)"
        if file_crc32(p) != want["crc32"]:
            return f"{rel} does not match its checksum (corrupted)"
    return None


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
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in self.all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def all(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob("step-*") if p.is_dir())

    def latest_intact(self) -> Path | None:
        """The newest checkpoint that matches its manifest (None: there is none at all). Skipped ones are
        named on stderr with the reason; checkpoints but none intact is a CheckpointError."""
        found = self.all()
        for path in reversed(found):
            if not (path / MANIFEST).exists():
                if (path / "driver.json").exists():
                    print(f"rl: checkpoint {path.name} has no manifest (written before manifests); using it "
                          "unverified", file=sys.stderr, flush=True)
                    return path
                why = "driver.json is missing"
            else:
                why = damage(path)
            if why is None:
                return path
            print(f"rl: skipping checkpoint {path.name}: {why}", file=sys.stderr, flush=True)
        if found:
            raise CheckpointError(f"--resume: none of the {len(found)} checkpoints under {self.root} is intact "
                                  f"(newest: {found[-1].name}); start afresh without --resume")
        return None

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def load(self, path: Path, actors: list) -> None:
        """Loads checkpoint `path` into every actor (each with load(dir))."""
        if _as_list(actors):
            ray.get([a.load.remote(str(path)) for a in _as_list(actors)])


def _as_list(actors) -> list:
    return list(actors) if isinstance(actors, (list, tuple)) else [actors]
