"""`rl bench grpo-step`: the measured steps exclude the warm-up and carry their spread."""
import pytest

from rl.bench.grpo_step import step_summary


def test_step_summary_excludes_warmup():
    s = step_summary([9.0, 5.0, 4.0, 6.0], warmup=2)
    assert (s["median"], s["min"], s["max"], s["steps"]) == (5.0, 4.0, 6.0, 2)
    assert s["measured_s"] == [4.0, 6.0] and s["warmup_s"] == [9.0, 5.0]


def test_step_summary_needs_a_measured_step():
    with pytest.raises(ValueError, match="none to measure"):
        step_summary([9.0, 5.0], warmup=2)
