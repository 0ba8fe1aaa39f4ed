"""SDAR in verl: a policy loss registered as ``"sdar"`` (``actor.policy_loss.loss_mode=sdar``).

verl's policy losses see per-token log-probs only, so this is the log-prob form of the objective,
:func:`sdar_kernels.token_objective.grpo_sdar_token_loss`: PPO's clipped surrogate with verl's
``clip_ratio`` / ``clip_ratio_low`` / ``clip_ratio_high`` and dual clip ``clip_ratio_c``, plus
``sdar_coef`` times the gated SDAR term. verl adds its own entropy bonus and KL loss around it.
The aggregation is verl's own ``core_algos.agg_loss`` with ``config.loss_agg_mode`` and
``config.global_batch_info``, so every ``loss_agg_mode`` and data-parallel normalisation behaves as
in verl's built-in losses. ``rollout_is_weights`` (when verl passes them) weight every term (the
SDAR term is estimated from the same rollout samples).

Teacher log-probs: the batch key :data:`TEACHER_KEY` (``"teacher_log_prob"``, [B, T_response],
the same layout as ``old_log_probs``), produced by a no-grad pass of the same model over the
teacher prompt (privileged skills + the prompt) followed by the response tokens. verl's policy-loss
call does not pass the batch, so the teacher reaches the loss in one of two ways:

- :func:`sdar_ppo_loss` (the batch-level loss for a worker's ``set_loss_fn``) reads
  ``data["teacher_log_prob"]`` and runs verl's ``ppo_loss`` with it bound (:func:`teacher_log_probs`);
- a caller of the policy loss passes ``teacher_log_prob=`` itself.

Recorded interface (verl 0.9.1 from PyPI, ``verl/trainer/ppo/core_algos.py`` and
``verl/workers/utils/losses.py``; verl is not a dependency, this module imports it lazily)::

    PolicyLossFn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                 config: ActorConfig | None = None, rollout_is_weights: Tensor | None = None)
        -> tuple[Tensor, dict[str, Any]]                  # all tensors [B, T_response]
    register_policy_loss(name) -> decorator;  get_policy_loss_fn(name) -> PolicyLossFn
    agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size=1, batch_num_tokens=None,
             global_batch_size=None, loss_scale_factor=None) -> Tensor
    ppo_loss(config: ActorConfig, model_output, data: TensorDict, dp_group=None)
        # calls get_policy_loss_fn(config.policy_loss.loss_mode)(old_log_prob=..., log_prob=...,
        #   advantages=..., response_mask=..., loss_agg_mode=..., config=..., rollout_is_weights=...)
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..token_objective import grpo_sdar_token_loss

TEACHER_KEY = "teacher_log_prob"
POLICY_LOSS_NAME = "sdar"

_bound_teacher: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "sdar_teacher_log_prob", default=None
)


def _verl_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"the SDAR verl adapter needs verl ({name} could not be imported): pip install verl"
        ) from error


@contextmanager
def teacher_log_probs(teacher_log_prob: torch.Tensor) -> Iterator[None]:
    """Binds the teacher log-probs [B, T_response] for the ``"sdar"`` policy loss calls inside."""
    token = _bound_teacher.set(teacher_log_prob)
    try:
        yield
    finally:
        _bound_teacher.reset(token)


def _option(config: Any, name: str, default: Any) -> Any:
    """``config.name`` for verl's dataclass configs and DictConfigs alike; ``default`` when unset/None."""
    value = getattr(config, name, None)
    if value is None and hasattr(config, "get"):
        value = config.get(name, None)
    return default if value is None else value


def make_sdar_policy_loss(
    *, sdar_coef: float = 0.01, beta: float = 5.0, gate: str = "gap", objective: str = "sdar"
) -> Callable[..., tuple[torch.Tensor, dict[str, Any]]]:
    """A verl policy loss (the recorded ``PolicyLossFn`` signature, plus ``teacher_log_prob=``) with
    the SDAR options fixed. Gates that need the entropy (``entropy``, ``soft_or``) are not available
    from log-probs alone."""
    if gate not in ("gap", "none"):
        raise ValueError(f"gate must be 'gap' or 'none' for the log-prob form; got {gate!r}")

    def sdar_policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
        *,
        teacher_log_prob: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """PPO clip + sdar_coef * SDAR from per-token log-probs [B, T]; returns (loss, metrics)."""
        if config is None:
            raise ValueError("config (verl's actor config: clip ratios, global_batch_info) is required")
        teacher = teacher_log_prob if teacher_log_prob is not None else _bound_teacher.get()
        if teacher is None and sdar_coef != 0:
            raise ValueError(
                f"no teacher log-probs: put them in the batch under {TEACHER_KEY!r} and use sdar_ppo_loss, "
                "or pass teacher_log_prob="
            )
        clip = _option(config, "clip_ratio", 0.2)
        mask = response_mask.bool()
        obj, terms = grpo_sdar_token_loss(
            log_prob,
            old_log_prob,
            advantages,
            teacher_log_prob=teacher,
            clip_low=_option(config, "clip_ratio_low", clip),
            clip_high=_option(config, "clip_ratio_high", clip),
            dual_clip=_option(config, "clip_ratio_c", 3.0),
            sdar_coef=sdar_coef,
            beta=beta,
            gate=gate,
            objective=objective,
        )
        if rollout_is_weights is not None:  # the rollout-correction weights act on every term
            obj = obj * rollout_is_weights.to(obj.dtype)
        agg_loss = _verl_module("verl.trainer.ppo.core_algos").agg_loss
        batch_info = dict(_option(config, "global_batch_info", {}) or {})
        loss = agg_loss(loss_mat=obj, loss_mask=mask, loss_agg_mode=loss_agg_mode, **batch_info)
        keep = mask.to(obj.dtype)
        count = keep.sum().clamp(min=1.0)

        def mean(values: torch.Tensor) -> float:
            return float((values.detach().to(obj.dtype) * keep).sum() / count)

        metrics = {
            "actor/pg_clipfrac": mean(terms["clipped"]),
            "actor/ppo_kl": mean(old_log_prob.float() - log_prob.detach().float()),
            "actor/sdar_loss": mean(_sdar_term(terms, log_prob, objective)),
            "actor/sdar_gate_mean": mean(terms["gate"]),
            "actor/sdar_gap_mean": mean(terms["gap"]),
        }
        return loss, metrics

    return sdar_policy_loss


def _sdar_term(terms: dict[str, torch.Tensor], log_prob: torch.Tensor, objective: str) -> torch.Tensor:
    """The value of the SDAR term l_t alone (detached), from the gate and gap: g D, or -g D a for "pg"."""
    value = terms["gate"] * terms["gap"]
    return value if objective == "sdar" else -value * log_prob.detach().to(value.dtype)


def register_sdar_policy_loss(
    name: str = POLICY_LOSS_NAME, **options: Any
) -> Callable[..., tuple[torch.Tensor, dict[str, Any]]]:
    """Registers the SDAR policy loss in verl's registry under ``name`` (default ``"sdar"``) and
    returns it. ``options``: ``sdar_coef``, ``beta``, ``gate``, ``objective`` (see
    :func:`make_sdar_policy_loss`). Imports verl (ImportError with a hint when it is missing)."""
    core_algos = _verl_module("verl.trainer.ppo.core_algos")
    loss_fn = make_sdar_policy_loss(**options)
    core_algos.register_policy_loss(name)(loss_fn)
    return loss_fn


def _padded(value: Any) -> torch.Tensor:
    """A [B, T] tensor from a padded tensor or a nested (jagged) one (padded with 0)."""
    if isinstance(value, torch.Tensor) and value.is_nested:
        return value.to_padded_tensor(0.0)
    return value


def sdar_ppo_loss(config: Any, model_output: Any, data: Any, dp_group: Any = None):
    """verl's ``ppo_loss(config, model_output, data, dp_group)`` with ``data["teacher_log_prob"]``
    bound for the ``"sdar"`` policy loss: set it as the actor's loss (``set_loss_fn``) with
    ``config.policy_loss.loss_mode = "sdar"``."""
    if TEACHER_KEY not in data:
        raise KeyError(f"the batch has no {TEACHER_KEY!r} (teacher log-probs of the response tokens)")
    ppo_loss = _verl_module("verl.workers.utils.losses").ppo_loss
    with teacher_log_probs(_padded(data[TEACHER_KEY])):
        return ppo_loss(config, model_output, data, dp_group)
