"""A fault injector for testing recovery (`run.chaos`, off by default): faults named "<kind>@<step>"
fire once each, at the start of that step, and the run must recover from every one by itself.

    run:
      chaos: [kill_engine@3, reward_raise@5, reward_hang@7, kill_reward_worker@9, kill_learner@11,
              corrupt_checkpoint@13]
      max_restarts: 3

Kinds: `kill_engine` (SIGKILL to a random rollout engine's process), `kill_learner` (SIGKILL to a
learner rank's process): the run restarts from its last intact checkpoint; `corrupt_checkpoint`
(truncates a file of the newest checkpoint, then kills a learner, so the restart must skip it);
`reward_raise` (the step's first rule-reward batch call raises: the samples are re-scored one by one),
`reward_hang` (it sleeps past its deadline), `kill_reward_worker` (its Ray worker process exits: the
task is retried). Which faults fired is kept in runs/<name>/chaos.json, so a fault does not fire
again when the restarted run repeats its step; the count is logged as `chaos/faults`.
"""
from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

KINDS = ("kill_engine", "kill_learner", "corrupt_checkpoint", "reward_raise", "reward_hang", "kill_reward_worker")
REWARD_KINDS = ("reward_raise", "reward_hang", "kill_reward_worker")


def parse_faults(specs: list[str]) -> list[tuple[str, int]]:
    """["kill_engine@3"] -> [("kill_engine", 3)]; ValueError naming the bad entry.
    parse_faults(["reward_raise@0", "kill_learner@12"]) -> [("reward_raise", 0), ("kill_learner", 12)]"""
    out = []
    for i, spec in enumerate(specs):
        kind, at, step = str(spec).partition("@")
        if kind not in KINDS or not at or not step.isdigit():
            raise ValueError(f"run.chaos.{i}: {spec!r} is not <kind>@<step> with kind one of {', '.join(KINDS)}")
        out.append((kind, int(step)))
    return out


class Chaos:
    """The run's faults and which have fired (persisted in `run_dir/chaos.json`)."""

    def __init__(self, specs: list[str], run_dir: Path, seed: int = 0):
        self.faults, self.path = parse_faults(specs), Path(run_dir) / "chaos.json"
        self.fired: list[str] = json.loads(self.path.read_text())["fired"] if self.path.exists() else []
        self.rng = random.Random(seed + len(self.fired))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def due(self, step: int) -> list[str]:
        """The faults of `step` that have not fired yet, marked fired (on disk first: a fault that kills the
        run must not fire again when the step is repeated)."""
        now = [k for k, s in self.faults if s == step and f"{k}@{s}" not in self.fired]
        if now:
            self.fired += [f"{k}@{step}" for k in now]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fired": self.fired}))
        return now

    def before_step(self, step: int, engines: list, learner_actors: list, checkpoints: list[Path]) -> dict:
        """Fires the step's faults. -> {"chaos/faults": fired so far} (reward faults arm the step's scoring)."""
        for kind in self.due(step):
            if kind in REWARD_KINDS:
                _REWARD_FAULT[:] = [(kind.removeprefix("reward_"), str(self.path.with_name(f"chaos-{kind}@{step}")))]
            elif kind == "kill_engine":
                kill_actor(self.rng.choice(engines))
            else:
                if kind == "corrupt_checkpoint" and checkpoints:
                    corrupt(checkpoints[-1])
                kill_actor(self.rng.choice(learner_actors))
        return {"chaos/faults": float(len(self.fired))}


_REWARD_FAULT: list = []  # armed by before_step, taken by the step's first rule-reward batch


def take_reward_fault() -> tuple[str, str] | None:
    """The armed reward fault (kind: raise | hang | kill_reward_worker, a marker file path), once; else None."""
    return _REWARD_FAULT.pop() if _REWARD_FAULT else None


def kill_actor(actor) -> None:
    """SIGKILL to the actor's own process, wherever it runs (as the OOM killer would: no Python exit)."""
    import ray
    ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))  # alive and idle
    actor.__ray_call__.remote(lambda self: os.kill(os.getpid(), signal.SIGKILL))


def corrupt(checkpoint: Path) -> Path:
    """Truncates the largest file of a checkpoint to half its size. -> that file"""
    victim = max((p for p in checkpoint.rglob("*") if p.is_file() and p.name != "manifest.json"),
                 key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    return victim
