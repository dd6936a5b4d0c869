"""Turn control (SPECS.md §7): percentile caps, reminders, one-time extension, cost accounting."""
import pytest

from allocation.turn_control import (EXTENSION, REMINDER, TurnPolicy, TurnState, after_turn, cost_reduction,
                                     initial_state, parse_turn_control, percentile_turns, trajectory_cost,
                                     turn_budget, turn_costs)


def test_percentile_hand_computed():
    # sorted [2, 4, 6, 8]: P75 at position 2.25 -> 6 + 0.25 * 2 = 6.5 -> ceil 7
    assert percentile_turns([8, 2, 6, 4], 75) == 7
    assert percentile_turns([2, 4, 6, 8], 50) == 5      # 4 + 0.5 * 2
    assert percentile_turns([2, 4, 6, 8], 100) == 8
    assert percentile_turns([2, 4, 6, 8], 0) == 2
    assert percentile_turns([5], 25) == 5
    assert percentile_turns([0, 0, 0], 50) == 1          # never a zero cap
    with pytest.raises(ValueError):
        percentile_turns([], 50)
    with pytest.raises(ValueError):
        percentile_turns([1, 2], 101)


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    turns = [3, 17, 5, 9, 12, 4, 30, 8, 8, 11]
    for q in (25, 50, 75, 90):
        assert percentile_turns(turns, q) == int(np.ceil(np.percentile(turns, q) - 1e-9))


def test_parse_specs():
    calib = [4, 6, 8, 12]
    assert parse_turn_control("unlimited") == TurnPolicy()
    assert parse_turn_control("fixed:10") == TurnPolicy("fixed", 10, 0, "fixed:10")
    assert parse_turn_control("fixed:p75", calib) == TurnPolicy("fixed", 9, 0, "fixed:p75")
    # P50 = 7, P75 = 9 -> cap 7, extension 2
    assert parse_turn_control("dynamic:p50-p75", calib) == TurnPolicy("dynamic", 7, 2, "dynamic:p50-p75")
    assert parse_turn_control("dynamic:5-8") == TurnPolicy("dynamic", 5, 3, "dynamic:5-8")


@pytest.mark.parametrize("bad", ["fixed", "fixed:", "fixed:abc", "capped:5", "dynamic:8-5", "fixed:0"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        parse_turn_control(bad, [1, 2, 3])


def test_percentile_without_calibration_explains():
    with pytest.raises(ValueError, match="calibrate"):
        parse_turn_control("fixed:p75", None)


def _play(policy, patch_from_turn=None, max_turns=50):
    """Simulate an agent that never submits; return (turns taken, messages, final state)."""
    state, messages = initial_state(policy), []
    for _ in range(max_turns):
        has_patch = patch_from_turn is not None and state.turns_used + 1 >= patch_from_turn
        state, decision = after_turn(policy, state, has_patch)
        if decision.action == "stop":
            return state.turns_used, messages, state
        messages.append(decision.message)
    return state.turns_used, messages, state


def test_unlimited_never_stops_or_reminds():
    turns, msgs, _ = _play(TurnPolicy(), max_turns=30)
    assert turns == 30 and msgs == [None] * 30


def test_fixed_cap_reminders_then_stop():
    turns, msgs, state = _play(TurnPolicy("fixed", 3, 0, "fixed:3"))
    assert turns == 3
    assert msgs == [REMINDER.format(turns_left=2), REMINDER.format(turns_left=1)]
    assert msgs[0] == "ENVIRONMENT REMINDER: You have 2 turns left to complete the task."
    assert not state.extended


def test_dynamic_extends_once_without_patch():
    turns, msgs, state = _play(TurnPolicy("dynamic", 3, 2, "dynamic:3-5"))
    assert turns == 5 and state.extended and state.cap_turns == 5
    assert msgs[2] == EXTENSION.format(extra_turns=2)
    assert "granted an additional 2 turns" in msgs[2]
    assert msgs[3] == REMINDER.format(turns_left=1)


def test_dynamic_stops_at_first_cap_with_patch():
    turns, _, state = _play(TurnPolicy("dynamic", 3, 2, "dynamic:3-5"), patch_from_turn=2)
    assert turns == 3 and not state.extended


def test_after_turn_does_not_mutate_state():
    s0 = TurnState(2, 3, False)
    s1, d = after_turn(TurnPolicy("fixed", 3, 0, "f"), s0, True)
    assert s0 == TurnState(2, 3, False) and s1.turns_used == 3 and d.action == "stop"


def test_turn_budget():
    assert turn_budget(TurnPolicy()) is None
    assert turn_budget(TurnPolicy("fixed", 7, 0, "f")) == 7
    assert turn_budget(TurnPolicy("dynamic", 7, 3, "d")) == 10


def test_costs_hand_computed():
    assert turn_costs([1000, 2000], [100, 100], 1.0, 2.0) == pytest.approx([0.0012, 0.0022])
    assert trajectory_cost([1000, 2000], [100, 100], 1.0, 2.0) == pytest.approx(0.0034)
    assert cost_reduction(10.0, 7.0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        turn_costs([1], [1, 2], 1.0, 1.0)


def test_resent_history_makes_cost_quadratic():
    # each turn adds 100 tokens of history: input_t = 100 * t -> total ~ 50 * T^2
    def cost(num_turns):
        return trajectory_cost([100 * t for t in range(1, num_turns + 1)], [0] * num_turns, 1e6, 0.0)
    assert cost(10) == pytest.approx(100 * 55)
    assert cost(20) / cost(10) == pytest.approx(210 / 55)     # ~4x for 2x the turns
