"""SDAR in TRL: ``SDARGRPOTrainer``, TRL's ``GRPOTrainer`` whose loss is :func:`sdar_kernels.grpo_sdar_loss`.

What changes with respect to ``trl.GRPOTrainer``:

1. After TRL generates and scores a batch, the *teacher* scores it: the same model, without
   gradient, with the same weights the completions were sampled with, reads
   ``teacher_prompt_fn(prompt)`` (e.g. the prompt with retrieved skills prepended) followed by the
   student's own completion tokens. The per-token teacher log-probs travel with the batch as
   ``inputs["teacher_per_token_logps"]`` ([B, T] fp32, T = completion length).
2. The loss is SPEC section 4 in one fused pass over the completion logits
   (:meth:`SDARGRPOTrainer.sdar_objective`): the clipped surrogate with ``epsilon`` /
   ``epsilon_high`` (and ``dual_clip``), TRL's ``beta`` as the k3 KL coefficient to the reference
   model, TRL's ``entropy_coef`` as the entropy bonus, plus ``sdar_coef`` times the gated SDAR term.
   TRL's ``loss_type`` picks the normalisation: ``"dapo"`` (TRL's default: token sum over the
   global token count), ``"bnpo"`` (local token mean), ``"grpo"`` (mean over sequences of the
   per-sequence token mean) and ``"dr_grpo"`` (token sum over B * ``max_completion_length``), all
   with the gradient-accumulation scaling TRL applies. Every term shares that normalisation.

Logged metrics (besides TRL's reward metrics): ``sdar/loss`` (the SDAR term alone, without
``sdar_coef``, under the same normalisation), ``sdar/gate_mean``, ``sdar/gap_mean``, ``entropy``,
``kl`` and ``clip_ratio/region_mean``.

TRL options with no counterpart in the fused objective are refused at construction with a message
naming the option: ``importance_sampling_level="sequence"``, ``top_entropy_quantile < 1``,
``off_policy_mask_threshold``, ``delta``, adaptive entropy, vLLM importance-sampling correction,
MoE router auxiliary loss, and loss types other than the four above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from .._validation import check_common_options
from ..losses import GRPOStats, grpo_sdar_loss

SUPPORTED_LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
SDAR_OPTIONS = ("sdar_coef", "sdar_beta", "sdar_gate", "sdar_objective", "dual_clip")


@dataclass
class SDARGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` plus the SDAR term's options (SPEC sections 3-4).

    ``beta`` stays TRL's KL coefficient; the gate sharpness is ``sdar_beta``.
    """

    sdar_coef: float = field(default=0.01, metadata={"help": "lambda: weight of the SDAR term."})
    sdar_beta: float = field(default=5.0, metadata={"help": "gate sharpness (paper: 5)."})
    sdar_gate: str = field(default="gap", metadata={"help": "gap | entropy | soft_or | none."})
    sdar_objective: str = field(default="sdar", metadata={"help": "sdar (paper) | pg."})
    dual_clip: float | None = field(
        default=None, metadata={"help": "dual-clip constant c for A < 0 (None: off, as in TRL)."}
    )


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pads token id lists: returns (ids [B, L] int64, mask [B, L] int64)."""
    length = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), length), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        if sequence:
            start = length - len(sequence)
            ids[row, start:] = torch.as_tensor(list(sequence), dtype=torch.long, device=device)
            mask[row, start:] = 1
    return ids, mask


def completion_logits(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Logits predicting each completion token: [B, T, V] (model dtype) for completion [B, T].

    Prompts are left-padded ([B, P]), completions right-padded ([B, T]); row t of the result is the
    model's output at the position just before completion token t.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    length = completion_ids.size(1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=length + 1).logits
    return logits[:, :-1]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) at ``tokens``: logits [B, T, V], tokens [B, T] -> [B, T] fp32."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def score_completions(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Per-token log-probs [B, T] fp32 of the completions after the prompts, without gradient.

    ``batch_size`` rows at a time (default: all) bounds the [rows, T, V] logits held at once.
    """
    rows = completion_ids.size(0)
    step = rows if batch_size is None else max(int(batch_size), 1)
    chunks = []
    for start in range(0, rows, step):
        part = slice(start, start + step)
        logits = completion_logits(
            model, prompt_ids[part], prompt_mask[part], completion_ids[part], completion_mask[part]
        )
        chunks.append(token_logprobs(logits, completion_ids[part], temperature))
    return torch.cat(chunks, dim=0)


class SDARGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` optimising GRPO + lambda * SDAR (see the module docstring).

    Args:
        *args, **kwargs: as ``trl.GRPOTrainer`` (``args`` should be an :class:`SDARGRPOConfig`; a plain
            ``GRPOConfig`` gets the SDAR defaults).
        teacher_prompt_fn: maps one dataset prompt (a string, or a list of chat messages for
            conversational data) to the teacher's privileged prompt of the same kind, e.g.
            ``lambda p: skills_for(p) + p``. Required.
    """

    def __init__(self, *args: Any, teacher_prompt_fn: Callable[[Any], Any], **kwargs: Any) -> None:
        if not callable(teacher_prompt_fn):
            raise TypeError(f"teacher_prompt_fn must be callable; got {type(teacher_prompt_fn).__name__}")
        super().__init__(*args, **kwargs)
        self.teacher_prompt_fn = teacher_prompt_fn
        defaults = SDARGRPOConfig.__dataclass_fields__
        self.sdar_options = {name: getattr(self.args, name, defaults[name].default) for name in SDAR_OPTIONS}
        self._check_supported()
        options = self.sdar_options
        check_common_options(
            beta=options["sdar_beta"],
            gate=options["sdar_gate"],
            objective=options["sdar_objective"],
            temperature=self.temperature,
            teacher_temperature=None,
            ignore_index=-100,
            normalizer=None,
            reduction="mean",
            backend="auto",
        )

    def _check_supported(self) -> None:
        refusals = {
            "loss_type": self.loss_type not in SUPPORTED_LOSS_TYPES,
            "importance_sampling_level": self.importance_sampling_level != "token",
            "top_entropy_quantile": self.top_entropy_quantile < 1.0,
            "off_policy_mask_threshold": self.off_policy_mask_threshold is not None,
            "delta": getattr(self.args, "delta", None) is not None,
            "use_adaptive_entropy": bool(getattr(self, "use_adaptive_entropy", False)),
            "vllm_importance_sampling_correction": bool(
                self.use_vllm and self.vllm_importance_sampling_correction
            ),
            "router_aux_loss_coef": bool(getattr(self, "aux_loss_enabled", False)),
        }
        for option, refused in refusals.items():
            if refused:
                value = getattr(self.args, option, None)
                raise ValueError(
                    f"SDARGRPOTrainer does not support {option}={value!r}; supported loss types: "
                    f"{', '.join(SUPPORTED_LOSS_TYPES)}, token-level importance sampling, no entropy "
                    "masking, no off-policy mask, no two-sided delta clip, static entropy bonus, no vLLM "
                    "importance-sampling correction, no MoE auxiliary loss"
                )

    # ----- the teacher pass -------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        prompts = [example["prompt"] for example in inputs]
        output["teacher_per_token_logps"] = self.teacher_logprobs(prompts, output)
        return output

    def teacher_logprobs(self, prompts: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        """The teacher's log-probs [B, T] fp32 of ``batch["completion_ids"]`` after
        ``teacher_prompt_fn(prompt)``: the current model, no gradient, TRL's sampling temperature."""
        teacher_prompts = [self.teacher_prompt_fn(prompt) for prompt in prompts]
        teacher_ids, _, _ = self._tokenize_prompts(teacher_prompts)
        device = batch["completion_ids"].device
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)  # processors wrap one
        pad_id = tokenizer.pad_token_id
        teacher_prompt_ids, teacher_prompt_mask = left_pad([list(ids) for ids in teacher_ids], pad_id, device)
        model = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            return score_completions(
                model,
                teacher_prompt_ids,
                teacher_prompt_mask,
                batch["completion_ids"],
                batch["completion_mask"],
                temperature=self.temperature,
                batch_size=self.args.per_device_train_batch_size,
            )

    # ----- the loss ---------------------------------------------------------------------------------

    def token_weights_and_normalizer(
        self, mask: torch.Tensor, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Per-token weights [B, T] fp32 and the divisor that reproduce TRL's ``loss_type`` reduction."""
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        weights = mask.float()
        if self.loss_type == "dapo":
            normalizer = inputs["num_items_in_batch"].float().clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            return weights, normalizer
        if self.loss_type == "bnpo":
            return weights, weights.sum().clamp(min=1.0) * accumulation
        if self.loss_type == "grpo":
            per_sequence = weights / weights.sum(-1, keepdim=True).clamp(min=1.0)
            return per_sequence / weights.size(0), float(accumulation)
        # dr_grpo
        return weights, float(weights.size(0) * self.max_completion_length * accumulation)

    def sdar_objective(
        self,
        student_logits: torch.Tensor,
        completion_ids: torch.Tensor,
        advantages: torch.Tensor,
        old_logprobs: torch.Tensor,
        teacher_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor | None,
        weights: torch.Tensor,
        normalizer: torch.Tensor | float,
    ) -> tuple[torch.Tensor, GRPOStats]:
        """SPEC section 4 on one micro-batch: :func:`sdar_kernels.grpo_sdar_loss` with TRL's coefficients.

        Args:
            student_logits: [B, T, V] logits of the completion tokens (gets the gradient).
            completion_ids: [B, T] int64 sampled tokens.
            advantages: [B, T] fp32; old_logprobs, teacher_logprobs, ref_logprobs (or None): [B, T] fp32.
            weights: [B, T] fp32 token weights (0 at padding); normalizer: divisor of the weighted sum.

        Returns:
            (loss 0-d fp32, :class:`sdar_kernels.GRPOStats`).
        """
        options = self.sdar_options
        return grpo_sdar_loss(
            student_logits,
            completion_ids,
            advantages,
            old_logprobs,
            teacher=teacher_logprobs,
            ref_logprobs=ref_logprobs,
            mask=weights,
            clip_low=self.epsilon_low,
            clip_high=self.epsilon_high,
            dual_clip=options["dual_clip"],
            kl_coef=self.beta,
            entropy_coef=self.entropy_coef,
            sdar_coef=options["sdar_coef"],
            beta=options["sdar_beta"],
            gate=options["sdar_gate"],
            objective=options["sdar_objective"],
            temperature=self.temperature,
            normalizer=normalizer,
            return_stats=True,
        )

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        with self.accelerator.autocast():
            logits = completion_logits(
                model, inputs["prompt_ids"], inputs["prompt_mask"], completion_ids, completion_mask
            )
        old = inputs.get("old_per_token_logps")
        if old is None:  # on-policy: TRL skips the old pass, the ratio is 1
            old = token_logprobs(logits.detach(), completion_ids, self.temperature)
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        advantages = advantages.expand_as(completion_ids).float()
        weights, normalizer = self.token_weights_and_normalizer(mask, inputs)
        loss, stats = self.sdar_objective(
            logits,
            completion_ids,
            advantages,
            old,
            inputs["teacher_per_token_logps"],
            inputs.get("ref_per_token_logps") if self.beta != 0.0 else None,
            weights,
            normalizer,
        )
        self._log_sdar_metrics(stats, mask, weights, normalizer)
        return loss

    def _log_sdar_metrics(self, stats: GRPOStats, mask, weights, normalizer) -> None:
        mode = "train" if self.model.training else "eval"
        keep = mask.float()

        def global_mean(values: torch.Tensor) -> float:
            totals = torch.stack([(values.float() * keep).sum(), keep.sum()]).detach()
            totals = self.accelerator.reduce(totals, reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        if self.sdar_options["sdar_objective"] == "sdar":
            term = stats.gate * (stats.teacher_logprobs - stats.student_logprobs)
        else:  # "pg": the loss value -g D a
            term = -stats.gate * stats.gap * stats.student_logprobs
        sdar_value = (term * weights).sum() / normalizer
        metrics = self._metrics[mode]
        metrics["sdar/loss"].append(self.accelerator.gather(sdar_value.detach().reshape(1)).mean().item())
        metrics["sdar/gate_mean"].append(global_mean(stats.gate))
        metrics["sdar/gap_mean"].append(global_mean(stats.gap))
        metrics["entropy"].append(global_mean(stats.entropy))
        metrics["clip_ratio/region_mean"].append(global_mean(stats.clipped))
        if self.beta != 0.0:
            metrics["kl"].append(global_mean(stats.kl))
