"""The objective from per-token log-probs (no logits), for frameworks whose loss hook only sees the
log-probs of the sampled tokens (e.g. verl's policy losses).

This is SPEC sections 2-4 with a_t given instead of computed from logits: the same per-token
formulas as the eager reference (:func:`sdar_kernels.reference.token_objective`), gradient by
autograd through ``log_prob``. With a_t = log_softmax(z_t / tau)[y_t], that gradient is exactly
SPEC's hand-written one (tests/integrations/test_verl.py checks it against the float64 oracle and
the fused op). The entropy H_t needs the whole distribution: pass it when the ``entropy`` /
``soft_or`` gates or an entropy bonus need it.
"""

from __future__ import annotations

import torch

from ._config import RowBatch
from ._validation import check_common_options, check_grpo_options
from .losses import grpo_config
from .reference import token_objective

TERM_NAMES = ("gap", "gate", "ratio", "clipped", "kl")


def _per_token(tensor: torch.Tensor | None, name: str, shape: torch.Size, dtype: torch.dtype):
    if tensor is None:
        return None
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if tensor.shape != shape:
        raise ValueError(f"{name} must have the log_prob shape {tuple(shape)}; got {tuple(tensor.shape)}")
    return tensor.reshape(-1).to(dtype)


def grpo_sdar_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    teacher_log_prob: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    kl_coef: float = 0.0,
    entropy_coef: float = 0.0,
    sdar_coef: float = 0.01,
    beta: float = 5.0,
    gate: str = "gap",
    objective: str = "sdar",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token obj_t of SPEC section 4 from log-probs; no masking, no reduction.

    Args:
        log_prob: [...] current-policy log-probs a_t of the sampled tokens (float; the gradient flows
            through it).
        old_log_prob, advantages: [...] rollout log-probs o_t and advantages A_t.
        teacher_log_prob: [...] teacher log-probs b_t; needed unless ``sdar_coef == 0``.
        ref_log_prob: [...] reference log-probs for the k3 KL term (used when ``kl_coef != 0``).
        entropy: [...] student entropy H_t (may carry gradient), needed by the ``entropy`` and
            ``soft_or`` gates and by ``entropy_coef != 0``.
        clip_low, clip_high, dual_clip, kl_coef, entropy_coef, sdar_coef, beta, gate, objective:
            as :func:`sdar_kernels.grpo_sdar_loss` (KL and entropy default to 0 here: frameworks
            usually add their own).

    Returns:
        (obj [...] fp32 (fp64 for fp64 ``log_prob``) with gradient, detached per-token terms
        ``{"gap", "gate", "ratio", "clipped", "kl"}`` of the same shape; 0 for an absent term).
    """
    check_common_options(
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=1.0,
        teacher_temperature=None,
        ignore_index=-100,
        normalizer=None,
        reduction="none",
        backend="torch",
    )
    check_grpo_options(
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        kl_coef=kl_coef,
        entropy_coef=entropy_coef,
        sdar_coef=sdar_coef,
    )
    if not isinstance(log_prob, torch.Tensor) or not log_prob.is_floating_point():
        raise TypeError("log_prob must be a floating-point tensor")
    shape = log_prob.shape
    dtype = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    if sdar_coef != 0 and teacher_log_prob is None:
        raise ValueError("teacher_log_prob is needed for the SDAR term (or set sdar_coef=0)")
    if entropy is None and (gate in ("entropy", "soft_or") or entropy_coef != 0):
        raise ValueError(f"entropy is needed for gate={gate!r} / entropy_coef={entropy_coef}")
    a = log_prob.reshape(-1).to(dtype)
    teacher = _per_token(teacher_log_prob, "teacher_log_prob", shape, dtype) if sdar_coef != 0 else None
    if kl_coef != 0 and ref_log_prob is None:
        raise ValueError("ref_log_prob is needed for the KL term (or set kl_coef=0)")
    ref = _per_token(ref_log_prob, "ref_log_prob", shape, dtype) if kl_coef != 0 else None
    batch = RowBatch(  # token_objective reads only the per-token vectors
        student_logits=a,
        targets=torch.empty(0, dtype=torch.long),
        advantages=_per_token(advantages, "advantages", shape, dtype).detach(),
        old_logprobs=_per_token(old_log_prob, "old_log_prob", shape, dtype).detach(),
        ref_logprobs=None if ref is None else ref.detach(),
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
        temperature=1.0,
        teacher_temperature=None,
        ignore_index=-100,
    )
    h = torch.zeros_like(a) if entropy is None else _per_token(entropy, "entropy", shape, dtype)
    obj, terms = token_objective(a, h, None if teacher is None else teacher.detach(), batch, config)
    return obj.reshape(shape), {name: terms[name].reshape(shape) for name in TERM_NAMES}
