"""run.chaos: fault specs parsed and refused by name, each fault fires once across restarts, and the
corruption it makes is one the checkpoint check catches."""
import pytest

from rl.config import load_config
from rl.run.chaos import Chaos, corrupt, parse_faults
from rl.run.checkpoint import damage, write_manifest
from rl.startup import check_startup


def test_parse_and_refuse():
    assert parse_faults(["reward_raise@0", "kill_learner@12"]) == [("reward_raise", 0), ("kill_learner", 12)]
    for bad in ("kill_engine", "explode@3", "kill_engine@-1", "kill_engine@x"):
        with pytest.raises(ValueError, match=r"run.chaos.0: .* is not <kind>@<step>"):
            parse_faults([bad])


def test_a_bad_fault_is_a_start_up_error(tmp_path):
    cfg = load_config(None, ["model.name=tiny-llama", f"run.output_dir={tmp_path}"])
    cfg.run.chaos = ["kill_engine@2", "explode@3"]
    with pytest.raises(Exception, match="run.chaos.1: 'explode@3'"):
        check_startup(cfg)


def test_each_fault_fires_once_across_restarts(tmp_path):
    chaos = Chaos(["reward_raise@2", "kill_engine@2", "reward_hang@5"], tmp_path)
    assert chaos.due(1) == [] and chaos.due(2) == ["reward_raise", "kill_engine"]
    assert chaos.due(2) == []
    again = Chaos(["reward_raise@2", "kill_engine@2", "reward_hang@5"], tmp_path)  # the restarted run
    assert again.due(2) == [] and again.due(5) == ["reward_hang"]
    assert not Chaos([], tmp_path)


def test_corruption_is_caught_by_the_manifest(tmp_path):
    (tmp_path / "learner.pt").write_bytes(b"x" * 1000)
    (tmp_path / "driver.json").write_text("{}")
    write_manifest(tmp_path)
    assert damage(tmp_path) is None
    assert corrupt(tmp_path).name == "learner.pt"
    assert "learner.pt is 500 bytes" in damage(tmp_path)
