"""Multi-turn RL rollouts on the coding env that keep token ids across turns (no re-tokenisation drift).

The conversation is one growing list of token ids. Turn t sends `prompt_ids + token_ids` to the
engine exactly as they are; the engine's completion ids are appended verbatim (loss_mask 1, with their
logprobs); the observation is appended as the chat template's user-turn ids (loss_mask 0). Text is
never re-tokenised, so the ids the learner scores are the ids the policy sampled. The turn budget
comes from the same TurnPolicy as evaluation; reward = 1.0 iff the final patch resolves the task.

Shapes: token_ids, loss_mask, logprobs: [num_response_tokens] (model and environment tokens
interleaved, in order). Example:
    traj = multiturn_rollout(task, engine, tok, parse_turn_control("fixed:4"), make_sandbox)
    traj.reward, sum(traj.loss_mask)   # -> 0.0 or 1.0, number of sampled tokens
"""
from __future__ import annotations

from dataclasses import dataclass, field

from allocation.turn_control import TurnPolicy, after_turn, initial_state
from envs.coding.agent import (FORMAT_ERROR, INSTANCE_PROMPT, SUBMIT_SENTINEL, SYSTEM_PROMPT,
                               format_observation, parse_action)
from envs.coding.grading import evaluate_patch
from envs.coding.tasks import CodingTask, current_patch, materialize
from rollout.types import GenerationRequest


@dataclass
class TokenTrajectory:
    """One multi-turn episode as tokens. `turn_spans[t]` = (start, end) of turn t's sampled ids."""
    instance_id: str
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    reward: float = 0.0
    exit_status: str = ""
    patch: str = ""

    @property
    def num_turns(self) -> int:
        return len(self.turn_spans)

    def extend(self, ids: list[int], sampled: bool, logprobs: list[float] | None = None) -> None:
        self.token_ids += ids
        self.loss_mask += [1 if sampled else 0] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)


def _ids(out) -> list[int]:
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(t) for t in out]


def user_turn_ids(tokenizer, content: str, end_ids: list[int]) -> list[int]:
    """Ids that close the assistant turn (if the sample did not) and open the next one with `content`.

    Computed as template([system, user]) minus template([system]) so no default system prompt leaks
    in; `end_ids` are the template's end-of-turn ids, added only when missing.
    """
    sys_msg = [{"role": "system", "content": "x"}]
    base = _ids(tokenizer.apply_chat_template(sys_msg, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(sys_msg + [{"role": "user", "content": content}],
                                              tokenize=True, add_generation_prompt=True))
    if full[:len(base)] != base:
        raise ValueError("chat template is not prefix-stable; cannot append turns as tokens")
    return end_ids + full[len(base):]


def multiturn_rollout(task: CodingTask, engine, tokenizer, policy: TurnPolicy, make_sandbox,
                      max_new_tokens: int = 256, temperature: float = 1.0,
                      hard_turn_limit: int = 50, command_timeout_s: float = 30.0) -> TokenTrajectory:
    """Run one episode with the engine as the agent; reward = resolved (graded in a fresh sandbox)."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": INSTANCE_PROMPT.format(problem_statement=task.problem_statement)}]
    prompt = _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
    traj = TokenTrajectory(task.instance_id, prompt)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sb = make_sandbox(task)
    try:
        base = materialize(task, sb)
        state = initial_state(policy)
        while True:
            req = GenerationRequest(prompt_ids=prompt + traj.token_ids, n=1,
                                    max_new_tokens=max_new_tokens, temperature=temperature)
            comp = engine.generate([req])[0]
            start = len(traj.token_ids)
            traj.extend(list(comp.token_ids), sampled=True, logprobs=list(comp.logprobs))
            traj.turn_spans.append((start, len(traj.token_ids)))
            action, n_blocks = parse_action(comp.text)
            if action is None:
                obs = FORMAT_ERROR.format(n=n_blocks)
            else:
                res = sb.run(action, timeout_s=command_timeout_s)
                if res.output.lstrip().splitlines()[:1] == [SUBMIT_SENTINEL]:
                    traj.exit_status = "submitted"
                    break
                obs = format_observation(res.returncode, res.output, res.timed_out)
            at_cap = state.cap_turns is not None and state.turns_used + 1 >= state.cap_turns
            state, decision = after_turn(policy, state, at_cap and bool(current_patch(sb, base).strip()))
            if decision.action == "stop" or traj.num_turns >= hard_turn_limit:
                traj.exit_status = decision.reason or "hard_limit"
                break
            ended = bool(comp.token_ids) and comp.token_ids[-1] in eos
            content = obs if decision.message is None else f"{obs}\n{decision.message}"
            traj.extend(user_turn_ids(tokenizer, content, [] if ended else eos), sampled=False)
        traj.patch = current_patch(sb, base)
    finally:
        sb.close()
    traj.reward = float(evaluate_patch(task, traj.patch, make_sandbox)[0].resolved)
    return traj
