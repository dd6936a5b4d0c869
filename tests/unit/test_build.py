"""rl/build.py binds names to objects: allocators from the registry (V0 wrapping knapsack), collectors,
reward shapers and estimators; unknown names and bad bounds are config errors naming the key. Also the
experience collectors (DAPO dynamic sampling) on scripted draws."""
import pytest
import torch

from allocation.curriculum import CurriculumAllocator
from allocation.knapsack import KnapsackAllocator, KnapsackState, UniformAllocator
from allocation.v0_allocation import V0Allocator, V0State
from envs.tasks import Example
from rl import build
from rl.config import ConfigError, load_config
from rl.drivers.experience import StepData, dynamic_sampling, single_draw
from rl.types import RolloutBatch


def cfg(*overrides):
    return load_config(None, list(overrides))


def test_allocators_come_from_the_registry_with_their_settings():
    assert isinstance(build.allocator_from(cfg()), UniformAllocator)
    k = build.allocator_from(cfg("allocation.name=knapsack", "allocation.min_samples_per_prompt=3",
                                 "allocation.max_samples_per_prompt=20"))
    assert isinstance(k, KnapsackAllocator) and (k.n_low, k.n_up) == (3, 20)
    c = build.allocator_from(cfg("allocation.name=curriculum", "allocation.curriculum_samples=knapsack"))
    assert isinstance(c, CurriculumAllocator) and isinstance(c.samples_allocator, KnapsackAllocator)
    assert isinstance(build.allocator_state(build.allocator_from(cfg())), KnapsackState)


def test_bad_allocation_names_and_bounds_are_config_errors():
    with pytest.raises(ConfigError, match="allocation.name: .*knapsack"):
        build.allocator_from(cfg("allocation.name=knapsak"))
    with pytest.raises(ConfigError, match="allocation"):
        build.allocator_from(cfg("allocation.name=knapsack", "allocation.min_samples_per_prompt=9",
                                 "allocation.max_samples_per_prompt=4"))
    with pytest.raises(ConfigError, match="renamed; did you mean 'allocation.min_samples_per_prompt'"):
        cfg("allocation.n_low=2")


def test_v0_predictor_wraps_knapsack_and_maps_keys_to_prompts(tmp_path):
    (tmp_path / "v0.pt").write_bytes(b"")

    class Task:
        train = [Example(key="a", prompt="1+1?", answer="2"), Example(key="b", prompt="2+2?", answer="4")]
    alloc = build.allocator_from(cfg("allocation.name=knapsack", f"allocation.v0_predictor={tmp_path / 'v0.pt'}",
                                     "allocation.v0_context_size=3"), Task())
    assert isinstance(alloc, V0Allocator) and isinstance(alloc.inner, KnapsackAllocator)
    assert alloc.predict.args[1] == {"a": "1+1?", "b": "2+2?"}
    assert isinstance(alloc.new_state(), V0State) and alloc.new_state().context_size == 3


def test_v0_allocator_predicts_only_with_context_and_keeps_the_total():
    calls = []

    def predict(keys, context):
        calls.append((list(keys), list(context)))
        return [0.05 if k == "hard" else 0.5 for k in keys]
    alloc = V0Allocator(KnapsackAllocator(8, 2, 32), predict, context_size=2)
    state = alloc.new_state()
    assert alloc.plan(["hard", "easy"], state).samples_per_prompt == [8, 8] and calls == []  # no context yet
    state.update(["x", "y", "z"], [[1.0, 0.0], [0.0], [1.0]])
    assert state.context == [("y", 0.0), ("z", 1.0)]  # the last context_size pairs
    plan = alloc.plan(["hard", "easy"], state).samples_per_prompt
    assert sum(plan) == 16 and plan[0] != plan[1] and calls[-1] == (["hard", "easy"], [("y", 0.0), ("z", 1.0)])
    again = V0State(KnapsackState(), 2)
    again.load_state_dict(state.state_dict())
    assert again.context == state.context


def test_overlong_shaper_and_collectors_are_bound_by_name():
    assert build.reward_shapers(cfg()) == []
    (shape,) = build.reward_shapers(cfg("algorithm.overlong_max_tokens=10", "algorithm.overlong_cache_tokens=4"))
    out = shape(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([6, 8, 11]))
    assert out.tolist() == pytest.approx([1.0, 0.5, 0.0])  # 0 up to L-C, ((L-C)-|y|)/C, then -1
    assert build.collector_from(cfg()) is single_draw
    dyn = build.collector_from(cfg("algorithm.dynamic_sampling=true", "algorithm.max_generation_rounds=5"))
    assert dyn.func is dynamic_sampling and dyn.keywords == {"max_generation_rounds": 5}


def test_group_estimator_by_name():
    est = build.estimator_from(cfg("algorithm.advantage=rloo"), "group", 2, None)
    batch = RolloutBatch.from_sequences([[1], [2]], [[5], [6], [7], [8]], [[0.0]] * 4, [0, 0, 1, 1],
                                        [1.0, 0.0, 1.0, 1.0], 2)
    adv, metrics = est.advantages(batch)
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0]) and est.actors == []
    assert metrics == {"advantage/mean": 0.0, "advantage/std": pytest.approx((2 / 3) ** 0.5)}  # sample std
    with pytest.raises(ConfigError, match="algorithm.advantage"):
        build.estimator_from(cfg("algorithm.advantage=grpoo"), "group", 2, None)


class ScriptedExperience:
    """Draws scripted rounds: each round's groups have the given rewards."""

    class _Tok:
        pad_token_id = 2

    class _Encode:
        tok = None

    def __init__(self, rounds, prompts_per_step):
        self.rounds, self.prompts_per_step, self.drawn = rounds, prompts_per_step, 0
        self.encode = self._Encode()
        self.encode.tok = self._Tok()

    def draw(self, step, round_=0):
        groups = self.rounds[round_]
        self.drawn += 1
        gids = [g for g, rs in enumerate(groups) for _ in rs]
        rewards = [r for rs in groups for r in rs]
        batch = RolloutBatch.from_sequences([[g] for g in range(len(groups))], [[9]] * len(rewards),
                                            [[0.0]] * len(rewards), gids, rewards, 2)
        examples = [Example(key=f"{round_}-{g}", prompt="p", answer="a") for g in range(len(groups))]
        metrics = {"time/generate_s": 1.0, "time/reward_s": 0.5, "tokens_generated": len(rewards), "reward/mean": 0.0}
        return StepData(batch, examples, [list(rs) for rs in groups], metrics, [["t"] * len(rs) for rs in groups])


def test_dynamic_sampling_drops_uniform_groups_and_draws_until_enough():
    exp = ScriptedExperience([[[1, 1], [1, 0]], [[0, 0], [0, 1], [1, 0]], [[1, 0]]], prompts_per_step=3)
    data = dynamic_sampling(exp, step=0, max_generation_rounds=3)
    assert exp.drawn == 2 and data.metrics["generation_rounds"] == 2
    assert [e.key for e in data.examples] == ["0-1", "1-1", "1-2"]
    assert data.batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2] and data.metrics["tokens_generated"] == 10
    assert data.metrics["time/generate_s"] == 2.0
    capped = dynamic_sampling(ScriptedExperience([[[1, 1]], [[0, 0]]], 2), step=0, max_generation_rounds=2)
    assert capped.batch.num_samples == 0 and capped.metrics["generation_rounds"] == 2
