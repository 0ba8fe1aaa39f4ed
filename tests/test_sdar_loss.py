"""sdar_loss on every CPU backend against the float64 oracle (SPEC sections 2, 3 and 7)."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import (
    CPU_BACKENDS,
    INTERPRETED_TRITON,
    RAISING_BACKENDS,
    assert_close_abs,
    assert_close_fp32,
    assert_no_worse_than_reference,
    generator,
    make_inputs,
)
from oracle import oracle

from sdar_kernels import sdar_loss

GATES = ("gap", "entropy", "soft_or", "none")
OBJECTIVES = ("sdar", "pg")


def oracle_for(inputs, **options):
    vocab = inputs.student.shape[-1]
    teacher = inputs.teacher
    teacher_is_logits = teacher.shape == inputs.student.shape
    weights = None if inputs.mask is None else inputs.mask.reshape(-1).double()
    return oracle(
        inputs.student.reshape(-1, vocab),
        inputs.targets.reshape(-1),
        teacher_logits=teacher.reshape(-1, vocab) if teacher_is_logits else None,
        teacher_logprobs=None if teacher_is_logits else teacher.reshape(-1),
        weights=weights,
        **options,
    )


def run_loss(inputs, backend, upstream=None, device="cpu", **options):
    """(loss, stats, grad of student logits) on the CPU for one call on ``device``; upstream is the
    gradient fed to backward."""

    def moved(x):
        return None if x is None else x.to(device)

    student = inputs.student.to(device).requires_grad_(True)
    loss, stats = sdar_loss(
        student,
        moved(inputs.teacher),
        moved(inputs.targets),
        moved(inputs.mask),
        return_stats=True,
        backend=backend,
        **options,
    )
    upstream = torch.ones_like(loss) if upstream is None else upstream.to(device)
    (grad,) = torch.autograd.grad(loss, student, grad_outputs=upstream)
    return loss.detach().cpu(), type(stats)(*(s.cpu() for s in stats)), grad.cpu()


def expected_loss_and_grad(result, reduction, normalizer, upstream, token_shape):
    if reduction == "none":
        return result.row_loss.reshape(token_shape), result.grad(upstream_rows=upstream.reshape(-1))
    if reduction == "sum":
        return result.loss_sum, result.grad(upstream_sum=float(upstream))
    norm = max(float(result.weight_sum), 1.0) if normalizer is None else float(normalizer)
    return result.loss_sum / norm, result.grad(upstream_sum=float(upstream) / norm)


def loss_scale(result, reduction, normalizer):
    """The natural size of the loss: sum of |m_t l_t| (a sum of terms of both signs may cancel)."""
    total = result.row_loss.abs().sum()
    if reduction == "mean":
        total = total / (max(float(result.weight_sum), 1.0) if normalizer is None else float(normalizer))
    return float(total)


def check_against_oracle(inputs, backend, *, reduction="mean", normalizer=None, device="cpu", **options):
    token_shape = inputs.targets.shape
    result = oracle_for(inputs, **options)
    g = generator("upstream", tuple(token_shape), reduction)
    upstream = torch.randn(token_shape, generator=g) if reduction == "none" else torch.tensor(1.7)
    loss, stats, grad = run_loss(
        inputs,
        backend,
        upstream=upstream,
        device=device,
        reduction=reduction,
        normalizer=normalizer,
        **options,
    )
    exp_loss, exp_grad = expected_loss_and_grad(result, reduction, normalizer, upstream, token_shape)
    exp_grad = exp_grad.reshape(grad.shape)

    assert loss.dtype == (torch.float64 if inputs.student.dtype == torch.float64 else torch.float32)
    assert grad.dtype == inputs.student.dtype
    for name in ("student_logprobs", "teacher_logprobs", "gap", "gate", "entropy"):
        assert getattr(stats, name).shape == token_shape, name

    if inputs.student.dtype in (torch.float32, torch.float64):
        scale = loss_scale(result, reduction, normalizer) if reduction != "none" else None
        assert_close_fp32(loss, exp_loss, scale=scale, what="loss")
        assert_close_fp32(grad, exp_grad, what="grad")
        for name in ("student_logprobs", "teacher_logprobs", "gap"):
            assert_close_abs(getattr(stats, name).reshape(-1), result.stats[name], atol=1e-5, what=name)
        assert_close_abs(stats.gate.reshape(-1), result.stats["gate"], atol=1e-5, what="gate")
        assert_close_abs(stats.entropy.reshape(-1), result.stats["entropy"], atol=1e-5, what="entropy")
    else:
        # bf16 / fp16: no worse than the eager reference fed the same inputs, plus 1e-3 relative
        ref_loss, ref_stats, ref_grad = run_loss(
            inputs, "torch", upstream=upstream, reduction=reduction, normalizer=normalizer, **options
        )
        scale = loss_scale(result, reduction, normalizer) if reduction != "none" else None
        assert_no_worse_than_reference(loss, ref_loss, exp_loss, what="loss", scale=scale)
        assert_no_worse_than_reference(grad, ref_grad, exp_grad, what="grad")
        for name in ("student_logprobs", "teacher_logprobs", "gap", "gate", "entropy"):
            assert_no_worse_than_reference(
                getattr(stats, name).reshape(-1),
                getattr(ref_stats, name).reshape(-1),
                result.stats[name],
                what=name,
                scale=1.0,
            )
    return loss, stats, grad


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("teacher_form", ["logits", "logprobs"])
@pytest.mark.parametrize("gate,objective", list(itertools.product(GATES, OBJECTIVES)))
def test_every_gate_and_objective(backend, dtype, teacher_form, gate, objective):
    inputs = make_inputs((37,), 1001, dtype, teacher_form=teacher_form, salt=(gate, objective))
    check_against_oracle(inputs, backend, gate=gate, objective=objective)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0, 10.0])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
@pytest.mark.parametrize("gate", GATES)
def test_beta_and_temperature(backend, beta, temperature, gate):
    inputs = make_inputs((29,), 513, salt=(beta, temperature))
    check_against_oracle(inputs, backend, beta=beta, temperature=temperature, gate=gate)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_teacher_temperature_differs(backend):
    inputs = make_inputs((23,), 700)
    check_against_oracle(inputs, backend, temperature=0.8, teacher_temperature=1.2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_batch_time_layout_reductions_and_masks(backend, dtype, reduction, mask_kind):
    inputs = make_inputs((3, 11), 257, dtype, mask_kind=mask_kind, salt=(reduction,))
    check_against_oracle(inputs, backend, reduction=reduction)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("normalizer", [7.0, "tensor"])
def test_normalizer_float_and_tensor(backend, normalizer):
    inputs = make_inputs((19,), 300)
    value = torch.tensor(123.0) if normalizer == "tensor" else normalizer
    loss, _, _ = check_against_oracle(inputs, backend, normalizer=value)
    unnormalized = sdar_loss(
        inputs.student, inputs.teacher, inputs.targets, inputs.mask, reduction="sum", backend=backend
    )
    assert torch.allclose(loss * float(value), unnormalized, rtol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_rows_excluded_give_zero_loss_and_gradient(backend, dtype):
    inputs = make_inputs((12,), 99, dtype)
    inputs.mask = torch.zeros(12, dtype=torch.bool)
    for reduction in ("mean", "sum", "none"):
        loss, stats, grad = run_loss(inputs, backend, reduction=reduction)
        assert torch.all(loss == 0) and not torch.isnan(loss).any()
        assert torch.all(grad == 0)
        for value in stats:
            assert torch.all(value == 0)
    inputs.mask = None
    inputs.targets = torch.full((12,), -100)
    loss, _, grad = run_loss(inputs, backend)
    assert loss.item() == 0.0 and torch.all(grad == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_excluded_rows_are_never_read(backend):
    """Excluded rows may hold anything (NaN padding): zero contribution, zero gradient, zero stats."""
    inputs = make_inputs((16,), 64, mask_kind="bool")
    inputs.mask[:4] = False
    inputs.targets[4] = -100
    inputs.student[:5] = float("nan")
    if inputs.teacher.dim() == 2:
        inputs.teacher[:5] = float("nan")
    loss, stats, grad = run_loss(inputs, backend)
    assert torch.isfinite(loss)
    assert torch.all(grad[:5] == 0) and torch.isfinite(grad).all()
    assert torch.all(stats.student_logprobs[:5] == 0)
    clean = make_inputs((16,), 64, mask_kind="bool")
    clean.mask[:4] = False
    clean.targets[4] = -100
    expected, _, _ = run_loss(clean, backend)
    assert torch.allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ignore_index_custom_value(backend):
    inputs = make_inputs((20,), 50, ignore_index=7_000, salt=("ignore",))
    check_against_oracle(inputs, backend, ignore_index=7_000)


@pytest.mark.parametrize("backend", RAISING_BACKENDS)
def test_float64_inputs_compute_in_float64(backend):
    inputs = make_inputs((17,), 333, torch.float64)
    loss, stats, grad = run_loss(inputs, backend)
    result = oracle_for(inputs)
    assert loss.dtype == torch.float64 and stats.gap.dtype == torch.float64
    assert_close_fp32(grad, result.grad(1.0 / max(float(result.weight_sum), 1.0)), rtol=1e-10, what="grad")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_extreme_logits(backend, magnitude):
    g = generator("extreme", magnitude)
    student = torch.randn(9, 400, generator=g) * magnitude
    teacher = torch.randn(9, 400, generator=g) * magnitude
    targets = torch.randint(0, 400, (9,), generator=g)
    # make the sampled tokens plausible so that log-probs are finite in float64 and float32 alike
    student[torch.arange(9), targets] = student.max(dim=1).values
    teacher[torch.arange(9), targets] = teacher.max(dim=1).values - 3.0
    inputs = make_inputs((9,), 400)
    inputs.student, inputs.teacher, inputs.targets, inputs.mask = student, teacher, targets, None
    loss, _stats, grad = check_against_oracle(inputs, backend)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_hot_like_rows(backend):
    student = torch.full((6, 128), -30.0)
    student[torch.arange(6), torch.arange(6)] = 30.0
    teacher = student.flip(0)
    targets = torch.arange(6)
    inputs = make_inputs((6,), 128)
    inputs.student, inputs.teacher, inputs.targets, inputs.mask = student, teacher, targets, None
    _, stats, _ = check_against_oracle(inputs, backend, gate="soft_or")
    assert torch.all(stats.entropy >= 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_minus_inf_logits_are_zero_probability(backend):
    """-inf entries (a masked vocabulary) are allowed and contribute nothing."""
    inputs = make_inputs((8,), 3000, mask_kind="none", ignore_fraction=0)
    inputs.student[:, 2500:] = float("-inf")
    inputs.teacher[:, 2700:] = float("-inf")
    inputs.targets = inputs.targets % 2500
    _loss, _, grad = check_against_oracle(inputs, backend, gate="soft_or")
    assert torch.isfinite(grad).all() and torch.all(grad[:, 2500:] == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_vocabulary_of_one(backend):
    inputs = make_inputs((5,), 1, ignore_fraction=0)
    _loss, stats, grad = check_against_oracle(inputs, backend)
    assert torch.all(stats.student_logprobs == 0) and torch.all(grad == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_rows(backend):
    student = torch.zeros(0, 10, requires_grad=True)
    loss = sdar_loss(student, torch.zeros(0, 10), torch.zeros(0, dtype=torch.long), backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and student.grad.shape == (0, 10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_many_rows_small_vocabulary(backend):
    if backend == "triton" and INTERPRETED_TRITON:
        pytest.skip(
            "70,000 programs take minutes in Triton's interpreter; tests/test_gpu.py runs this on a GPU"
        )
    inputs = make_inputs((70_000,), 5, mask_kind="float")
    check_against_oracle(inputs, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    base = make_inputs((2, 14), 301)
    sliced_student = base.student[:, ::2]  # [2, 7, V], non-contiguous
    sliced = make_inputs((2, 7), 301)
    sliced.student = sliced_student
    sliced.teacher = base.teacher[:, ::2]
    sliced.targets = base.targets[:, ::2]
    sliced.mask = base.mask[:, ::2]
    assert not sliced.student.is_contiguous()
    check_against_oracle(sliced, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_teacher_gets_no_gradient(backend):
    inputs = make_inputs((10,), 40)
    teacher = inputs.teacher.clone().requires_grad_(True)
    student = inputs.student.clone().requires_grad_(True)
    sdar_loss(student, teacher, inputs.targets, inputs.mask, backend=backend).backward()
    assert teacher.grad is None and student.grad is not None


def test_beta_zero_gives_half_gate_and_zero_expected_gradient():
    """SPEC: with beta = 0 the gate is 1/2 and the expected gradient vanishes (E_y[p - onehot(y)] = 0)."""
    g = generator("beta0")
    logits = torch.randn(1, 6, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, -1)[0]
    expected = torch.zeros(1, 6, dtype=torch.float64)
    for token in range(6):
        student = logits.clone().requires_grad_(True)
        teacher = torch.randn(1, 6, generator=g, dtype=torch.float64)
        loss, stats = sdar_loss(student, teacher, torch.tensor([token]), beta=0.0, return_stats=True)
        assert stats.gate.item() == 0.5
        (grad,) = torch.autograd.grad(loss, student)
        expected += probs[token] * grad
    assert expected.abs().max() < 1e-12
