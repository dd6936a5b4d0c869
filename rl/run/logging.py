"""Run output: metrics.jsonl, resolved config, a PNG of the curves, wandb when installed.

Every driver (GRPO, PPO, DPO, control PPO) writes through `RunLogger`, so `runs/<name>/` looks the
same whatever trained. wandb runs online when WANDB_API_KEY is set and offline otherwise; it is
skipped silently when the package is missing or `wandb_mode="disabled"`. The wandb run id is kept in
`runs/<name>/wandb_id.txt`: `--resume` and the automatic restarts continue the same wandb run
(`resume="allow"`); a fresh run starts a new one. Every `generations_every_steps` steps a
`wandb.Table` of sampled prompts, completions and rewards is logged as `generations`.

Example:
    logger = RunLogger(Path("runs/demo"), config_dict)
    logger.log(0, {"reward/mean": 0.1}); logger.close()   # -> runs/demo/curves.png
"""
from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from rl.data.records import append_jsonl, read_jsonl

class RunLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], wandb_mode: str = "auto",
                 project: str = "rl", group: str | None = None, resume: bool = False, callbacks: list = (),
                 entity: str | None = None, tags: list[str] = (), generations_every_steps: int = 0):
        """callbacks: fn(step, row) called on every logged step (e.g. a sweep's Ray Tune reporter)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not resume:
            for path in (self.metrics_path, self.run_dir / "rollouts.jsonl"):
                path.unlink(missing_ok=True)
        self._fh = open(self.metrics_path, "a", buffering=1)
        self.callbacks = list(callbacks)
        self.generations_every_steps = generations_every_steps
        self._wandb = _start_wandb(self.run_dir, config, wandb_mode, resume,
                                   dict(project=project, entity=entity, tags=list(tags) or None,
                                        group=group or os.environ.get("WANDB_RUN_GROUP")))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "time": time.time(), **{k: _num(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        for fn in self.callbacks:
            fn(step, row)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "time"}, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpointed step (they will be produced again)."""
        self._fh.close()
        for path in (self.metrics_path, self.rollouts_path):
            rows = read_metrics(path)
            with open(path, "w") as fh:
                for r in rows:
                    if r["step"] <= step:
                        fh.write(json.dumps(r) + "\n")
        self._fh = open(self.metrics_path, "a", buffering=1)

    @property
    def rollouts_path(self) -> Path:
        return self.run_dir / "rollouts.jsonl"

    def log_rollouts(self, step: int, prompts: list[dict]) -> None:
        """Per-prompt outcomes of a step ({key, prompt, rewards}); the data V0 and analyses train on."""
        append_jsonl(self.rollouts_path, ({"step": step, **p} for p in prompts))
        every = self.generations_every_steps
        if self._wandb is not None and every and step % every == 0:
            self._wandb.log({"generations": generations_table(step, prompts)}, step=step)

    def close(self, keys: list[str] | None = None) -> Path | None:
        self._fh.close()
        png = plot_curves(self.metrics_path, self.run_dir / "curves.png", keys)
        if self._wandb is not None:
            self._wandb.finish()
        return png


def _num(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _start_wandb(run_dir: Path, config: dict, mode: str, resume: bool, settings: dict):
    """wandb.init with the run's id kept in run_dir/wandb_id.txt: a resumed run continues it."""
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        return None
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / "wandb_id.txt"
    if not (resume and id_file.exists()):
        id_file.write_text(uuid.uuid4().hex[:12])  # wandb ids: letters and digits
    return wandb.init(id=id_file.read_text().strip(), resume="allow", name=run_dir.name, dir=str(run_dir),
                      config=config, mode=mode, reinit="finish_previous", **settings)


GENERATION_ROWS = 32  # samples per generations table


def generations_table(step: int, prompts: list[dict]):
    """A wandb.Table (step, prompt, completion, reward) of up to GENERATION_ROWS samples of a step;
    prompts: {key, prompt, rewards, completions} per prompt, as in rollouts.jsonl."""
    import wandb
    table = wandb.Table(columns=["step", "key", "prompt", "completion", "reward"])
    rows = [(p, c, r) for p in prompts for c, r in zip(p["completions"], p["rewards"])]
    for p, c, r in rows[:GENERATION_ROWS]:
        prompt = p["prompt"] if isinstance(p["prompt"], str) else json.dumps(p["prompt"])
        table.add_data(step, str(p["key"]), prompt, c, float(r))
    return table


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [row for _, row in read_jsonl(path)]


def plot_curves(metrics_path: Path, png_path: Path, keys: list[str] | None = None,
                max_panels: int = 12) -> Path | None:
    """One panel per numeric metric (or per key in `keys`), x = step."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if keys is None:
        keys = [k for k in rows[-1] if k not in ("step", "time")
                and isinstance(rows[-1][k], (int, float))]
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)][:max_panels]
    if not keys:
        return None
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path


def progress(total: int, desc: str, initial: int = 0):
    """A live progress bar (tqdm) for long loops; callers set_postfix with reward, tok/s."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=True)
