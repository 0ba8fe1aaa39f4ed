"""grpo_sdar_loss (SPEC section 4) on every CPU backend against the float64 oracle."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import (
    CPU_BACKENDS,
    RAISING_BACKENDS,
    assert_close_abs,
    assert_close_fp32,
    assert_no_worse_than_reference,
    generator,
    make_grpo_inputs,
)
from oracle import oracle

import sdar_kernels
from sdar_kernels import grpo_sdar_loss

STAT_NAMES = ("student_logprobs", "teacher_logprobs", "gap", "gate", "entropy", "ratio", "clipped", "kl")


def oracle_for(inputs, **options):
    vocab = inputs.student.shape[-1]
    teacher = inputs.teacher
    logits = teacher is not None and teacher.shape == inputs.student.shape
    sdar_coef = options.pop("sdar_coef", 0.01)
    return oracle(
        inputs.student.reshape(-1, vocab),
        inputs.targets.reshape(-1),
        teacher_logits=teacher.reshape(-1, vocab) if logits else None,
        teacher_logprobs=teacher.reshape(-1) if teacher is not None and not logits else None,
        weights=None if inputs.mask is None else inputs.mask.reshape(-1).double(),
        advantages=inputs.advantages.reshape(-1),
        old_logprobs=inputs.old_logprobs.reshape(-1),
        ref_logprobs=None if inputs.ref_logprobs is None else inputs.ref_logprobs.reshape(-1),
        sdar_coef=sdar_coef if teacher is not None else 0.0,
        kl_coef=options.pop("kl_coef", 0.01),
        entropy_coef=options.pop("entropy_coef", 0.001),
        **options,
    )


def run_grpo(inputs, backend, **options):
    student = inputs.student.clone().requires_grad_(True)
    loss, stats = grpo_sdar_loss(
        student,
        inputs.targets,
        inputs.advantages,
        inputs.old_logprobs,
        teacher=inputs.teacher,
        ref_logprobs=inputs.ref_logprobs,
        mask=inputs.mask,
        return_stats=True,
        backend=backend,
        **options,
    )
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), stats, grad


def check_grpo(inputs, backend, **options):
    result = oracle_for(inputs, **options)
    loss, stats, grad = run_grpo(inputs, backend, **options)
    norm = max(float(result.weight_sum), 1.0)
    expected_loss = result.loss_sum / norm
    expected_grad = result.grad(1.0 / norm).reshape(grad.shape)
    scale = float(result.row_loss.abs().sum()) / norm
    assert stats.clipped.dtype == torch.bool
    # clipped flags may only differ where the ratio sits on a clip boundary to within rounding
    ratio = result.stats["ratio"]
    boundary = torch.zeros_like(ratio, dtype=torch.bool)
    for edge in (0.8, 1.2):
        boundary |= (ratio - edge).abs() < 1e-4
    flags_differ = stats.clipped.reshape(-1).double() != result.stats["clipped"]
    assert not (flags_differ & ~boundary).any(), "clipped flags disagree away from the clip boundaries"
    if inputs.student.dtype in (torch.float32, torch.float64):
        assert_close_fp32(loss, expected_loss, scale=scale, what="loss")
        assert_close_fp32(grad, expected_grad, what="grad")
        for name in STAT_NAMES:
            actual, expected = getattr(stats, name).reshape(-1).double(), result.stats[name]
            if name == "ratio":  # exp(a - o) spans many orders of magnitude: relative per token
                size = expected.abs().clamp(min=1)
                actual, expected = actual / size, expected / size
            if name != "clipped":
                assert_close_abs(actual, expected, atol=2e-5, what=name)
    else:
        ref_loss, ref_stats, ref_grad = run_grpo(inputs, "torch", **options)
        assert_no_worse_than_reference(loss, ref_loss, expected_loss, what="loss", scale=scale)
        assert_no_worse_than_reference(grad, ref_grad, expected_grad, what="grad")
        for name in STAT_NAMES:
            if name != "clipped":
                assert_no_worse_than_reference(
                    getattr(stats, name).reshape(-1),
                    getattr(ref_stats, name).reshape(-1),
                    result.stats[name],
                    what=name,
                    scale=1.0,
                )
    return loss, stats, grad


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("teacher_form", ["none", "logits", "logprobs"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_every_term_against_the_oracle(backend, dtype, teacher_form, dual_clip):
    inputs = make_grpo_inputs((43,), 1001, dtype, teacher_form=teacher_form, salt=(teacher_form, dual_clip))
    _, stats, _ = check_grpo(
        inputs, backend, dual_clip=dual_clip, sdar_coef=0.3, kl_coef=0.05, entropy_coef=0.02
    )
    included = inputs.mask & (inputs.targets != -100)
    assert stats.clipped[included].any() and (~stats.clipped[included]).any(), "inputs must hit both branches"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "gate,objective", list(itertools.product(("gap", "entropy", "soft_or", "none"), ("sdar", "pg")))
)
def test_every_gate_and_objective(backend, gate, objective):
    inputs = make_grpo_inputs((31,), 513, salt=(gate, objective))
    check_grpo(inputs, backend, gate=gate, objective=objective, sdar_coef=0.5, beta=2.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_large_ratio_spread_hits_the_dual_clip_and_the_clamps(backend):
    inputs = make_grpo_inputs((40,), 300, salt=("spread",), ratio_spread=8.0)
    inputs.ref_logprobs = inputs.ref_logprobs + torch.linspace(-30, 30, 40)  # past the k3 clamps
    _, stats, _ = check_grpo(inputs, backend, dual_clip=3.0, kl_coef=0.1)
    assert (stats.ratio > 3.0).any() and (stats.ratio < 0.1).any()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sequence_advantages_broadcast_over_tokens(backend):
    inputs = make_grpo_inputs((3, 9), 200, salt=("seq",))
    per_sequence = inputs.advantages[:, 0].clone()
    inputs.advantages = per_sequence.unsqueeze(-1).expand(3, 9).contiguous()
    expected, _, expected_grad = run_grpo(inputs, backend)
    inputs.advantages = per_sequence
    loss, _, grad = run_grpo(inputs, backend)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_sdar_coef_does_no_teacher_work(backend):
    inputs = make_grpo_inputs((12,), 64, salt=("noteacher",))
    plain = make_grpo_inputs((12,), 64, teacher_form="none", salt=("noteacher",))
    inputs.teacher = torch.full_like(inputs.teacher, float("nan"))  # would poison anything that read it
    loss, stats, grad = run_grpo(inputs, backend, sdar_coef=0.0)
    expected, _, expected_grad = run_grpo(plain, backend)
    assert torch.isfinite(loss) and torch.all(stats.gate == 0)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_reference_or_zero_kl_coef_skips_the_kl_term(backend):
    inputs = make_grpo_inputs((12,), 64, salt=("nokl",))
    with_zero_coef = run_grpo(inputs, backend, kl_coef=0.0)
    inputs.ref_logprobs = None
    without_ref = run_grpo(inputs, backend)
    for _, stats, _ in (with_zero_coef, without_ref):
        assert torch.all(stats.kl == 0)
    torch.testing.assert_close(with_zero_coef[0], without_ref[0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_all_rows_excluded(backend):
    inputs = make_grpo_inputs((10,), 50)
    inputs.mask = torch.zeros(10, dtype=torch.bool)
    loss, stats, grad = run_grpo(inputs, backend)
    assert loss.item() == 0.0 and torch.all(grad == 0) and not stats.clipped.any()


@pytest.mark.skipif(not sdar_kernels.native_available(), reason="native ops not built")
@pytest.mark.parametrize("with_teacher", [False, True])
def test_gradcheck_of_the_differentiable_terms(with_teacher):
    """PG (clip, dual clip), KL and the entropy bonus carry exact derivatives: gradcheck them in float64
    (the SDAR term rides along with gate='none', whose derivative is exact too)."""
    inputs = make_grpo_inputs(
        (9,),
        13,
        torch.float64,
        teacher_form="logprobs" if with_teacher else "none",
        mask_kind="float",
        salt=("gradcheck", with_teacher),
    )
    z = inputs.student.clone().requires_grad_(True)

    def loss(z):
        return grpo_sdar_loss(
            z,
            inputs.targets,
            inputs.advantages,
            inputs.old_logprobs,
            teacher=inputs.teacher,
            ref_logprobs=inputs.ref_logprobs,
            mask=inputs.mask,
            gate="none",
            sdar_coef=0.7,
            kl_coef=0.3,
            entropy_coef=0.2,
            backend="cpu",
        )

    assert torch.autograd.gradcheck(loss, (z,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.skipif(not sdar_kernels.native_available(), reason="native ops not built")
def test_compile_fullgraph_with_mask_equals_eager():
    inputs = make_grpo_inputs((4, 7), 129)

    def step(student, mask):
        return grpo_sdar_loss(
            student,
            inputs.targets,
            inputs.advantages,
            inputs.old_logprobs,
            teacher=inputs.teacher,
            ref_logprobs=inputs.ref_logprobs,
            mask=mask,
        )

    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        student = inputs.student.clone().requires_grad_(True)
        loss = fn(student, inputs.mask)
        loss.backward()
        results.append((loss.detach(), student.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "options,error,message",
    [
        (dict(clip_low=1.0), ValueError, "clip_low must be in"),
        (dict(clip_high=-0.1), ValueError, "clip_high must be >= 0"),
        (dict(dual_clip=0.5), ValueError, "dual_clip must be > 1"),
        (dict(kl_coef=-1.0), ValueError, "kl_coef must be >= 0"),
        (dict(entropy_coef=float("inf")), TypeError, "entropy_coef must be a finite"),
    ],
)
def test_bad_grpo_options(options, error, message):
    inputs = make_grpo_inputs((4,), 10)
    with pytest.raises(error, match=message):
        run_grpo(inputs, "torch", **options)


@pytest.mark.parametrize("backend", RAISING_BACKENDS)
def test_bad_per_token_inputs(backend):
    inputs = make_grpo_inputs((4,), 10)
    with pytest.raises(ValueError, match="advantages must have the targets' shape"):
        grpo_sdar_loss(inputs.student, inputs.targets, torch.zeros(5), inputs.old_logprobs, backend=backend)
    with pytest.raises(ValueError, match="advantages and old_logprobs must be given"):
        grpo_sdar_loss(inputs.student, inputs.targets, inputs.advantages, None, backend=backend)
    g = generator("bad")
    with pytest.raises(TypeError, match="old_logprobs must be floating point"):
        grpo_sdar_loss(
            inputs.student,
            inputs.targets,
            inputs.advantages,
            torch.randint(0, 3, (4,), generator=g),
            backend=backend,
        )
