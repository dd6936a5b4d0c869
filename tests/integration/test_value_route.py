"""`rl route` (rl/tools/route.py): a cheap weak model and an expensive strong one, each described only by
its rollouts; V0 routes to the cheap one at low beta and to the accurate one at high beta."""
from __future__ import annotations

import json

import pytest
import torch
from value_synth import problems, write_run

from rl.tools.route import load_context, main_route, route_table
from rl.v0.cli import main_value


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    runs = [write_run(root / "hist" / f"run{i}" / "rollouts.jsonl", skill, 0.05, seed=i)
            for i, skill in enumerate([0.5, 1.5, 2.5])]
    predictor = root / "v0.pt"
    assert main_value(["train", *map(str, runs), "--out", str(predictor), "--embedder", "tiny-llama",
                       "--window-steps", "5", "--steps", "150"]) == 0
    small = write_run(root / "small" / "rollouts.jsonl", 0.8, steps=10, seed=10)
    big = write_run(root / "big" / "rollouts.jsonl", 3.0, steps=10, seed=11)
    return root, predictor, small, big


def test_route_cheap_at_low_beta_accurate_at_high_beta(setup, capsys):
    root, predictor, small, big = setup
    out = root / "out"
    rc = main_route(["--predictor", str(predictor), "--contexts", str(small), str(big),
                     "--costs", "1", "10", "--names", "small", "big", "--betas", "0", "0.5", "1",
                     "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy (realised)" in printed and "small only" in printed
    result = json.loads((out / "route.json").read_text())
    assert (out / "route.png").stat().st_size > 0
    rows = {r["beta"]: r for r in result["rows"]}
    assert rows[0.0]["model_share"] == [1.0, 0.0] and rows[0.0]["mean_cost"] == 1.0
    assert rows[1.0]["model_share"][1] >= 0.8
    assert rows[1.0]["accuracy"] > rows[0.0]["accuracy"] + 0.3
    assert result["accuracy_source"] == "realised"
    assert rows[0.0]["pareto"] and rows[1.0]["pareto"]
    # the queries were held out of every context, and the truth is each model's own outcome
    small_ctx = load_context(small)
    assert all(t == pytest.approx(small_ctx[q]) for q, t in zip(result["queries"], result["truth"][0]))


def test_relabel_mode_and_predicted_accuracy(setup):
    _, predictor, small, big = setup
    contexts = [load_context(small), load_context(big)]
    unseen = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (512, 477), (908, 311)]]
    assert not set(unseen) & set(contexts[0])
    res = route_table(str(predictor), contexts, unseen, [1.0, 10.0], [0.0, 1.0], mode="relabel")
    assert res["accuracy_source"] == "predicted"
    assert res["rows"][0]["model_share"] == [1.0, 0.0]
    assert res["rows"][1]["model_share"][1] >= 0.5
    assert all(t is None for row in res["truth"] for t in row)
    # predictions are probabilities per model and query
    pred = torch.tensor(res["pred"])
    assert pred.shape == (2, 4) and ((pred >= 0) & (pred <= 1)).all()
    assert pred[1].mean() > pred[0].mean()


def test_route_errors_are_one_line(setup, tmp_path, capsys):
    _, predictor, small, big = setup
    assert main_route(["--predictor", str(predictor), "--contexts", str(small), str(big),
                       "--costs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 contexts, 1 costs" in err and "\n" not in err
    assert main_route(["--predictor", str(predictor), "--contexts", str(tmp_path / "nope.jsonl"),
                       "--costs", "1", "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one cost per model"):
        route_table(str(predictor), [load_context(small)], ["x"], [1.0, 2.0], [0.5])


def test_queries_from_a_text_file(setup, tmp_path):
    _, predictor, small, big = setup
    queries = tmp_path / "q.txt"
    queries.write_text("\n".join(t for t, _ in problems()[:3]) + "\n")
    rc = main_route(["--predictor", str(predictor), "--contexts", str(small), str(big), "--costs", "1", "10",
                     "--queries", str(queries), "--betas", "0.3", "--out", str(tmp_path / "o")])
    assert rc == 0
    result = json.loads((tmp_path / "o" / "route.json").read_text())
    assert result["queries"] == [t for t, _ in problems()[:3]] and len(result["rows"]) == 1
