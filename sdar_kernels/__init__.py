"""sdar_kernels: fused loss ops for Self-Distilled Agentic Reinforcement Learning.

The math contract is SPEC.md (shipped in the repository as docs/SPEC.md). Public API:

- :func:`sdar_loss` / :class:`SDARLoss`: the gated SDAR auxiliary loss in one fused pass.
- :func:`grpo_sdar_loss`: GRPO clip + KL + entropy + lambda * SDAR in one fused pass.
- :func:`fused_linear_sdar_loss`, :func:`fused_linear_grpo_sdar_loss`: the same from hidden states
  and the LM head, never holding an [N, V] logits tensor.
- :mod:`sdar_kernels.parallel`: vocabulary-parallel versions over ``torch.distributed``.
- :func:`available_backends`, :func:`native_available`, :func:`cpu_capability`.
"""

from ._backends import available_backends
from ._native import available as native_available
from ._native import cpu_capability, max_cpu_capability, set_cpu_capability
from .fused_linear import fused_linear_grpo_sdar_loss, fused_linear_sdar_loss
from .losses import GRPOStats, SDARLoss, SDARStats, grpo_sdar_loss, sdar_loss

__all__ = [
    "GRPOStats",
    "SDARLoss",
    "SDARStats",
    "available_backends",
    "cpu_capability",
    "fused_linear_grpo_sdar_loss",
    "fused_linear_sdar_loss",
    "grpo_sdar_loss",
    "max_cpu_capability",
    "native_available",
    "sdar_loss",
    "set_cpu_capability",
]

__version__ = "0.1.0"
