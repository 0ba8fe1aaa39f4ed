"""Triton backend of the fused objective (SPEC sections 2-4): kernels, launchers and the op.

One program per token row (a 1-D grid, so N beyond 65,535 rows never meets a grid limit; int64
offsets). The forward streams the student row and the teacher row once each in BLOCK-wide tiles
with online max / sum-exp / entropy accumulators, then evaluates the per-row objective and its
two backward coefficients. The masked sums are a second, single-program pass over the per-row
values in a fixed order: deterministic, no float atomics. The backward streams the student row
once more, recomputing the softmax from the saved row max and log-sum.

Rows with a target outside [0, V) that is not ignore_index, or with NaN/+inf logits, become NaN
rows: a GPU kernel cannot raise without synchronising the host, and it never reads out of bounds.
On the CPU (TRITON_INTERPRET=1) the same kernels run in Triton's interpreter.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .._layout import NUM_STATS
from .._registration import register_objective_op

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# rows of the stats tensor (sdar_kernels/_layout.py, csrc/sdar_row.h)
S_A: tl.constexpr = 0
S_B: tl.constexpr = 1
S_GAP: tl.constexpr = 2
S_GATE: tl.constexpr = 3
S_H: tl.constexpr = 4
S_RATIO: tl.constexpr = 5
S_CLIPPED: tl.constexpr = 6
S_KL: tl.constexpr = 7
S_WEIGHT: tl.constexpr = 8
S_COEF_A: tl.constexpr = 9
S_COEF_H: tl.constexpr = 10
S_MAX: tl.constexpr = 11
S_LOG_SUM: tl.constexpr = 12

TEACHER_NONE = 0
TEACHER_LOGITS = 1
TEACHER_LOGPROBS = 2


@triton.jit
def _softmax_stats(row_ptr, n, inv_tau, BLOCK: tl.constexpr, WITH_ENTROPY: tl.constexpr):
    """Online statistics of one row: (max z, sum e^s, sum e^s s) with s = (z - max) / tau."""
    run_max = tl.full((), float("-inf"), tl.float32)
    run_sum = tl.full((), 0.0, tl.float32)
    run_sxm = tl.full((), 0.0, tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, tl.max(z, axis=0))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        shifted = (z - safe_max) * inv_tau
        e = tl.exp(shifted)
        rescale_log = tl.where(run_sum > 0, (run_max - safe_max) * inv_tau, 0.0)
        rescale = tl.exp(rescale_log)
        if WITH_ENTROPY:
            block_sxm = tl.sum(tl.where(e > 0, e * shifted, 0.0), axis=0)
            run_sxm = rescale * (run_sxm + rescale_log * run_sum) + block_sxm
        run_sum = run_sum * rescale + tl.sum(e, axis=0)
        run_max = new_max
    return run_max, run_sum, run_sxm


@triton.jit
def _row_objective(
    a,
    entropy,
    b,
    weight,
    adv,
    old,
    ref,
    beta,
    sdar_coef,
    clip_low,
    clip_high,
    dual_clip,
    kl_coef,
    entropy_coef,
    GATE: tl.constexpr,
    OBJECTIVE: tl.constexpr,
    HAS_TEACHER: tl.constexpr,
    HAS_PG: tl.constexpr,
    HAS_DUAL_CLIP: tl.constexpr,
    HAS_KL: tl.constexpr,
):
    """obj_t of SPEC section 4 and c_t = -d(m obj)/da, e_t = d(m obj)/dH (sdar_row.h in Triton)."""
    zero = a * 0.0
    objective = zero
    dobj_da = zero
    gap = zero
    gate = zero
    ratio = zero
    clipped = zero
    kl = zero
    if HAS_TEACHER:
        gap = b - a
        if GATE == 0:
            gate = tl.sigmoid(beta * gap)
        elif GATE == 1:
            gate = tl.sigmoid(beta * entropy)
        elif GATE == 2:
            gate = tl.sigmoid(beta * (1.0 - (1.0 - entropy) * (1.0 - gap)))
        else:
            gate = zero + 1.0
        if OBJECTIVE == 0:
            objective += sdar_coef * gate * gap
            dobj_da -= sdar_coef * gate
        else:
            objective -= sdar_coef * gate * gap * a
            dobj_da -= sdar_coef * gate * gap
    if HAS_PG:
        log_ratio_raw = a - old
        ratio = tl.exp(tl.minimum(tl.maximum(log_ratio_raw, -20.0), 20.0))
        pg_unclipped = -adv * ratio
        pg_clipped = -adv * tl.minimum(tl.maximum(ratio, 1.0 - clip_low), 1.0 + clip_high)
        use_unclipped = pg_unclipped >= pg_clipped
        pg = tl.where(use_unclipped, pg_unclipped, pg_clipped)
        in_range = (log_ratio_raw >= -20.0) & (log_ratio_raw <= 20.0)
        dpg = tl.where(use_unclipped & in_range, -adv * ratio, 0.0)
        is_clipped = pg_clipped > pg_unclipped
        if HAS_DUAL_CLIP:
            pg_dual = -adv * dual_clip
            dual = (adv < 0) & (pg_dual < pg)
            pg = tl.where(dual, pg_dual, pg)
            dpg = tl.where(dual, 0.0, dpg)
            is_clipped = is_clipped | dual
        objective += pg
        dobj_da += dpg
        clipped = tl.where(is_clipped, 1.0, 0.0)
    if HAS_KL:
        k_raw = ref - a
        k = tl.minimum(tl.maximum(k_raw, -20.0), 20.0)
        ek = tl.exp(k)
        kl_raw = ek - k - 1.0
        kl = tl.minimum(tl.maximum(kl_raw, -10.0), 10.0)
        live = (k_raw >= -20.0) & (k_raw <= 20.0) & (kl_raw >= -10.0) & (kl_raw <= 10.0)
        objective += kl_coef * kl
        dobj_da += tl.where(live, kl_coef * (1.0 - ek), 0.0)
    objective -= entropy_coef * entropy
    return (
        weight * objective,
        -weight * dobj_da,
        -entropy_coef * weight,
        gap,
        gate,
        ratio,
        clipped,
        kl,
    )


@triton.jit
def _objective_forward_kernel(
    student_ptr,
    teacher_ptr,
    teacher_logprobs_ptr,
    targets_ptr,
    weights_ptr,
    advantages_ptr,
    old_logprobs_ptr,
    ref_logprobs_ptr,
    row_loss_ptr,
    stats_ptr,
    n_rows,
    vocab,
    ignore_index,
    inv_tau,
    inv_teacher_tau,
    beta,
    sdar_coef,
    clip_low,
    clip_high,
    dual_clip,
    kl_coef,
    entropy_coef,
    GATE: tl.constexpr,
    OBJECTIVE: tl.constexpr,
    TEACHER: tl.constexpr,
    HAS_WEIGHTS: tl.constexpr,
    HAS_PG: tl.constexpr,
    HAS_DUAL_CLIP: tl.constexpr,
    HAS_KL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(targets_ptr + row)
    in_range = (target >= 0) & (target < vocab)
    weight = tl.full((), 1.0, tl.float32)
    if HAS_WEIGHTS:
        weight = tl.load(weights_ptr + row).to(tl.float32)
    weight = tl.where(target == ignore_index, 0.0, weight)
    included = weight != 0
    weight = tl.where(included & ~in_range, float("nan"), weight)  # bad target: a NaN row
    safe_target = tl.where(in_range, target, 0)
    n_read = tl.where(included, vocab, 0)  # excluded rows read nothing

    row_ptr = student_ptr + row * vocab
    row_max, row_sum, row_sxm = _softmax_stats(row_ptr, n_read, inv_tau, BLOCK, True)
    row_sum = tl.where(included, row_sum, 1.0)  # excluded rows: no log(0) on the way to a 0 output
    log_sum = tl.log(row_sum)
    z_target = tl.load(row_ptr + safe_target, mask=included, other=0.0).to(tl.float32)
    a = (z_target - row_max) * inv_tau - log_sum
    a = tl.where(in_range, a, float("nan"))
    entropy = tl.maximum(log_sum - row_sxm / row_sum, 0.0)

    b = a * 0.0
    if TEACHER == 1:
        teacher_row = teacher_ptr + row * vocab
        t_max, t_sum, _ = _softmax_stats(teacher_row, n_read, inv_teacher_tau, BLOCK, False)
        zt_target = tl.load(teacher_row + safe_target, mask=included, other=0.0).to(tl.float32)
        b = (zt_target - t_max) * inv_teacher_tau - tl.log(tl.where(included, t_sum, 1.0))
    elif TEACHER == 2:
        b = tl.load(teacher_logprobs_ptr + row, mask=included, other=0.0).to(tl.float32)

    adv = a * 0.0
    old = a * 0.0
    ref = a * 0.0
    if HAS_PG:
        adv = tl.load(advantages_ptr + row, mask=included, other=0.0).to(tl.float32)
        old = tl.load(old_logprobs_ptr + row, mask=included, other=0.0).to(tl.float32)
    if HAS_KL:
        ref = tl.load(ref_logprobs_ptr + row, mask=included, other=0.0).to(tl.float32)

    loss, coef_a, coef_h, gap, gate, ratio, clipped, kl = _row_objective(
        a,
        entropy,
        b,
        weight,
        adv,
        old,
        ref,
        beta,
        sdar_coef,
        clip_low,
        clip_high,
        dual_clip,
        kl_coef,
        entropy_coef,
        GATE,
        OBJECTIVE,
        TEACHER != 0,
        HAS_PG,
        HAS_DUAL_CLIP,
        HAS_KL,
    )
    tl.store(row_loss_ptr + row, tl.where(included, loss, 0.0))
    s = stats_ptr + row
    tl.store(s + S_A * n_rows, tl.where(included, a, 0.0))
    tl.store(s + S_B * n_rows, tl.where(included, b, 0.0))
    tl.store(s + S_GAP * n_rows, tl.where(included, gap, 0.0))
    tl.store(s + S_GATE * n_rows, tl.where(included, gate, 0.0))
    tl.store(s + S_H * n_rows, tl.where(included, entropy, 0.0))
    tl.store(s + S_RATIO * n_rows, tl.where(included, ratio, 0.0))
    tl.store(s + S_CLIPPED * n_rows, tl.where(included, clipped, 0.0))
    tl.store(s + S_KL * n_rows, tl.where(included, kl, 0.0))
    tl.store(s + S_WEIGHT * n_rows, weight)
    tl.store(s + S_COEF_A * n_rows, tl.where(included, coef_a, 0.0))
    tl.store(s + S_COEF_H * n_rows, tl.where(included, coef_h, 0.0))
    tl.store(s + S_MAX * n_rows, tl.where(included, row_max, 0.0))
    tl.store(s + S_LOG_SUM * n_rows, tl.where(included, log_sum, 0.0))


@triton.jit
def _masked_sums_kernel(row_loss_ptr, stats_ptr, loss_sum_ptr, weight_sum_ptr, n_rows, BLOCK: tl.constexpr):
    """Second stage of the reduction: one program, fixed order, so results never vary run to run."""
    loss_acc = tl.zeros([BLOCK], tl.float32)
    weight_acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_rows, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n_rows
        loss_acc += tl.load(row_loss_ptr + offs, mask=mask, other=0.0)
        weight_acc += tl.load(stats_ptr + S_WEIGHT * n_rows + offs, mask=mask, other=0.0)
    tl.store(loss_sum_ptr, tl.sum(loss_acc, axis=0))
    tl.store(weight_sum_ptr, tl.sum(weight_acc, axis=0))


@triton.jit
def _round_for_store(x, out_ptr, MANUAL_BF16: tl.constexpr):
    """x converted to the pointee type; bf16 rounded to nearest even by hand where the conversion
    truncates (Triton's CPU interpreter)."""
    if MANUAL_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(out_ptr.dtype.element_ty)


@triton.jit
def _objective_backward_kernel(
    student_ptr,
    targets_ptr,
    stats_ptr,
    grad_sum_ptr,
    grad_rows_ptr,
    grad_ptr,
    n_rows,
    vocab,
    inv_tau,
    HAS_GRAD_SUM: tl.constexpr,
    HAS_GRAD_ROWS: tl.constexpr,
    MANUAL_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s = stats_ptr + row
    weight = tl.load(s + S_WEIGHT * n_rows)
    scale = tl.full((), 0.0, tl.float32)
    if HAS_GRAD_SUM:
        scale += tl.load(grad_sum_ptr).to(tl.float32)
    if HAS_GRAD_ROWS:
        scale += tl.load(grad_rows_ptr + row).to(tl.float32)
    scale = scale * inv_tau
    coef_a = tl.load(s + S_COEF_A * n_rows) * scale
    coef_h = tl.load(s + S_COEF_H * n_rows) * scale
    row_max = tl.load(s + S_MAX * n_rows)
    log_sum = tl.load(s + S_LOG_SUM * n_rows)
    entropy = tl.load(s + S_H * n_rows)
    active = (weight != 0) & ((coef_a != 0) | (coef_h != 0))
    n_read = tl.where(active, vocab, 0)  # rows with a zero gradient read nothing
    target = tl.load(targets_ptr + row)
    row_ptr = student_ptr + row * vocab
    out_ptr = grad_ptr + row * vocab
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < vocab
        z = tl.load(row_ptr + offs, mask=offs < n_read, other=0.0).to(tl.float32)
        logp = (z - row_max) * inv_tau - log_sum
        p = tl.exp(logp)
        grad = coef_a * p - coef_h * p * (tl.maximum(logp, -3.4028234663852886e38) + entropy)
        grad = tl.where(offs == target, grad - coef_a, grad)
        grad = tl.where(active, grad, 0.0)
        tl.store(out_ptr + offs, _round_for_store(grad, out_ptr, MANUAL_BF16), mask=mask)


def _block_size(vocab: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a vocabulary: wide tiles in the interpreter (it is per-op bound),
    4-8K-wide tiles on GPUs."""
    if INTERPRETED:
        return min(triton.next_power_of_2(max(vocab, 1)), 32768), 4
    block = min(triton.next_power_of_2(max(vocab, 1)), 4096 if vocab <= 65536 else 8192)
    return block, 4 if block <= 1024 else (8 if block <= 4096 else 16)


def _check_tensor_device(tensor: torch.Tensor) -> None:
    if tensor.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); "
            f"got {tensor.device}"
        )


def _optional(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.contiguous()


@torch.library.custom_op("sdar_kernels::triton_objective_forward", mutates_args=())
def triton_objective_forward(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    weights: Optional[torch.Tensor],  # noqa: UP045  (custom_op schema inference wants Optional)
    teacher_logits: Optional[torch.Tensor],  # noqa: UP045
    teacher_logprobs: Optional[torch.Tensor],  # noqa: UP045
    advantages: Optional[torch.Tensor],  # noqa: UP045
    old_logprobs: Optional[torch.Tensor],  # noqa: UP045
    ref_logprobs: Optional[torch.Tensor],  # noqa: UP045
    temperature: float,
    teacher_temperature: float,
    beta: float,
    gate: int,
    objective: int,
    sdar_coef: float,
    clip_low: float,
    clip_high: float,
    dual_clip: float,
    kl_coef: float,
    entropy_coef: float,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton implementation of objective_forward (same contract as the native op)."""
    if student_logits.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"backend='triton' supports float32, bfloat16 and float16 logits; got {student_logits.dtype}"
        )
    _check_tensor_device(student_logits)
    student = student_logits.contiguous()
    n_rows, vocab = student.shape
    has_teacher = sdar_coef != 0.0 and (teacher_logits is not None or teacher_logprobs is not None)
    teacher_kind = TEACHER_NONE
    if has_teacher:
        teacher_kind = TEACHER_LOGITS if teacher_logits is not None else TEACHER_LOGPROBS
    if teacher_logits is not None and teacher_logits.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            "backend='triton' supports float32, bfloat16 and float16 teacher logits; "
            f"got {teacher_logits.dtype}"
        )
    teacher = _optional(teacher_logits) if teacher_kind == TEACHER_LOGITS else None
    teacher_lp = _optional(teacher_logprobs) if teacher_kind == TEACHER_LOGPROBS else None
    has_pg = advantages is not None
    if has_pg != (old_logprobs is not None):
        raise ValueError("advantages and old_logprobs must be given together")
    has_kl = ref_logprobs is not None and kl_coef != 0.0

    row_loss = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    stats = torch.empty(NUM_STATS, n_rows, dtype=torch.float32, device=student.device)
    loss_sum = torch.empty((), dtype=torch.float32, device=student.device)
    weight_sum = torch.empty((), dtype=torch.float32, device=student.device)
    dummy = row_loss  # stands in for absent optional pointers (never read)
    if n_rows > 0:
        block, warps = _block_size(vocab)
        _objective_forward_kernel[(n_rows,)](
            student,
            teacher if teacher is not None else student,
            teacher_lp if teacher_lp is not None else dummy,
            targets.contiguous(),
            _optional(weights) if weights is not None else dummy,
            _optional(advantages) if has_pg else dummy,
            _optional(old_logprobs) if has_pg else dummy,
            _optional(ref_logprobs) if has_kl else dummy,
            row_loss,
            stats,
            n_rows,
            vocab,
            ignore_index,
            1.0 / temperature,
            1.0 / teacher_temperature,
            beta,
            sdar_coef,
            clip_low,
            clip_high,
            dual_clip,
            kl_coef,
            entropy_coef,
            GATE=gate,
            OBJECTIVE=objective,
            TEACHER=teacher_kind,
            HAS_WEIGHTS=weights is not None,
            HAS_PG=has_pg,
            HAS_DUAL_CLIP=dual_clip > 0,
            HAS_KL=has_kl,
            BLOCK=block,
            num_warps=warps,
        )
    _masked_sums_kernel[(1,)](row_loss, stats, loss_sum, weight_sum, n_rows, BLOCK=1024)
    return loss_sum, weight_sum, row_loss, stats


@torch.library.custom_op("sdar_kernels::triton_objective_backward", mutates_args=())
def triton_objective_backward(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    stats: torch.Tensor,
    grad_loss_sum: Optional[torch.Tensor],  # noqa: UP045
    grad_row_loss: Optional[torch.Tensor],  # noqa: UP045
    temperature: float,
    ignore_index: int,
) -> torch.Tensor:
    """Triton implementation of objective_backward."""
    student = student_logits.contiguous()
    n_rows, vocab = student.shape
    grad = torch.empty_like(student)
    if n_rows == 0:
        return grad
    grad_sum = None if grad_loss_sum is None else grad_loss_sum.to(torch.float32).reshape(()).contiguous()
    grad_rows = None if grad_row_loss is None else grad_row_loss.to(torch.float32).contiguous()
    block, warps = _block_size(vocab)
    _objective_backward_kernel[(n_rows,)](
        student,
        targets.contiguous(),
        stats.contiguous(),
        grad_sum if grad_sum is not None else stats,
        grad_rows if grad_rows is not None else stats,
        grad,
        n_rows,
        vocab,
        1.0 / temperature,
        HAS_GRAD_SUM=grad_sum is not None,
        HAS_GRAD_ROWS=grad_rows is not None,
        MANUAL_BF16=INTERPRETED and student.dtype == torch.bfloat16,
        BLOCK=block,
        num_warps=warps,
    )
    return grad


register_objective_op(
    "sdar_kernels::triton_objective_forward",
    "sdar_kernels::triton_objective_backward",
    triton_objective_backward,
)
