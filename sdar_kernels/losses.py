"""The public loss functions: ``sdar_loss`` and the ``SDARLoss`` module."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from . import _layout as layout
from ._backends import resolve_backend, run_rows
from ._config import ObjectiveConfig
from ._validation import check_common_options, flatten_rows


class SDARStats(NamedTuple):
    """Per-token statistics, fp32 (fp64 for fp64 logits), shaped like ``targets``; 0 at excluded tokens."""

    student_logprobs: torch.Tensor
    teacher_logprobs: torch.Tensor
    gap: torch.Tensor
    gate: torch.Tensor
    entropy: torch.Tensor


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


def stat_rows(stats: torch.Tensor, rows: tuple[int, ...], token_shape: torch.Size) -> list[torch.Tensor]:
    return [stats[row].reshape(token_shape) for row in rows]


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
    config = ObjectiveConfig(
        temperature=float(temperature),
        teacher_temperature=float(temperature if teacher_temperature is None else teacher_temperature),
        beta=float(beta),
        gate=gate,
        objective=objective,
        sdar_coef=1.0,
        ignore_index=int(ignore_index),
    )
    outputs = run_rows(batch, config, resolve_backend(backend, student_logits.device))
    loss = reduce_rows(outputs, reduction, normalizer, token_shape)
    if not return_stats:
        return loss
    rows = (
        layout.STAT_STUDENT_LOGPROB,
        layout.STAT_TEACHER_LOGPROB,
        layout.STAT_GAP,
        layout.STAT_GATE,
        layout.STAT_ENTROPY,
    )
    return loss, SDARStats(*stat_rows(outputs[3], rows, token_shape))


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
