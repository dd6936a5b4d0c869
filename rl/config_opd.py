"""The `opd:` section of the config tree: on-policy distillation (`algorithm.name: opd`, SPECS §11), with
its own checks; `rl/config.py` composes it into the one tree. The teacher folder itself (exists, same
tokenizer as the student) is checked at start-up (rl/startup.py), before Ray starts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rl.data.mapping import ConfigError


@dataclass
class OPDConfig:
    """Per-token advantage A_t = log pi_teacher(y_t) - log pi_student(y_t) on the student's own samples
    (algorithms/distillation.py), optionally + reward_weight x the task reward's `algorithm.advantage`."""
    teacher: str | None = None  # an HF folder with the student's tokenizer, e.g. `rl export` of a finished run
    teacher_command: str | None = None  # the command that makes `teacher`; named in the error when it is missing
    reward_weight: float = 0.0  # nats of per-token advantage per unit of task advantage (0: pure distillation)
    advantage_clip: float | None = None  # nats: |A_t| bounded where the teacher finds a token near impossible
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # the teacher's weights (bfloat16 on GPUs)
    microbatch_samples: int = 64  # samples per teacher forward
    num_cpus: float = 0.25  # the teacher actor's Ray request (outside the placement group, as reward models)
    num_gpus: float | None = None  # None: 1 where the cluster has GPUs, else 0


def check_opd(o: OPDConfig) -> None:
    """Cross-field checks of the `opd:` section (validated when `algorithm.name: opd`)."""
    if not o.teacher:
        raise ConfigError("opd.teacher: algorithm.name: opd needs a teacher, an HF folder with the student's "
                          "tokenizer (e.g. `rl export runs/<name>/checkpoints/step-<N> exported/<name>`)")
    if not (math.isfinite(o.reward_weight) and o.reward_weight >= 0):
        raise ConfigError(f"opd.reward_weight: must be a finite number >= 0, got {o.reward_weight}")
    if o.advantage_clip is not None and not o.advantage_clip > 0:
        raise ConfigError(f"opd.advantage_clip: must be > 0 nats or null (no clip), got {o.advantage_clip}")
    if o.microbatch_samples < 1:
        raise ConfigError(f"opd.microbatch_samples: must be >= 1, got {o.microbatch_samples}")
    if o.num_cpus < 0 or (o.num_gpus is not None and o.num_gpus < 0):
        raise ConfigError(f"opd.num_cpus / opd.num_gpus: must be >= 0, got {o.num_cpus} / {o.num_gpus}")
