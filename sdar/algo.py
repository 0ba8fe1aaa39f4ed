"""Algorithms as presets of one objective, group-relative advantages and the per-token terms that
some presets add on top of the fused objective.

Every preset is GRPO's clipped surrogate (or not), plus the fused SDAR term with its own
coefficient, gate sharpness and form, optionally with skills in the student's prompt:

| preset     | GRPO | teacher term                                    | notes                         |
| ---------- | ---- | ----------------------------------------------- | ----------------------------- |
| grpo       | yes  | -                                               |                               |
| skill_grpo | yes  | -                                               | skills in the student prompt  |
| opsd       | no   | SDAR term alone (lambda 1, beta 5, gap gate)    | self-distillation only        |
| grpo_opsd  | yes  | lambda 0.01, beta 0 (g = 1/2 everywhere)        | the paper's GRPO+OPSD         |
| skill_sd   | yes  | 0.001 * sg(rho) * k3(teacher || student)        | importance-weighted k3        |
| rlsd       | yes  | per-token advantage reweighting by the gap      | lambda .5 -> 0 in 100 steps   |
| sdar       | yes  | lambda 0.01, beta 5, gap gate (SPEC section 3)  | the default                   |
| sdar_pg    | yes  | lambda 0.01, beta 5, objective "pg"             | gated reverse-KL PG           |

RLSD's reweighting, as implemented here: A'_t = A * clip(exp(lambda_k * sign(A) * D_t), 1 - c, 1 + c)
with D_t = b_t - o_t (teacher minus rollout log-prob, detached) and lambda_k decaying linearly: a
token the teacher endorses gets more of a positive advantage, a token it rejects more of a
negative one, by at most c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preset:
    name: str
    policy_gradient: bool = True
    sdar_coef: float = 0.0
    beta: float = 5.0
    gate: str = "gap"
    objective: str = "sdar"
    student_skills: bool = False
    skill_sd_coef: float = 0.0
    rlsd_coef: float = 0.0
    rlsd_decay_steps: int = 100
    rlsd_clip: float = 0.2

    @property
    def needs_teacher(self) -> bool:
        return self.sdar_coef != 0 or self.skill_sd_coef != 0 or self.rlsd_coef != 0


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("grpo"),
        Preset("skill_grpo", student_skills=True),
        Preset("opsd", policy_gradient=False, sdar_coef=1.0),
        Preset("grpo_opsd", sdar_coef=0.01, beta=0.0),
        Preset("skill_sd", skill_sd_coef=0.001),
        Preset("rlsd", rlsd_coef=0.5),
        Preset("sdar", sdar_coef=0.01),
        Preset("sdar_pg", sdar_coef=0.01, objective="pg"),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: (R - mean of the group) / (std of the group + eps) over all rows of a group.

    rewards: [R] float; groups: [R] int group ids. Returns [R] float32. The std is the population
    std (a group of identical rewards gets advantages 0).
    """
    rewards = rewards.double()
    advantages = torch.zeros_like(rewards)
    for group in torch.unique(groups):
        rows = groups == group
        values = rewards[rows]
        advantages[rows] = (values - values.mean()) / (values.std(unbiased=False) + eps)
    return advantages.float()


def rlsd_coefficient(preset: Preset, step: int) -> float:
    """lambda_k: ``rlsd_coef`` decaying linearly to 0 over ``rlsd_decay_steps`` steps."""
    if preset.rlsd_coef == 0:
        return 0.0
    return preset.rlsd_coef * max(0.0, 1.0 - step / preset.rlsd_decay_steps)


def rlsd_advantages(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    coef: float,
    clip: float,
) -> torch.Tensor:
    """Per-token advantages A'_t = A_t clip(exp(coef sign(A_t) (b_t - o_t)), 1 - clip, 1 + clip).

    All inputs [...] (same shape), detached; returns the same shape.
    """
    gap = (teacher_logprobs - old_logprobs).detach()
    weight = torch.exp(coef * torch.sign(advantages) * gap).clamp(1 - clip, 1 + clip)
    return advantages * weight


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 estimator exp(x) - x - 1 of a KL divergence, from per-token log-ratios x."""
    return torch.exp(log_ratio) - log_ratio - 1
