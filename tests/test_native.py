"""The native CPU op: instruction-set variants, registration (opcheck, torch.compile), gradcheck,
and the errors it raises from inside the kernel."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_fp32, assert_no_worse_than_reference, generator, make_inputs
from oracle import oracle

import sdar_kernels
from sdar_kernels import _layout, sdar_loss

pytestmark = pytest.mark.skipif(not sdar_kernels.native_available(), reason="native ops not built")

CAPABILITIES = ["default", "avx2", "avx512"]
RANK = {name: i for i, name in enumerate(CAPABILITIES)}


@pytest.fixture
def capability(request):
    name = request.param
    if RANK[name] > RANK[sdar_kernels.max_cpu_capability()]:
        pytest.skip(f"this CPU cannot run the {name} kernels")
    previous = sdar_kernels.set_cpu_capability(name)
    yield name
    sdar_kernels.set_cpu_capability(previous)


@pytest.mark.parametrize("capability", CAPABILITIES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("gate", ["gap", "soft_or"])
def test_every_instruction_set_matches_the_oracle(capability, dtype, gate):
    assert sdar_kernels.cpu_capability() == capability
    inputs = make_inputs((41,), 3001, dtype, salt=(capability,))
    student = inputs.student.clone().requires_grad_(True)
    loss, stats = sdar_loss(
        student, inputs.teacher, inputs.targets, inputs.mask, gate=gate, return_stats=True, backend="cpu"
    )
    loss.backward()
    weights = inputs.mask.double()
    result = oracle(inputs.student, inputs.targets, teacher_logits=inputs.teacher, weights=weights, gate=gate)
    norm = max(float(result.weight_sum), 1.0)
    if dtype in (torch.float32, torch.float64):
        assert_close_fp32(loss, result.loss_sum / norm, scale=float(result.row_loss.abs().sum()) / norm)
        assert_close_fp32(student.grad, result.grad(1.0 / norm))
    else:
        eager = inputs.student.clone().requires_grad_(True)
        sdar_loss(eager, inputs.teacher, inputs.targets, inputs.mask, gate=gate, backend="torch").backward()
        assert_no_worse_than_reference(student.grad, eager.grad, result.grad(1.0 / norm), what="grad")
        assert_close_fp32(stats.student_logprobs, result.stats["student_logprobs"], scale=1.0)


def test_capability_names_and_bad_requests():
    assert sdar_kernels.cpu_capability() in CAPABILITIES
    assert sdar_kernels.max_cpu_capability() in CAPABILITIES
    with pytest.raises(ValueError, match="one of default, avx2, avx512"):
        sdar_kernels.set_cpu_capability("sse9")


def test_capability_from_environment(tmp_path):
    import subprocess
    import sys

    code = "import sdar_kernels; print(sdar_kernels.cpu_capability())"
    env = {**__import__("os").environ, "SDAR_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "default"


def native_forward_args(n=6, v=50, dtype=torch.float32, teacher="logits", requires_grad=True):
    g = generator("opcheck", n, v, str(dtype), teacher)
    z = torch.randn(n, v, generator=g).to(dtype).requires_grad_(requires_grad)
    zt = torch.randn(n, v, generator=g).to(dtype)
    y = torch.randint(0, v, (n,), generator=g)
    y[0] = -100
    weights = torch.rand(n, generator=g)
    tl = torch.log_softmax(torch.randn(n, v, generator=g), -1)[:, 0]
    return (
        z,
        y,
        weights,
        zt if teacher == "logits" else None,
        tl if teacher != "logits" else None,
        None,
        None,
        None,
        1.0,
        1.0,
        5.0,
        0,
        0,
        1.0,
        0.2,
        0.2,
        3.0,
        0.0,
        0.0,
        -100,
    )


@pytest.mark.parametrize("teacher", ["logits", "logprobs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(teacher, dtype):
    args = native_forward_args(dtype=dtype, teacher=teacher)
    torch.library.opcheck(torch.ops.sdar_kernels.objective_forward.default, args)


def test_compile_fullgraph_with_mask_equals_eager():
    inputs = make_inputs((4, 9), 211, mask_kind="bool")

    def step(student, teacher, targets, mask):
        loss, stats = sdar_loss(student, teacher, targets, mask, return_stats=True)
        return loss, stats.gate

    compiled = torch.compile(step, fullgraph=True)
    outs = {}
    for name, fn in (("eager", step), ("compiled", compiled)):
        student = inputs.student.clone().requires_grad_(True)
        loss, gate = fn(student, inputs.teacher, inputs.targets, inputs.mask)
        loss.backward()
        outs[name] = (loss.detach(), gate, student.grad)
    for eager, compiled_value in zip(outs["eager"], outs["compiled"], strict=True):
        torch.testing.assert_close(compiled_value, eager, rtol=0, atol=0)


@pytest.mark.parametrize("objective", ["sdar", "pg"])
@pytest.mark.parametrize("gate", ["gap", "entropy", "soft_or", "none"])
def test_gradcheck_float64(gate, objective):
    """gradcheck of the hand-written backward, in float64.

    Gate and gap are stop-gradient by the contract, so the op's gradient is the derivative of
    L(z) = sum_t w_t (b_t - a_t(z)) with w_t = c_t frozen at the evaluation point (c_t = m g or m g D).
    That function is the op itself with gate="none", objective="sdar" and row weights w: it is
    gradcheck-ed exactly, and the op with each gate/objective must give the same gradient.
    """
    inputs = make_inputs(
        (7,), 23, torch.float64, teacher_form="logprobs", mask_kind="float", salt=(gate, objective)
    )
    student = inputs.student.clone().requires_grad_(True)
    loss, stats = sdar_loss(
        student,
        inputs.teacher,
        inputs.targets,
        inputs.mask,
        gate=gate,
        objective=objective,
        reduction="sum",
        return_stats=True,
        backend="cpu",
    )
    (grad,) = torch.autograd.grad(loss, student)

    weights = inputs.mask.double().clone()
    weights[inputs.targets == -100] = 0.0
    frozen = weights * stats.gate * (stats.gap if objective == "pg" else 1.0)

    def surrogate(z):
        return sdar_loss(
            z,
            inputs.teacher,
            inputs.targets,
            frozen,
            gate="none",
            objective="sdar",
            reduction="sum",
            backend="cpu",
        )

    z = inputs.student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(surrogate, (z,), eps=1e-6, atol=1e-8, rtol=1e-6)
    (surrogate_grad,) = torch.autograd.grad(surrogate(z), z)
    torch.testing.assert_close(grad, surrogate_grad, rtol=1e-12, atol=1e-14)


def test_gradcheck_reduction_none_and_mean():
    inputs = make_inputs((5,), 17, torch.float64, teacher_form="logits", mask_kind="float")
    for reduction in ("none", "mean"):
        z = inputs.student.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda z, r=reduction: sdar_loss(
                z, inputs.teacher, inputs.targets, inputs.mask, gate="none", reduction=r, backend="cpu"
            ),
            (z,),
            eps=1e-6,
            atol=1e-8,
            rtol=1e-6,
        )


@pytest.mark.parametrize("backend", ["cpu", "torch"])
class TestValueErrorsFromTheKernel:
    def test_target_out_of_range(self, backend):
        inputs = make_inputs((6,), 30, mask_kind="none", ignore_fraction=0)
        for bad in (30, -1, 10**9):
            inputs.targets[3] = bad
            with pytest.raises(IndexError, match=r"targets\[3\]"):
                sdar_loss(inputs.student, inputs.teacher, inputs.targets, backend=backend)

    def test_target_out_of_range_even_when_masked(self, backend):
        inputs = make_inputs((6,), 30, mask_kind="none", ignore_fraction=0)
        inputs.targets[2] = 31
        mask = torch.ones(6, dtype=torch.bool)
        mask[2] = False
        with pytest.raises(IndexError):
            sdar_loss(inputs.student, inputs.teacher, inputs.targets, mask, backend=backend)

    def test_positive_teacher_logprobs(self, backend):
        inputs = make_inputs((6,), 30, teacher_form="logprobs", mask_kind="none", ignore_fraction=0)
        inputs.teacher[4] = 2.5  # logits passed where log-probs belong
        with pytest.raises(ValueError, match="teacher log-probs must be <= 0"):
            sdar_loss(inputs.student, inputs.teacher, inputs.targets, backend=backend)

    @pytest.mark.parametrize("poison", [float("nan"), float("inf")])
    @pytest.mark.parametrize("where", ["student", "teacher"])
    def test_non_finite_rows(self, backend, poison, where):
        inputs = make_inputs((6,), 30, mask_kind="none", ignore_fraction=0)
        getattr(inputs, where)[2, 7] = poison
        with pytest.raises(ValueError, match="row 2 contains NaN or"):
            sdar_loss(inputs.student, inputs.teacher, inputs.targets, backend=backend)

    def test_all_minus_inf_row(self, backend):
        inputs = make_inputs((6,), 30, mask_kind="none", ignore_fraction=0)
        inputs.student[1] = float("-inf")
        with pytest.raises(ValueError, match="row 1"):
            sdar_loss(inputs.student, inputs.teacher, inputs.targets, backend=backend)


def test_stats_tensor_layout_from_the_op():
    args = native_forward_args()
    loss_sum, weight_sum, row_loss, stats = torch.ops.sdar_kernels.objective_forward(*args)
    assert stats.shape == (_layout.NUM_STATS, args[0].shape[0])
    assert loss_sum.shape == () and weight_sum.shape == () and row_loss.shape == (args[0].shape[0],)
