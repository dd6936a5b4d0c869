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
