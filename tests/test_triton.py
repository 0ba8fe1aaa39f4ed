"""Triton backend specifics (runs in Triton's CPU interpreter without a GPU). Its values, stats and
gradients against the oracle are in test_sdar_loss.py, parametrised over every backend."""

from __future__ import annotations

import pytest
import torch
from helpers import CPU_BACKENDS, make_inputs

from sdar_kernels import sdar_loss

pytestmark = pytest.mark.skipif("triton" not in CPU_BACKENDS, reason="triton is not installed")


def test_bad_target_gives_a_nan_row_and_reads_nothing_out_of_bounds():
    inputs = make_inputs((6,), 40, mask_kind="none", ignore_fraction=0)
    inputs.targets[2] = 10_000
    loss, stats = sdar_loss(
        inputs.student, inputs.teacher, inputs.targets, reduction="none", return_stats=True, backend="triton"
    )
    assert torch.isnan(loss[2]) and torch.isnan(stats.student_logprobs[2])
    others = torch.arange(6) != 2
    assert torch.isfinite(loss[others]).all()


def test_non_finite_logits_give_a_nan_row():
    inputs = make_inputs((5,), 40, mask_kind="none", ignore_fraction=0)
    inputs.student[1, 3] = float("nan")
    loss = sdar_loss(inputs.student, inputs.teacher, inputs.targets, reduction="none", backend="triton")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[torch.arange(5) != 1]).all()


def test_float64_is_refused_with_a_clear_error():
    inputs = make_inputs((3,), 10, torch.float64)
    with pytest.raises(TypeError, match=r"triton.*float32, bfloat16 and float16"):
        sdar_loss(inputs.student, inputs.teacher, inputs.targets, backend="triton")


def test_results_are_bitwise_deterministic():
    inputs = make_inputs((40,), 1001, torch.bfloat16, mask_kind="float")
    outs = []
    for _ in range(2):
        student = inputs.student.clone().requires_grad_(True)
        loss = sdar_loss(student, inputs.teacher, inputs.targets, inputs.mask, backend="triton")
        loss.backward()
        outs.append((loss.detach(), student.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_agrees_with_the_native_kernel():
    inputs = make_inputs((33,), 3001, torch.float32, mask_kind="float")
    results = {}
    for backend in ("cpu", "triton"):
        student = inputs.student.clone().requires_grad_(True)
        loss, stats = sdar_loss(
            student,
            inputs.teacher,
            inputs.targets,
            inputs.mask,
            gate="soft_or",
            return_stats=True,
            backend=backend,
        )
        loss.backward()
        results[backend] = (loss.detach(), stats.gate, student.grad)
    for native, triton_value in zip(results["cpu"], results["triton"], strict=True):
        torch.testing.assert_close(triton_value, native, rtol=2e-5, atol=1e-7)
