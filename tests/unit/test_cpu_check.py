"""Actors that take every CPU leave none for the reward tasks: refused at start, naming the key."""
import pytest

from rl.build import roles_from
from rl.startup import check_cpus
from rl.config import ConfigError, load_config


def test_actors_that_leave_no_cpu_for_rewards_are_refused(ray_local):
    import ray
    have = ray.cluster_resources()["CPU"]
    workers = int(have / 0.5)  # with the learner's 0.5, one engine too many
    cfg = load_config(None, ["model.name=tiny-llama", f"rollout.num_workers={workers}"])
    with pytest.raises(ConfigError, match=rf"rollout.num_workers: the run's actors ask for {have + 0.5:g} CPUs "
                                          rf"\(learner 0.5, engine {workers * 0.5:g}\) and a reward task for 0.25"):
        check_cpus(cfg, roles_from(cfg))
    cfg.resources.autoscaling = True
    check_cpus(cfg, roles_from(cfg))
    fits = load_config(None, ["model.name=tiny-llama", "rollout.num_workers=1"])
    check_cpus(fits, roles_from(fits))
