"""Fused-linear form (SPEC section 5): the loss straight from hidden states and the LM head.

``logits = h W^T (+ b)`` is computed a chunk of rows at a time and never held whole: each chunk's
logits go through the chosen backend's row kernels (forward, then the gradient for a unit upstream
scaled by 1 / normaliser, which is known at forward time), the chunk's logit gradient is folded
into dh, dW and db at once, and the chunk is freed. Working memory is one chunk of logits, its
gradient (and, for a self-teacher, its teacher logits), plus fp32 accumulators the size of W
(dW) and h (dh); it does not grow with N. Rows excluded by the mask or ``ignore_index`` are
compacted away before any matrix product (this reads the mask on the host once per call).

The backward of the returned loss only scales the saved gradients by the upstream gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _layout as layout
from ._backends import resolve_backend, rows_forward_backward
from ._config import ObjectiveConfig, RowBatch
from ._validation import (
    accumulation_dtype,
    add_grpo_rows,
    check_common_options,
    check_device,
    check_grpo_options,
    check_targets,
    row_weights,
    split_teacher,
)
from .losses import GRPOStats, SDARStats, grpo_config, grpo_stats, sdar_config, sdar_stats

HIDDEN_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
DEFAULT_CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MiB in fp32)


def default_chunk_rows(vocab_size: int, hidden_size: int = 0) -> int:
    """Rows per chunk: the largest of 8M / V (about 8M logits), D / 4 and 8.

    Few rows per chunk make every dW update a thin matrix product that reads and writes all of
    V x D; D / 4 rows keeps that traffic small against the chunk's flops, at a chunk of logits a
    quarter the size of the fp32 dW (V x D) that is held anyway.
    """
    return max(8, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1), hidden_size // 4)


class _FusedLinearObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher_hidden, batch, config, backend, normalizer, chunk_rows):
        n_rows = hidden.shape[0]
        acc = accumulation_dtype(hidden)
        device = hidden.device
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)

        row_weight = torch.ones(n_rows, dtype=acc, device=device) if batch.weights is None else batch.weights
        ignored = batch.targets == config.ignore_index
        row_weight = torch.where(ignored, torch.zeros_like(row_weight), row_weight)
        rows = (row_weight != 0).nonzero().squeeze(1)  # compaction: one host read of the mask
        grad_scale = (1.0 / normalizer(row_weight)).to(acc).reshape(())

        stats = torch.zeros(layout.NUM_STATS, n_rows, dtype=acc, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        grad_hidden = torch.zeros(n_rows, hidden.shape[1], dtype=acc, device=device) if need_hidden else None
        grad_weight = None  # the first chunk's product is written, not added to zeros
        grad_bias = torch.zeros(weight.shape[0], dtype=acc, device=device) if need_bias else None

        def pick(tensor):
            return None if tensor is None else tensor.index_select(0, chunk)

        kept = rows.numel()
        n_chunks = max(1, math.ceil(kept / chunk_rows))
        step = max(1, math.ceil(kept / n_chunks))  # even chunks: no thin last one
        for start in range(0, kept, step):
            chunk = rows[start : start + step]
            hidden_chunk = hidden.index_select(0, chunk)
            logits = F.linear(hidden_chunk, weight, bias)
            teacher_logits = pick(batch.teacher_logits)
            if teacher_hidden is not None:
                teacher_logits = F.linear(teacher_hidden.index_select(0, chunk), weight, bias)
            chunk_batch = RowBatch(
                student_logits=logits,
                targets=batch.targets.index_select(0, chunk),
                weights=row_weight.index_select(0, chunk),
                teacher_logits=teacher_logits,
                teacher_logprobs=pick(batch.teacher_logprobs),
                advantages=pick(batch.advantages),
                old_logprobs=pick(batch.old_logprobs),
                ref_logprobs=pick(batch.ref_logprobs),
            )
            outputs, grad_logits = rows_forward_backward(chunk_batch, config, backend, grad_scale)
            del logits, teacher_logits
            loss_sum += outputs[0].double()
            stats.index_copy_(1, chunk, outputs[3].to(acc))
            if need_hidden:
                grad_hidden.index_copy_(0, chunk, torch.mm(grad_logits, weight).to(acc))
            if need_weight or need_bias:
                grad_logits_acc = grad_logits.to(acc)
                if need_weight and grad_weight is None:
                    grad_weight = torch.mm(grad_logits_acc.t(), hidden_chunk.to(acc))
                elif need_weight:
                    grad_weight.addmm_(grad_logits_acc.t(), hidden_chunk.to(acc))
                if need_bias:
                    grad_bias += grad_logits_acc.sum(0)
                del grad_logits_acc
            del grad_logits, hidden_chunk
        if need_weight and grad_weight is None:  # every row masked
            grad_weight = torch.zeros(weight.shape, dtype=acc, device=device)

        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(stats)
        return (loss_sum * grad_scale.double()).to(acc), stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors

        # Always a new tensor: handing out the saved one would let in-place work on .grad (clipping,
        # accumulation) change what a retained graph returns next time.
        def scaled(grad, like_input):
            return None if grad is None else (grad * grad_loss.to(grad.dtype)).to(like_input)

        dtypes = ctx.input_dtypes
        return (
            scaled(grad_hidden, dtypes[0]),
            scaled(grad_weight, dtypes[1]),
            scaled(grad_bias, dtypes[2]),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def _normalizer(reduction: str, normalizer):
    """A function of the row weights giving the divisor as a 0-d tensor (never read on the host)."""
    if reduction == "sum":
        return lambda weights: torch.ones((), dtype=weights.dtype, device=weights.device)
    if normalizer is None:
        return lambda weights: weights.sum().clamp(min=1.0)
    if isinstance(normalizer, torch.Tensor):
        return lambda weights: normalizer.detach().to(device=weights.device, dtype=weights.dtype)
    return lambda weights: torch.full((), float(normalizer), dtype=weights.dtype, device=weights.device)


def _prepare(student_hidden, lm_head_weight, lm_head_bias, targets, teacher, teacher_hidden, mask, reduction):
    """Checks a fused-linear call's tensors.

    Returns (hidden [N, D], teacher hidden [N, D] or None, batch, token shape).
    """
    if not isinstance(student_hidden, torch.Tensor) or student_hidden.dtype not in HIDDEN_DTYPES:
        raise TypeError("student_hidden must be a float32, bfloat16, float16 or float64 tensor")
    if student_hidden.dim() not in (2, 3):
        raise ValueError(
            f"student_hidden must be [N, D] or [B, T, D]; got shape {tuple(student_hidden.shape)}"
        )
    if not isinstance(lm_head_weight, torch.Tensor) or lm_head_weight.dim() != 2:
        raise ValueError("lm_head_weight must be a [V, D] tensor")
    if lm_head_weight.shape[1] != student_hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight is [V, D] with D = {lm_head_weight.shape[1]} but student_hidden has "
            f"D = {student_hidden.shape[-1]}"
        )
    if lm_head_weight.dtype != student_hidden.dtype:
        raise TypeError(
            f"lm_head_weight ({lm_head_weight.dtype}) and student_hidden ({student_hidden.dtype}) "
            "must have the same dtype"
        )
    device = student_hidden.device
    check_device("lm_head_weight", lm_head_weight, device)
    vocab = lm_head_weight.shape[0]
    if vocab == 0:
        raise ValueError("lm_head_weight must have a non-empty vocabulary dimension")
    if lm_head_bias is not None:
        if not isinstance(lm_head_bias, torch.Tensor) or lm_head_bias.shape != (vocab,):
            raise ValueError(f"lm_head_bias must have shape [{vocab}]")
        check_device("lm_head_bias", lm_head_bias, device)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"fused-linear losses support reduction 'mean' or 'sum'; got {reduction!r}")
    token_shape = student_hidden.shape[:-1]
    if teacher is not None and teacher_hidden is not None:
        raise ValueError("give the teacher as teacher (logits or log-probs) or as teacher_hidden, not both")
    if teacher_hidden is not None:
        if not isinstance(teacher_hidden, torch.Tensor) or teacher_hidden.shape != student_hidden.shape:
            raise ValueError(
                f"teacher_hidden must have the student_hidden shape {tuple(student_hidden.shape)}"
            )
        if teacher_hidden.dtype != student_hidden.dtype:
            raise TypeError("teacher_hidden must have the student_hidden dtype")
        check_device("teacher_hidden", teacher_hidden, device)
        teacher_hidden = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    logits_shape = torch.Size((*token_shape, vocab))
    teacher_logits, teacher_logprobs = split_teacher(teacher, logits_shape, student_hidden.dtype, device)
    batch = RowBatch(
        student_logits=student_hidden,  # stands in for the logits, which are made chunk by chunk
        targets=check_targets(targets, token_shape, device),
        weights=row_weights(mask, token_shape, device, accumulation_dtype(student_hidden)),
        teacher_logits=teacher_logits,
        teacher_logprobs=teacher_logprobs,
    )
    return student_hidden.reshape(-1, student_hidden.shape[-1]), teacher_hidden, batch, token_shape


def _run(
    hidden,
    weight,
    bias,
    teacher_hidden,
    batch,
    config: ObjectiveConfig,
    *,
    backend,
    normalizer,
    reduction,
    chunk_size,
):
    backend = resolve_backend(backend, hidden.device)
    chunk_rows = default_chunk_rows(*weight.shape) if chunk_size is None else int(chunk_size)
    if chunk_rows < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    divisor = _normalizer(reduction, normalizer)
    return _FusedLinearObjective.apply(
        hidden, weight, bias, teacher_hidden, batch, config, backend, divisor, chunk_rows
    )


def fused_linear_sdar_loss(
    student_hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    lm_head_bias: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    beta: float = 5.0,
    gate: str = "gap",
    objective: str = "sdar",
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    ignore_index: int = -100,
    normalizer: float | torch.Tensor | None = None,
    reduction: str = "mean",
    return_stats: bool = False,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, SDARStats]:
    """:func:`sdar_loss` of ``logits = student_hidden @ lm_head_weight.T (+ lm_head_bias)`` without an
    [N, V] logits tensor.

    Args:
        student_hidden: [N, D] or [B, T, D] final hidden states (gets a gradient).
        lm_head_weight: [V, D] (gets a gradient); ``lm_head_bias``: optional [V] (gets a gradient).
        targets: sampled token ids shaped like ``student_hidden`` without D.
        teacher: teacher logits [..., V] or per-token teacher log-probs; or ``teacher_hidden``
            ([..., D], the self-teacher: the same LM head, no gradient). Exactly one is needed.
        chunk_size: rows per chunk (default: the larger of 8M / V and D / 4 rows, at least 8).
        Other options as in :func:`sdar_loss`; ``reduction`` is ``"mean"`` or ``"sum"``.
    """
    check_common_options(
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
        normalizer=normalizer,
        reduction=reduction,
        backend=backend,
    )
    if teacher is None and teacher_hidden is None:
        raise ValueError("a teacher is needed: teacher (logits or log-probs) or teacher_hidden")
    hidden, teacher_hidden, batch, token_shape = _prepare(
        student_hidden, lm_head_weight, lm_head_bias, targets, teacher, teacher_hidden, mask, reduction
    )
    config = sdar_config(
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
    )
    loss, stats = _run(
        hidden,
        lm_head_weight,
        lm_head_bias,
        teacher_hidden,
        batch,
        config,
        backend=backend,
        normalizer=normalizer,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    return (loss, sdar_stats(stats, token_shape)) if return_stats else loss


def fused_linear_grpo_sdar_loss(
    student_hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
    *,
    lm_head_bias: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    kl_coef: float = 0.01,
    entropy_coef: float = 0.001,
    sdar_coef: float = 0.01,
    beta: float = 5.0,
    gate: str = "gap",
    objective: str = "sdar",
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    ignore_index: int = -100,
    normalizer: float | torch.Tensor | None = None,
    reduction: str = "mean",
    return_stats: bool = False,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, GRPOStats]:
    """:func:`grpo_sdar_loss` from hidden states and the LM head, without an [N, V] logits tensor.

    Arguments as :func:`fused_linear_sdar_loss` plus the GRPO inputs and coefficients of
    :func:`grpo_sdar_loss`. With no teacher (or ``sdar_coef=0``) it is plain GRPO.
    """
    check_common_options(
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
        normalizer=normalizer,
        reduction=reduction,
        backend=backend,
    )
    check_grpo_options(
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        kl_coef=kl_coef,
        entropy_coef=entropy_coef,
        sdar_coef=sdar_coef,
    )
    if sdar_coef == 0:
        teacher, teacher_hidden = None, None
    has_teacher = teacher is not None or teacher_hidden is not None
    hidden, teacher_hidden, batch, token_shape = _prepare(
        student_hidden, lm_head_weight, lm_head_bias, targets, teacher, teacher_hidden, mask, reduction
    )
    add_grpo_rows(
        batch,
        token_shape,
        advantages,
        old_logprobs,
        ref_logprobs if kl_coef != 0 else None,
        device=hidden.device,
        dtype=accumulation_dtype(hidden),
    )
    config = grpo_config(
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        kl_coef=kl_coef,
        entropy_coef=entropy_coef,
        sdar_coef=sdar_coef if has_teacher else 0.0,
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
    )
    loss, stats = _run(
        hidden,
        lm_head_weight,
        lm_head_bias,
        teacher_hidden,
        batch,
        config,
        backend=backend,
        normalizer=normalizer,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    return (loss, grpo_stats(stats, token_shape)) if return_stats else loss
