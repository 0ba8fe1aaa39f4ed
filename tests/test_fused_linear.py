"""Fused-linear losses (SPEC section 5) against the float64 oracle and against the logits path."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import CPU_BACKENDS, assert_close_fp32, assert_no_worse_than_reference, generator
from oracle import oracle

from sdar_kernels import grpo_sdar_loss, sdar_loss
from sdar_kernels.fused_linear import fused_linear_grpo_sdar_loss, fused_linear_sdar_loss

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))


def make_linear_inputs(shape, dim, vocab, dtype=torch.float32, *, bias=True, salt=()):
    g = generator("linear", tuple(shape), dim, vocab, str(dtype), bias, *salt)
    hidden = torch.randn(*shape, dim, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, dim, generator=g, dtype=torch.float64) / dim**0.5 * 2
    b = torch.randn(vocab, generator=g, dtype=torch.float64) * 0.5 if bias else None
    teacher_hidden = hidden + 0.5 * torch.randn(*shape, dim, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, tuple(shape), generator=g)
    targets[torch.rand(tuple(shape), generator=g) < 0.1] = -100
    mask = torch.rand(tuple(shape), generator=g) < 0.8
    advantages = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    logits64 = F.linear(hidden, weight, b)
    own = torch.log_softmax(logits64, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    old = own + 0.3 * torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    ref = own + 0.5 * torch.randn(tuple(shape), generator=g, dtype=torch.float64)

    def cast(x):
        return None if x is None else x.to(dtype)

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return dict(
        hidden=cast(hidden),
        weight=cast(weight),
        bias=cast(b),
        teacher_hidden=cast(teacher_hidden),
        targets=targets,
        mask=mask,
        advantages=advantages.to(acc),
        old=old.to(acc),
        ref=ref.to(acc),
    )


def teacher_arguments(inputs, teacher_form):
    """(teacher=..., teacher_hidden=...) keyword arguments for a teacher form."""
    if teacher_form == "hidden":
        return dict(teacher_hidden=inputs["teacher_hidden"])
    if teacher_form == "none":
        return {}
    logits = F.linear(
        inputs["teacher_hidden"].double(),
        inputs["weight"].double(),
        None if inputs["bias"] is None else inputs["bias"].double(),
    )
    if teacher_form == "logits":
        return dict(teacher=logits.to(inputs["hidden"].dtype))
    safe = inputs["targets"].clamp(min=0).unsqueeze(-1)
    return dict(teacher=torch.log_softmax(logits, -1).gather(-1, safe).squeeze(-1).float())


def leaves(inputs):
    leaves = [inputs["hidden"].clone().requires_grad_(True), inputs["weight"].clone().requires_grad_(True)]
    if inputs["bias"] is not None:
        leaves.append(inputs["bias"].clone().requires_grad_(True))
    return leaves


def run_fused(inputs, backend, teacher_form, grpo, **options):
    params = leaves(inputs)
    bias = params[2] if len(params) == 3 else None
    teacher = teacher_arguments(inputs, teacher_form)
    if grpo:
        loss = fused_linear_grpo_sdar_loss(
            params[0],
            params[1],
            inputs["targets"],
            inputs["advantages"],
            inputs["old"],
            lm_head_bias=bias,
            ref_logprobs=inputs["ref"],
            mask=inputs["mask"],
            backend=backend,
            **teacher,
            **options,
        )
    else:
        loss = fused_linear_sdar_loss(
            params[0],
            params[1],
            inputs["targets"],
            lm_head_bias=bias,
            mask=inputs["mask"],
            backend=backend,
            **teacher,
            **options,
        )
    return loss.detach(), torch.autograd.grad(loss, params)


def run_logits_path(inputs, backend, teacher_form, grpo, **options):
    """The same loss through materialised logits and autograd through the matmul."""
    params = leaves(inputs)
    bias = params[2] if len(params) == 3 else None
    logits = F.linear(params[0], params[1], bias)
    teacher = teacher_arguments(inputs, teacher_form)
    if "teacher_hidden" in teacher:
        with torch.no_grad():
            teacher = dict(teacher=F.linear(teacher["teacher_hidden"], params[1], bias))
    options.pop("chunk_size", None)
    if grpo:
        loss = grpo_sdar_loss(
            logits,
            inputs["targets"],
            inputs["advantages"],
            inputs["old"],
            ref_logprobs=inputs["ref"],
            mask=inputs["mask"],
            backend=backend,
            **teacher,
            **options,
        )
    else:
        loss = sdar_loss(
            logits, teacher["teacher"], inputs["targets"], inputs["mask"], backend=backend, **options
        )
    return loss.detach(), torch.autograd.grad(loss, params)


def oracle_gradients(inputs, teacher_form, grpo, **options):
    """Loss and (dh, dW, db) in float64 from the oracle's dL/dlogits."""
    h, w = inputs["hidden"].double(), inputs["weight"].double()
    b = None if inputs["bias"] is None else inputs["bias"].double()
    dim = h.shape[-1]
    logits = F.linear(h, w, b).reshape(-1, w.shape[0])
    teacher = teacher_arguments(inputs, teacher_form)
    if "teacher_hidden" in teacher:
        teacher = dict(teacher=F.linear(teacher["teacher_hidden"].double(), w, b))
    t = teacher.get("teacher")
    kwargs = dict(weights=inputs["mask"].reshape(-1).double(), **options)
    if t is not None:
        kwargs[
            "teacher_logits" if t.shape[-1] == w.shape[0] and t.dim() == h.dim() else "teacher_logprobs"
        ] = t.reshape(-1, w.shape[0]) if t.dim() == h.dim() else t.reshape(-1)
    if grpo:
        kwargs.update(
            advantages=inputs["advantages"].reshape(-1),
            old_logprobs=inputs["old"].reshape(-1),
            ref_logprobs=inputs["ref"].reshape(-1),
        )
        kwargs.setdefault("kl_coef", 0.01)
        kwargs.setdefault("entropy_coef", 0.001)
        kwargs["sdar_coef"] = kwargs.get("sdar_coef", 0.01) if t is not None else 0.0
    result = oracle(logits, inputs["targets"].reshape(-1), **kwargs)
    norm = max(float(result.weight_sum), 1.0)
    dz = result.grad(1.0 / norm)
    grads = [(dz @ w).reshape(*h.shape[:-1], dim), dz.t() @ h.reshape(-1, dim)]
    if b is not None:
        grads.append(dz.sum(0))
    return result.loss_sum / norm, grads, float(result.row_loss.abs().sum()) / norm


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("teacher_form", ["logits", "logprobs", "hidden"])
@pytest.mark.parametrize("bias", [True, False])
def test_sdar_against_the_oracle(backend, teacher_form, bias):
    inputs = make_linear_inputs((45,), 24, 1001, bias=bias, salt=(teacher_form,))
    loss, grads = run_fused(inputs, backend, teacher_form, grpo=False, chunk_size=16)
    expected_loss, expected_grads, scale = oracle_gradients(inputs, teacher_form, grpo=False)
    assert_close_fp32(loss, expected_loss, scale=scale, what="loss")
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads, strict=False):
        assert_close_fp32(grad, expected, what=name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("teacher_form", ["none", "logprobs", "hidden"])
@pytest.mark.parametrize("gate", ["gap", "soft_or"])
def test_grpo_against_the_oracle(backend, teacher_form, gate):
    inputs = make_linear_inputs((3, 13), 16, 513, salt=("grpo", teacher_form, gate))
    options = dict(gate=gate, sdar_coef=0.4, kl_coef=0.05, entropy_coef=0.03, chunk_size=10)
    loss, grads = run_fused(inputs, backend, teacher_form, grpo=True, **options)
    options.pop("chunk_size")
    expected_loss, expected_grads, scale = oracle_gradients(inputs, teacher_form, grpo=True, **options)
    assert_close_fp32(loss, expected_loss, scale=scale, what="loss")
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads, strict=True):
        assert_close_fp32(grad, expected, what=name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_no_worse_than_the_eager_logits_path(backend):
    inputs = make_linear_inputs((40,), 32, 1500, torch.bfloat16, salt=("bf16",))
    loss, grads = run_fused(inputs, backend, "hidden", grpo=True, chunk_size=9)
    eager_loss, eager_grads = run_logits_path(inputs, "torch", "hidden", grpo=True)
    expected_loss, expected_grads, scale = oracle_gradients(inputs, "hidden", grpo=True)
    assert_no_worse_than_reference(loss, eager_loss, expected_loss, what="loss", scale=scale)
    for name, grad, eager, expected in zip(
        ("hidden", "weight", "bias"), grads, eager_grads, expected_grads, strict=True
    ):
        assert grad.dtype == torch.bfloat16
        assert_no_worse_than_reference(grad, eager, expected, what=name, slack=2e-3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("grpo", [False, True])
def test_equals_the_logits_path(backend, grpo):
    inputs = make_linear_inputs((2, 17), 20, 777, salt=("same", grpo))
    loss, grads = run_fused(inputs, backend, "hidden", grpo=grpo, chunk_size=5)
    expected, expected_grads = run_logits_path(inputs, backend, "hidden", grpo=grpo)
    # The loss is a sum of signed terms that can cancel (seen: 0.0054 from terms of size ~1): its
    # tolerance is relative to the summed |terms| (SPEC section 7), not to the loss itself.
    scale = oracle_gradients(inputs, "hidden", grpo=grpo)[2]
    assert_close_fp32(loss, expected, rtol=2e-6, scale=scale, what="loss")
    for grad, other in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, other, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 10_000])
def test_chunk_size_does_not_change_the_result(chunk_size):
    inputs = make_linear_inputs((37,), 12, 99, salt=("chunks",))
    loss, grads = run_fused(inputs, "cpu", "hidden", grpo=True, chunk_size=chunk_size)
    reference, reference_grads = run_fused(inputs, "cpu", "hidden", grpo=True, chunk_size=37)
    # A one-row chunk runs the projection as a matrix-vector product, which BLAS sums in another
    # order than the matrix-matrix product: fp32 logits then differ in the last bits (seen at 2e-6).
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-8)
    for grad, other in zip(grads, reference_grads, strict=True):  # fp32 sums in another order
        torch.testing.assert_close(grad, other, rtol=1e-5, atol=1e-6 * float(other.abs().max()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_all_rows_excluded(backend):
    inputs = make_linear_inputs((9,), 8, 50)
    inputs["mask"] = torch.zeros(9, dtype=torch.bool)
    loss, grads = run_fused(inputs, backend, "hidden", grpo=True)
    assert loss.item() == 0.0 and all(torch.all(g == 0) for g in grads)


def test_frozen_head_and_normalizer_options():
    inputs = make_linear_inputs((20,), 8, 64, salt=("frozen",))
    hidden = inputs["hidden"].clone().requires_grad_(True)
    loss = fused_linear_sdar_loss(
        hidden,
        inputs["weight"],
        inputs["targets"],
        lm_head_bias=inputs["bias"],
        teacher_hidden=inputs["teacher_hidden"],
        mask=inputs["mask"],
        reduction="sum",
    )
    (grad,) = torch.autograd.grad(loss, hidden)
    logits = F.linear(hidden, inputs["weight"], inputs["bias"])
    with torch.no_grad():
        teacher = F.linear(inputs["teacher_hidden"], inputs["weight"], inputs["bias"])
    expected = sdar_loss(logits, teacher, inputs["targets"], inputs["mask"], reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)
    normalised = fused_linear_sdar_loss(
        inputs["hidden"],
        inputs["weight"],
        inputs["targets"],
        lm_head_bias=inputs["bias"],
        teacher_hidden=inputs["teacher_hidden"],
        mask=inputs["mask"],
        normalizer=torch.tensor(40.0),
    )
    torch.testing.assert_close(normalised * 40.0, loss, rtol=1e-6, atol=1e-8)


def test_stats_cover_every_token():
    inputs = make_linear_inputs((2, 6), 8, 40, salt=("stats",))
    _, stats = fused_linear_grpo_sdar_loss(
        inputs["hidden"],
        inputs["weight"],
        inputs["targets"],
        inputs["advantages"],
        inputs["old"],
        lm_head_bias=inputs["bias"],
        teacher_hidden=inputs["teacher_hidden"],
        mask=inputs["mask"],
        return_stats=True,
        chunk_size=4,
    )
    logits = F.linear(inputs["hidden"], inputs["weight"], inputs["bias"])
    teacher = F.linear(inputs["teacher_hidden"], inputs["weight"], inputs["bias"])
    _, expected = grpo_sdar_loss(
        logits,
        inputs["targets"],
        inputs["advantages"],
        inputs["old"],
        teacher=teacher,
        mask=inputs["mask"],
        return_stats=True,
    )
    for name in expected._fields:
        torch.testing.assert_close(getattr(stats, name), getattr(expected, name), rtol=1e-5, atol=1e-6)


def test_upstream_gradient_scales_and_retained_graph_accumulates():
    """The gradients are computed in forward and only scaled in backward: a scaled upstream, repeated
    backward through a retained graph and .grad accumulation must all see the same saved gradients."""
    inputs = make_linear_inputs((30,), 16, 257, salt=("upstream",))
    hidden = inputs["hidden"].clone().requires_grad_(True)
    weight = inputs["weight"].clone().requires_grad_(True)
    loss = fused_linear_sdar_loss(hidden, weight, inputs["targets"], teacher_hidden=inputs["teacher_hidden"])
    unit = [g.clone() for g in torch.autograd.grad(loss, [hidden, weight], retain_graph=True)]
    scaled = torch.autograd.grad(loss * 3.0, [hidden, weight], retain_graph=True)
    for one, three in zip(unit, scaled, strict=True):
        torch.testing.assert_close(three, 3.0 * one, rtol=1e-6, atol=0.0)
    for _ in range(3):
        loss.backward(retain_graph=True)
    for param, one in zip((hidden, weight), unit, strict=True):
        torch.testing.assert_close(param.grad, 3.0 * one, rtol=1e-6, atol=0.0)
    again = torch.autograd.grad(loss, [hidden, weight])
    for grad, one in zip(again, unit, strict=True):
        torch.testing.assert_close(grad, one, rtol=0.0, atol=0.0)


def test_working_memory_does_not_grow_with_the_number_of_tokens():
    """Peak extra memory (profiler allocator events) beyond the inputs: about one chunk of logits plus
    the gradients of h and W, far below one [N, V] fp32 logits tensor, and growing only like dh."""
    from harness import peak_extra_bytes

    vocab, dim = 4096, 64
    peaks = {}
    for n_rows in (512, 4096):
        inputs = make_linear_inputs((n_rows,), dim, vocab, bias=False, salt=("memory",))
        hidden = inputs["hidden"].requires_grad_(True)
        weight = inputs["weight"].requires_grad_(True)

        def step(hidden=hidden, weight=weight, inputs=inputs):
            loss = fused_linear_sdar_loss(
                hidden, weight, inputs["targets"], teacher_hidden=inputs["teacher_hidden"], chunk_size=128
            )
            return torch.autograd.grad(loss, [hidden, weight])

        peaks[n_rows] = peak_extra_bytes(step)
    logits_bytes = 4096 * vocab * 4
    assert peaks[4096] < logits_bytes / 4
    growth_allowed = (4096 - 512) * dim * 4 * 3  # dh (fp32 accumulator, the returned grad, slack)
    assert peaks[4096] - peaks[512] <= growth_allowed


@pytest.mark.parametrize(
    "change,error,message",
    [
        (dict(reduction="none"), ValueError, "support reduction 'mean' or 'sum'"),
        (dict(weight_shape=(64, 9)), ValueError, "D = 9"),
        (dict(weight_dtype=torch.float64), TypeError, "must have the same dtype"),
        (dict(both_teachers=True), ValueError, "not both"),
        (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (dict(no_teacher=True), ValueError, "a teacher is needed"),
    ],
)
def test_bad_input(change, error, message):
    inputs = make_linear_inputs((6,), 8, 64, salt=("bad",))
    weight = inputs["weight"]
    if "weight_shape" in change:
        weight = torch.zeros(change["weight_shape"])
    if "weight_dtype" in change:
        weight = weight.to(change["weight_dtype"])
    kwargs = dict(teacher_hidden=inputs["teacher_hidden"])
    if change.get("both_teachers"):
        kwargs["teacher"] = torch.zeros(6)
    if change.get("no_teacher"):
        kwargs = {}
    for key in ("reduction", "chunk_size"):
        if key in change:
            kwargs[key] = change[key]
    with pytest.raises(error, match=message):
        fused_linear_sdar_loss(inputs["hidden"], weight, inputs["targets"], **kwargs)
