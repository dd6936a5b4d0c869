"""Checkpoints carry a manifest (sizes + CRC32, written last); resume falls back to the newest intact
one and says which it skipped and why; none intact is a clear error."""
import json

import pytest

from rl.run.checkpoint import MANIFEST, CheckpointError, Checkpointer, damage, write_manifest


def _saved(tmp_path, steps):
    ck = Checkpointer(tmp_path / "checkpoints", keep=5)
    for s in steps:
        path = ck.save(s, [], {"next_step": s + 1})
        (path / "learner.pt").write_bytes(bytes(range(256)) * (s + 1))  # a stand-in file, then re-manifest
        write_manifest(path)
    return ck


def test_manifest_lists_every_file_with_size_and_crc(tmp_path):
    ck = _saved(tmp_path, [1])
    files = json.loads((ck.latest() / MANIFEST).read_text())["files"]
    assert files["learner.pt"]["bytes"] == 256 * 2 and set(files) == {"driver.json", "learner.pt"}
    assert damage(ck.latest()) is None


def test_truncated_newest_falls_back_to_the_intact_one(tmp_path, capsys):
    ck = _saved(tmp_path, [1, 3])
    newest = ck.latest()
    with open(newest / "learner.pt", "r+b") as f:
        f.truncate(100)
    assert ck.latest_intact().name == "step-000001"
    err = capsys.readouterr().err
    assert "skipping checkpoint step-000003" in err and "learner.pt is 100 bytes, the manifest says 1024" in err


def test_corrupted_bytes_and_missing_files_are_named(tmp_path, capsys):
    ck = _saved(tmp_path, [1, 2])
    data = bytearray((ck.latest() / "learner.pt").read_bytes())
    data[10] ^= 0xFF  # same size, one byte flipped
    (ck.latest() / "learner.pt").write_bytes(bytes(data))
    (tmp_path / "checkpoints" / "step-000001" / "driver.json").unlink()
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints"):
        ck.latest_intact()
    err = capsys.readouterr().err
    assert "step-000002: learner.pt does not match its checksum" in err
    assert "step-000001: driver.json is missing" in err


def test_no_checkpoint_at_all_is_none(tmp_path):
    assert Checkpointer(tmp_path / "none").latest_intact() is None
