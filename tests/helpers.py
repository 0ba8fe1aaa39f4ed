"""Comparison helpers and input makers shared by the tests."""

from __future__ import annotations

import os
import random
import zlib
from dataclasses import dataclass

import torch

import sdar_kernels

SEED = int(os.environ.get("SDAR_TEST_SEED", random.SystemRandom().randrange(2**31)))

CPU_BACKENDS = [b for b in ("cpu", "torch", "triton") if b in sdar_kernels.available_backends("cpu")]
# backends whose kernels raise on bad values (GPU-style kernels write NaN rows instead)
RAISING_BACKENDS = [b for b in ("cpu", "torch") if b in CPU_BACKENDS]
INTERPRETED_TRITON = os.environ.get("TRITON_INTERPRET") == "1"


def generator(*salt) -> torch.Generator:
    """A generator seeded from the session seed (printed in the pytest header) and the test's salt."""
    return torch.Generator().manual_seed((SEED * 1000003 + zlib.crc32(repr(salt).encode())) % (2**63))


def max_abs(x: torch.Tensor) -> float:
    return float(x.detach().double().abs().max()) if x.numel() else 0.0


def assert_close_fp32(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-5, scale=None, what=""
):
    """max |actual - expected| <= rtol * scale, scale = max |expected| unless given (SPEC section 7)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = max_abs(actual.double().cpu() - expected.double().cpu())
    ref = max_abs(expected) if scale is None else float(scale)
    assert err <= rtol * max(ref, 1e-30) + 1e-30, f"{what}: max error {err:.3e} > {rtol:g} x {ref:.3e}"


def assert_close_abs(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = max_abs(actual.double().cpu() - expected.double().cpu())
    assert err <= atol, f"{what}: max abs error {err:.3e} > {atol:g}"


def assert_no_worse_than_reference(actual, reference, expected, *, what="", slack: float = 1e-3, scale=None):
    """Reduced precision contract: error <= the eager reference's error (same input dtype) + slack x scale."""
    expected = expected.double().cpu()
    err = max_abs(actual.double().cpu() - expected)
    ref_err = max_abs(reference.double().cpu() - expected)
    size = max_abs(expected) if scale is None else float(scale)
    assert err <= ref_err + slack * size + 1e-12, (
        f"{what}: error {err:.3e} > reference error {ref_err:.3e} + {slack:g} x {size:.3e}"
    )


@dataclass
class LossInputs:
    student: torch.Tensor  # [..., V]
    teacher: torch.Tensor  # logits [..., V] or log-probs [...]
    targets: torch.Tensor
    mask: torch.Tensor | None


def make_inputs(
    shape,
    vocab,
    dtype=torch.float32,
    *,
    teacher_form="logits",
    mask_kind="bool",
    salt=(),
    logit_scale=2.0,
    ignore_fraction=0.1,
    ignore_index=-100,
) -> LossInputs:
    """Random student/teacher logits where the teacher is the student plus noise (gaps of both signs)."""
    g = generator(tuple(shape), vocab, str(dtype), teacher_form, mask_kind, *salt)
    student = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * logit_scale
    teacher_logits = (
        student + torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * logit_scale * 0.7
    )
    targets = torch.randint(0, vocab, tuple(shape), generator=g)
    if ignore_fraction:
        targets[torch.rand(tuple(shape), generator=g) < ignore_fraction] = ignore_index
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(tuple(shape), generator=g) < 0.8
    elif mask_kind == "float":
        mask = torch.rand(tuple(shape), generator=g, dtype=torch.float64).to(torch.float32)
    if teacher_form == "logits":
        teacher = teacher_logits.to(dtype)
    else:
        safe = targets.clamp(min=0)
        teacher = torch.log_softmax(teacher_logits, -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1).float()
        if dtype == torch.float64:
            teacher = teacher.double()
    return LossInputs(student.to(dtype), teacher, targets, mask)


@dataclass
class GRPOInputs(LossInputs):
    advantages: torch.Tensor | None = None
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None


def make_grpo_inputs(
    shape, vocab, dtype=torch.float32, *, teacher_form="logits", mask_kind="bool", salt=(), ratio_spread=0.3
) -> GRPOInputs:
    """LossInputs plus advantages of both signs and old/ref log-probs near the student's own, so
    that ratios land on both sides of the clip range (and below/above the dual clip)."""
    base = make_inputs(shape, vocab, dtype, teacher_form="logits", mask_kind=mask_kind, salt=("grpo", *salt))
    g = generator("grpo-extra", tuple(shape), vocab, str(dtype), *salt)
    safe = base.targets.clamp(min=0)
    own = torch.log_softmax(base.student.double(), -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    old = own + torch.randn(tuple(shape), generator=g, dtype=torch.float64) * ratio_spread
    ref = own + torch.randn(tuple(shape), generator=g, dtype=torch.float64) * 0.5
    advantages = torch.randn(tuple(shape), generator=g, dtype=torch.float64) * 1.5
    teacher = base.teacher
    if teacher_form == "logprobs":
        teacher = (
            torch.log_softmax(base.teacher.double(), -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1).float()
        )
    elif teacher_form == "none":
        teacher = None
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if teacher is not None and teacher.dim() == len(shape):
        teacher = teacher.to(acc)
    return GRPOInputs(
        base.student, teacher, base.targets, base.mask, advantages.to(acc), old.to(acc), ref.to(acc)
    )
