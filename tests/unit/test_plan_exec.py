"""`rl plan --recipe` / `rl train --plan`: the executable restriction of the search, the plan ->
config overrides mapping and the plan file's checks, by hand."""
import copy

import pytest

from rl.config import ConfigError, load_config
from rl.tools.plan_file import check_matches, plan_overrides, validate_plan
from rl.tools.plan_recipe import recipe_spec, recipe_workload
from rollout.realloc.cluster import parse_cluster_spec
from rollout.realloc.cost_model import Strategy
from rollout.realloc.executable import Executable, plan_executable
from rollout.realloc.planner import Candidate, PlanModel, candidates

HW8 = dict(nodes=1, gpus_per_node=8, device_memory_gib=80, peak_tflops=1000, hbm_gbytes_per_s=3000,
           intra_node_gbytes_per_s=400, inter_node_gbytes_per_s=50)
ONE = Strategy(1, 1, 1)


def spec8(algorithm="grpo", models=None):
    models = models or ({"actor": "llama-7b", "critic": "llama-7b"} if algorithm == "ppo" else {"actor": "llama-7b"})
    return parse_cluster_spec({"name": "t8", "hardware": dict(HW8), "models": models,
                               "workload": {"algorithm": algorithm, "batch_seqs": 64, "prompt_len": 128,
                                            "gen_len": 128, "minibatches": 1}})


def test_overrides_for_one_colocated_learner_keep_the_recipes_sync():
    roles = {"learner": {"num_actors": 1, "devices": [0]},
             "engine": {"engine": "hf", "num_workers": 1, "tensor_parallel_size": 1, "devices": [0]}}
    assert plan_overrides(roles, "colocated") == ["resources.learner.num_actors=1", "rollout.num_workers=1",
                                                  "rollout.tensor_parallel_size=1", "placement.mode=colocated"]


def test_overrides_for_sharded_learners_reshard_into_hf_and_stream_into_vllm():
    roles = {"learner": {"num_actors": 4, "devices": [0, 1, 2, 3]},
             "engine": {"engine": "hf", "num_workers": 2, "tensor_parallel_size": 1, "devices": [4, 5]},
             "critic": {"num_actors": 2, "placement": "own_actor", "devices": [6, 7]}}
    assert plan_overrides(roles, "separate") == [
        "resources.learner.num_actors=4", "rollout.num_workers=2", "rollout.tensor_parallel_size=1",
        "placement.mode=separate", "resources.critic.num_actors=2", "critic.placement=own_actor",
        "sync.mode=full", "sync.transport=reshard"]
    roles["engine"] = {"engine": "vllm", "num_workers": 1, "tensor_parallel_size": 2, "devices": [4, 5]}
    assert plan_overrides(roles, "separate")[-1] == "sync.transport=object_store"


def test_restricted_candidates_per_call():
    spec = spec8()
    hf, vllm = PlanModel(spec, rules=Executable("hf")), PlanModel(spec, rules=Executable("vllm"))
    gen, train = 0, 1  # grpo graph: actor_gen, actor_train
    assert {c.strategy.tp for c in hf.cands[gen]} == {1}
    assert {c.strategy.tp for c in vllm.cands[gen]} == {1, 2, 4, 8}  # llama-7b: 32 heads
    for m in (hf, vllm):
        assert all(c.strategy.pp == 1 for cs in m.cands for c in cs)
        assert all(c.strategy == Strategy(c.size, 1, 1) for c in m.cands[train])  # dp = ranks
    # 15 meshes in one 8-GPU node (8 x 1, 4 x 2, 2 x 4, 1 x 8): one executable train layout each
    assert len(hf.cands[train]) == 15 and len(hf.cands[gen]) == 15
    unrestricted = PlanModel(spec)
    assert unrestricted.cands[train] == candidates(unrestricted.nodes[train], spec)  # the old search untouched


def test_check_colocation_and_own_bundles():
    rules = Executable("vllm")
    tr = Candidate(0, 4, Strategy(4, 1, 1))
    assert rules.check({"actor_train": tr, "actor_gen": Candidate(0, 2, Strategy(2, 1, 1))}) is None  # colocated
    assert rules.check({"actor_train": tr, "actor_gen": Candidate(4, 4, Strategy(2, 2, 1))}) is None  # separate
    assert "tp 1" in rules.check({"actor_train": tr, "actor_gen": Candidate(0, 4, Strategy(2, 2, 1))})
    assert rules.check({"actor_train": tr, "actor_gen": Candidate(2, 2, Strategy(2, 1, 1))}) is not None  # not rank 0
    own = {"actor_train": tr, "actor_gen": Candidate(4, 2, Strategy(2, 1, 1))}
    assert rules.check({**own, "critic_train": Candidate(4, 2, Strategy(2, 1, 1)),
                        "critic_inf": Candidate(4, 2, Strategy(2, 1, 1))}) is not None  # critic on the engines
    assert rules.check({**own, "critic_train": Candidate(6, 2, Strategy(2, 1, 1)),
                        "critic_inf": Candidate(6, 2, Strategy(2, 1, 1))}) is None
    assert rules.check({**own, "critic_train": Candidate(0, 1, ONE), "critic_inf": Candidate(0, 1, ONE)}) is None
    assert rules.check({**own, "ref_inf": Candidate(4, 2, Strategy(2, 1, 1))}) is not None  # ref lives in the learner


def test_restricted_search_returns_an_executable_plan():
    for algorithm in ("grpo", "ppo"):
        model = PlanModel(spec8(algorithm), rules=Executable("vllm"))
        mh = plan_executable(model, seed=0, iters=1500)["mh"]
        assert mh.evaluation is not None and not mh.evaluation.oom
        choice = {n.name: model.cands[i][mh.plan[i]] for i, n in enumerate(model.nodes)}
        assert model.rules.check(choice) is None
        assert all(model.rules.allows(n, choice[n.name]) for n in model.nodes)


def test_workload_and_models_from_the_tiny_recipe():
    cfg = load_config("recipes/tiny.yaml")
    w = recipe_workload(cfg, prompt_len=46)
    assert (w.algorithm, w.batch_seqs, w.prompt_len, w.gen_len, w.minibatches) == ("grpo", 16, 46, 8, 1)
    cluster = parse_cluster_spec({"hardware": dict(HW8, nodes=1, gpus_per_node=1), "models": {"actor": "llama-7b"},
                                  "workload": {"algorithm": "grpo"}})
    spec, rules = recipe_spec(cluster, load_config("recipes/tiny.yaml", ["algorithm.kl_coef=0.1"]), 46)
    assert set(spec.models) == {"actor", "ref"} and spec.models["actor"].layers == 2  # tiny-llama, not the spec's
    assert rules == Executable("hf", "learner")
    model = PlanModel(spec, rules=rules)
    assert [len(c) for c in model.cands] == [1, 1, 1]  # one device: one layout per call


PLAN = {"cluster": "recipes/clusters/cpu-2core.yaml", "recipe": "recipes/tiny.yaml", "model": "tiny-llama",
        "algorithm": "grpo", "calls": [{"call": "actor_gen", "role": "engine", "devices": [0], "dp": 1, "tp": 1,
                                        "pp": 1, "est_s": 0.1}],
        "roles": {"learner": {"num_actors": 1, "devices": [0]},
                  "engine": {"engine": "hf", "num_workers": 1, "tensor_parallel_size": 1, "devices": [0]}},
        "placement": "colocated",
        "overrides": ["resources.learner.num_actors=1", "rollout.num_workers=1", "rollout.tensor_parallel_size=1",
                      "placement.mode=colocated"]}


@pytest.mark.parametrize("edit, key", [
    (lambda p: p.update(placment="colocated"), "plan.placment"),
    (lambda p: p["roles"]["learner"].update(num_actors=0), "plan.roles.learner.num_actors"),
    (lambda p: p["roles"]["engine"].update(num_workers=2), "plan.overrides"),
    (lambda p: p.pop("roles"), "plan.roles"),
    (lambda p: p.update(placement="spread"), "plan.placement"),
])
def test_bad_plans_name_the_key(edit, key):
    plan = copy.deepcopy(PLAN)
    edit(plan)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_plan(plan)


def test_plan_for_another_model_or_recipe_is_refused():
    plan = validate_plan(copy.deepcopy(PLAN))
    check_matches(plan, "recipes/tiny.yaml", load_config("recipes/tiny.yaml"))
    with pytest.raises(ConfigError, match=r"plan\.model"):
        check_matches(plan, "recipes/tiny.yaml", load_config("recipes/tiny.yaml", ["model.name=smollm2-135m"]))
    with pytest.raises(ConfigError, match=r"plan\.recipe"):
        check_matches(plan, "recipes/quickstart.yaml", load_config("recipes/tiny.yaml"))
