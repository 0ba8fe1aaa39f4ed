"""SPEC.md sections 2-4 in plain PyTorch: the readable definition and the ``backend="torch"`` path.

Any input dtype; arithmetic in float32 (float64 for float64 inputs). Gradients come from autograd
through the differentiable quantities (the student's log-prob of the sampled token and, for the
entropy bonus, the entropy); gate and gap are detached, as the contract says. This is the eager
code the fused kernels replace: it holds several [N, V] float32 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._config import ObjectiveConfig, RowBatch
from ._layout import NUM_STATS

TEACHER_LOGPROB_TOLERANCE = 1e-3  # same as csrc/kernel_args.h


def gate_value(gate: str, beta: float, gap: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """The detached gate g_t of SPEC section 2."""
    if gate == "gap":
        return torch.sigmoid(beta * gap)
    if gate == "entropy":
        return torch.sigmoid(beta * entropy)
    if gate == "soft_or":
        return torch.sigmoid(beta * (1 - (1 - entropy) * (1 - gap)))
    return torch.ones_like(gap)


@dataclass
class RowLogSoftmax:
    """log_softmax(z / tau) of the included rows, with the row quantities the kernels also keep."""

    logprobs: torch.Tensor  # [N, V], carries gradient
    sampled: torch.Tensor  # [N] log-prob of the target, carries gradient
    row_max: torch.Tensor  # [N] max_v z_v (raw logits), detached
    log_sum: torch.Tensor  # [N] log sum_v exp((z_v - max) / tau), detached


def row_log_softmax(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, temperature: float):
    """Log-softmax of logits / temperature gathered at targets; rows where ``keep`` is False become 0.

    Shifting by the detached row maximum first keeps full precision for logits of any size (the
    log-softmax is shift-invariant, so the shift carries no gradient).
    """
    row_max = torch.where(keep, logits.detach().amax(dim=-1), 0.0)
    shifted = torch.where(keep.unsqueeze(-1), logits - row_max.unsqueeze(-1), 0.0)
    logprobs = torch.log_softmax(shifted.div_(temperature), dim=-1)
    sampled = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    log_sum = shifted.detach().gather(-1, targets.unsqueeze(-1)).squeeze(-1) - sampled.detach()
    return RowLogSoftmax(logprobs, sampled, row_max, log_sum)


def entropy_from_logprobs(logprobs: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p log p; entries with p == 0 (-inf logits) contribute 0 and no NaN gradient."""
    if not logprobs.requires_grad:
        return torch.special.entr(logprobs.exp()).sum(-1)
    floor = torch.finfo(logprobs.dtype).min
    return -(logprobs.exp() * logprobs.clamp(min=floor)).sum(-1)


def _check_finite_rows(row: RowLogSoftmax, keep: torch.Tensor, what: str) -> None:
    """Error for included rows holding NaN/+inf or only -inf (CPU; on accelerators the row stays NaN)."""
    if row.row_max.device.type != "cpu":
        return
    bad = keep & ~(torch.isfinite(row.row_max) & torch.isfinite(row.log_sum))
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what} row {index} contains NaN or +inf, or all of its logits are -inf")


def check_row_values(batch: RowBatch, vocab_size: int, ignore_index: int) -> None:
    """Value checks of the contract (targets in range, teacher log-probs <= 0).

    Raised eagerly for CPU tensors; on accelerators they become asynchronous device assertions so
    that the reference never synchronises with the host.
    """
    targets = batch.targets
    bad_target = (targets != ignore_index) & ((targets < 0) | (targets >= vocab_size))
    positive = None
    if batch.teacher_logprobs is not None:
        positive = batch.teacher_logprobs > TEACHER_LOGPROB_TOLERANCE
    if targets.device.type == "cpu":
        if bool(bad_target.any()):
            row = int(bad_target.nonzero()[0, 0])
            raise IndexError(
                f"targets[{row}] = {int(targets[row])} is outside [0, V) and is not ignore_index"
            )
        if positive is not None and bool(positive.any()):
            row = int(positive.nonzero()[0, 0])
            raise ValueError(
                f"teacher log-probs must be <= 0 (tolerance {TEACHER_LOGPROB_TOLERANCE}); row {row} has "
                f"{float(batch.teacher_logprobs[row])}. Did you pass teacher logits of shape [N]?"
            )
    else:
        torch._assert_async(~bad_target.any(), "targets outside [0, V) that are not ignore_index")
        if positive is not None:
            torch._assert_async(~positive.any(), "teacher log-probs must be <= 0")


def token_objective(
    a: torch.Tensor, entropy: torch.Tensor, b: torch.Tensor | None, batch: RowBatch, config: ObjectiveConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """obj_t of SPEC section 4 as a function of a_t and H_t (both may carry gradient).

    ``b`` is the teacher log-prob (None: no SDAR term). Returns obj_t and the detached per-token
    terms ``gap, gate, ratio, clipped, kl`` (zeros where a term is absent).
    """
    zero = torch.zeros_like(a.detach())
    objective = zero.clone()
    terms = dict(gap=zero, gate=zero, ratio=zero, clipped=zero, kl=zero)

    if b is not None:
        gap = (b - a).detach()  # D_t
        gate = gate_value(config.gate, config.beta, gap, entropy.detach()).detach()  # g_t
        if config.objective == "sdar":
            sdar_term = gate * (b - a)  # l_t = g (b - a)
        else:
            sdar_term = -(gate * gap) * a  # l_t = -sg(g D) a
        objective = objective + config.sdar_coef * sdar_term
        terms.update(gap=gap, gate=gate)

    if batch.advantages is not None:
        adv = batch.advantages.to(a.dtype)
        ratio = torch.exp(torch.clamp(a - batch.old_logprobs.to(a.dtype), -20, 20))  # rho_t
        pg_unclipped = -adv * ratio
        pg_clipped = -adv * torch.clamp(ratio, 1 - config.clip_low, 1 + config.clip_high)
        pg = torch.maximum(pg_unclipped, pg_clipped)
        clipped = pg_clipped > pg_unclipped
        if config.dual_clip is not None:
            pg_dual = -adv * config.dual_clip
            dual_active = (adv < 0) & (pg_dual < pg)
            pg = torch.where(dual_active, pg_dual, pg)
            clipped = clipped | dual_active
        objective = objective + pg
        terms.update(ratio=ratio.detach(), clipped=clipped.to(a.dtype))

    if batch.ref_logprobs is not None and config.kl_coef != 0:
        k = torch.clamp(batch.ref_logprobs.to(a.dtype) - a, -20, 20)
        kl = torch.clamp(torch.exp(k) - k - 1, -10, 10)  # k3, "low_var_kl"
        objective = objective + config.kl_coef * kl
        terms.update(kl=kl.detach())

    if config.entropy_coef != 0:
        objective = objective - config.entropy_coef * entropy
    return objective, terms


def row_weights(batch: RowBatch, config: ObjectiveConfig, dtype: torch.dtype) -> torch.Tensor:
    """m_t: the row weights (1 without a mask) with ``ignore_index`` rows set to 0."""
    n_rows = batch.targets.shape[0]
    weight = torch.ones(n_rows, dtype=dtype, device=batch.targets.device)
    if batch.weights is not None:
        weight = batch.weights.to(dtype)
    return torch.where(batch.targets == config.ignore_index, torch.zeros_like(weight), weight)


def finish_rows(a, entropy, b, weight, row_max, log_sum, batch: RowBatch, config: ObjectiveConfig):
    """From the per-row a_t, H_t, b_t and m_t to the four outputs every backend returns.

    ``a`` and ``entropy`` may carry gradient; the coefficients c_t = -d(m obj)/da and
    e_t = d(m obj)/dH that the fused kernels save for their backward are derived by autograd of
    the same :func:`token_objective`. Returns ``(loss_sum, weight_sum, row_loss, stats)``.
    """
    included = weight != 0
    zero = torch.zeros_like(weight)
    objective, terms = token_objective(a, entropy, b, batch, config)
    row_loss = torch.where(included, weight * objective, zero)

    with torch.enable_grad():
        a_leaf = a.detach().requires_grad_(True)
        entropy_leaf = entropy.detach().requires_grad_(True)
        leaf_objective, _ = token_objective(a_leaf, entropy_leaf, b, batch, config)
        da, dh = torch.autograd.grad(
            (weight * leaf_objective).sum(), [a_leaf, entropy_leaf], allow_unused=True, materialize_grads=True
        )

    def masked(x: torch.Tensor | None) -> torch.Tensor:
        return zero if x is None else torch.where(included, x.detach().to(weight.dtype), zero)

    stats = torch.stack(
        [
            masked(a),
            masked(b),
            masked(terms["gap"]),
            masked(terms["gate"]),
            masked(entropy),
            masked(terms["ratio"]),
            masked(terms["clipped"]),
            masked(terms["kl"]),
            masked(weight),
            masked(-da),
            masked(dh),
            masked(row_max),
            masked(log_sum),
        ]
    )
    assert stats.shape[0] == NUM_STATS
    return row_loss.sum(), masked(weight).sum(), row_loss, stats


def objective_rows(batch: RowBatch, config: ObjectiveConfig) -> tuple[torch.Tensor, ...]:
    """Per-token objective over N rows, reduced like the fused kernels reduce it.

    Returns ``(loss_sum, weight_sum, row_loss [N], stats [NUM_STATS, N])``: ``row_loss[t] = m_t
    obj_t`` carries the gradient; ``stats`` is detached (row layout in ``_layout``), with zeros in
    excluded rows.
    """
    z = batch.student_logits
    compute = torch.float64 if z.dtype == torch.float64 else torch.float32
    check_row_values(batch, z.shape[1], config.ignore_index)

    # Excluded rows (weight 0) are zeroed before any math so that whatever they hold (padding,
    # NaN) reaches neither the loss nor the gradient.
    weight = row_weights(batch, config, compute)
    included = weight != 0
    targets = torch.where(included, batch.targets, torch.zeros_like(batch.targets))

    student = row_log_softmax(z.to(compute), targets, included, config.temperature)
    _check_finite_rows(student, included, "student_logits")
    needs_entropy_grad = config.entropy_coef != 0 and torch.is_grad_enabled()
    with torch.set_grad_enabled(needs_entropy_grad):
        entropy = entropy_from_logprobs(student.logprobs)  # H_t

    b = None
    if batch.has_teacher and config.sdar_coef != 0:  # b_t, never differentiated
        if batch.teacher_logits is not None:
            with torch.no_grad():
                teacher = row_log_softmax(
                    batch.teacher_logits.to(compute), targets, included, config.teacher_temperature
                )
            _check_finite_rows(teacher, included, "teacher logits")
            b = teacher.sampled
            del teacher
        else:
            b = batch.teacher_logprobs.detach().to(compute)

    return finish_rows(student.sampled, entropy, b, weight, student.row_max, student.log_sum, batch, config)
