"""What users write instead of the fused op: the minimal eager PyTorch SDAR loss.

Two full [N, V] float32 log-softmax tensors (student and teacher), a gather, the detached gate and
the masked mean; autograd saves the student's log-softmax for the backward. The pieces are shared
by every baseline in ``implementations.py`` (chunked, compiled, Cut Cross-Entropy, Liger), which
differ only in how they get the per-token log-probs.
"""

from __future__ import annotations

import torch


def eager_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[y] in fp32: [N, V] logits and [N] targets (>= 0) -> [N]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def gated_sum(student_logprobs, teacher_logprobs, weights, beta: float = 5.0) -> torch.Tensor:
    """sum_t m_t g_t (b_t - a_t) with g_t = sigmoid(beta * sg(b_t - a_t)); [N] each -> 0-d."""
    gap = teacher_logprobs - student_logprobs
    return (weights * torch.sigmoid(beta * gap.detach()) * gap).sum()


def eager_sdar_loss(student_logits, teacher_logits, targets, mask=None, *, beta=5.0, ignore_index=-100):
    safe_targets = targets.clamp(min=0)
    student_logprobs = eager_logprobs(student_logits, safe_targets)
    with torch.no_grad():
        teacher_logprobs = eager_logprobs(teacher_logits, safe_targets)
    weights = (targets != ignore_index).float()
    if mask is not None:
        weights = weights * mask.float()
    return gated_sum(student_logprobs, teacher_logprobs, weights, beta) / weights.sum().clamp(min=1.0)
