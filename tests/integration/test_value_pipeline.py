"""V0 shell (rl/v0/) on the tiny random model and synthetic run histories: policy windows,
the frozen embedder, training across policies, intra-policy AUC next to kNN, save/load, the
trainer's predict_success hook and the CLI's errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from value_synth import problems, write_run

from allocation.knapsack import KnapsackAllocator, KnapsackState
from rl.v0.cli import main_value
from rl.v0.data import policy_windows, read_outcomes
from rl.v0.embedder import PromptEmbedder
from rl.v0.predictor import load_predictor, predict_success


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls on a shared 2-core box: threads only cost
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Five runs of different skill (each improving over its 20 steps), one predictor."""
    root = tmp_path_factory.mktemp("v0")
    runs = [write_run(root / f"run{i}" / "rollouts.jsonl", skill, 0.05, seed=i)
            for i, skill in enumerate([0.5, 1.0, 1.5, 2.0, 2.5])]
    # the default embedder is the run's own model, read from config.yaml beside its rollouts
    (root / "run0" / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-llama"}}))
    out = root / "v0.pt"
    rc = main_value(["train", *map(str, runs), "--out", str(out), "--window-steps", "5",
                     "--steps", "150", "--seed", "0"])
    assert rc == 0
    return root, runs, out


def test_policy_windows_split_runs_by_steps(tmp_path):
    path = write_run(tmp_path / "a" / "rollouts.jsonl", 1.0, steps=12, prompts_per_step=10)
    pols = policy_windows([path], window_steps=5, min_prompts=1)
    assert [p.name for p in pols] == ["a:[0,5)", "a:[5,10)", "a:[10,15)"]
    rows = read_outcomes(path)
    first = [r for r in rows if r["step"] < 5]
    prompt = first[0]["prompt"]
    hits = [r for r in first if r["prompt"] == prompt]
    want = sum(r["reward_sum"] for r in hits) / sum(r["count"] for r in hits)
    got = dict(zip(pols[0].prompts, pols[0].rewards))[prompt]
    assert got == pytest.approx(want)
    assert len(pols[0].prompts) == len({r["prompt"] for r in first})
    # the window with 2 steps x 10 prompts is dropped when 30 prompts are required
    assert [p.name for p in policy_windows([path], 5, min_prompts=30)] == ["a:[0,5)", "a:[5,10)"]


def test_context_jsonl_rewards_are_normalised(tmp_path):
    path = tmp_path / "ctx.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q{i}", "reward": r})
                              for i, r in enumerate([-1.0, 0.0, 1.0, 3.0])) + "\n")
    (pol,) = policy_windows([path], 10, reward_range=(-1.0, 1.0), min_prompts=1)
    assert pol.name.endswith(":all")
    assert pol.rewards == [0.0, 0.5, 1.0, 1.0]  # (r - low) / (high - low), clipped


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_outcomes(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "rewards": [1]}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_outcomes(bad)
    run = write_run(tmp_path / "noconfig" / "rollouts.jsonl", 1.0, steps=2)
    assert main_value(["train", str(run), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rl value: error:") and "--embedder" in err and "\n" not in err
    assert main_value(["eval", str(run), "--predictor", str(tmp_path / "none.pt")]) == 2
    assert "no such predictor" in capsys.readouterr().err


def test_embedder_is_padding_invariant_and_cached():
    emb = PromptEmbedder("tiny-llama", batch_size=4)
    texts = [t for t, _ in problems(pool=6)] + ["What is 12345 + 67890? Think step by step."]
    batched = emb(texts)
    assert batched.shape == (len(texts), emb.dim) and emb.dim == 64
    for i, t in enumerate(texts):
        single = PromptEmbedder.__call__(_fresh(emb), [t])[0]
        assert torch.allclose(single, batched[i], atol=1e-5)
    assert len(emb._cache) == len(texts)
    assert torch.equal(emb(texts[::-1]), batched.flip(0))


def _fresh(emb: PromptEmbedder) -> PromptEmbedder:
    """The same model with an empty cache (no second load)."""
    clone = object.__new__(PromptEmbedder)
    clone.__dict__.update(emb.__dict__)
    clone._cache = {}
    return clone


def test_train_reports_auc_per_context_and_saves(trained):
    root, _, out = trained
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["embedder"] == "tiny-llama" and metrics["val_policies"] >= 1
    assert metrics["contexts"] >= 1 and metrics["per_context"]
    for row in metrics["per_context"]:
        assert set(row) >= {"name", "queries", "context", "v0_auc", "knn_auc"}
    assert 0.0 <= metrics["v0_auc"] <= 1.0 and 0.0 <= metrics["knn_auc"] <= 1.0
    # digit count drives success and the embeddings see it: V0 must beat chance clearly
    assert metrics["v0_auc"] > 0.7
    model, meta = load_predictor(out)
    assert meta["embedder"] == "tiny-llama" and meta["embed_dim"] == 64
    assert meta["metrics"]["v0_auc"] == pytest.approx(metrics["v0_auc"])
    x = torch.randn(3, 64)
    ctx, r = torch.randn(10, 64), torch.rand(10)
    assert torch.isfinite(model(x, ctx, r)).all()


def test_eval_cli_on_a_new_run(trained, tmp_path):
    _, _, out = trained
    fresh = write_run(tmp_path / "new" / "rollouts.jsonl", 1.2, 0.05, seed=99)
    report = tmp_path / "eval.json"
    rc = main_value(["eval", str(fresh), "--predictor", str(out), "--window-steps", "10",
                     "--out", str(report)])
    assert rc == 0
    metrics = json.loads(report.read_text())
    assert metrics["policies"] == 2 and metrics["contexts"] >= 1
    scored = [r for r in metrics["per_context"] if not math.isnan(r["v0_auc"])]
    assert scored and all(r["positives"] > 0 for r in scored)
    assert metrics["v0_auc"] > 0.6


def test_predict_success_hook_feeds_the_knapsack(trained):
    _, _, out = trained
    pool = problems()
    context = [(t, 1.0 if d == 1 else 0.0) for t, d in pool[:60]]  # skill: 1-digit only
    easy = [t for t, d in pool[60:] if d == 1][:5]
    hard = [t for t, d in pool[60:] if d == 3][:5]
    p = predict_success(str(out), easy + hard, context)
    assert len(p) == 10 and all(0.0 <= x <= 1.0 for x in p)
    assert sum(p[:5]) / 5 > sum(p[5:]) / 5
    assert predict_success(str(out), [], context) == []
    with pytest.raises(ValueError, match="non-empty context"):
        predict_success(str(out), easy, [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_success(str(out), easy, [(easy[0], 2.0)])
    plan = KnapsackAllocator(8).plan(easy + hard, KnapsackState(), predicted_p=p)
    assert sum(plan.samples_per_prompt) == 80
