"""Loads the compiled ops and wires them into torch: fake kernels and autograd.

The library comes from ``sdar_kernels._C`` (built by ``pip install -e .``) or, if the environment
variable ``SDAR_KERNELS_LIBRARY`` names a shared library (for example the one CMake builds), from
that file. Importing this module never fails: ``available()`` says whether the ops are there and
``load_error()`` why not.
"""

from __future__ import annotations

import os

import torch

from ._registration import register_objective_op

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


if _AVAILABLE:
    register_objective_op(
        "sdar_kernels::objective_forward",
        "sdar_kernels::objective_backward",
        torch.ops.sdar_kernels.objective_backward,
    )
