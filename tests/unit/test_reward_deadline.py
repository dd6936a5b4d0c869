"""The reward deadline survives libraries that use signal.alarm (math_verify sets and cancels its own)."""
import signal
import time

import pytest

from rl.drivers.rewards import RewardTimeout, call_with_timeout, score_batch
from reward_plugins import cancels_alarms_then_hangs


def test_a_reward_that_cancels_alarms_still_times_out():
    t0 = time.monotonic()
    with pytest.raises(RewardTimeout):
        call_with_timeout(cancels_alarms_then_hangs, 0.5, prompts=["p"], completions=["c"])
    assert time.monotonic() - t0 < 5
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def test_the_deadline_is_gone_after_a_call_that_finished_in_time():
    assert call_with_timeout(lambda: 7, 0.2) == 7
    time.sleep(0.4)  # a stray deadline signal would raise here


def test_a_batch_whose_reward_cancels_alarms_is_scored_on_error():
    t0 = time.monotonic()
    values, errors, first = score_batch(cancels_alarms_then_hangs, "cancels", ["p"] * 2, ["a", "b"], {}, 0.3, -1.0)
    assert values == [-1.0, -1.0] and errors == 2 and first["error"].startswith("RewardTimeout")
    assert time.monotonic() - t0 < 5
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
