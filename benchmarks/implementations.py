"""The loss implementations the benchmarks compare, on the same inputs.

Two groups:

- ``logits``: the SDAR term from student logits z [N, V] (the only input with a gradient),
  teacher logits [N, V], sampled tokens y [N] and a float mask m [N]:
  ours per backend, eager PyTorch, the eager loss through ``torch.compile`` in 4/8/16 row chunks,
  and Liger-Kernel's cross-entropy for the two log-prob gathers (GPU only).
- ``linear``: the SDAR term from final hidden states h [N, D] and the LM head W [V, D] (both with
  gradients) and per-token teacher log-probs [N] (how the trainer calls it): ours
  (``fused_linear_sdar_loss``), eager (logits = h W^T, then the eager loss), Cut Cross-Entropy's
  torch implementation for the student log-probs plus the gate in PyTorch, a ``torch.compile``'d
  chunked version, and Liger-Kernel's fused linear cross-entropy (GPU only).

Every implementation returns the 0-d loss sum_t m_t g_t (b_t - a_t) / max(sum_t m_t, 1) with
g_t = sigmoid(beta * sg(b_t - a_t)) (SPEC section 3, gate "gap", objective "sdar").
An implementation that cannot run here carries the reason instead of a function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from baselines import eager_logprobs, eager_sdar_loss, gated_sum

from sdar_kernels import available_backends, fused_linear_sdar_loss, sdar_loss

BETA = 5.0
COMPILE_CHUNKS = (4, 8, 16)


@dataclass
class Implementation:
    name: str
    fn: Callable[..., torch.Tensor] | None  # None: not runnable here, see ``reason``
    reason: str = ""


def gated_term(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor):
    """sum_t m_t g_t (b_t - a_t) from per-token log-probs a (with grad) and b (detached), [N] each."""
    return gated_sum(student_logprobs, teacher_logprobs.detach(), mask, BETA)


def eager_logits(z, t, y, m):
    """What users write (``baselines.eager_sdar_loss``)."""
    return eager_sdar_loss(z, t, y, m, beta=BETA)


def _chunk_sum(z, t, y, m):
    a = eager_logprobs(z, y)
    b = eager_logprobs(t, y).detach()
    return gated_term(a, b, m)


_compiled_chunk_sum = None


def compiled_chunked_logits(chunks: int):
    """The eager loss through ``torch.compile`` (dynamic shapes, one graph for every chunk size),
    applied to ``chunks`` row blocks so that only one block's fp32 log-softmax is alive at a time."""

    def loss(z, t, y, m):
        global _compiled_chunk_sum
        if _compiled_chunk_sum is None:
            _compiled_chunk_sum = torch.compile(_chunk_sum, dynamic=True)
        parts = zip(z.chunk(chunks), t.chunk(chunks), y.chunk(chunks), m.chunk(chunks), strict=True)
        total = sum(_compiled_chunk_sum(*part) for part in parts)
        return total / m.sum().clamp(min=1.0)

    return loss


def _liger_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "not runnable on CPU: Liger-Kernel's ops are Triton kernels launched on CUDA tensors"
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return "liger-kernel is not installed (pip install liger-kernel)"
    return None


def liger_logits(z, t, y, m):
    """Liger's cross-entropy (reduction "none") for a = -CE(z, y) and b = -CE(t, y); gate in PyTorch."""
    from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction

    a = -LigerCrossEntropyFunction.apply(z, y, None, -100, 0.0, 0.0, "none")[0]
    with torch.no_grad():
        b = -LigerCrossEntropyFunction.apply(t.detach(), y, None, -100, 0.0, 0.0, "none")[0]
    return gated_term(a.float(), b.float(), m) / m.sum().clamp(min=1.0)


def logits_implementations(device: torch.device) -> list[Implementation]:
    impls = []
    backends = available_backends(device)
    for backend in ("cpu", "cuda", "triton"):
        name = f"sdar ({backend})"
        if backend in backends:
            impls.append(Implementation(name, lambda z, t, y, m, b=backend: sdar_loss(z, t, y, m, backend=b)))
        elif backend == "cpu" and device.type == "cpu":
            impls.append(Implementation(name, None, "native extension not built"))
    impls.append(Implementation("eager", eager_logits))
    impls += [Implementation(f"compile-{k}", compiled_chunked_logits(k)) for k in COMPILE_CHUNKS]
    reason = _liger_reason(device)
    impls.append(Implementation("liger", None if reason else liger_logits, reason or ""))
    return impls


# ---------------------------------------------------------------------------------------------------------
# fused-linear group: h [N, D], W [V, D] with gradients; teacher log-probs b [N]


def ours_linear(h, w, y, b, m):
    return fused_linear_sdar_loss(h, w, y, teacher=b, mask=m)


def eager_linear(h, w, y, b, m):
    a = eager_logprobs(h @ w.T, y)
    return gated_term(a, b, m) / m.sum().clamp(min=1.0)


def _cce_reason() -> str | None:
    try:
        import cut_cross_entropy  # noqa: F401
    except ImportError:
        return "cut-cross-entropy is not installed (pip install cut-cross-entropy)"
    return None


def cce_linear(h, w, y, b, m):
    """Cut Cross-Entropy for a = -CE(h W^T, y): its CCE kernel on CUDA, its torch_compile
    implementation elsewhere; the gate and the masked mean in PyTorch."""
    from cut_cross_entropy import linear_cross_entropy

    impl = "cce" if h.is_cuda else "torch_compile"
    a = -linear_cross_entropy(h, w, y, reduction="none", impl=impl).float()
    return gated_term(a, b, m) / m.sum().clamp(min=1.0)


def _linear_chunk_sum(h, w, y, b, m):
    return gated_term(eager_logprobs(h @ w.T, y), b, m)


_compiled_linear_chunk_sum = None


def compiled_chunked_linear(chunks: int):
    """logits = h W^T and the loss through ``torch.compile``, per row chunk (autograd still keeps
    each chunk's logits-sized tensors for the backward)."""

    def loss(h, w, y, b, m):
        global _compiled_linear_chunk_sum
        if _compiled_linear_chunk_sum is None:
            _compiled_linear_chunk_sum = torch.compile(_linear_chunk_sum, dynamic=True)
        parts = zip(h.chunk(chunks), y.chunk(chunks), b.chunk(chunks), m.chunk(chunks), strict=True)
        total = sum(_compiled_linear_chunk_sum(hc, w, yc, bc, mc) for hc, yc, bc, mc in parts)
        return total / m.sum().clamp(min=1.0)

    return loss


def liger_linear(h, w, y, b, m):
    """Liger's fused linear cross-entropy (reduction "none") for a; gate in PyTorch."""
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    out = LigerFusedLinearCrossEntropyFunction.apply(h, w, y, None, None, -100, 0.0, 0.0, "none")
    a = -(out[0] if isinstance(out, tuple) else out)
    return gated_term(a.float(), b, m) / m.sum().clamp(min=1.0)


def linear_implementations(device: torch.device) -> list[Implementation]:
    reason = _cce_reason()
    liger = _liger_reason(device)
    return [
        Implementation("sdar fused-linear", ours_linear),
        Implementation("eager", eager_linear),
        Implementation("cce", None if reason else cce_linear, reason or ""),
        Implementation("compile-8", compiled_chunked_linear(8)),
        Implementation("liger", None if liger else liger_linear, liger or ""),
    ]
