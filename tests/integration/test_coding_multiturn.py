"""Multi-turn token rollouts: ids carried across turns verbatim, masks, reward = resolved, turn cap."""
import pytest

from allocation.turn_control import parse_turn_control
from envs.coding.generator import generate_tasks
from envs.coding.models import bash, oracle_replies
from envs.coding.multiturn import multiturn_rollout
from envs.coding.sandbox import LocalSandbox
from rollout.types import Completion


@pytest.fixture(scope="module")
def tokenizer():
    try:
        from rl.workers.models import load_tokenizer
        return load_tokenizer("tiny-llama")
    except Exception as exc:
        pytest.skip(f"no local tokenizer: {exc}")


class ReplayEngine:
    """Answers each request with the next scripted text, as token ids (+ eos); records the prompts."""

    def __init__(self, tokenizer, replies):
        self.tok, self.replies, self.prompts = tokenizer, list(replies), []

    def generate(self, requests):
        self.prompts.append(list(requests[0].prompt_ids))
        text = self.replies.pop(0)
        ids = self.tok.encode(text, add_special_tokens=False) + [self.tok.eos_token_id]
        return [Completion(0, ids, [-0.5] * len(ids), text, "stop")]


def make_sandbox(task):
    return LocalSandbox.create(timeout_s=30)


def test_ids_carry_over_and_reward_is_resolved(tokenizer):
    task = generate_tasks(1, seed=0)[0]
    engine = ReplayEngine(tokenizer, oracle_replies(task, explore_turns=1) +
                          ["```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"])
    traj = multiturn_rollout(task, engine, tokenizer, parse_turn_control("unlimited"), make_sandbox)
    assert traj.exit_status == "submitted" and traj.reward == 1.0 and traj.num_turns == 3
    assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.logprobs)
    for k, (start, end) in enumerate(traj.turn_spans):
        # what the engine saw at turn k is exactly the prompt plus everything before the turn
        assert engine.prompts[k] == traj.prompt_ids + traj.token_ids[:start]
        assert all(traj.loss_mask[start:end]) and traj.logprobs[start] == -0.5
    sampled = sum(e - s for s, e in traj.turn_spans)
    assert sum(traj.loss_mask) == sampled < len(traj.token_ids)     # observations are masked out


def test_turn_cap_and_zero_reward(tokenizer):
    task = generate_tasks(1, seed=0)[0]
    engine = ReplayEngine(tokenizer, [bash("look", "ls")] * 5)
    traj = multiturn_rollout(task, engine, tokenizer, parse_turn_control("fixed:2"), make_sandbox)
    assert traj.num_turns == 2 and traj.exit_status == "turn_cap" and traj.reward == 0.0
    reminder = tokenizer.decode(traj.token_ids[traj.turn_spans[0][1]:traj.turn_spans[1][0]])
    assert "You have 1 turns left" in reminder


def _as_tool_call(reply: str) -> str:
    """A scripted bash-format reply as the tools format's text: one <tool_call> for bash or submit."""
    import json
    import re
    cmd = re.search(r"```bash\s*\n(.*?)\n```", reply, re.DOTALL).group(1)
    call = ({"name": "submit", "arguments": {}} if "COMPLETE_TASK_AND_SUBMIT" in cmd else
            {"name": "bash", "arguments": {"command": cmd}})
    return f"Next step.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


def test_tools_format_keeps_ids_and_answers_with_tool_responses(tokenizer):
    task = generate_tasks(1, seed=0)[0]
    script = oracle_replies(task, explore_turns=1) + ["```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"]
    engine = ReplayEngine(tokenizer, [_as_tool_call(r) for r in script])
    traj = multiturn_rollout(task, engine, tokenizer, parse_turn_control("unlimited"), make_sandbox,
                             agent_format="tools")
    assert traj.exit_status == "submitted" and traj.reward == 1.0 and traj.num_turns == len(script)
    assert '"submit"' in tokenizer.decode(traj.prompt_ids)            # the tool schemas are in the prompt
    for k, (start, _) in enumerate(traj.turn_spans):
        assert engine.prompts[k] == traj.prompt_ids + traj.token_ids[:start]
    first_obs = tokenizer.decode(traj.token_ids[traj.turn_spans[0][1]:traj.turn_spans[1][0]])
    assert "<tool_response>" in first_obs and "<returncode>0</returncode>" in first_obs


def test_tools_format_counts_a_reply_without_a_call_as_a_turn(tokenizer):
    task = generate_tasks(1, seed=0)[0]
    engine = ReplayEngine(tokenizer, ["I would list the files."] * 3)
    traj = multiturn_rollout(task, engine, tokenizer, parse_turn_control("fixed:2"), make_sandbox,
                             agent_format="tools")
    assert traj.num_turns == 2 and traj.exit_status == "turn_cap" and traj.reward == 0.0
    obs = tokenizer.decode(traj.token_ids[traj.turn_spans[0][1]:traj.turn_spans[1][0]])
    assert "called no tool" in obs and "You have 1 turns left" in obs
