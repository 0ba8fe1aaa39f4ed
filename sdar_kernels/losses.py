"""The public loss functions on logits: ``sdar_loss`` / ``SDARLoss`` and ``grpo_sdar_loss``."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from . import _layout as layout
from ._backends import resolve_backend, run_rows
from ._config import ObjectiveConfig
from ._validation import add_grpo_rows, check_common_options, check_grpo_options, flatten_rows


class SDARStats(NamedTuple):
    """Per-token statistics, fp32 (fp64 for fp64 logits), shaped like ``targets``; 0 at excluded tokens."""

    student_logprobs: torch.Tensor
    teacher_logprobs: torch.Tensor
    gap: torch.Tensor
    gate: torch.Tensor
    entropy: torch.Tensor


class GRPOStats(NamedTuple):
    """Per-token statistics of the whole objective, shaped like ``targets``; 0 at excluded tokens.

    ``clipped`` is bool (the clipped or dual-clipped branch is active); the rest are fp32.
    """

    student_logprobs: torch.Tensor
    teacher_logprobs: torch.Tensor
    gap: torch.Tensor
    gate: torch.Tensor
    entropy: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor
    kl: torch.Tensor


SDAR_STAT_ROWS = (
    layout.STAT_STUDENT_LOGPROB,
    layout.STAT_TEACHER_LOGPROB,
    layout.STAT_GAP,
    layout.STAT_GATE,
    layout.STAT_ENTROPY,
)
GRPO_STAT_ROWS = (*SDAR_STAT_ROWS, layout.STAT_RATIO, layout.STAT_CLIPPED, layout.STAT_KL)


def sdar_stats(stats: torch.Tensor, token_shape: torch.Size) -> SDARStats:
    return SDARStats(*(stats[row].reshape(token_shape) for row in SDAR_STAT_ROWS))


def grpo_stats(stats: torch.Tensor, token_shape: torch.Size) -> GRPOStats:
    values = [stats[row].reshape(token_shape) for row in GRPO_STAT_ROWS]
    values[6] = values[6] != 0  # clipped as bool
    return GRPOStats(*values)


def sdar_config(*, beta, gate, objective, temperature, teacher_temperature, ignore_index) -> ObjectiveConfig:
    """ObjectiveConfig of the SDAR term alone (SPEC section 3); options already validated."""
    return ObjectiveConfig(
        temperature=float(temperature),
        teacher_temperature=float(temperature if teacher_temperature is None else teacher_temperature),
        beta=float(beta),
        gate=gate,
        objective=objective,
        sdar_coef=1.0,
        ignore_index=int(ignore_index),
    )


def grpo_config(
    *, clip_low, clip_high, dual_clip, kl_coef, entropy_coef, sdar_coef, **sdar_options
) -> ObjectiveConfig:
    """ObjectiveConfig of the whole objective (SPEC section 4); options already validated."""
    return dataclasses.replace(
        sdar_config(**sdar_options),
        sdar_coef=float(sdar_coef),
        clip_low=float(clip_low),
        clip_high=float(clip_high),
        dual_clip=None if dual_clip is None else float(dual_clip),
        kl_coef=float(kl_coef),
        entropy_coef=float(entropy_coef),
    )


def reduce_rows(outputs, reduction: str, normalizer, token_shape: torch.Size) -> torch.Tensor:
    """The loss from the backend's (loss_sum, weight_sum, row_loss, stats) for a reduction.

    ``mean`` divides by ``normalizer`` (default ``max(sum(m), 1)``), computed on the device; a tensor
    normalizer is used as given (detached), never read on the host.
    """
    loss_sum, weight_sum, row_loss, _ = outputs
    if reduction == "none":
        return row_loss.reshape(token_shape)
    if reduction == "sum":
        return loss_sum
    if normalizer is None:
        return loss_sum / weight_sum.clamp(min=1.0)
    if isinstance(normalizer, torch.Tensor):
        return loss_sum / normalizer.detach().to(device=loss_sum.device, dtype=loss_sum.dtype)
    return loss_sum / float(normalizer)


def sdar_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 5.0,
    gate: str = "gap",
    objective: str = "sdar",
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    ignore_index: int = -100,
    normalizer: float | torch.Tensor | None = None,
    reduction: str = "mean",
    return_stats: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, SDARStats]:
    """The SDAR auxiliary loss (SPEC section 3) in one fused pass over the logits.

    Args:
        student_logits: [N, V] or [B, T, V], float32 / bfloat16 / float16 (float64 is computed in
            float64, for verification). The only input that receives a gradient.
        teacher: teacher logits of the same shape, or the teacher's log-probs of the sampled
            tokens, shaped like ``targets``. Always treated as detached.
        targets: [N] or [B, T] sampled token ids (any integer dtype); ``ignore_index`` excludes a token.
        mask: optional bool or float weights shaped like ``targets``; 0 excludes a token.
        beta: gate sharpness (paper: 5).
        gate: ``"gap"`` (paper), ``"entropy"``, ``"soft_or"`` or ``"none"``.
        objective: ``"sdar"`` (paper: g (b - a)) or ``"pg"`` (-sg(g D) a).
        temperature: student sampling temperature; ``teacher_temperature`` defaults to it.
        normalizer: divisor for ``reduction="mean"``: None (``max(sum(m), 1)``), a float, or a
            0-d tensor (e.g. a global token count; never read on the host).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-token m_t l_t shaped like targets).
        return_stats: also return :class:`SDARStats`.
        backend: ``"auto"`` (native kernel for the tensors' device), ``"cpu"``, ``"cuda"``,
            ``"triton"`` or ``"torch"`` (the eager reference).

    Returns:
        The loss (0-d, or shaped like ``targets`` for ``reduction="none"``), fp32; with
        ``return_stats`` a tuple ``(loss, SDARStats)``.
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
    if teacher is None:
        raise ValueError("teacher must be given: teacher logits or per-token teacher log-probs")
    batch, token_shape = flatten_rows(student_logits, teacher, targets, mask)
    config = sdar_config(
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
    )
    outputs = run_rows(batch, config, resolve_backend(backend, student_logits.device))
    loss = reduce_rows(outputs, reduction, normalizer, token_shape)
    return (loss, sdar_stats(outputs[3], token_shape)) if return_stats else loss


def grpo_sdar_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
    *,
    teacher: torch.Tensor | None = None,
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
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, GRPOStats]:
    """The whole per-token RL objective (SPEC section 4) in one fused pass over the logits.

    ``obj_t = max(-A rho, -A clip(rho, 1-clip_low, 1+clip_high))`` (dual-clipped at ``-A dual_clip``
    for A < 0) ``+ kl_coef k3(ref || pi) - entropy_coef H + sdar_coef l_t``, masked token mean.

    Args:
        student_logits: [N, V] or [B, T, V] float32 / bfloat16 / float16 (float64: computed in float64).
        targets: sampled token ids shaped like the logits without V; ``ignore_index`` excludes a token.
        advantages: per-token advantages shaped like ``targets`` (or [B] per sequence for [B, T]).
        old_logprobs: the rollout policy's log-probs of the sampled tokens, shaped like ``targets``.
        teacher: teacher logits (same shape as the student's) or per-token teacher log-probs; None
            (or ``sdar_coef=0``) gives plain GRPO with no teacher work at all.
        ref_logprobs: reference-policy log-probs for the k3 KL term; None (or ``kl_coef=0``) skips it.
        mask: bool or float token weights shaped like ``targets``.
        clip_low, clip_high, dual_clip: PPO clip range and dual clip (None disables the dual clip).
        kl_coef, entropy_coef, sdar_coef: term coefficients (the entropy bonus carries gradient).
        beta, gate, objective, temperature, teacher_temperature, ignore_index, normalizer,
        reduction, backend: as in :func:`sdar_loss`.
        return_stats: also return :class:`GRPOStats`.

    Returns:
        The loss (fp32), or ``(loss, GRPOStats)``.
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
        teacher = None  # no teacher work at all
    batch, token_shape = flatten_rows(student_logits, teacher, targets, mask)
    add_grpo_rows(
        batch,
        token_shape,
        advantages,
        old_logprobs,
        ref_logprobs if kl_coef != 0 else None,
        device=student_logits.device,
        dtype=batch.weights_dtype,
    )
    config = grpo_config(
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        kl_coef=kl_coef,
        entropy_coef=entropy_coef,
        sdar_coef=sdar_coef,
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
        ignore_index=ignore_index,
    )
    outputs = run_rows(batch, config, resolve_backend(backend, student_logits.device))
    loss = reduce_rows(outputs, reduction, normalizer, token_shape)
    return (loss, grpo_stats(outputs[3], token_shape)) if return_stats else loss


class SDARLoss(nn.Module):
    """:func:`sdar_loss` with its keyword options fixed at construction.

    ``forward(student_logits, teacher, targets, mask=None, normalizer=None)``.
    """

    def __init__(
        self,
        *,
        beta: float = 5.0,
        gate: str = "gap",
        objective: str = "sdar",
        temperature: float = 1.0,
        teacher_temperature: float | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        return_stats: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_common_options(
            beta=beta,
            gate=gate,
            objective=objective,
            temperature=temperature,
            teacher_temperature=teacher_temperature,
            ignore_index=ignore_index,
            normalizer=None,
            reduction=reduction,
            backend=backend,
        )
        self.options = dict(
            beta=beta,
            gate=gate,
            objective=objective,
            temperature=temperature,
            teacher_temperature=teacher_temperature,
            ignore_index=ignore_index,
            reduction=reduction,
            return_stats=return_stats,
            backend=backend,
        )

    def forward(self, student_logits, teacher, targets, mask=None, normalizer=None):
        return sdar_loss(student_logits, teacher, targets, mask, normalizer=normalizer, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
