"""pytest-benchmark runs of the op, the whole objective and the fused-linear form at small sizes.

    pytest benchmarks --benchmark-only                 # not part of the default test command
    pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-compare

Each benchmark first checks its result against the float64 oracle, so a regression that makes an
implementation fast and wrong fails instead of looking good.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from implementations import eager_linear, eager_logits  # noqa: E402
from oracle import oracle  # noqa: E402

from sdar_kernels import available_backends, fused_linear_sdar_loss, grpo_sdar_loss, sdar_loss  # noqa: E402

pytest.importorskip("pytest_benchmark")

N, V, D = 512, 8192, 256
BACKENDS = [b for b in available_backends("cpu") if b != "triton"]  # interpreted Triton is not a benchmark


def logits_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    student = (torch.randn(N, V, generator=g) * 2).to(dtype)
    teacher = (student.float() + torch.randn(N, V, generator=g)).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    mask = (torch.rand(N, generator=g) < 0.8).float()
    return student, teacher, targets, mask


def forward_backward(fn, leaves, *rest):
    fresh = [t.detach().requires_grad_(True) for t in leaves]
    loss = fn(*fresh, *rest)
    loss.backward()
    return loss.detach(), [t.grad for t in fresh]


def assert_matches_oracle(loss, grad, student, teacher, targets, mask, **terms):
    want = oracle(student, targets, teacher_logits=teacher, weights=mask, **terms)
    normaliser = max(float(want.weight_sum), 1.0)
    assert abs(float(loss) - float(want.loss_sum) / normaliser) < 1e-4
    torch.testing.assert_close(grad.double(), want.grad(1.0 / normaliser), atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("impl", [*BACKENDS, "eager"])
def test_sdar_op(benchmark, impl):
    benchmark.group = f"sdar op N={N} V={V} fp32"
    student, teacher, targets, mask = logits_inputs()
    if impl == "eager":
        fn = eager_logits
    else:

        def fn(z, t, y, m):
            return sdar_loss(z, t, y, m, backend=impl)

    loss, (grad,) = forward_backward(fn, [student], teacher, targets, mask)
    assert_matches_oracle(loss, grad, student, teacher, targets, mask, beta=5.0)
    benchmark(forward_backward, fn, [student], teacher, targets, mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grpo_sdar_objective(benchmark, backend):
    benchmark.group = f"grpo+sdar objective N={N} V={V} fp32"
    student, teacher, targets, mask = logits_inputs()
    g = torch.Generator().manual_seed(1)
    advantages = torch.randn(N, generator=g)
    old = -torch.rand(N, generator=g) * 8 - 4
    ref = old + torch.randn(N, generator=g) * 0.1
    terms = dict(kl_coef=0.01, entropy_coef=0.001, sdar_coef=0.01, beta=5.0)

    def fn(z, t, y, m):
        return grpo_sdar_loss(
            z, y, advantages, old, teacher=t, ref_logprobs=ref, mask=m, backend=backend, **terms
        )

    loss, (grad,) = forward_backward(fn, [student], teacher, targets, mask)
    assert_matches_oracle(
        loss,
        grad,
        student,
        teacher,
        targets,
        mask,
        advantages=advantages,
        old_logprobs=old,
        ref_logprobs=ref,
        **terms,
    )
    benchmark(forward_backward, fn, [student], teacher, targets, mask)


@pytest.mark.parametrize("impl", ["fused-linear", "eager"])
def test_fused_linear(benchmark, impl):
    benchmark.group = f"sdar fused-linear N={N} V={V} D={D} fp32"
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g) / D**0.5
    targets = torch.randint(0, V, (N,), generator=g)
    teacher = -torch.rand(N, generator=g) * 8 - 4
    mask = (torch.rand(N, generator=g) < 0.8).float()
    if impl == "eager":
        fn = eager_linear
    else:

        def fn(h, w, y, b, m):
            return fused_linear_sdar_loss(h, w, y, teacher=b, mask=m)

    loss, (grad_h, grad_w) = forward_backward(fn, [hidden, weight], targets, teacher, mask)
    want = oracle(
        hidden.double() @ weight.double().T, targets, teacher_logprobs=teacher, weights=mask, beta=5.0
    )
    normaliser = max(float(want.weight_sum), 1.0)
    grad_logits = want.grad(1.0 / normaliser)
    assert abs(float(loss) - float(want.loss_sum) / normaliser) < 1e-4
    torch.testing.assert_close(grad_h.double(), grad_logits @ weight.double(), atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(grad_w.double(), grad_logits.T @ hidden.double(), atol=1e-5, rtol=1e-3)
    benchmark(forward_backward, fn, [hidden, weight], targets, teacher, mask)
