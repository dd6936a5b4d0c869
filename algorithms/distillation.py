"""On-policy distillation: per-token reverse-KL advantages from a teacher's log-probs (SPECS §11).

The student samples y ~ pi_student(. | x); a frozen teacher scores the same tokens. The per-token
advantage is the negative of the single-sample reverse-KL estimate on each sampled token,

    A_t = log pi_teacher(y_t | x, y_<t) - log pi_student(y_t | x, y_<t)

and the policy-gradient loss -sg[A_t] log pi_theta(y_t) (any POLICY_LOSSES entry: on-policy, one
update per batch, PPO's clipped surrogate has exactly this gradient) descends
KL(pi_student || pi_teacher) = E_{y ~ pi_student}[log pi_student(y) - log pi_teacher(y)], token by token
with no discounting of later tokens (Thinking Machines' choice). References: Agarwal et al. 2024,
"On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD, ICLR 2024);
Lu & Thinking Machines Lab 2025, "On-Policy Distillation" (per-token reverse KL as the advantage).

Pure functions of tensors: no config, no in-place change of an input.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.segments import masked_mean

__all__ = ["reverse_kl_advantages", "mix_task_advantages", "distillation_metrics"]


def _check(teacher_logprobs: Tensor, student_logprobs: Tensor, mask: Tensor) -> None:
    if teacher_logprobs.shape != student_logprobs.shape or mask.shape != teacher_logprobs.shape \
            or teacher_logprobs.dim() != 2:
        raise ValueError(f"teacher_logprobs {tuple(teacher_logprobs.shape)}, student_logprobs "
                         f"{tuple(student_logprobs.shape)} and mask {tuple(mask.shape)} must all be "
                         "[num_samples, max_len]")


def reverse_kl_advantages(teacher_logprobs: Tensor, student_logprobs: Tensor, mask: Tensor,
                          clip: float | None = None) -> Tensor:
    """A_t = clip(log pi_teacher(y_t) - log pi_student(y_t), -clip, clip) on the unmasked tokens, 0 elsewhere.

    `clip` (nats, None = no clip) bounds a token's advantage where the teacher finds a student token
    nearly impossible (log-prob -20 and below), which would otherwise dominate a batch's gradient.

    Shapes: teacher_logprobs, student_logprobs, mask [S, T] -> [S, T] float.
    Example: reverse_kl_advantages(tensor([[-1., -3.]]), tensor([[-2., -1.]]), tensor([[1, 1]]))
             -> [[1., -2.]]; with clip=1.5 -> [[1., -1.5]]
    """
    _check(teacher_logprobs, student_logprobs, mask)
    adv = teacher_logprobs.float() - student_logprobs.float()
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"clip must be > 0 nats or None, got {clip}")
        adv = adv.clamp(-clip, clip)
    return torch.where(mask.bool(), adv, torch.zeros_like(adv))


def mix_task_advantages(distill_advantages: Tensor, task_advantages: Tensor, mask: Tensor,
                        reward_weight: float) -> Tensor:
    """A_t = A_distill_t + reward_weight * A_task_i on every unmasked token of sample i, 0 elsewhere.

    `reward_weight` converts the task-reward advantage (a group baseline, e.g. GRPO's, in units of the
    group's reward std) into nats of per-token advantage: 0 is pure distillation, 1 lets one group std
    of reward count as much as one nat of teacher/student log-ratio on every token of the sample.

    Shapes: distill_advantages, mask [S, T]; task_advantages [S] or [S, T] -> [S, T].
    Example: mix_task_advantages(tensor([[1., -2.]]), tensor([0.5]), tensor([[1, 0]]), 2.) -> [[2., 0.]]
    """
    if distill_advantages.shape != mask.shape or distill_advantages.dim() != 2:
        raise ValueError(f"distill_advantages {tuple(distill_advantages.shape)} and mask {tuple(mask.shape)} "
                         "must both be [num_samples, max_len]")
    task = task_advantages.unsqueeze(-1) if task_advantages.dim() == 1 else task_advantages
    if task.shape[0] != mask.shape[0]:
        raise ValueError(f"task_advantages has {task.shape[0]} samples, the batch {mask.shape[0]}")
    mixed = distill_advantages + reward_weight * task.to(distill_advantages.dtype)
    return torch.where(mask.bool(), mixed, torch.zeros_like(mixed))


def distillation_metrics(teacher_logprobs: Tensor, student_logprobs: Tensor, mask: Tensor,
                         advantages: Tensor) -> dict[str, float]:
    """Per-token means over the unmasked tokens: the reverse-KL estimate log pi_s - log pi_t (k1 on the
    student's own samples: unbiased for KL(pi_s || pi_t) per token, a single token may be < 0), the
    teacher's log-prob of the student's tokens, and the advantage the learner gets.

    Shapes: all [S, T] -> {opd/reverse_kl, opd/teacher_logprob, opd/student_logprob, opd/advantage_mean}.
    Example: teacher [[-1., -3.]], student [[-2., -1.]], mask [[1, 1]], adv [[1., -2.]]
             -> {0.5, -2.0, -1.5, -0.5}
    """
    _check(teacher_logprobs, student_logprobs, mask)
    t, s = teacher_logprobs.float(), student_logprobs.float()
    return {"opd/reverse_kl": float(masked_mean(s - t, mask)), "opd/teacher_logprob": float(masked_mean(t, mask)),
            "opd/student_logprob": float(masked_mean(s, mask)),
            "opd/advantage_mean": float(masked_mean(advantages.float(), mask))}
