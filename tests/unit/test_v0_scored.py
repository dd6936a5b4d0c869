"""rl/v0/scored.py: the V0 authors' row layout, the prompt-level held-out split, per-policy
episodes; and the context-mean / pooled AUC of `evaluate_episodes`, on hand-made rows."""
from __future__ import annotations

import json

import pytest
import torch

from rl.v0.data import Episode
from rl.v0.fit import evaluate_episodes
from rl.v0.scored import (ScoredRow, by_policy, default_prompts_path, holdout_split, parse_scored_row,
                          policy_name, read_prompt_texts, read_scored_rows, score_to_p, scored_episodes,
                          split_rows, training_pool, write_scored_rows)


def _row(model, step, id_, score, kind="context"):
    return ScoredRow(model, step, str(id_), score, "dapomath", kind)


def test_parse_row_names_policy_key_and_p():
    r = parse_scored_row({"id": 5562, "score": -0.4, "type": "context", "model": "M", "step": 16,
                          "dataset": "dapomath"})
    assert (r.policy, r.key, r.kind) == ("M@step16", "dapomath_5562", "context")
    assert r.p == pytest.approx(0.3)          # (-0.4 + 1) / 2
    assert score_to_p(1.0) == 1.0 and score_to_p(-1.0) == 0.0 and score_to_p(0.6) == pytest.approx(0.8)
    assert policy_name("Qwen3-4B-Instruct", 64) == "Qwen3-4B-Instruct@step64"
    assert parse_scored_row({"id": 1, "score": 0, "model": "M", "step": 1}).key == "dapomath_1"
    assert r.to_json()["id"] == 5562  # ids stay integers when written back


def test_parse_row_errors_name_the_field():
    with pytest.raises(ValueError, match=r"f.jsonl:3: .*missing \['step'\]"):
        parse_scored_row({"id": 1, "score": 0.2, "model": "M"}, "f.jsonl:3")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        parse_scored_row({"id": 1, "score": 1.5, "model": "M", "step": 1})
    with pytest.raises(ValueError, match="must be a number"):
        parse_scored_row({"id": 1, "score": "high", "model": "M", "step": 1})


def test_rows_and_prompts_round_trip(tmp_path):
    rows = [_row("M", 16, 1, 0.2), _row("M", 16, 2, -1.0, "train_query")]
    path = write_scored_rows(tmp_path / "context.jsonl", rows)
    assert read_scored_rows(path) == rows
    assert default_prompts_path(path) == tmp_path / "prompt_dict.json"
    (tmp_path / "prompt_dict.json").write_text(json.dumps({"dapomath_1": "one"}))
    assert read_prompt_texts(tmp_path / "prompt_dict.json") == {"dapomath_1": "one"}
    with pytest.raises(FileNotFoundError, match="--prompts"):
        read_prompt_texts(tmp_path / "missing.json")


def test_holdout_split_is_seeded_and_shared_across_policies():
    rows = [_row(m, 16, i, 0.0) for m in ("A", "B") for i in range(10)]
    held = holdout_split(rows, 0.2, seed=0)
    assert len(held) == 2 and held == holdout_split(list(reversed(rows)), 0.2, seed=0)
    assert holdout_split(rows, 0.0, seed=0) == set()
    train, val_ctx, val_q = split_rows(rows[:15], rows[15:], held)
    assert {r.key for r in train} & held == set() and {r.key for r in val_ctx} & held == set()
    assert {r.key for r in val_q} == held  # every row of a held-out prompt, under both policies
    assert len(val_q) == 4 and len(train) + len(val_q) == 20
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        holdout_split(rows, 1.0, seed=0)


def test_scored_episodes_one_per_policy_without_query_prompts_in_context():
    texts = {f"dapomath_{i}": f"prompt {i}" for i in range(6)}
    ctx = [_row("A", 1, 0, 1.0), _row("A", 1, 1, -1.0), _row("A", 1, 2, 0.0), _row("B", 2, 3, 0.2)]
    qry = [_row("A", 1, 2, 0.6, "q"), _row("A", 1, 4, -0.2, "q"), _row("B", 2, 5, 1.0, "q")]
    vocab, eps = scored_episodes(ctx, qry, texts, context_size=512)
    assert [e.name for e in eps] == ["A@step1", "B@step2"]
    a = eps[0]
    assert [vocab[i] for i in a.query_idx] == ["prompt 2", "prompt 4"]
    assert [vocab[i] for i in a.context_idx] == ["prompt 0", "prompt 1"]  # prompt 2 is a query
    assert a.query_labels.tolist() == pytest.approx([0.8, 0.4])
    assert a.context_rewards.tolist() == [1.0, 0.0]
    assert len(scored_episodes(ctx, qry, texts, context_size=1)[1][0].context_idx) == 1
    with pytest.raises(ValueError, match="no context rows"):
        scored_episodes(ctx[:3], qry, texts)
    with pytest.raises(ValueError, match="dapomath_9"):
        scored_episodes(ctx, [_row("A", 1, 9, 0.0)], texts)


def test_training_pool_extends_the_vocabulary():
    texts = {f"dapomath_{i}": f"p{i}" for i in range(4)}
    rows = [_row("A", 1, 0, 1.0), _row("A", 1, 3, -1.0), _row("B", 1, 3, 0.0)]
    vocab, names, indexed = training_pool(rows, texts, ["p3"])
    assert vocab == ["p3", "p0"] and names == ["A@step1", "B@step1"]
    assert indexed[0][0].tolist() == [1, 0] and indexed[0][1].tolist() == [1.0, 0.0]
    assert indexed[1][0].tolist() == [0] and list(by_policy(rows)) == names


def test_context_mean_intra_auc_is_one_half_and_pooled_auc_ranks_policies():
    table = torch.eye(4)
    # policy "easy": context mean 0.75, one positive and one negative query; "hard": mean 0.25, two
    # negatives (p = 0.4 is not > 0.5), so its intra AUC is undefined and skipped
    eps = [Episode("easy", torch.tensor([0, 1]), torch.tensor([1.0, 0.0]), torch.tensor([2, 3]),
                   torch.tensor([1.0, 0.5])),
           Episode("hard", torch.tensor([2, 3]), torch.tensor([0.0, 0.4]), torch.tensor([0, 1]),
                   torch.tensor([0.0, 0.5]))]

    def oracle(q, c, r):  # scores only row 0 high
        return q[:, 0]

    m = evaluate_episodes(oracle, table, eps, knn_k=1)
    assert m["contexts"] == 1 and m["v0_auc"] == 1.0 and m["context_mean_auc"] == 0.5
    assert m["per_context"][0]["context_mean_auc"] == 0.5 and m["per_context"][0]["positives"] == 1
    # pooled: labels [1, 0, 0, 0], context-mean scores [.75, .75, .25, .25]: the positive ties one
    # negative (1/2) and beats two -> 2.5 / 3
    assert m["pooled"]["context_mean_auc"] == pytest.approx(2.5 / 3) and m["pooled"]["v0_auc"] == 1.0
    assert 0.0 <= m["knn_auc"] <= 1.0
