"""The one held-out evaluator on a scripted engine actor (the logic under test is the evaluator's:
greedy accuracy, pass@k, per-digit buckets, the recipe's first reward as the correctness check)."""
import pytest
import ray

from envs.tasks import Example
from rl.config import RewardConfig
from rl.drivers.evaluation import Evaluator
from rollout.types import Completion


@ray.remote(num_cpus=0)
class ScriptedEngine:
    """Answers each prompt with its scripted replies: sample j of a request gets replies[j % len]."""

    def __init__(self, replies: dict):
        self.replies, self.calls = replies, []

    def generate(self, requests, seed=None):
        self.calls.append([(r.n, r.temperature, r.max_new_tokens) for r in requests])
        out = []
        for r in requests:
            texts = self.replies[tuple(r.prompt_ids)]
            for j in range(r.n):
                out.append(Completion(request_id=r.request_id, token_ids=[1], logprobs=[0.0], text=texts[j % len(texts)],
                                      finish_reason="stop"))
        return out

    def seen(self):
        return self.calls


def test_greedy_accuracy_pass_at_k_and_digit_buckets(ray_local):
    examples = [Example(key="a", prompt="a", answer="3", columns={"digits": 1}),
                Example(key="b", prompt="b", answer="5", columns={"digits": 1}),
                Example(key="c", prompt="c", answer="12", columns={"digits": 2})]
    encode = lambda ex, budget=None: [ord(ex.prompt)]  # noqa: E731
    engine = ScriptedEngine.remote({(ord("a"),): ["3"], (ord("b"),): ["4", "5"], (ord("c"),): ["1"]})
    out = Evaluator(engine, encode, examples, RewardConfig("exact_match"), max_new_tokens=7, pass_k=2)()
    assert out["eval/greedy_accuracy"] == pytest.approx(1 / 3)  # greedy takes the first reply
    assert out["eval/pass@2_accuracy"] == pytest.approx(2 / 3)  # b's second sample is right
    assert out["eval/greedy_accuracy/1digit"] == pytest.approx(0.5) and out["eval/greedy_accuracy/2digit"] == 0.0
    greedy, sampled = ray.get(engine.seen.remote())
    assert {c[:2] for c in greedy} == {(1, 0.0)} and {c[:2] for c in sampled} == {(2, 1.0)}
    assert {c[2] for c in greedy + sampled} == {7}
    ray.kill(engine)
