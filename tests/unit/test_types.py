"""The batch glue (RolloutBatch.from_sequences / chunks, right_pad, index_chunks) and the engine's pure
helpers (left padding, inverse-CDF / nucleus sampling), on hand-made tensors."""
import pytest
import torch

from rl.types import RolloutBatch, index_chunks, right_pad
from rollout.hf_engine import left_pad


def _batch(group_ids: list[int]) -> RolloutBatch:
    n = len(group_ids)
    return RolloutBatch.from_sequences([[g] for g in range(max(group_ids) + 1)], [[10 + i] for i in range(n)],
                                       [[-0.1 * i] for i in range(n)], group_ids, list(range(n)), pad_id=0)



def test_chunks_pack_consecutive_whole_groups():
    batch = _batch([0, 0, 0, 1, 2, 2, 2, 2])
    chunks = batch.chunks(4)
    # groups 0 (3) + 1 (1) fill 4; group 2 (4) alone
    assert [sub.group_ids.tolist() for sub, _ in chunks] == [[0, 0, 0, 1], [0, 0, 0, 0]]
    assert [rows.tolist() for _, rows in chunks] == [[True] * 4 + [False] * 4, [False] * 4 + [True] * 4]
    sub, rows = chunks[1]
    assert sub.prompt_ids == [[2]] and sub.completion_ids[:, 0].tolist() == batch.completion_ids[rows, 0].tolist()
    # a group bigger than max_samples stays whole
    assert [rows.sum().item() for _, rows in _batch([0, 0, 1, 1]).chunks(1)] == [2, 2]



def test_index_chunks_and_right_pad():
    assert index_chunks(5, 2) == [[0, 1], [2, 3], [4]] and index_chunks(0, 3) == []
    with pytest.raises(ValueError, match=">= 1"):
        index_chunks(3, 0)
    ids, mask = right_pad([[5], [6, 7], []], 2, torch.long)
    assert ids.tolist() == [[5, 2], [6, 7], [2, 2]] and mask.tolist() == [[1, 0], [1, 1], [0, 0]]
    vals, _ = right_pad([[0.5]], 0.0, torch.float32, width=3)
    assert vals.tolist() == [[0.5, 0.0, 0.0]] and vals.dtype == torch.float32
    with pytest.raises(ValueError, match="width"):
        right_pad([[1, 2]], 0, torch.long, width=1)
    with pytest.raises(ValueError, match="logprobs"):
        RolloutBatch.from_sequences([[1]], [[5, 6]], [[-0.1]], [0], [1.0], pad_id=0)



def test_left_pad():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]



def test_inverse_cdf_sampling_matches_the_distribution():
    from rollout.hf_engine import sample
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    draws = sample(probs.log(), torch.ones(20000), gen)
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert freq[1] == 0 and torch.allclose(freq, probs[0], atol=0.015)
    nucleus = sample(probs.log(), torch.full((20000,), 0.65), gen)  # keeps 0.6 and 0.3 (0.6 < 0.65)
    assert set(nucleus.tolist()) == {2, 3}
