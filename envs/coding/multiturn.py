"""Multi-turn RL rollouts on the coding env that keep token ids across turns (no re-tokenisation drift).

The conversation is one growing list of token ids. Turn t sends `prompt_ids + token_ids` to the
engine exactly as they are; the engine's completion ids are appended verbatim (loss_mask 1, with their
logprobs); the observation messages are appended as the chat template's ids for them (loss_mask 0).
Text is never re-tokenised, so the ids the learner scores are the ids the policy sampled. The turn
budget comes from the same TurnPolicy as evaluation; reward = 1.0 iff the final patch resolves the task.

Agent formats (`agent_format`, as in `rl eval swebench --agent`): `bash` (one ```bash block per reply,
the observation a user turn) or `tools` (Hermes-style <tool_call> JSON for `bash` / `submit`, results
as `tool` messages; rendered with the tokenizer's template when it shows tools, else with
TOOLS_CHAT_TEMPLATE). The format's own step function (agent.bash_step / tools_agent.tools_step) parses
the sampled text and runs it, so both formats act exactly as they do in evaluation.

Shapes: token_ids, loss_mask, logprobs: [num_response_tokens] (model and environment tokens
interleaved, in order). Example:
    traj = multiturn_rollout(task, engine, tok, parse_turn_control("fixed:4"), make_sandbox)
    traj.reward, sum(traj.loss_mask)   # -> 0.0 or 1.0, number of sampled tokens
"""
from __future__ import annotations

from dataclasses import dataclass, field

from allocation.turn_control import TurnPolicy, after_turn, initial_state
from envs.coding.agent import INSTANCE_PROMPT
from envs.coding.chat import api_messages
from envs.coding.grading import evaluate_patch
from envs.coding.models import reply_from_text
from envs.coding.runner import format_kwargs
from envs.coding.tasks import CodingTask, current_patch, materialize
from envs.coding.tool_format import TOOLS, TOOLS_CHAT_TEMPLATE, template_renders_tools
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


def template_kwargs(tokenizer, agent_format: str) -> dict:
    """apply_chat_template's extra arguments for a format: the tools (and the Hermes template when the
    tokenizer's own ignores tools) for `tools`, none for `bash`."""
    if agent_format != "tools":
        return {}
    return {"tools": TOOLS} if template_renders_tools(tokenizer) else {"tools": TOOLS, "chat_template": TOOLS_CHAT_TEMPLATE}


def observation_ids(tokenizer, messages: list[dict], end_ids: list[int], **template) -> list[int]:
    """Ids that close the assistant turn (if the sample did not) and append `messages` (user or tool
    turns), ending with the next assistant header.

    Computed as template([system] + messages) minus template([system]) so no default system prompt
    leaks in; `end_ids` are the template's end-of-turn ids, added only when missing.
    """
    sys_msg = [{"role": "system", "content": "x"}]
    base = _ids(tokenizer.apply_chat_template(sys_msg, tokenize=True, **template))
    full = _ids(tokenizer.apply_chat_template(sys_msg + api_messages(messages), tokenize=True,
                                              add_generation_prompt=True, **template))
    if full[:len(base)] != base:
        raise ValueError("chat template is not prefix-stable; cannot append turns as tokens")
    return end_ids + full[len(base):]


class _Sampled:
    """The completion the engine already sampled, behind the chat protocol, so a format's step
    function parses and runs it exactly as in evaluation (one call; the history is not re-rendered)."""

    def __init__(self, text: str, n_in: int, n_out: int):
        self.text, self.n_in, self.n_out = text, n_in, n_out

    def chat(self, messages):
        return self.text, self.n_in, self.n_out

    def chat_tools(self, messages, tools):
        return reply_from_text(self.text, self.n_in, self.n_out)


def multiturn_rollout(task: CodingTask, engine, tokenizer, policy: TurnPolicy, make_sandbox,
                      max_new_tokens: int = 256, temperature: float = 1.0, hard_turn_limit: int = 50,
                      command_timeout_s: float = 30.0, agent_format: str = "bash") -> TokenTrajectory:
    """Run one episode with the engine as the agent; reward = resolved (graded in a fresh sandbox)."""
    fmt, template = format_kwargs(agent_format), template_kwargs(tokenizer, agent_format)
    messages = [{"role": "system", "content": fmt["system_prompt"]},
                {"role": "user", "content": INSTANCE_PROMPT.format(problem_statement=task.problem_statement)}]
    prompt = _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **template))
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
            text = comp.text or tokenizer.decode(comp.token_ids, skip_special_tokens=True)
            st = fmt["step"](_Sampled(text, len(req.prompt_ids), len(comp.token_ids)), messages, sb,
                             command_timeout_s)
            if st.submitted:
                traj.exit_status = "submitted"
                break
            at_cap = state.cap_turns is not None and state.turns_used + 1 >= state.cap_turns
            state, decision = after_turn(policy, state, at_cap and bool(current_patch(sb, base).strip()))
            if decision.action == "stop" or traj.num_turns >= hard_turn_limit:
                traj.exit_status = decision.reason or "hard_limit"
                break
            obs = [dict(m) for m in st.observations]
            if decision.message is not None:
                obs[-1]["content"] = f"{obs[-1]['content']}\n{decision.message}"
            ended = bool(comp.token_ids) and comp.token_ids[-1] in eos
            traj.extend(observation_ids(tokenizer, obs, [] if ended else eos, **template), sampled=False)
        traj.patch = current_patch(sb, base)
    finally:
        sb.close()
    traj.reward = float(evaluate_patch(task, traj.patch, make_sandbox)[0].resolved)
    return traj
