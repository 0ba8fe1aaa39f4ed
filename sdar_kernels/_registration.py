"""Fake kernels and autograd for an objective op pair, shared by the native and Triton backends.

Every backend exposes the same two ops:

    <forward>(student_logits, targets, weights?, teacher_logits?, teacher_logprobs?, advantages?,
              old_logprobs?, ref_logprobs?, temperature, teacher_temperature, beta, gate, objective,
              sdar_coef, clip_low, clip_high, dual_clip, kl_coef, entropy_coef, ignore_index)
        -> (loss_sum, weight_sum, row_loss [N], stats [NUM_STATS, N])
    <backward>(student_logits, targets, stats, grad_loss_sum?, grad_row_loss?, temperature, ignore_index)
        -> grad_logits [N, V]

so one setup/backward pair serves them all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._layout import NUM_STATS

TEMPERATURE_ARG = 8
IGNORE_INDEX_ARG = 19


def accumulation_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def forward_fake(student_logits, targets, *args):
    n_rows = student_logits.shape[0]
    acc = accumulation_dtype(student_logits)
    return (
        student_logits.new_empty((), dtype=acc),
        student_logits.new_empty((), dtype=acc),
        student_logits.new_empty((n_rows,), dtype=acc),
        student_logits.new_empty((NUM_STATS, n_rows), dtype=acc),
    )


def backward_fake(student_logits, *args):
    return torch.empty_like(student_logits, memory_format=torch.contiguous_format)


def register_objective_op(forward_name: str, backward_name: str, backward_op: Callable) -> None:
    """Registers fake kernels for both ops and the autograd formula of the forward op."""
    torch.library.register_fake(forward_name)(forward_fake)
    torch.library.register_fake(backward_name)(backward_fake)

    def setup_context(ctx, inputs, output):
        ctx.temperature = inputs[TEMPERATURE_ARG]
        ctx.ignore_index = inputs[IGNORE_INDEX_ARG]
        ctx.num_inputs = len(inputs)
        _, weight_sum, _, stats = output
        ctx.save_for_backward(inputs[0], inputs[1], stats)
        ctx.mark_non_differentiable(weight_sum, stats)

    def backward(ctx, grad_loss_sum, grad_weight_sum, grad_row_loss, grad_stats):
        student_logits, targets, stats = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_logits = backward_op(
                student_logits,
                targets,
                stats,
                grad_loss_sum,
                grad_row_loss,
                ctx.temperature,
                ctx.ignore_index,
            )
        return (grad_logits,) + (None,) * (ctx.num_inputs - 1)

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)
