"""Vocabulary-parallel form (SPEC section 6) over ``torch.distributed``.

Each rank of the process group holds a contiguous slice of the vocabulary: student logits
``[N, V_local]`` (and teacher logits likewise, or replicated per-token teacher log-probs), with
the same targets (global token ids), mask and per-token inputs on every rank. Per row the ranks
all-reduce the maximum (one MAX), then the sums of exponentials, the entropy partial sums and the
target logit that one rank owns (one SUM), so every rank ends with the unsharded a_t, H_t, b_t and
the same loss. The backward needs no communication: each rank writes the gradient of its slice.

The per-row objective is ``reference.finish_rows`` (the same definition as every other backend);
the local arithmetic is plain PyTorch on the shard.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import _layout as layout
from ._config import ObjectiveConfig, RowBatch
from ._validation import (
    accumulation_dtype,
    add_grpo_rows,
    check_common_options,
    check_grpo_options,
    check_logits,
    check_targets,
    row_weights,
    split_teacher,
)
from .losses import GRPOStats, SDARStats, grpo_config, grpo_stats, reduce_rows, sdar_config, sdar_stats
from .reference import finish_rows
from .reference import row_weights as effective_row_weights

LOWEST = {torch.float32: torch.finfo(torch.float32).min, torch.float64: torch.finfo(torch.float64).min}


def vocab_slice(local_size: int, group=None) -> tuple[int, int]:
    """(first vocabulary id of this rank's slice, total vocabulary) from every rank's slice size."""
    sizes = [torch.zeros((), dtype=torch.int64) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor(local_size, dtype=torch.int64), group=group)
    sizes = [int(s) for s in sizes]
    rank = dist.get_rank(group)
    return sum(sizes[:rank]), sum(sizes)


def _local_sums(logits, row_max, inv_tau, owned, local_target):
    """Sum of exp(s), sum of exp(s) s (s = (z - max) / tau) and the owned target logit, per row."""
    shifted = (logits - row_max.unsqueeze(-1)) * inv_tau
    e = torch.exp(shifted)
    sum_xm = torch.where(e > 0, e * shifted, torch.zeros_like(e)).sum(-1)
    target = logits.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
    return e.sum(-1), sum_xm, torch.where(owned, target, torch.zeros_like(target))


class _VocabParallelObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, batch: RowBatch, config: ObjectiveConfig, vocab_start: int, group):
        acc = accumulation_dtype(logits)
        z = logits.detach().to(acc)
        weight = effective_row_weights(batch, config, acc)
        included = weight != 0
        local_vocab = z.shape[1]
        owned = included & (batch.targets >= vocab_start) & (batch.targets < vocab_start + local_vocab)
        local_target = torch.where(owned, batch.targets - vocab_start, torch.zeros_like(batch.targets))
        teacher = None
        if batch.teacher_logits is not None and config.sdar_coef != 0:
            teacher = batch.teacher_logits.detach().to(acc)

        # one MAX: the row maxima of the student (and teacher) logits
        maxima = torch.stack(
            [z.amax(-1), teacher.amax(-1) if teacher is not None else z.new_zeros(z.shape[0])]
        )
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=group)
        maxima = torch.where(included, maxima, torch.zeros_like(maxima))
        inv_tau = 1.0 / config.temperature
        inv_teacher_tau = 1.0 / config.teacher_temperature

        # one SUM: sum-exp, entropy partial sum and target logit of the student (and teacher)
        s_sum, s_sum_xm, s_target = _local_sums(z, maxima[0], inv_tau, owned, local_target)
        partial = [s_sum, s_sum_xm, s_target]
        if teacher is not None:
            t_sum, _, t_target = _local_sums(teacher, maxima[1], inv_teacher_tau, owned, local_target)
            partial += [t_sum, t_target]
        sums = torch.stack(partial)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)

        one = torch.ones_like(weight)
        log_sum = torch.log(torch.where(included, sums[0], one))
        a = (sums[2] - maxima[0]) * inv_tau - log_sum
        entropy = (log_sum - sums[1] / torch.where(included, sums[0], one)).clamp(min=0)
        b = None
        if teacher is not None:
            b = (sums[4] - maxima[1]) * inv_teacher_tau - torch.log(torch.where(included, sums[3], one))
        elif batch.teacher_logprobs is not None and config.sdar_coef != 0:
            b = batch.teacher_logprobs.to(acc)
        if z.device.type == "cpu":
            bad = included & ~(torch.isfinite(a) & torch.isfinite(log_sum))
            if bool(bad.any()):
                raise ValueError(
                    f"student_logits row {int(bad.nonzero()[0, 0])} has NaN/+inf or only -inf logits"
                )

        loss_sum, weight_sum, row_loss, stats = finish_rows(
            a, entropy, b, weight, maxima[0], log_sum, batch, config
        )
        ctx.save_for_backward(logits, stats, owned, local_target)
        ctx.temperature = config.temperature
        ctx.mark_non_differentiable(weight_sum, stats)
        return loss_sum, weight_sum, row_loss, stats

    @staticmethod
    def backward(ctx, grad_loss_sum, grad_weight_sum, grad_row_loss, grad_stats):
        logits, stats, owned, local_target = ctx.saved_tensors
        acc = stats.dtype
        scale = torch.zeros(stats.shape[1], dtype=acc, device=stats.device)
        if grad_loss_sum is not None:
            scale = scale + grad_loss_sum.to(acc)
        if grad_row_loss is not None:
            scale = scale + grad_row_loss.to(acc)
        scale = scale / ctx.temperature
        c = (stats[layout.STAT_COEF_LOGPROB] * scale).unsqueeze(-1)
        e = (stats[layout.STAT_COEF_ENTROPY] * scale).unsqueeze(-1)
        row_max = stats[layout.STAT_ROW_MAX].unsqueeze(-1)
        log_sum = stats[layout.STAT_LOG_SUM].unsqueeze(-1)
        entropy = stats[layout.STAT_ENTROPY].unsqueeze(-1)
        logp = (logits.detach().to(acc) - row_max) / ctx.temperature - log_sum
        p = torch.exp(logp)
        grad = c * p - e * p * (logp.clamp(min=LOWEST[acc]) + entropy)
        grad.scatter_add_(
            -1, local_target.unsqueeze(-1), torch.where(owned.unsqueeze(-1), -c, torch.zeros_like(c))
        )
        included = (stats[layout.STAT_WEIGHT] != 0).unsqueeze(-1)
        grad = torch.where(included, grad, torch.zeros_like(grad))
        return grad.to(logits.dtype), None, None, None, None


def _prepare(student_logits, teacher, targets, mask, group, vocab_start, vocab_size, ignore_index):
    check_logits("student_logits", student_logits)
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "the vocabulary-parallel losses need an initialised torch.distributed process group"
        )
    local_vocab = student_logits.shape[-1]
    if vocab_start is None or vocab_size is None:
        vocab_start, vocab_size = vocab_slice(local_vocab, group)
    token_shape = student_logits.shape[:-1]
    device = student_logits.device
    flat_targets = check_targets(targets, token_shape, device)
    if device.type == "cpu":
        bad = (flat_targets != ignore_index) & ((flat_targets < 0) | (flat_targets >= vocab_size))
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise IndexError(f"targets[{row}] = {int(flat_targets[row])} is outside [0, {vocab_size})")
    teacher_logits, teacher_logprobs = split_teacher(
        teacher, student_logits.shape, student_logits.dtype, device
    )
    batch = RowBatch(
        student_logits=student_logits.reshape(-1, local_vocab),
        targets=flat_targets,
        weights=row_weights(mask, token_shape, device, accumulation_dtype(student_logits)),
        teacher_logits=teacher_logits,
        teacher_logprobs=teacher_logprobs,
    )
    return batch, token_shape, vocab_start


def vocab_parallel_sdar_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    group=None,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
    beta: float = 5.0,
    gate: str = "gap",
    objective: str = "sdar",
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    ignore_index: int = -100,
    normalizer: float | torch.Tensor | None = None,
    reduction: str = "mean",
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SDARStats]:
    """:func:`sdar_loss` with the vocabulary sharded over ``group``.

    ``student_logits`` (and teacher logits) are this rank's ``[..., V_local]`` slice; the teacher
    may instead be replicated per-token log-probs. ``targets`` hold global token ids.
    ``vocab_start`` / ``vocab_size`` (this slice's first id, the full V) are gathered from the
    group when not given. Every rank returns the unsharded loss; the gradient is for its slice.
    """
    check_common_options(
        beta=beta, gate=gate, objective=objective, temperature=temperature,
        teacher_temperature=teacher_temperature, ignore_index=ignore_index, normalizer=normalizer,
        reduction=reduction, backend="torch",
    )  # fmt: skip
    batch, token_shape, start = _prepare(
        student_logits, teacher, targets, mask, group, vocab_start, vocab_size, ignore_index
    )
    config = sdar_config(
        beta=beta, gate=gate, objective=objective, temperature=temperature,
        teacher_temperature=teacher_temperature, ignore_index=ignore_index,
    )  # fmt: skip
    outputs = _VocabParallelObjective.apply(batch.student_logits, batch, config, start, group)
    loss = reduce_rows(outputs, reduction, normalizer, token_shape)
    return (loss, sdar_stats(outputs[3], token_shape)) if return_stats else loss


def vocab_parallel_grpo_sdar_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
    *,
    teacher: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    group=None,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
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
) -> torch.Tensor | tuple[torch.Tensor, GRPOStats]:
    """:func:`grpo_sdar_loss` with the vocabulary sharded over ``group`` (see
    :func:`vocab_parallel_sdar_loss` for the sharding contract)."""
    check_common_options(
        beta=beta, gate=gate, objective=objective, temperature=temperature,
        teacher_temperature=teacher_temperature, ignore_index=ignore_index, normalizer=normalizer,
        reduction=reduction, backend="torch",
    )  # fmt: skip
    check_grpo_options(
        clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef,
        entropy_coef=entropy_coef, sdar_coef=sdar_coef,
    )  # fmt: skip
    if sdar_coef == 0:
        teacher = None
    batch, token_shape, start = _prepare(
        student_logits, teacher, targets, mask, group, vocab_start, vocab_size, ignore_index
    )
    add_grpo_rows(
        batch, token_shape, advantages, old_logprobs, ref_logprobs if kl_coef != 0 else None,
        device=student_logits.device, dtype=accumulation_dtype(student_logits),
    )  # fmt: skip
    config = grpo_config(
        clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef,
        entropy_coef=entropy_coef, sdar_coef=sdar_coef, beta=beta, gate=gate, objective=objective,
        temperature=temperature, teacher_temperature=teacher_temperature, ignore_index=ignore_index,
    )  # fmt: skip
    outputs = _VocabParallelObjective.apply(batch.student_logits, batch, config, start, group)
    loss = reduce_rows(outputs, reduction, normalizer, token_shape)
    return (loss, grpo_stats(outputs[3], token_shape)) if return_stats else loss
