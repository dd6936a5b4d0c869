"""SFT data: the assistant-token loss mask under SmolLM2's chat template (hand-checked), TRL's
conversational and prompt/completion rows, truncation, packing, and the packed attention inputs."""
import json

import pytest
import torch

from rl.config import ConfigError, load_config
from rl.data.sft import (TokenRows, conversation, encode_conversation, encode_conversations, load_conversations,
                         pack, split_conversations)
from rl.workers.models import load_tokenizer
from rl.workers.sft_learner import packed_inputs

Q = "What is 2 + 3? Reply with only the final number."


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer("smollm2-135m")


def test_mask_is_exactly_the_answer_and_its_end_of_turn_token(smol):
    ids, mask = encode_conversation(smol, [{"role": "user", "content": Q}, {"role": "assistant", "content": "5"}])
    toks = [smol.decode([i]) for i in ids]
    # <|im_start|>system\n(default system prompt)<|im_end|>\n<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n
    assert toks[-7:] == ["<|im_start|>", "ass", "istant", "\n", "5", "<|im_end|>", "\n"] and len(ids) == 49
    assert mask == [0] * 46 + [1, 1, 0]  # "5" at 46, "<|im_end|>" at 47; the template's trailing '\n' is not trained
    assert ids[47] == smol.eos_token_id


def test_multi_turn_with_system_masks_every_assistant_turn_only(smol):
    msgs = [{"role": "system", "content": "You are a calculator."}, {"role": "user", "content": Q},
            {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 40 + 4?"},
            {"role": "assistant", "content": "44"}]
    ids, mask = encode_conversation(smol, msgs)
    assert [smol.decode([i]) for i, m in zip(ids, mask) if m] == ["5", "<|im_end|>", "4", "4", "<|im_end|>"]
    on = [i for i, m in enumerate(mask) if m]
    assert smol.decode(ids[:on[0]]).endswith("<|im_start|>assistant\n")  # the header is scaffolding
    assert "You are a calculator." in smol.decode(ids) and "helpful AI assistant" not in smol.decode(ids)
    assert smol.decode([ids[i] for i in range(on[2] - 4, on[2])]).endswith("assistant\n")


def test_prompt_completion_rows_equal_the_messages_form(smol):
    msgs = [{"role": "user", "content": Q}, {"role": "assistant", "content": "5"}]
    assert conversation({"messages": msgs}, "messages", "w") == msgs
    assert conversation({"prompt": [msgs[0]], "completion": [msgs[1]]}, "messages", "w") == msgs
    assert conversation({"prompt": Q, "completion": "5"}, "messages", "w") == msgs
    assert conversation({"chat": {"turns": msgs}}, "chat.turns", "w") == msgs
    with pytest.raises(ValueError, match="no 'messages' column, nor prompt"):
        conversation({"text": "hi"}, "messages", "w")
    with pytest.raises(ValueError, match="cannot open with an assistant"):
        encode_conversation(smol, [{"role": "assistant", "content": "5"}])


def test_load_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": "not a list"}) + "\n")
    with pytest.raises(ConfigError, match=r"^sft.path: .*row 0: "):
        load_conversations(str(bad), "train", "messages", "sft.path")
    with pytest.raises(ConfigError, match=r"^sft.eval_path: .*does not exist"):
        load_conversations(str(tmp_path / "none.jsonl"), "train", "messages", "sft.eval_path")
    with pytest.raises(ConfigError, match=r"sft.path: give the conversations"):
        load_config(None, ["algorithm.name=sft"])
    with pytest.raises(ConfigError, match=r"sft.sequences_per_step: must be > 0"):
        load_config(None, ["algorithm.name=sft", "sft.path=x.jsonl", "sft.sequences_per_step=0"])


def test_truncation_drops_conversations_without_an_assistant_token(smol):
    short = [{"role": "user", "content": Q}, {"role": "assistant", "content": "5"}]
    rows = encode_conversations(smol, [short, short], max_seq_tokens=47)  # cuts before '<|im_end|>'
    assert len(rows) == 2 and rows.assistant_tokens() == 2 and rows.dropped == 0
    rows = encode_conversations(smol, [short], max_seq_tokens=46)
    assert len(rows) == 0 and rows.dropped == 1


def test_pack_in_order_up_to_the_row_budget():
    rows = TokenRows([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], [[0, 1, 1], [0, 1], [0, 0, 1, 1], [1]],
                     [[0] * 3, [0] * 2, [0] * 4, [0]])
    p = pack(rows, 5)
    assert p.input_ids == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert p.loss_mask == [[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]]
    assert p.segment_ids == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]


def test_packed_inputs_restart_positions_and_block_attention():
    seg = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, -1, -1]])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    pos, attn = packed_inputs(seg, valid)
    assert pos.tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 0, 1]]
    assert attn.shape == (2, 1, 5, 5)
    assert attn[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0],
                                         [0, 0, 1, 1, 1]]
    assert attn[1, 0, 2].int().tolist() == [1, 1, 1, 0, 0]


def test_split_is_seeded_and_holds_one_out_at_least():
    train, held = split_conversations(list(range(10)), 0.05, seed=3)
    assert len(held) == 1 and sorted(train + held) == list(range(10))
    assert split_conversations(list(range(10)), 0.05, seed=3) == (train, held)
    assert split_conversations(list(range(10)), 0.0, seed=3) == (list(range(10)), [])
