"""A float64 evaluation of SPEC.md, independent of the library: the oracle every backend is held to.

Written separately from sdar_kernels/reference.py on purpose: values row by row from the SPEC
formulas, the gradient from SPEC's closed form
    dL/dz_tv = scale_t * (c_t (p_tv - [v == y_t]) - e_t p_tv (log p_tv + H_t)) / tau
with c_t = -d(m_t obj_t)/da_t taken by autograd of obj_t as a scalar function of a_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OracleResult:
    loss_sum: torch.Tensor
    weight_sum: torch.Tensor
    row_loss: torch.Tensor  # [N]
    stats: dict  # name -> [N]
    probs: torch.Tensor  # [N, V]
    logprobs: torch.Tensor  # [N, V]
    targets: torch.Tensor
    coef_logprob: torch.Tensor  # c_t
    coef_entropy: torch.Tensor  # e_t
    temperature: float

    def grad(self, upstream_sum: float | torch.Tensor = 0.0, upstream_rows: torch.Tensor | None = None):
        """dL/dz for upstream gradients of the summed loss and of the per-row losses."""
        scale = torch.as_tensor(upstream_sum, dtype=torch.float64).expand(self.row_loss.shape).clone()
        if upstream_rows is not None:
            scale = scale + upstream_rows.double()
        onehot = torch.zeros_like(self.probs)
        rows = torch.arange(len(self.targets))
        onehot[rows, self.targets] = 1.0
        logp = torch.where(self.probs > 0, self.logprobs, torch.zeros_like(self.logprobs))
        c = (self.coef_logprob * scale)[:, None]
        e = (self.coef_entropy * scale)[:, None]
        h = self.stats["entropy"][:, None]
        grad = (c * (self.probs - onehot) - e * self.probs * (logp + h)) / self.temperature
        return torch.where(self.stats["weight"][:, None] != 0, grad, torch.zeros_like(grad))


def _sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def oracle(
    student_logits,
    targets,
    *,
    teacher_logits=None,
    teacher_logprobs=None,
    weights=None,
    advantages=None,
    old_logprobs=None,
    ref_logprobs=None,
    temperature=1.0,
    teacher_temperature=None,
    beta=5.0,
    gate="gap",
    objective="sdar",
    sdar_coef=1.0,
    clip_low=0.2,
    clip_high=0.2,
    dual_clip=3.0,
    kl_coef=0.0,
    entropy_coef=0.0,
    ignore_index=-100,
) -> OracleResult:
    """SPEC sections 2-4 in float64 on [N, V] inputs (any float dtype, upcast exactly)."""
    teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
    z = student_logits.detach().double().cpu()
    y = targets.cpu().long()
    n, _v = z.shape
    m = torch.ones(n, dtype=torch.float64) if weights is None else weights.detach().double().cpu().clone()
    m[y == ignore_index] = 0.0
    keep = m != 0
    y_safe = torch.where(keep, y, torch.zeros_like(y))

    x = torch.where(keep[:, None], z / temperature, torch.zeros_like(z))
    lse = torch.logsumexp(x, dim=1)
    logp = x - lse[:, None]
    p = torch.exp(logp)
    rows = torch.arange(n)
    a = logp[rows, y_safe]
    H = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(1)

    has_teacher = (teacher_logits is not None or teacher_logprobs is not None) and sdar_coef != 0
    b = torch.zeros(n, dtype=torch.float64)
    if has_teacher:
        if teacher_logits is not None:
            xt = torch.where(keep[:, None], teacher_logits.detach().double().cpu() / teacher_temperature, 0.0)
            b = (xt - torch.logsumexp(xt, dim=1)[:, None])[rows, y_safe]
        else:
            b = teacher_logprobs.detach().double().cpu()

    D = b - a
    if gate == "gap":
        g = _sigmoid(beta * D)
    elif gate == "entropy":
        g = _sigmoid(beta * H)
    elif gate == "soft_or":
        g = _sigmoid(beta * (1 - (1 - H) * (1 - D)))
    else:
        g = torch.ones(n, dtype=torch.float64)
    if not has_teacher:
        D = torch.zeros(n, dtype=torch.float64)
        g = torch.zeros(n, dtype=torch.float64)

    A = None if advantages is None else advantages.detach().double().cpu()
    o = None if old_logprobs is None else old_logprobs.detach().double().cpu()
    r = None if ref_logprobs is None else ref_logprobs.detach().double().cpu()

    def objective_of(a_var):
        """obj_t as a function of a_t, with D_t and g_t held at their values (stop-gradient)."""
        total = torch.zeros(n, dtype=torch.float64)
        extras = {}
        if has_teacher:
            l = g * (b - a_var) if objective == "sdar" else -(g * D) * a_var
            total = total + sdar_coef * l
        if A is not None:
            rho = torch.exp(torch.clamp(a_var - o, -20, 20))
            pg1 = -A * rho
            pg2 = -A * torch.clamp(rho, 1 - clip_low, 1 + clip_high)
            pg = torch.maximum(pg1, pg2)
            clipped = pg2 > pg1
            if dual_clip is not None:
                pg3 = -A * dual_clip
                dual = (A < 0) & (pg3 < pg)
                pg = torch.where(dual, pg3, pg)
                clipped = clipped | dual
            total = total + pg
            extras.update(ratio=rho.detach(), clipped=clipped.double())
        if r is not None and kl_coef != 0:
            k = torch.clamp(r - a_var, -20, 20)
            kl = torch.clamp(torch.exp(k) - k - 1, -10, 10)
            total = total + kl_coef * kl
            extras.update(kl=kl.detach())
        total = total - entropy_coef * H
        return total, extras

    a_var = a.clone().requires_grad_(True)
    obj, extras = objective_of(a_var)
    (dobj_da,) = torch.autograd.grad((m * obj).sum(), a_var, allow_unused=True, materialize_grads=True)
    obj = obj.detach()

    zero = torch.zeros(n, dtype=torch.float64)

    def masked(t):
        return torch.where(keep, t, zero)

    row_loss = masked(m * obj)
    stats = dict(
        student_logprobs=masked(a),
        teacher_logprobs=masked(b),
        gap=masked(D),
        gate=masked(g),
        entropy=masked(H),
        weight=masked(m),
        ratio=masked(extras.get("ratio", zero)),
        clipped=masked(extras.get("clipped", zero)),
        kl=masked(extras.get("kl", zero)),
    )
    return OracleResult(
        loss_sum=row_loss.sum(),
        weight_sum=masked(m).sum(),
        row_loss=row_loss,
        stats=stats,
        probs=p,
        logprobs=logp,
        targets=y_safe,
        coef_logprob=masked(-dobj_da),
        coef_entropy=masked(-entropy_coef * m),
        temperature=temperature,
    )
