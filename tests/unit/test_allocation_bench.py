"""`rl bench knapsack` runs end to end on a small input and writes its JSON."""
from __future__ import annotations

import json

import pytest

from allocation import ALLOCATORS
from rl.bench.knapsack import main


def test_bench_knapsack_small(tmp_path, capsys):
    out = tmp_path / "knapsack.json"
    rc = main(["--prompts", "16", "--budget", "128", "--repeats", "2", "--dp-repeats", "1",
               "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["same_objective"] and result["objective_ours"] >= result["objective_uniform"]
    assert result["prompts"] == 16 and result["ours_ms_median"] > 0
    assert "ratio DP / ours" in capsys.readouterr().out


def test_allocator_registry():
    assert ALLOCATORS.names() == ["curriculum", "knapsack", "uniform"]
    assert ALLOCATORS.get("uniform")(4).plan(["a"]).samples_per_prompt == [4]
    with pytest.raises(KeyError, match="knapsack"):
        ALLOCATORS.get("knapsak")
