"""The pure half of placement: one bundle per actor, colocated roles add their share to the host's."""
import pytest

from rl.workers.placement import Role, bundles_for


def test_own_roles_get_a_bundle_per_actor_in_order():
    bundles, index = bundles_for({"learner": Role(1, 0.5, 1), "engine": Role(2, 0.5, 2)})
    assert bundles == [{"CPU": 0.5, "GPU": 1.0}, {"CPU": 0.5, "GPU": 2.0}, {"CPU": 0.5, "GPU": 2.0}]
    assert index == {"learner": [0], "engine": [1, 2]}


def test_colocated_roles_share_the_host_bundle():
    bundles, index = bundles_for({"learner": Role(1, 0.5, 0.5), "engine": Role(1, 0.5, 1),
                                  "critic": Role(1, 0, 0.25, "learner"), "reference": Role(1, 0, 0.25, "learner")})
    assert bundles[0] == {"CPU": 0.5, "GPU": 1.0} and index["critic"] == index["reference"] == [0]


def test_cpu_only_bundles_and_errors():
    bundles, index = bundles_for({"learner": Role(1, 0.5, 0), "engine": Role(0, 0.5, 0), "critic": Role(1, 0, 0, "learner")})
    assert bundles == [{"CPU": 0.5}] and "engine" not in index
    with pytest.raises(ValueError, match="colocated with 'engine'"):
        bundles_for({"learner": Role(1), "engine": Role(0), "critic": Role(1, 0, 0, "engine")})
