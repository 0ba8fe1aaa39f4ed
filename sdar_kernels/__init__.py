"""sdar_kernels: fused loss ops for Self-Distilled Agentic Reinforcement Learning.

The math contract is SPEC.md (shipped in the repository as docs/SPEC.md). Public API:

- :func:`sdar_loss` / :class:`SDARLoss`: the gated SDAR auxiliary loss in one fused pass.
- :func:`available_backends`, :func:`native_available`, :func:`cpu_capability`.
"""

from ._backends import available_backends
from ._native import available as native_available
from ._native import cpu_capability, max_cpu_capability, set_cpu_capability
from .losses import SDARLoss, SDARStats, sdar_loss

__all__ = [
    "SDARLoss",
    "SDARStats",
    "available_backends",
    "cpu_capability",
    "max_cpu_capability",
    "native_available",
    "sdar_loss",
    "set_cpu_capability",
]

__version__ = "0.1.0"
