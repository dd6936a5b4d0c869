"""Turn budgets for coding agents: unlimited, fixed cap with reminder, dynamic X->Y (SPECS.md §7).

Paper: "More with Less: turn control for coding agents" (2025). A turn = one model call plus the
execution of its actions. A baseline (unlimited) run gives the distribution of turns per task; caps
are its percentiles. Fixed cap: after every observation the agent reads
    "ENVIRONMENT REMINDER: You have {cap - t} turns left to complete the task."
and the run stops at the cap (whatever patch exists is evaluated). Dynamic X->Y: start at cap P_X;
when the cap is reached with no patch, grant once k = P_Y - P_X more turns.

Cost of a trajectory (the whole history is resent each turn, so it grows ~quadratically in turns):
    cost = sum_t (input_tokens_t * price_in + output_tokens_t * price_out)

Pure: numbers in, numbers out; no I/O, no config objects.

Example:
    policy = parse_turn_control("dynamic:p50-p75", calibration_turns=[4, 6, 8, 12])
    state, decision = after_turn(policy, TurnState(), has_patch=False)   # -> continue + reminder
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

REMINDER = "ENVIRONMENT REMINDER: You have {turns_left} turns left to complete the task."
EXTENSION = ("ENVIRONMENT REMINDER: You have used up all turns but have not yet completed the task. "
             "You are granted an additional {extra_turns} turns to continue and complete the task.")

_CAP = r"(p?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class TurnPolicy:
    """A turn-control strategy.

    kind: "unlimited" | "fixed" | "dynamic".
    cap_turns: the (first) cap; None for unlimited.
    extra_turns: turns granted once when the cap is hit with no patch (dynamic only; 0 otherwise).
    name: the spec it was parsed from (e.g. "fixed:p75"), used as the strategy's label.
    """
    kind: str = "unlimited"
    cap_turns: int | None = None
    extra_turns: int = 0
    name: str = "unlimited"

    def __post_init__(self) -> None:
        if self.kind not in ("unlimited", "fixed", "dynamic"):
            raise ValueError(f"unknown turn-control kind {self.kind!r}; valid: unlimited, fixed, dynamic")
        if self.kind != "unlimited" and (self.cap_turns is None or self.cap_turns < 1):
            raise ValueError(f"{self.kind} turn control needs a cap >= 1, got {self.cap_turns}")
        if self.extra_turns < 0:
            raise ValueError("extra_turns must be >= 0")


@dataclass(frozen=True)
class TurnState:
    """Where one trajectory stands: turns taken, current cap (None: unlimited), extension used."""
    turns_used: int = 0
    cap_turns: int | None = None
    extended: bool = False


@dataclass(frozen=True)
class TurnDecision:
    """After a turn: `action` is "continue" or "stop"; `message` is appended to the observation."""
    action: str
    message: str | None = None
    reason: str = ""


def percentile_turns(turns: list[int], q_percent: float) -> int:
    """The q-th percentile of a turn distribution, linear interpolation, rounded up to a whole turn.

    P_q = ceil(x_(lo) + (x_(hi) - x_(lo)) * frac), position = q/100 * (n - 1) over the sorted turns
    (numpy's default "linear" method). Never below 1.
    Example: percentile_turns([2, 4, 6, 8], 75) == 7   (position 2.25 -> 6 + 0.25*2 = 6.5 -> 7)
    """
    if not turns:
        raise ValueError("percentile of an empty turn distribution (run --calibrate first)")
    if not 0 <= q_percent <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q_percent}")
    xs = sorted(turns)
    pos = q_percent / 100.0 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    value = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return max(1, math.ceil(value - 1e-9))


def resolve_cap(token: str, calibration_turns: list[int] | None) -> int:
    """"10" -> 10; "p75" -> percentile_turns(calibration_turns, 75)."""
    if token.lower().startswith("p"):
        if not calibration_turns:
            raise ValueError(f"cap {token!r} is a percentile but no calibration turns were given "
                             "(record them with an unlimited run: --calibrate)")
        return percentile_turns(calibration_turns, float(token[1:]))
    return int(float(token))


def parse_turn_control(spec: str, calibration_turns: list[int] | None = None) -> TurnPolicy:
    """Parse "unlimited" | "fixed:<cap>" | "dynamic:<X>-<Y>" where a cap is N or pQ.

    Example: parse_turn_control("fixed:p75", [4, 6, 8, 12]) == TurnPolicy("fixed", 9, 0, "fixed:p75")
    """
    s = spec.strip().lower()
    if s == "unlimited":
        return TurnPolicy(name="unlimited")
    m = re.fullmatch(rf"fixed:{_CAP}", s)
    if m:
        return TurnPolicy("fixed", resolve_cap(m.group(1), calibration_turns), 0, spec)
    m = re.fullmatch(rf"dynamic:{_CAP}-{_CAP}", s)
    if m:
        first = resolve_cap(m.group(1), calibration_turns)
        second = resolve_cap(m.group(2), calibration_turns)
        if second < first:
            raise ValueError(f"dynamic cap {spec!r}: Y ({second}) must be >= X ({first})")
        return TurnPolicy("dynamic", first, second - first, spec)
    raise ValueError(f"bad turn control {spec!r}; expected unlimited, fixed:<N|pQ> or "
                     "dynamic:<N|pQ>-<N|pQ> (e.g. fixed:p75, fixed:10, dynamic:p50-p75)")


def initial_state(policy: TurnPolicy) -> TurnState:
    return TurnState(turns_used=0, cap_turns=policy.cap_turns, extended=False)


def after_turn(policy: TurnPolicy, state: TurnState, has_patch: bool) -> tuple[TurnState, TurnDecision]:
    """Account one finished turn and decide whether the agent may take another.

    unlimited: always continue, no message.
    fixed: t < cap -> continue with REMINDER(cap - t); t == cap -> stop.
    dynamic: as fixed, but at t == cap with no patch and no extension yet -> cap += extra_turns,
             continue with EXTENSION(extra_turns).
    Example: after_turn(TurnPolicy("fixed", 3, 0, "f"), TurnState(2, 3), True)[1].action == "stop"
    """
    used = state.turns_used + 1
    new = replace(state, turns_used=used)
    if policy.kind == "unlimited" or state.cap_turns is None:
        return new, TurnDecision("continue")
    if used < state.cap_turns:
        return new, TurnDecision("continue", REMINDER.format(turns_left=state.cap_turns - used))
    can_extend = policy.kind == "dynamic" and not state.extended and policy.extra_turns > 0
    if can_extend and not has_patch:
        new = replace(new, cap_turns=state.cap_turns + policy.extra_turns, extended=True)
        return new, TurnDecision("continue", EXTENSION.format(extra_turns=policy.extra_turns),
                                 reason="extended")
    return new, TurnDecision("stop", None, reason="turn_cap")


def turn_budget(policy: TurnPolicy) -> int | None:
    """Most turns a trajectory can take under `policy` (None: unlimited); for Allocation.turn_budget."""
    if policy.kind == "unlimited":
        return None
    return policy.cap_turns + policy.extra_turns


def turn_costs(input_tokens: list[int], output_tokens: list[int],
               price_in_per_mtok: float, price_out_per_mtok: float) -> list[float]:
    """Cost of each turn: c_t = in_t * price_in + out_t * price_out, prices per million tokens.

    Example: turn_costs([1000, 2000], [100, 100], 1.0, 2.0) == [0.0012, 0.0022]
    """
    if len(input_tokens) != len(output_tokens):
        raise ValueError("input_tokens and output_tokens need one entry per turn")
    return [(i * price_in_per_mtok + o * price_out_per_mtok) / 1e6
            for i, o in zip(input_tokens, output_tokens)]


def trajectory_cost(input_tokens: list[int], output_tokens: list[int],
                    price_in_per_mtok: float, price_out_per_mtok: float) -> float:
    """Total cost = sum of turn_costs."""
    return sum(turn_costs(input_tokens, output_tokens, price_in_per_mtok, price_out_per_mtok))


def cost_reduction(cost_base: float, cost_new: float) -> float:
    """Relative saving 1 - new/base (0.24 = 24% cheaper). Example: cost_reduction(10.0, 7.0) == 0.3"""
    if cost_base <= 0:
        return 0.0
    return 1.0 - cost_new / cost_base
