"""`rl bench allocation --offline`: the expected-effective-gradient maths on hand-computed toys, the V0
records' layout on a 20-row slice of the real files, and the bench end to end on a small folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rl.bench.allocation import main as allocation_main
from rl.bench.allocation_offline import (allocators, compare, cross_fit_means, expected_effective, mean_rows,
                                         mixed_probability, read_policies, success_rate, visit_estimates)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "v0_dapomath"
TOY = [0.0, 0.5, 1.0]


def test_success_rate_and_mixed_probability():
    assert success_rate(-1.0) == 0.0 and success_rate(0.6) == pytest.approx(0.8) and success_rate(1.0) == 1.0
    assert mixed_probability(TOY, 8) == pytest.approx([0.0, 1 - 2 * 0.5 ** 8, 0.0])
    # per-prompt N: 2 rollouts at p=0.25 -> 1 - 1/16 - 9/16 = 6/16
    assert mixed_probability([0.25, 0.5], [2, 3]) == pytest.approx([6 / 16, 1 - 2 / 8])


def test_expected_effective_uniform_toy():
    r = expected_effective(TOY, [8, 8, 8])
    mixed = 1 - 2 / 256
    assert r["expected_effective_samples"] == pytest.approx(8 * mixed)
    assert r["expected_effective_gradient_ratio"] == pytest.approx(8 * mixed / 24)
    assert r["expected_effective_prompts"] == pytest.approx(mixed)
    assert r["expected_effective_prompt_ratio"] == pytest.approx(mixed / 3)
    assert (r["rollouts_total"], r["budget_min"], r["budget_max"]) == (24, 8, 8)


def test_compare_toy_uses_the_repo_allocators():
    out = compare(TOY, TOY, 24, allocators(2, 64))
    uniform = 8 * (1 - 2 / 256)
    # knapsack rules: p=1 -> 2; p=0.5 needs ceil(ln 0.1 / ln 0.5) = 4; the surplus 16 goes to p=0 -> [18, 4, 2]
    k = out["knapsack"]
    assert (k["budget_max"], k["budget_min"]) == (18, 2)
    assert k["expected_effective_samples"] == pytest.approx(4 * (1 - 2 / 16))
    assert k["gain_vs_uniform_effective_gradient_ratio"] == pytest.approx(3.5 / uniform)
    # U(B, 0) = U(B, 1) = 0: everything above the floor goes to p=0.5 -> [2, 20, 2]
    v = out["v0_ubp"]
    assert v["budget_max"] == 20 and v["expected_effective_samples"] == pytest.approx(20 * (1 - 2 * 0.5 ** 20))
    assert v["gain_vs_uniform_effective_prompt_ratio"] == pytest.approx((1 - 2 * 0.5 ** 20) / (1 - 2 / 256))
    assert out["uniform"]["gain_vs_uniform_effective_gradient_ratio"] == 1.0


def test_compare_scores_on_true_p_not_on_what_the_allocator_saw():
    # the allocator believes p = [0.5, 1.0] (budgets [6, 2]) but the truth is [1.0, 0.5]
    out = compare([1.0, 0.5], [0.5, 1.0], 8, allocators(2, 6))
    assert out["knapsack"]["expected_effective_samples"] == pytest.approx(2 * 0.5)


def test_visit_estimates_are_knapsack_state_estimates():
    assert visit_estimates([0.0, 1.0], 8, np.random.default_rng(0)) == [0.0, 1.0]
    a = visit_estimates([0.3] * 50, 8, np.random.default_rng(1))
    assert a == visit_estimates([0.3] * 50, 8, np.random.default_rng(1))
    assert all(x * 8 == int(x * 8) for x in a) and 0.1 < float(np.mean(a)) < 0.5
    assert visit_estimates([0.3], 4, np.random.default_rng(0)) == [None]  # fewer than min_seen=8


def test_cross_fit_means_never_use_a_prompts_own_p():
    assert cross_fit_means([0.0, 1.0], np.random.default_rng(0)) == [1.0, 0.0]
    p = [0.0, 0.2, 0.6, 1.0]
    pred = cross_fit_means(p, np.random.default_rng(3))
    fold = [x == pred[0] for x in pred]
    assert sum(fold) == 2 and pytest.approx(pred[0]) == np.mean([q for q, f in zip(p, fold) if not f])


def test_mean_rows():
    rows = [{"a": {"expected_effective_gradient_ratio": 0.2}}, {"a": {"expected_effective_gradient_ratio": 0.4}}]
    out = mean_rows(rows)["a"]
    assert out["expected_effective_gradient_ratio"] == pytest.approx(0.3)
    assert out["expected_effective_gradient_ratio_std_over_draws"] == pytest.approx(0.1)


def _write_slice(folder: Path, rows: int = 20) -> Path:
    folder.mkdir()
    for name in ("context.jsonl", "train.jsonl"):
        lines = (DATA / name).read_text().splitlines()[:rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/v0_dapomath not present")
def test_read_policies_on_a_slice_of_the_real_files(tmp_path):
    folder = _write_slice(tmp_path / "v0_dapomath")
    first = json.loads((folder / "context.jsonl").read_text().splitlines()[0])
    policies = read_policies(folder)
    assert list(policies) == ["Qwen3-4B-Instruct@step16"]  # both files open with this policy's rows
    sets = policies["Qwen3-4B-Instruct@step16"]
    assert len(sets["context"]) == 20 and len(sets["queries"]) == 20
    assert sets["context"][0] == success_rate(first["score"])
    assert sets["context"][:2] == pytest.approx([0.0, 0.9])  # scores -1.0 and 0.8
    assert all(0.0 <= x <= 1.0 and round(x * 10, 6) == int(round(x * 10)) for x in sets["context"])


def test_bench_allocation_offline_end_to_end(tmp_path, capsys):
    folder = tmp_path / "toy_records"
    folder.mkdir()
    scores = [-1.0, -0.6, 0.0, 0.4, 1.0, -0.8, 0.2, 0.6]
    for name, kind in (("context.jsonl", "context"), ("train.jsonl", "train_query")):
        rows = [{"id": i, "score": s, "type": kind, "model": "m", "step": 4, "dataset": "d"}
                for i, s in enumerate(scores)]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "res" / "allocation_offline.json"
    assert allocation_main(["--offline", str(folder), "--draws", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["data_dir"] == "toy_records" and result["v0_prediction_included"] is False
    entry = result["policies"]["m@step4"]
    assert entry["prompts"] == {"context": 8, "queries": 8}
    for prompt_set in ("context", "queries"):
        for regime in ("true_p", "one_visit", "context_mean"):
            res = entry[prompt_set][regime]
            assert set(res) == {"uniform", "knapsack", "v0_ubp"}
            assert all(r["rollouts_total"] == 64 for r in res.values())
            assert res["uniform"]["gain_vs_uniform_effective_gradient_ratio"] == 1.0
    assert "expected_effective_gradient_ratio_std_over_draws" in entry["context"]["one_visit"]["knapsack"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert str(tmp_path) not in out.read_text()
    assert "reference" in capsys.readouterr().out
