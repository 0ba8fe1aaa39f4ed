"""Backend choice and the call into each backend's row kernels.

Every backend maps a RowBatch and an ObjectiveConfig to the same four tensors
``(loss_sum, weight_sum, row_loss [N], stats [NUM_STATS, N])`` with autograd to the student logits.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings

import torch

from . import _native, reference
from ._config import ObjectiveConfig, RowBatch
from ._layout import gate_code, objective_code

_warned_fallback = False


def triton_status(device: torch.device) -> str | None:
    """None if the Triton backend can run on ``device``, else the reason it cannot."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "Triton runs on CUDA tensors, or on CPU tensors with TRITON_INTERPRET=1 set before import"
    if device.type not in ("cpu", "cuda"):
        return f"Triton does not run on {device.type} tensors"
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    return None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on tensors of ``device`` in this environment."""
    device = torch.device(device)
    names = []
    if device.type == "cpu" and _native.available():
        names.append("cpu")
    if device.type == "cuda" and _native.has_cuda_kernels():
        names.append("cuda")
    if triton_status(device) is None:
        names.append("triton")
    names.append("torch")
    return names


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` ("auto" or a name) on ``device``; clear error if impossible."""
    global _warned_fallback
    if backend == "auto":
        if device.type == "cpu" and _native.available():
            return "cpu"
        if device.type == "cuda" and _native.has_cuda_kernels():
            return "cuda"
        if device.type == "cuda" and triton_status(device) is None:
            return "triton"
        if not _warned_fallback:
            _warned_fallback = True
            reason = _native.load_error() or f"no fused kernel for {device.type} tensors in this build"
            warnings.warn(
                f"sdar_kernels: using the eager torch reference ({reason})", RuntimeWarning, stacklevel=3
            )
        return "torch"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors; got tensors on {device}")
        if not _native.available():
            raise RuntimeError(
                f"backend='cpu' is not available: the native ops did not load ({_native.load_error()})"
            )
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend='cuda' needs CUDA tensors; got tensors on {device}")
        if not _native.has_cuda_kernels():
            raise RuntimeError("backend='cuda' is not available: sdar_kernels was built without CUDA")
    if backend == "triton":
        reason = triton_status(device)
        if reason is not None:
            raise RuntimeError(f"backend='triton' is not available: {reason}")
    return backend


def _op_arguments(batch: RowBatch, config: ObjectiveConfig) -> tuple:
    return (
        batch.student_logits,
        batch.targets,
        batch.weights,
        batch.teacher_logits,
        batch.teacher_logprobs,
        batch.advantages,
        batch.old_logprobs,
        batch.ref_logprobs,
        config.temperature,
        config.teacher_temperature,
        config.beta,
        gate_code(config.gate),
        objective_code(config.objective),
        config.sdar_coef,
        config.clip_low,
        config.clip_high,
        -1.0 if config.dual_clip is None else config.dual_clip,
        config.kl_coef,
        config.entropy_coef,
        config.ignore_index,
    )


def _ops(backend: str):
    """(forward op, backward op) of a fused backend."""
    if backend == "triton":
        from . import triton as _triton  # noqa: F401  (registers the Triton ops on first use)

        ops = torch.ops.sdar_kernels
        return ops.triton_objective_forward, ops.triton_objective_backward
    return torch.ops.sdar_kernels.objective_forward, torch.ops.sdar_kernels.objective_backward


def run_rows(batch: RowBatch, config: ObjectiveConfig, backend: str) -> tuple[torch.Tensor, ...]:
    """Runs the per-token objective on the resolved ``backend``, with autograd to the logits."""
    if backend == "torch":
        return reference.objective_rows(batch, config)
    forward, _ = _ops(backend)
    return forward(*_op_arguments(batch, config))


def rows_forward_backward(
    batch: RowBatch, config: ObjectiveConfig, backend: str, grad_loss_sum: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Forward outputs and d(grad_loss_sum * loss_sum)/d(logits) in one go, without autograd.

    Used chunk by chunk by the fused-linear form, which knows the upstream scale (1 / normaliser) at
    forward time. ``grad_loss_sum`` is a 0-d tensor on the logits' device. Returns
    ``((loss_sum, weight_sum, row_loss, stats), grad_logits)``; ``grad_logits`` has the logits' dtype.
    """
    if backend == "torch":
        logits = batch.student_logits.detach().requires_grad_(True)
        with torch.enable_grad():
            outputs = reference.objective_rows(dataclasses.replace(batch, student_logits=logits), config)
            (grad,) = torch.autograd.grad(outputs[0], logits, grad_outputs=grad_loss_sum.to(outputs[0].dtype))
        return tuple(o.detach() for o in outputs), grad
    forward, backward = _ops(backend)
    with torch.no_grad():
        outputs = forward(*_op_arguments(batch, config))
        stats = outputs[3]
        grad = backward(
            batch.student_logits,
            batch.targets,
            stats,
            grad_loss_sum,
            None,
            config.temperature,
            config.ignore_index,
        )
    return outputs, grad
