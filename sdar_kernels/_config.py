"""The two plain records every backend receives: the rows to score and the objective's options."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ObjectiveConfig:
    """Scalar options of the per-token objective (SPEC sections 3-4).

    ``sdar_loss`` uses ``sdar_coef=1`` and no GRPO terms; ``grpo_sdar_loss`` sets them all.
    ``dual_clip=None`` disables the dual clip.
    """

    temperature: float = 1.0
    teacher_temperature: float = 1.0
    beta: float = 5.0
    gate: str = "gap"
    objective: str = "sdar"
    sdar_coef: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    ignore_index: int = -100


@dataclass
class RowBatch:
    """Flattened inputs: N token rows over a vocabulary of V.

    Shapes and dtypes: ``student_logits`` [N, V] float32/bfloat16/float16/float64 (the only input
    that gets a gradient); ``targets`` [N] int64; ``teacher_logits`` [N, V] float or None;
    per-row vectors ([N], float32, or float64 with float64 logits) or None: ``weights``,
    ``teacher_logprobs``, ``advantages``, ``old_logprobs``, ``ref_logprobs``.
    """

    student_logits: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_logprobs: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    @property
    def weights_dtype(self) -> torch.dtype:
        """The accumulation dtype of the per-row vectors: float64 for float64 logits, else float32."""
        return torch.float64 if self.student_logits.dtype == torch.float64 else torch.float32

    @property
    def has_teacher(self) -> bool:
        return self.teacher_logits is not None or self.teacher_logprobs is not None
