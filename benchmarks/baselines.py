"""What users write instead of the fused op: the minimal eager PyTorch SDAR loss.

Two full [N, V] float32 log-softmax tensors (student and teacher), a gather, the detached gate and
the masked mean; autograd saves the student's log-softmax for the backward.
"""

from __future__ import annotations

import torch


def eager_sdar_loss(student_logits, teacher_logits, targets, mask=None, *, beta=5.0, ignore_index=-100):
    safe_targets = targets.clamp(min=0).unsqueeze(-1)
    student_logprobs = torch.log_softmax(student_logits.float(), dim=-1).gather(-1, safe_targets).squeeze(-1)
    with torch.no_grad():
        teacher_logprobs = (
            torch.log_softmax(teacher_logits.float(), dim=-1).gather(-1, safe_targets).squeeze(-1)
        )
    gap = (teacher_logprobs - student_logprobs).detach()
    gate = torch.sigmoid(beta * gap)
    weights = (targets != ignore_index).float()
    if mask is not None:
        weights = weights * mask.float()
    return (weights * gate * (teacher_logprobs - student_logprobs)).sum() / weights.sum().clamp(min=1.0)
