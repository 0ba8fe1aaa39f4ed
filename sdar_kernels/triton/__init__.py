"""Triton kernels of sdar_kernels (needs the ``triton`` package).

Importing this package registers ``torch.ops.sdar_kernels.triton_objective_forward`` /
``triton_objective_backward`` with autograd. They run on CUDA tensors, or on CPU tensors in
Triton's interpreter when ``TRITON_INTERPRET=1`` is set before triton is imported.
"""

from .objective import INTERPRETED, triton_objective_backward, triton_objective_forward

__all__ = ["INTERPRETED", "triton_objective_backward", "triton_objective_forward"]
