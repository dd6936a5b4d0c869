"""run_with_restarts: which failures restart a run, from where, and how often (the driver is a stand-in;
tests/integration/test_grpo_ray.py kills a real learner)."""
import pytest
import ray.exceptions

from rl.config import ConfigError, load_config
from rl.run.restarts import run_with_restarts
from rl.run.checkpoint import Checkpointer


def cfg_in(tmp_path, *overrides):
    return load_config(None, [f"run.output_dir={tmp_path}", "run.name=r", *overrides])


class Dies:
    """Raises ActorDiedError the first `times` calls; records the resume flag of every call."""

    def __init__(self, times, exc=ray.exceptions.ActorDiedError):
        self.times, self.calls = times, []
        self.exc = (lambda: ray.exceptions.ActorUnavailableError("lost", None)) \
            if exc is ray.exceptions.ActorUnavailableError else exc

    def __call__(self, cfg, resume=False, address=None, callbacks=()):
        self.calls.append(resume)
        if len(self.calls) <= self.times:
            raise self.exc()
        return {"after": {"eval/greedy_accuracy": 0.5}}


def test_restart_without_a_checkpoint_starts_over_then_with_one_resumes(tmp_path, capsys):
    cfg = cfg_in(tmp_path)
    driver = Dies(1)
    assert run_with_restarts(driver, cfg)["restarts"] == 1
    assert driver.calls == [False, False]
    assert "from step 0 (no checkpoint yet)" in capsys.readouterr().err
    step = tmp_path / "r" / "checkpoints" / "step-000004"
    step.mkdir(parents=True)
    (step / "driver.json").write_text("{}")
    assert Checkpointer(tmp_path / "r" / "checkpoints").latest() == step
    driver = Dies(2, ray.exceptions.ActorUnavailableError)
    out = run_with_restarts(driver, cfg)
    assert out == {"after": {"eval/greedy_accuracy": 0.5}, "restarts": 2} and driver.calls == [False, True, True]
    assert "from its last checkpoint (step-000004), restart 2 of run.max_restarts=2" in capsys.readouterr().err


def test_gives_up_after_max_restarts_and_never_retries_other_errors(tmp_path):
    with pytest.raises(ray.exceptions.ActorDiedError):
        run_with_restarts(Dies(3), cfg_in(tmp_path))  # 1 run + 2 restarts, all dying
    driver = Dies(1)
    with pytest.raises(ray.exceptions.ActorDiedError):
        run_with_restarts(driver, cfg_in(tmp_path, "run.max_restarts=0"))
    assert driver.calls == [False]
    driver = Dies(1, ValueError)
    with pytest.raises(ValueError):
        run_with_restarts(driver, cfg_in(tmp_path))
    assert driver.calls == [False]


def test_negative_max_restarts_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="run.max_restarts"):
        cfg_in(tmp_path, "run.max_restarts=-1")
