"""The teacher of on-policy distillation (`algorithm.name: opd`, SPECS §11): a frozen causal LM from any HF
folder (e.g. `rl export` of a finished GRPO run) in its own Ray actor, scoring the student's sampled tokens.

`logprobs(batch)` is log pi_teacher(y_t | x, y_<t) of every completion token of a RolloutBatch, each
prompt prefilled once per group (the learner's `completion_logprobs`), micro-batch by micro-batch,
without gradients, at temperature 1 (the teacher's own distribution, whatever the student sampled at).
The actor computes on the device Ray gave it: CUDA when it asked for a GPU, else the CPU; the same code.
Like the reward-model actors it is started outside the run's placement group with its own
`num_cpus` / `num_gpus` (`opd.num_cpus`, `opd.num_gpus`), and killed by handle when the run ends.

The teacher must share the student's tokenizer (the token ids are scored as they are):
`tokenizer_mismatch` compares the two vocabularies at start-up (rl/startup.py), before Ray starts.

    teacher = TeacherActor.options(num_cpus=0.25).remote("exported/quickstart")
    ray.get(teacher.logprobs.remote(batch))   # [num_samples, max_len], 0 off batch.train_mask
"""
from __future__ import annotations

import ray
import torch

from rl.types import RolloutBatch
from rl.workers.devices import actor_device, placement_info
from rl.workers.learner import completion_logprobs
from rl.workers.models import load_model, load_tokenizer


class Teacher:
    def __init__(self, name: str, dtype: str = "float32", microbatch_samples: int = 64,
                 num_threads: int | None = None, pad_id: int = 2, seed: int = 0):
        """name: an HF folder, a built-in (`tiny-llama`, seeded by `seed`) or a hub id; dtype: its weights'."""
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device, self.name = actor_device(), name
        self.model = load_model(name, dtype, seed=seed).to(self.device).eval()
        self.microbatch_samples, self.pad_id = microbatch_samples, pad_id

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """log pi_teacher of every sampled token [num_samples, max_len] (float32, CPU), 0 off the train mask."""
        out = torch.zeros(batch.completion_mask.shape, dtype=torch.float32)
        for micro, rows in batch.chunks(self.microbatch_samples):
            m = micro.to(self.device)
            logp = completion_logprobs(self.model, m.prompt_ids, m.completion_ids, m.completion_mask, m.group_ids,
                                       1.0, self.pad_id)
            out[rows] = (logp.float() * m.train_mask.float()).cpu()
        return out

    def info(self) -> dict:
        return {"name": self.name, "vocab_size": int(self.model.config.vocab_size),
                "num_parameters": sum(p.numel() for p in self.model.parameters()), **placement_info()}


TeacherActor = ray.remote(max_restarts=0)(Teacher)


def tokenizer_mismatch(student: str, teacher: str) -> str | None:
    """None when the teacher's tokenizer maps every token piece to the same id as the student's, else
    what differs (sizes, and the first piece that differs), in a few words."""
    s_vocab, t_vocab = load_tokenizer(student).get_vocab(), load_tokenizer(teacher).get_vocab()
    if s_vocab == t_vocab:
        return None
    differ = sorted(set(s_vocab.items()) ^ set(t_vocab.items()), key=lambda kv: kv[1])[:1]
    piece = f"; e.g. {differ[0][0]!r} is id {s_vocab.get(differ[0][0])} for the student, " \
            f"{t_vocab.get(differ[0][0])} for the teacher" if differ else ""
    return f"its vocabulary ({len(t_vocab)} pieces) differs from the student's ({len(s_vocab)}){piece}"
