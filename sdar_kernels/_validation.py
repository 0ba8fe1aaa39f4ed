"""Checks of user input and flattening to rows; one message per way of failing.

Only shapes, dtypes, devices and option values are checked here, never tensor values: value
checks (targets in range, teacher log-probs <= 0, non-finite rows) happen inside the kernels so
that no op synchronises with the host.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._config import RowBatch
from ._layout import BACKENDS, GATES, OBJECTIVES, REDUCTIONS

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def accumulation_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_number(name: str, value, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number; got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return float(value)


def check_logits(name: str, logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(logits).__name__}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16, float16 or float64; got {logits.dtype}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"{name} must be [N, V] or [B, T, V]; got shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0:
        raise ValueError(
            f"{name} must have a non-empty vocabulary dimension; got shape {tuple(logits.shape)}"
        )


def check_targets(targets, token_shape: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor; got {type(targets).__name__}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer token ids; got {targets.dtype}")
    if targets.shape != token_shape:
        raise ValueError(f"targets must have shape {tuple(token_shape)}; got {tuple(targets.shape)}")
    check_device("targets", targets, device)
    return targets.reshape(-1).to(torch.int64)


def check_device(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    if tensor.device != device:
        raise ValueError(f"{name} must be on {device} like student_logits; got {tensor.device}")


def row_weights(
    mask, token_shape: torch.Size, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """mask (bool or float, the targets' shape) as [N] row weights, or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None; got {type(mask).__name__}")
    if not (mask.dtype == torch.bool or mask.dtype.is_floating_point):
        raise TypeError(f"mask must be bool or floating point; got {mask.dtype}")
    if mask.shape != token_shape:
        raise ValueError(f"mask must have the targets' shape {tuple(token_shape)}; got {tuple(mask.shape)}")
    check_device("mask", mask, device)
    return mask.reshape(-1).to(dtype)


def row_vector(name: str, value, token_shape: torch.Size, device: torch.device, dtype: torch.dtype):
    """An optional per-token float input (advantages, log-probs) as [N] in dtype.

    A tensor of shape [B] broadcasts over the tokens of each sequence when the logits are
    [B, T, V] (sequence advantages).
    """
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None; got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point; got {value.dtype}")
    check_device(name, value, device)
    if value.shape != token_shape:
        if len(token_shape) == 2 and value.shape == token_shape[:1]:
            value = value.unsqueeze(-1).expand(token_shape)
        else:
            raise ValueError(
                f"{name} must have the targets' shape {tuple(token_shape)}; got {tuple(value.shape)}"
            )
    return value.reshape(-1).to(dtype)


def split_teacher(teacher, logits_shape: torch.Size, logits_dtype: torch.dtype, device: torch.device):
    """teacher as (logits [N, V] or None, log-probs [N] or None), told apart by its shape.

    ``logits_shape``/``logits_dtype`` describe the student's logits (which the fused-linear form
    never materialises, hence no tensor here).
    """
    if teacher is None:
        return None, None
    if not isinstance(teacher, torch.Tensor):
        raise TypeError(
            f"teacher must be a torch.Tensor (logits or per-token log-probs); got {type(teacher).__name__}"
        )
    if not teacher.dtype.is_floating_point:
        raise TypeError(f"teacher must be floating point; got {teacher.dtype}")
    check_device("teacher", teacher, device)
    token_shape = logits_shape[:-1]
    if teacher.shape == logits_shape:
        if (teacher.dtype == torch.float64) != (logits_dtype == torch.float64):
            raise TypeError(
                "teacher logits and student_logits must both be float64 or neither; "
                f"got {teacher.dtype} and {logits_dtype}"
            )
        if teacher.dtype not in LOGIT_DTYPES:
            raise TypeError(
                f"teacher logits must be float32, bfloat16, float16 or float64; got {teacher.dtype}"
            )
        return teacher.detach().reshape(-1, teacher.shape[-1]), None
    if teacher.shape == token_shape:
        acc = torch.float64 if logits_dtype == torch.float64 else torch.float32
        return None, teacher.detach().reshape(-1).to(acc)
    raise ValueError(
        f"teacher must be logits of shape {tuple(logits_shape)} or per-token log-probs of shape "
        f"{tuple(token_shape)}; got {tuple(teacher.shape)}"
    )


def check_normalizer(normalizer) -> None:
    if normalizer is None:
        return
    if isinstance(normalizer, torch.Tensor):
        if normalizer.dim() != 0:
            raise ValueError(f"normalizer must be a 0-d tensor; got shape {tuple(normalizer.shape)}")
        if not normalizer.dtype.is_floating_point:
            raise TypeError(f"normalizer tensor must be floating point; got {normalizer.dtype}")
        return
    check_number("normalizer", normalizer, positive=True)


def check_common_options(
    *, beta, gate, objective, temperature, teacher_temperature, ignore_index, normalizer, reduction, backend
) -> None:
    check_number("beta", beta, minimum=0.0)
    check_choice("gate", gate, GATES)
    check_choice("objective", objective, OBJECTIVES)
    check_number("temperature", temperature, positive=True)
    if teacher_temperature is not None:
        check_number("teacher_temperature", teacher_temperature, positive=True)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int; got {ignore_index!r}")
    check_normalizer(normalizer)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("backend", backend, BACKENDS)


def flatten_rows(student_logits, teacher, targets, mask) -> tuple[RowBatch, torch.Size]:
    """Checks the tensors of a loss call and flattens them to rows; returns (batch, token shape)."""
    check_logits("student_logits", student_logits)
    token_shape = student_logits.shape[:-1]
    device = student_logits.device
    flat_targets = check_targets(targets, token_shape, device)
    teacher_logits, teacher_logprobs = split_teacher(
        teacher, student_logits.shape, student_logits.dtype, device
    )
    batch = RowBatch(
        student_logits=student_logits.reshape(-1, student_logits.shape[-1]),
        targets=flat_targets,
        weights=row_weights(mask, token_shape, device, accumulation_dtype(student_logits)),
        teacher_logits=teacher_logits,
        teacher_logprobs=teacher_logprobs,
    )
    return batch, token_shape


def check_grpo_options(*, clip_low, clip_high, dual_clip, kl_coef, entropy_coef, sdar_coef) -> None:
    check_number("clip_low", clip_low, minimum=0.0)
    if clip_low >= 1:
        raise ValueError(f"clip_low must be in [0, 1); got {clip_low}")
    check_number("clip_high", clip_high, minimum=0.0)
    if dual_clip is not None:
        check_number("dual_clip", dual_clip)
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (or None to disable it); got {dual_clip}")
    check_number("kl_coef", kl_coef, minimum=0.0)
    check_number("entropy_coef", entropy_coef)
    check_number("sdar_coef", sdar_coef)


def add_grpo_rows(
    batch: RowBatch, token_shape: torch.Size, advantages, old_logprobs, ref_logprobs, *, device, dtype
) -> RowBatch:
    """Checks the per-token GRPO inputs and adds them to the flattened batch as ``dtype`` (the
    accumulation dtype). ``advantages`` may be per token or per sequence ([B] for [B, T] tokens).
    """
    if advantages is None or old_logprobs is None:
        raise ValueError("advantages and old_logprobs must be given (per-token tensors shaped like targets)")
    batch.advantages = row_vector("advantages", advantages, token_shape, device, dtype).detach()
    batch.old_logprobs = row_vector("old_logprobs", old_logprobs, token_shape, device, dtype).detach()
    if ref_logprobs is not None:
        batch.ref_logprobs = row_vector("ref_logprobs", ref_logprobs, token_shape, device, dtype).detach()
    return batch
