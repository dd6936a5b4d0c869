"""shard_minibatch: whole groups onto ranks, balanced by tokens, deterministic (hand-computed cases,
then properties over random cases)."""
import random

import pytest

from rl.workers.learner_group import shard_minibatch


@pytest.mark.parametrize("counts, world_size, expected", [
    # largest first onto the lightest rank: 5->r0, 4->r1, 2->r1 (4<5), 1->r0 (5<6): loads 6, 6
    ([5, 1, 4, 2], 2, [[0, 1], [2, 3]]),
    # one group, two ranks: rank 1 is empty (it still joins every collective, see distributed.py)
    ([3], 2, [[0], []]),
    # ties: lower group index first, onto the lower rank: 0->r0, 1->r1, 2->r0
    ([2, 2, 2], 2, [[0, 2], [1]]),
    # 9->r0, 7->r1, 3->r2, 2->r2 (3), 1->r2 (5); ranks list their groups in ascending order
    ([1, 9, 2, 7, 3], 3, [[1], [3], [0, 2, 4]]),
    # zero-token groups are still assigned: 4->r0, 0->r1, 0->r1 (load 0 < 4)
    ([0, 4, 0], 2, [[1], [0, 2]]),
    ([], 2, [[], []]),
    ([6, 1], 1, [[0, 1]]),
])
def test_hand_computed_plans(counts, world_size, expected):
    assert shard_minibatch(counts, world_size) == expected


def test_every_group_once_balanced_and_deterministic():
    rng = random.Random(0)
    for _ in range(300):
        counts = [rng.randint(0, 50) for _ in range(rng.randint(0, 20))]
        world_size = rng.randint(1, 5)
        plan = shard_minibatch(counts, world_size)
        assert len(plan) == world_size
        assert sorted(g for groups in plan for g in groups) == list(range(len(counts)))
        assert all(groups == sorted(groups) for groups in plan)
        loads = [sum(counts[g] for g in groups) for groups in plan]
        assert max(loads) - min(loads) <= max(counts, default=0)  # the list-scheduling bound
        assert shard_minibatch(list(counts), world_size) == plan


def test_rejects_a_world_without_ranks():
    with pytest.raises(ValueError, match="world_size"):
        shard_minibatch([1], 0)
