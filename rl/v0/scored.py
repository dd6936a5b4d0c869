"""V0 on scored-prompt records in the V0 authors' layout (context / query JSONL + a prompt dict).

A row is one (policy, prompt) record: {"id", "score" in [-1, 1], "model", "step", "dataset", "type"};
`score` is the mean of +-1 rewards over the policy's rollouts, so p = (score + 1) / 2. The policy is
(model, step), named "model@step<k>"; the prompt text is prompt_dict["<dataset>_<id>"] (or the
row's own "prompt"). The paper's protocol: per policy, its context rows are the in-context pairs
and its query rows are scored (`scored_episodes`). `holdout_split` makes a validation split from
the released rows: a seeded fraction of prompt keys, held out for every policy at once.

Example:
    ctx, qry = read_scored_rows("context.jsonl"), read_scored_rows("train.jsonl")
    texts = read_prompt_texts(default_prompts_path("context.jsonl"))
    vocab, episodes = scored_episodes(ctx, qry, texts, context_size=512)
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from rl.data.records import read_jsonl
from rl.v0.data import Episode

REQUIRED = ("id", "score", "model", "step")


@dataclass(frozen=True)
class ScoredRow:
    """One policy's score on one prompt. score in [-1, 1]; p = (score + 1) / 2."""
    model: str
    step: int
    id: str
    score: float
    dataset: str = "dapomath"
    kind: str = "context"
    prompt: str | None = None   # the text, when the row carries it

    @property
    def policy(self) -> str:
        return policy_name(self.model, self.step)

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.id}"

    @property
    def p(self) -> float:
        return score_to_p(self.score)

    def to_json(self) -> dict:
        row = {"id": _id_value(self.id), "score": self.score, "type": self.kind, "model": self.model,
               "step": self.step, "dataset": self.dataset}
        return row if self.prompt is None else {**row, "prompt": self.prompt}


def policy_name(model: str, step: int) -> str:
    """Example: policy_name("Qwen3-4B-Instruct", 16) -> "Qwen3-4B-Instruct@step16"."""
    return f"{model}@step{step}"


def score_to_p(score: float) -> float:
    """Mean of +-1 rewards -> success rate, clipped to [0, 1]. Example: score_to_p(0.6) = 0.8."""
    return min(1.0, max(0.0, (float(score) + 1.0) / 2.0))


def _id_value(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def parse_scored_row(row: dict, where: str = "row") -> ScoredRow:
    """A `ScoredRow` from one JSON object; ValueError naming `where` and the missing/bad field."""
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise ValueError(f"{where}: a scored row needs {list(REQUIRED)}; missing {missing}")
    try:
        score, step = float(row["score"]), int(row["step"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'score' must be a number and 'step' an integer, "
                         f"got {row['score']!r} / {row['step']!r}") from None
    if not -1.0 <= score <= 1.0:
        raise ValueError(f"{where}: 'score' must lie in [-1, 1] (mean of +-1 rewards), got {score}")
    prompt = row.get("prompt")
    return ScoredRow(str(row["model"]), step, str(row["id"]), score, str(row.get("dataset", "dapomath")),
                     str(row.get("type", "context")), None if prompt is None else str(prompt))


def read_scored_rows(path: str | Path) -> list[ScoredRow]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected JSONL rows with {list(REQUIRED)})")
    rows = [parse_scored_row(row, f"{path}:{i}") for i, row in read_jsonl(path)]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def write_scored_rows(path: str | Path, rows: Iterable[ScoredRow]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    return path


def default_prompts_path(rows_path: str | Path) -> Path:
    """prompt_dict.json beside the rows file."""
    return Path(rows_path).parent / "prompt_dict.json"


def read_prompt_texts(path: str | Path) -> dict[str, str]:
    """{"<dataset>_<id>": text} from a JSON object file (the authors' prompt_dict.json)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt file (pass --prompts FILE: a JSON object "
                                "{\"<dataset>_<id>\": prompt text})")
    texts = json.loads(path.read_text())
    if not isinstance(texts, dict):
        raise ValueError(f"{path}: expected a JSON object {{\"<dataset>_<id>\": text}}")
    return {str(k): str(v) for k, v in texts.items()}


def prompt_text(row: ScoredRow, texts: dict[str, str]) -> str:
    if row.prompt is not None:
        return row.prompt
    if row.key not in texts:
        raise ValueError(f"no prompt text for {row.key!r} (policy {row.policy}) in the prompt file")
    return texts[row.key]


def by_policy(rows: Sequence[ScoredRow]) -> dict[str, list[ScoredRow]]:
    """Rows grouped by policy, policies in order of first appearance."""
    out: dict[str, list[ScoredRow]] = defaultdict(list)
    for r in rows:
        out[r.policy].append(r)
    return dict(out)


def holdout_split(rows: Sequence[ScoredRow], fraction: float, seed: int) -> set[str]:
    """A seeded `fraction` of the distinct prompt keys (at least 1 when fraction > 0).

    Held out for every policy at once, so no held-out prompt is seen in training under any policy.
    Deterministic: keys are sorted before the seeded permutation.
    Example: len(holdout_split(rows_with_10_keys, 0.2, seed=0)) -> 2
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out prompt fraction must lie in [0, 1), got {fraction}")
    keys = sorted({r.key for r in rows})
    count = max(1, round(fraction * len(keys))) if fraction > 0 else 0
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    return {keys[i] for i in order[:count]}


def split_rows(context: Sequence[ScoredRow], queries: Sequence[ScoredRow], heldout: set[str]):
    """(train rows, validation context, validation queries) for held-out prompt keys `heldout`.

    train = every row (context or query) of a kept prompt; validation context = the context rows of
    kept prompts (the in-context pairs); validation queries = every row of a held-out prompt.
    """
    train = [r for r in [*context, *queries] if r.key not in heldout]
    val_context = [r for r in context if r.key not in heldout]
    val_queries = [r for r in [*context, *queries] if r.key in heldout]
    return train, val_context, val_queries


def scored_episodes(context: Sequence[ScoredRow], queries: Sequence[ScoredRow], texts: dict[str, str],
                    context_size: int = 512) -> tuple[list[str], list[Episode]]:
    """(unique prompt texts, one `Episode` per policy with query rows): the paper's protocol.

    Per policy: queries = its query rows (labels p); context = its context rows (the first
    `context_size`) minus any prompt that is also one of its queries. A policy with query rows but
    no context rows is an error.
    """
    vocab: dict[str, int] = {}

    def index(rows):
        idx = [vocab.setdefault(prompt_text(r, texts), len(vocab)) for r in rows]
        return torch.tensor(idx, dtype=torch.long), torch.tensor([r.p for r in rows], dtype=torch.float32)

    contexts = by_policy(context)
    episodes = []
    for name, rows in by_policy(queries).items():
        asked = {r.key for r in rows}
        ctx = [r for r in contexts.get(name, []) if r.key not in asked][:context_size]
        if not ctx:
            raise ValueError(f"policy {name} has query rows but no context rows "
                             f"(context policies: {sorted(contexts)})")
        (qi, qy), (ci, cr) = index(rows), index(ctx)
        episodes.append(Episode(name, qi, qy, ci, cr))
    return list(vocab), episodes


def training_pool(rows: Sequence[ScoredRow], texts: dict[str, str], vocab: list[str]):
    """Per policy (row indices, p values) for `rl.v0.fit.train_value_model`, indices into `vocab`
    followed by the texts it lacks; returns (that extended copy of vocab, policy names, indexed)."""
    vocab = list(vocab)
    position = {t: i for i, t in enumerate(vocab)}
    names, indexed = [], []
    for name, group in by_policy(rows).items():
        idx = []
        for r in group:
            text = prompt_text(r, texts)
            if text not in position:
                position[text] = len(vocab)
                vocab.append(text)
            idx.append(position[text])
        names.append(name)
        indexed.append((torch.tensor(idx, dtype=torch.long),
                        torch.tensor([r.p for r in group], dtype=torch.float32)))
    return vocab, names, indexed
