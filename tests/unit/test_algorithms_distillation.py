"""On-policy distillation maths (algorithms/distillation.py): hand-computed values, masking, clip, mixing."""
import math

import pytest
import torch

from algorithms.distillation import distillation_metrics, mix_task_advantages, reverse_kl_advantages
from algorithms.losses import POLICY_LOSSES

# two samples, three token slots; sample 1 has one real token (the rest is padding holding junk)
TEACHER = torch.tensor([[-1.0, -3.0, -0.5], [-2.0, 7.0, 7.0]])
STUDENT = torch.tensor([[-2.0, -1.0, -0.5], [-0.5, -9.0, -9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_reverse_kl_advantage_hand_computed():
    # A = teacher - student: [-1+2, -3+1, -0.5+0.5] = [1, -2, 0]; [-2+0.5] = [-1.5], padding 0
    adv = reverse_kl_advantages(TEACHER, STUDENT, MASK)
    torch.testing.assert_close(adv, torch.tensor([[1.0, -2.0, 0.0], [-1.5, 0.0, 0.0]]))


def test_clip_bounds_both_sides_in_nats():
    adv = reverse_kl_advantages(TEACHER, STUDENT, MASK, clip=1.25)
    torch.testing.assert_close(adv, torch.tensor([[1.0, -1.25, 0.0], [-1.25, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="clip"):
        reverse_kl_advantages(TEACHER, STUDENT, MASK, clip=0.0)


def test_same_model_gives_zero_advantage():
    adv = reverse_kl_advantages(STUDENT, STUDENT.clone(), MASK)
    assert torch.count_nonzero(adv) == 0


def test_inputs_not_mutated_and_shapes_checked():
    t, s = TEACHER.clone(), STUDENT.clone()
    reverse_kl_advantages(t, s, MASK, clip=1.0)
    assert torch.equal(t, TEACHER) and torch.equal(s, STUDENT)
    with pytest.raises(ValueError, match="num_samples, max_len"):
        reverse_kl_advantages(TEACHER[:, :2], STUDENT, MASK)


def test_mix_with_task_advantage_per_sample():
    distill = reverse_kl_advantages(TEACHER, STUDENT, MASK)
    # task advantages [1, -1] (a GRPO pair), weight 0.5: + 0.5 on sample 0's tokens, - 0.5 on sample 1's real one
    mixed = mix_task_advantages(distill, torch.tensor([1.0, -1.0]), MASK, 0.5)
    torch.testing.assert_close(mixed, torch.tensor([[1.5, -1.5, 0.5], [-2.0, 0.0, 0.0]]))
    # weight 0: pure distillation, unchanged
    torch.testing.assert_close(mix_task_advantages(distill, torch.tensor([1.0, -1.0]), MASK, 0.0), distill)
    with pytest.raises(ValueError, match="samples"):
        mix_task_advantages(distill, torch.tensor([1.0, -1.0, 0.0]), MASK, 1.0)


def test_metrics_hand_computed():
    adv = reverse_kl_advantages(TEACHER, STUDENT, MASK)
    m = distillation_metrics(TEACHER, STUDENT, MASK, adv)
    # 4 real tokens: student - teacher = [-1, 2, 0, 1.5] -> mean 0.625; teacher [-1, -3, -.5, -2] -> -1.625
    # student [-2, -1, -.5, -.5] -> -1.0; advantage [1, -2, 0, -1.5] -> -0.625
    assert m == pytest.approx({"opd/reverse_kl": 0.625, "opd/teacher_logprob": -1.625,
                               "opd/student_logprob": -1.0, "opd/advantage_mean": -0.625})


def test_reverse_kl_metric_estimates_the_true_kl():
    # student samples from p, teacher q over 3 tokens: the mean of log p(y) - log q(y), y ~ p, is KL(p || q)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.2, 0.5, 0.3])
    y = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = p.log()[y].unsqueeze(0), q.log()[y].unsqueeze(0)
    m = distillation_metrics(logq, logp, torch.ones_like(logp), torch.zeros_like(logp))
    kl = float((p * (p / q).log()).sum())  # 0.7 ln 3.5 + 0.2 ln 0.4 + 0.1 ln(1/3) = 0.5847
    assert kl == pytest.approx(0.5847, abs=1e-3)
    assert m["opd/reverse_kl"] == pytest.approx(kl, abs=0.01)


def test_ppo_loss_gradient_is_minus_advantage_on_policy():
    # ratio 1 (on-policy): d loss_t / d logp_t = -A_t, the OPD loss -sg[A_t] log pi(y_t) (SPECS §11)
    logp = STUDENT.clone().requires_grad_(True)
    adv = reverse_kl_advantages(TEACHER, STUDENT, MASK)
    loss, _ = POLICY_LOSSES.get("ppo")(logp, STUDENT, adv, MASK, eps_low=0.2, eps_high=0.28, dual_clip_c=3.0)
    (loss * MASK).sum().backward()
    torch.testing.assert_close(logp.grad, -adv)
    assert not math.isnan(float(logp.grad.sum()))
