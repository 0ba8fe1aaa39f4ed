"""GPU tests: every backend on CUDA tensors against the float64 oracle at larger shapes, and the
three backends against each other. Marked ``gpu``: collected always, run when a CUDA device is
present (the normal test command then runs them), skipped otherwise."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import make_inputs
from test_sdar_loss import check_against_oracle

import sdar_kernels
from sdar_kernels import sdar_loss

pytestmark = pytest.mark.gpu


def gpu_backends():
    if not torch.cuda.is_available():
        return ["cuda", "triton", "torch"]  # skipped anyway; keeps test ids stable
    return [b for b in ("cuda", "triton", "torch") if b in sdar_kernels.available_backends("cuda")]


@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "gate,objective", list(itertools.product(("gap", "entropy", "soft_or", "none"), ("sdar", "pg")))
)
def test_against_the_oracle_on_gpu(backend, dtype, gate, objective):
    inputs = make_inputs((96,), 32003, dtype, mask_kind="float", salt=("gpu", gate, objective))
    check_against_oracle(inputs, backend, device="cuda", gate=gate, objective=objective)


@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("teacher_form", ["logits", "logprobs"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_layouts_and_teacher_forms_on_gpu(backend, teacher_form, reduction):
    inputs = make_inputs((4, 33), 5001, torch.bfloat16, teacher_form=teacher_form, salt=("gpu-layout",))
    check_against_oracle(inputs, backend, device="cuda", reduction=reduction, temperature=0.8)


@pytest.mark.parametrize("backend", gpu_backends())
def test_many_rows_on_gpu(backend):
    inputs = make_inputs((70_000,), 7, mask_kind="float")
    check_against_oracle(inputs, backend, device="cuda")


def test_backends_agree_at_qwen_vocabulary():
    backends = gpu_backends()
    inputs = make_inputs((512,), 151_936, torch.bfloat16, mask_kind="bool", salt=("qwen",))
    results = {}
    for backend in backends:
        student = inputs.student.cuda().requires_grad_(True)
        loss, stats = sdar_loss(
            student,
            inputs.teacher.cuda(),
            inputs.targets.cuda(),
            inputs.mask.cuda(),
            return_stats=True,
            backend=backend,
        )
        loss.backward()
        results[backend] = (loss.detach().float().cpu(), stats.gap.cpu(), student.grad.float().cpu())
    first = results[backends[0]]
    for backend in backends[1:]:
        for reference, value in zip(first, results[backend], strict=True):
            torch.testing.assert_close(value, reference, rtol=1e-3, atol=2e-5)


@pytest.mark.parametrize("backend", [b for b in gpu_backends() if b != "torch"])
def test_bad_targets_give_nan_rows_on_gpu(backend):
    inputs = make_inputs((8,), 1000, mask_kind="none", ignore_fraction=0)
    targets = inputs.targets.clone()
    targets[5] = 1000
    loss = sdar_loss(
        inputs.student.cuda(), inputs.teacher.cuda(), targets.cuda(), reduction="none", backend=backend
    )
    loss = loss.cpu()
    assert torch.isnan(loss[5]) and torch.isfinite(loss[torch.arange(8) != 5]).all()
