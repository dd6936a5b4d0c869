"""The plumbing of a training run, in one object every driver uses (STYLE.md 13).

A `Run` owns `runs/<name>/`: the resolved config, the logger (metrics.jsonl, rollouts.jsonl, curves,
wandb), resume (the last intact checkpoint's driver state, read before any actor starts, and the
log rows after it dropped so each step is logged exactly once), checkpoint cadence and atomic
saves, the progress bar, the eval cadence and step callbacks (e.g. a sweep's Tune reporter).

    run = Run(cfg, resume, total_steps=cfg.trainer.steps, title="grpo")
    state = run.restore([learner])          # None on a fresh run; else the saved driver state
    for step in run.steps():
        metrics = ...
        run.log(step, metrics)
        run.checkpoint(step, [learner], lambda: {"sampler": sampler.state_dict()})
    run.finish(["reward/mean", "loss"], summary)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from rl.config import Config, ConfigError, to_dict
from rl.run.checkpoint import Checkpointer
from rl.run.logging import RunLogger, progress

RESTARTS = "restarts.txt"  # how many times run_with_restarts restarted the run (logged as run/restarts)
StepCallback = Callable[[int, dict], None]  # fn(step, logged row)


def run_dir(cfg: Config) -> Path:
    return Path(cfg.run.output_dir) / cfg.run.name


def checkpointer(cfg: Config) -> Checkpointer:
    return Checkpointer(run_dir(cfg) / "checkpoints", cfg.run.keep_checkpoints)


class Run:
    def __init__(self, cfg: Config, resume: bool = False, *, total_steps: int, title: str,
                 callbacks: list[StepCallback] = (), config: dict | None = None,
                 postfix: dict[str, str] | None = None):
        """postfix: progress-bar label -> metric key, e.g. {"reward": "reward/mean"}."""
        self.cfg, self.dir, self.total_steps = cfg, run_dir(cfg), int(total_steps)
        self.ckpt = checkpointer(cfg)
        self._path = self.ckpt.latest_intact() if resume else None
        if resume and self._path is None:
            raise ConfigError(f"--resume: no checkpoint under {self.ckpt.root} to resume from")
        self.state = json.loads((self._path / "driver.json").read_text()) if self._path else None
        self.start = int(self.state["next_step"]) if self.state else 0
        r = cfg.run
        self.logger = RunLogger(self.dir, config if config is not None else to_dict(cfg), r.wandb_mode,
                                project=r.wandb_project, group=r.wandb_group, resume=self.state is not None,
                                callbacks=list(callbacks), entity=r.wandb_entity, tags=r.wandb_tags,
                                generations_every_steps=r.log_generations_every_steps)
        if self.state is not None:
            self.logger.truncate_after(self.start - 1)
        self.summary: dict = dict(self.state.get("summary", {})) if self.state else {}
        self.title, self.postfix = title, postfix or {}
        self._bar, self._closers = None, []
        restarts = self.dir / RESTARTS
        self.restarts = int(restarts.read_text()) if resume and restarts.exists() else 0  # by run_with_restarts

    def own(self, resource):
        """Closes `resource` (e.g. the run's placement group) when the run finishes. -> resource"""
        self._closers.append(resource.close)
        return resource

    @property
    def resumed(self) -> bool:
        return self.state is not None

    def restore(self, actors: list) -> dict | None:
        """Loads the resumed checkpoint into `actors` (each with load(dir)); -> the driver state or None."""
        if self._path is not None:
            self.ckpt.load(self._path, actors)
        return self.state

    def record_placement(self, actors: dict) -> dict:
        """Writes placement.json: where each actor landed (node, GPU ids, device). -> that mapping"""
        import ray
        where = dict(zip(actors, ray.get([a.placement_info.remote() for a in actors.values()])))
        (self.dir / "placement.json").write_text(json.dumps(where, indent=1))
        return where

    def steps(self) -> Iterator[int]:
        """start .. total_steps - 1, with a live progress bar when `run.progress_bar`."""
        if self.cfg.run.progress_bar:
            self._bar = progress(self.total_steps, f"{self.title} {self.cfg.run.name}", initial=self.start)
        try:
            for step in range(self.start, self.total_steps):
                yield step
                if self._bar is not None:
                    self._bar.update(1)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def eval_due(self, step: int) -> bool:
        """`eval.every_steps` cadence; the last step is left to the closing evaluation."""
        every = self.cfg.eval.every_steps
        return bool(every) and (step + 1) % every == 0 and step + 1 < self.total_steps

    def log(self, step: int, metrics: dict, rollouts: list[dict] | None = None) -> None:
        if self.restarts:
            metrics = {**metrics, "run/restarts": float(self.restarts)}
        self.logger.log(step, metrics)
        if rollouts is not None:
            self.logger.log_rollouts(step, rollouts)
        if self._bar is not None and self.postfix:
            self._bar.set_postfix({k: _short(metrics.get(key)) for k, key in self.postfix.items()})

    def checkpoint(self, step: int, actors: list, driver_state: Callable[[], dict]) -> Path | None:
        """Saves at the `run.checkpoint_every_steps` cadence and after the last step."""
        every, last = self.cfg.run.checkpoint_every_steps, step + 1 == self.total_steps
        if not (last or (every and (step + 1) % every == 0)):
            return None
        return self.ckpt.save(step, actors, {"next_step": step + 1, "summary": self.summary, **driver_state()})

    def report(self, key: str, metrics: dict) -> None:
        """Keeps `metrics` in the summary under `key` (e.g. "before", "after") and prints them."""
        self.summary[key] = metrics
        print(f"eval {key}:".ljust(12), "  ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in metrics.items()),
              flush=True)

    def finish(self, plot_keys: list[str] | None = None) -> dict:
        """Closes the logger (curves.png, wandb) and writes summary.json. -> the summary."""
        self.logger.close(plot_keys)
        for close in reversed(self._closers):  # last owned first: actors before their placement group
            close()
        (self.dir / "summary.json").write_text(json.dumps(self.summary, indent=1, default=float))
        return self.summary


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)
