"""Loads the compiled ops and wires them into torch: fake kernels and autograd.

The library comes from ``sdar_kernels._C`` (built by ``pip install -e .``) or, if the environment
variable ``SDAR_KERNELS_LIBRARY`` names a shared library (for example the one CMake builds), from
that file. Importing this module never fails: ``available()`` says whether the ops are there and
``load_error()`` why not.
"""

from __future__ import annotations

import os

import torch

from ._layout import NUM_STATS

_LOAD_ERROR: str | None = None


def _load() -> bool:
    global _LOAD_ERROR
    library = os.environ.get("SDAR_KERNELS_LIBRARY")
    try:
        if library:
            torch.ops.load_library(library)
        else:
            from . import _C  # noqa: F401  (registers torch.ops.sdar_kernels.*)
    except (ImportError, OSError) as error:
        _LOAD_ERROR = f"{type(error).__name__}: {error}"
        return False
    return True


_AVAILABLE = _load()


def available() -> bool:
    """Whether the native ops (CPU kernels, plus CUDA kernels if built with CUDA) are loaded."""
    return _AVAILABLE


def load_error() -> str | None:
    """Why the native ops could not be loaded, or None."""
    return _LOAD_ERROR


def has_cuda_kernels() -> bool:
    """Whether the loaded library carries CUDA implementations of the ops."""
    return _AVAILABLE and torch._C._dispatch_has_kernel_for_dispatch_key(
        "sdar_kernels::objective_forward", "CUDA"
    )


def cpu_capability() -> str:
    """The CPU kernel variant in use: ``"default"``, ``"avx2"`` or ``"avx512"``."""
    return torch.ops.sdar_kernels.cpu_capability()


def max_cpu_capability() -> str:
    """The widest CPU kernel variant this machine can run."""
    return torch.ops.sdar_kernels.max_cpu_capability()


def set_cpu_capability(name: str) -> str:
    """Selects the CPU kernel variant (for tests and benchmarks); returns the previous one."""
    return torch.ops.sdar_kernels.set_cpu_capability(name)


def _accumulation_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _register() -> None:
    @torch.library.register_fake("sdar_kernels::objective_forward")
    def _objective_forward_fake(student_logits, targets, *args):
        n_rows = student_logits.shape[0]
        acc = _accumulation_dtype(student_logits)
        return (
            student_logits.new_empty((), dtype=acc),
            student_logits.new_empty((), dtype=acc),
            student_logits.new_empty((n_rows,), dtype=acc),
            student_logits.new_empty((NUM_STATS, n_rows), dtype=acc),
        )

    @torch.library.register_fake("sdar_kernels::objective_backward")
    def _objective_backward_fake(student_logits, *args):
        return torch.empty_like(student_logits, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        student_logits, targets = inputs[0], inputs[1]
        ctx.temperature = inputs[8]
        ctx.ignore_index = inputs[19]
        ctx.num_inputs = len(inputs)
        _, weight_sum, _, stats = output
        ctx.save_for_backward(student_logits, targets, stats)
        ctx.mark_non_differentiable(weight_sum, stats)

    def backward(ctx, grad_loss_sum, grad_weight_sum, grad_row_loss, grad_stats):
        student_logits, targets, stats = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_logits = torch.ops.sdar_kernels.objective_backward(
                student_logits,
                targets,
                stats,
                grad_loss_sum,
                grad_row_loss,
                ctx.temperature,
                ctx.ignore_index,
            )
        return (grad_logits,) + (None,) * (ctx.num_inputs - 1)

    torch.library.register_autograd("sdar_kernels::objective_forward", backward, setup_context=setup_context)


if _AVAILABLE:
    _register()
