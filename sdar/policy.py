"""The policy model's side of a step: packing rows into micro-batches, scoring response tokens
without gradient (old / reference / teacher log-probs), and the training loss, computed by
``sdar_kernels.fused_linear_grpo_sdar_loss`` on the final hidden states and the LM head so that no
[N, V] logits tensor is ever held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sdar_kernels import fused_linear_grpo_sdar_loss

IGNORE = -100


def decoder_and_head(model):
    """(the transformer body returning hidden states, the LM head Linear) of a HF causal LM."""
    body = getattr(model, "model", None)
    if body is None:
        body = model.get_decoder()
    return body, model.get_output_embeddings()


@dataclass
class PackedBatch:
    """Right-padded sequences prompt + response; ``targets[:, t]`` is the token at t + 1 where it is
    a response token, else IGNORE. ``positions[i]`` are row i's response positions in ``targets``."""

    input_ids: torch.Tensor  # [b, L] int64
    attention_mask: torch.Tensor  # [b, L] int64
    targets: torch.Tensor  # [b, L - 1] int64
    positions: list[torch.Tensor]  # per row, [response_len] int64


def pack(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> PackedBatch:
    """Packs (prompt ids, response ids) pairs."""
    length = max(len(p) + len(r) for p, r in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    targets = torch.full((len(sequences), length - 1), IGNORE, dtype=torch.long)
    positions = []
    for i, (prompt, response) in enumerate(sequences):
        ids = list(prompt) + list(response)
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        where = torch.arange(len(prompt) - 1, len(ids) - 1)
        targets[i, where] = torch.tensor(list(response), dtype=torch.long)
        positions.append(where)
    return PackedBatch(input_ids, attention_mask, targets, positions)


def micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Groups row indices (sorted by length, so little padding) so that rows x longest <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, lengths[index])
        if current and longest_if_added * (len(current) + 1) > token_budget:
            batches.append(current)
            current, longest_if_added = [], lengths[index]
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def hidden_states(model, batch: PackedBatch) -> torch.Tensor:
    """Final hidden states [b, L, D] of the packed sequences.

    An FSDP2-sharded model (``sdar/distributed.py``) runs through its root module, so that the root's
    parameters (embeddings, final norm, LM head) are gathered, and stay gathered for the loss that
    reads the LM head weight next; its logits are kept for one position only.
    """
    body, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    if _is_sharded(model):
        out = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return out.hidden_states[-1]
    out = body(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@torch.no_grad()
def response_logprobs(
    model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    token_budget: int,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """log p(response token | prefix) for every (prompt, response) pair, fp32, without gradient.

    Only the response positions go through the LM head, so the cost is one body forward per row.
    """
    _, head = decoder_and_head(model)
    results: list[torch.Tensor | None] = [None] * len(sequences)
    lengths = [len(p) + len(r) for p, r in sequences]
    for indices in micro_batches(lengths, token_budget):
        batch = pack([sequences[i] for i in indices], pad_id)
        hidden = hidden_states(model, batch)
        for row, index in enumerate(indices):
            where = batch.positions[row].to(hidden.device)
            logits = head(hidden[row, where]).float() / temperature
            tokens = batch.targets[row, batch.positions[row]].to(hidden.device)
            results[index] = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).cpu()
    return results


def scatter_rows(values: Sequence[torch.Tensor], batch: PackedBatch) -> torch.Tensor:
    """Per-row response values placed at their positions of ``batch.targets`` ([b, L - 1], 0 elsewhere)."""
    out = torch.zeros(batch.targets.shape, dtype=torch.float32)
    for row, value in enumerate(values):
        out[row, batch.positions[row]] = torch.as_tensor(value, dtype=torch.float32)
    return out


@dataclass
class LossTerms:
    """Per-token inputs of one micro-batch, aligned with ``batch.targets`` ([b, L - 1] fp32)."""

    advantages: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    teacher_logprobs: torch.Tensor | None


def policy_loss(
    model,
    batch: PackedBatch,
    terms: LossTerms,
    *,
    normalizer: float,
    sdar_coef: float,
    beta: float,
    gate: str,
    objective: str,
    kl_coef: float,
    entropy_coef: float,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    temperature: float,
    skill_sd_coef: float = 0.0,
):
    """The step's objective on one micro-batch (SPEC section 4 via the fused-linear op), plus the
    importance-weighted k3 term to the teacher for ``skill_sd``. Returns (loss, GRPOStats)."""
    hidden = hidden_states(model, batch)
    _, head = decoder_and_head(model)
    device = hidden.device
    targets = batch.targets.to(device)

    def on_device(x):
        return None if x is None else x.to(device)

    loss, stats = fused_linear_grpo_sdar_loss(
        hidden[:, :-1],
        head.weight,
        targets,
        on_device(terms.advantages),
        on_device(terms.old_logprobs),
        lm_head_bias=head.bias,
        teacher=on_device(terms.teacher_logprobs) if sdar_coef != 0 else None,
        ref_logprobs=on_device(terms.ref_logprobs) if kl_coef != 0 else None,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        kl_coef=kl_coef,
        entropy_coef=entropy_coef,
        sdar_coef=sdar_coef,
        beta=beta,
        gate=gate,
        objective=objective,
        temperature=temperature,
        normalizer=normalizer,
        return_stats=True,
    )
    if skill_sd_coef != 0:
        # 0.001 * sg(rho) * k3(teacher || student): the op's KL slot with the teacher as reference,
        # token weights sg(rho) from the first pass, no policy-gradient term (advantages 0)
        importance = torch.where(targets != IGNORE, stats.ratio.detach(), torch.zeros_like(stats.ratio))
        loss = loss + fused_linear_grpo_sdar_loss(
            hidden[:, :-1],
            head.weight,
            targets,
            torch.zeros_like(on_device(terms.advantages)),
            on_device(terms.old_logprobs),
            lm_head_bias=head.bias,
            ref_logprobs=on_device(terms.teacher_logprobs),
            mask=importance,
            kl_coef=skill_sd_coef,
            entropy_coef=0.0,
            sdar_coef=0.0,
            dual_clip=None,
            temperature=temperature,
            normalizer=normalizer,
        )
    return loss, stats
