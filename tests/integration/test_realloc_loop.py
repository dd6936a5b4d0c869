"""Parameter reallocation in the training loop (sync.transport: reshard): GRPO with 2 FSDP2 learner ranks
and 2 hf engines, colocated (engine i in learner rank i's bundle). Every step the engines take their
pieces straight from the ranks holding them, and every engine then serves the learners' exact weights
(its checksum equals the learners', checked by the driver and here)."""
from pathlib import Path

import pytest

from rl import build
from rl.config import ConfigError, load_config
from rl.drivers.grpo import train
from rl.run.logging import read_metrics
from rl.workers.placement import bundles_for

ROOT = Path(__file__).parent.parent.parent
PLUGINS = ROOT / "tests" / "fixtures" / "reward_plugins.py"
COLOCATED = ["resources.learner.num_actors=2", "rollout.num_workers=2", "placement.mode=colocated",
             "sync.transport=reshard"]


def cfg(tmp_path, name, *overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", "trainer.steps=3",
        "eval.before_after=false", "run.checkpoint_every_steps=0", f"rewards.0.fn={PLUGINS}:text_length",
        "resources.learner.num_cpus=0.25", "resources.engine.num_cpus=0.25", *overrides])


def model_bytes() -> int:
    from rl.workers.models import load_model
    return sum(p.numel() * p.element_size() for p in load_model("tiny-llama").parameters())


def test_colocated_learners_reallocate_into_engines_every_step(ray_local, tmp_path):
    c = cfg(tmp_path, "realloc", *COLOCATED)
    bundles, index = bundles_for(build.roles_from(c))
    assert index["engine"] == index["learner"] == [0, 1] and len(bundles) == 2  # engine i shares rank i's bundle
    train(c)
    rows = read_metrics(tmp_path / "realloc" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    full = model_bytes()
    for r in rows:
        assert r["sync/transport"] == 2.0 and r["sync/verified"] == 1.0 and r["sync/resyncs"] == 0.0
        assert "sync/recovered" not in r
        assert r["sync/checksum_engine0"] == r["sync/checksum_engine1"] == r["sync/checksum"]
        assert r["realloc/bytes_engine0"] == r["realloc/bytes_engine1"] == full  # each replica: the whole model
        assert r["realloc/bytes"] == 2 * full
        assert r["realloc/bytes_sent_max"] <= full * 1.01  # a rank sends its half to each of 2 engines
        assert r["realloc/s"] > 0 and r["sync/version"] == r["step"] + 1
    assert len({r["sync/checksum"] for r in rows}) == 3  # the weights moved every step, and so did the engines'


def test_reshard_and_colocation_refuse_what_they_cannot_run():
    base = ROOT / "recipes" / "tiny.yaml"
    with pytest.raises(ConfigError, match="rollout.num_workers"):
        load_config(base, ["placement.mode=colocated", "rollout.num_workers=2"])
    with pytest.raises(ConfigError, match="sync.mode: full"):
        load_config(base, ["sync.transport=reshard", "sync.mode=delta"])
    with pytest.raises(ConfigError, match="hf"):
        load_config(base, ["sync.transport=reshard", "rollout.engine=vllm"])
    with pytest.raises(ConfigError, match="rollout.engine: vllm"):
        load_config(base, ["sync.transport=vllm"])
    with pytest.raises(ConfigError, match="num_actors: 1"):
        load_config(base, ["sync.transport=vllm", "rollout.engine=vllm", "resources.learner.num_actors=2"])


def test_a_restarted_engine_gets_a_new_group_and_the_learners_weights(ray_local):
    """An engine that Ray restarts is in no group: the next reallocation notices (group token), rebuilds
    the group and the plan, and the new process serves the learners' weights again."""
    import time

    import ray

    from rl.workers.learner_group import LearnerGroup
    from rl.workers.realloc import Reallocation
    from rl.workers.rollout_worker import RolloutWorker
    group = LearnerGroup("tiny-llama", 2, num_cpus=0.25, lr=1e-3, num_threads=1)
    engines = [RolloutWorker.options(num_cpus=0.25).remote("hf", "tiny-llama", seed=s) for s in (1, 2)]
    try:
        realloc = Reallocation("gloo")
        want = ray.get([a.weights_checksum.remote() for a in group.actors])[0]  # a collective over the ranks
        assert ray.get(engines[1].weights_checksum.remote()) != want  # another seed: other weights
        first = realloc.run(group.actors, engines, 1, 60.0)
        assert [ray.get(e.weights_checksum.remote()) for e in engines] == [want, want]
        ray.kill(engines[1], no_restart=False)
        deadline = time.time() + 60
        while True:  # until the new process answers: it is in no group (the old one may answer first)
            try:
                if ray.get(engines[1].realloc_token.remote()) is None:
                    break
            except ray.exceptions.RayActorError:
                pass
            assert time.time() < deadline
            time.sleep(0.5)
        assert ray.get(engines[1].weights_checksum.remote()) != want  # back to its starting weights
        second = realloc.run(group.actors, engines, 2, 60.0)
        assert [ray.get(e.weights_checksum.remote()) for e in engines] == [want, want]
        assert [ray.get(e.weights_state.remote())["version"] for e in engines] == [2, 2]
        assert second["realloc/bytes"] == first["realloc/bytes"]
    finally:
        for e in engines:
            ray.kill(e)
        group.close()
