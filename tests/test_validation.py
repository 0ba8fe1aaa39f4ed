"""Bad input gets a clear error naming the argument (issue: input validation)."""

import pytest
import torch

from sdar_kernels import SDARLoss, sdar_loss

N, V = 6, 11


def good():
    return dict(
        student_logits=torch.randn(N, V), teacher=torch.randn(N, V), targets=torch.randint(0, V, (N,))
    )


def call(**overrides):
    kwargs = good()
    options = {k: overrides.pop(k) for k in list(overrides) if k not in kwargs and k != "mask"}
    kwargs.update(overrides)
    return sdar_loss(
        kwargs["student_logits"], kwargs["teacher"], kwargs["targets"], kwargs.get("mask"), **options
    )


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (dict(student_logits=torch.randint(0, 5, (N, V))), TypeError, "student_logits must be float32"),
        (dict(student_logits=[[0.0] * V] * N), TypeError, "student_logits must be a torch.Tensor"),
        (dict(student_logits=torch.randn(V)), ValueError, r"student_logits must be \[N, V\]"),
        (
            dict(student_logits=torch.randn(N, 0), teacher=torch.randn(N, 0)),
            ValueError,
            "non-empty vocabulary",
        ),
        (dict(targets=torch.rand(N)), TypeError, "targets must hold integer token ids"),
        (dict(targets=torch.ones(N, dtype=torch.bool)), TypeError, "targets must hold integer"),
        (dict(targets=torch.zeros(N + 1, dtype=torch.long)), ValueError, "targets must have shape"),
        (dict(teacher=torch.randn(N, V + 1)), ValueError, "teacher must be logits of shape"),
        (dict(teacher=torch.randint(0, 3, (N,))), TypeError, "teacher must be floating point"),
        (dict(teacher=None), ValueError, "teacher must be given"),
        (dict(teacher=torch.randn(N, V).double()), TypeError, "both be float64 or neither"),
        (dict(mask=torch.ones(N + 2, dtype=torch.bool)), ValueError, "mask must have the targets' shape"),
        (dict(mask=torch.ones(N, dtype=torch.long)), TypeError, "mask must be bool or floating point"),
        (dict(gate="gapp"), ValueError, "gate must be one of"),
        (dict(objective="kl"), ValueError, "objective must be one of"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(backend="jax"), ValueError, "backend must be one of"),
        (dict(beta=-1.0), ValueError, "beta must be >= 0"),
        (dict(beta=float("nan")), TypeError, "beta must be a finite real number"),
        (dict(temperature=0.0), ValueError, "temperature must be > 0"),
        (dict(temperature=-0.5), ValueError, "temperature must be > 0"),
        (dict(teacher_temperature=0.0), ValueError, "teacher_temperature must be > 0"),
        (dict(normalizer=0.0), ValueError, "normalizer must be > 0"),
        (dict(normalizer=torch.ones(2)), ValueError, "normalizer must be a 0-d tensor"),
        (dict(normalizer=torch.tensor(3)), TypeError, "normalizer tensor must be floating point"),
        (dict(ignore_index=1.5), TypeError, "ignore_index must be an int"),
        (dict(backend="cuda"), ValueError, "backend='cuda' needs CUDA tensors"),
    ],
)
def test_bad_input_raises_a_named_error(overrides, error, message):
    with pytest.raises(error, match=message):
        call(**overrides)


def test_tensors_on_different_devices():
    with pytest.raises(ValueError, match="targets must be on cpu"):
        call(targets=torch.randint(0, V, (N,), device="meta"))


def test_module_validates_options_at_construction():
    with pytest.raises(ValueError, match="gate must be one of"):
        SDARLoss(gate="nope")
    loss = SDARLoss(beta=2.0, reduction="sum")
    assert "beta=2.0" in repr(loss)
    kwargs = good()
    assert torch.isfinite(loss(kwargs["student_logits"], kwargs["teacher"], kwargs["targets"]))


def test_integer_targets_of_any_width_are_accepted():
    kwargs = good()
    as_int32 = sdar_loss(kwargs["student_logits"], kwargs["teacher"], kwargs["targets"].int())
    as_int64 = sdar_loss(kwargs["student_logits"], kwargs["teacher"], kwargs["targets"])
    assert as_int32.item() == as_int64.item()


def test_direct_op_call_checks_its_arguments():
    """torch.ops.sdar_kernels.* called directly (not through sdar_loss) still rejects bad input."""
    import sdar_kernels

    if not sdar_kernels.native_available():
        pytest.skip("native ops not built")
    z = torch.randn(N, V)
    with pytest.raises(ValueError, match="targets must have shape"):
        torch.ops.sdar_kernels.objective_forward(
            z,
            torch.zeros(N + 1, dtype=torch.long),
            None,
            None,
            None,
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
    with pytest.raises(TypeError, match="weights must be Float"):
        torch.ops.sdar_kernels.objective_forward(
            z,
            torch.zeros(N, dtype=torch.long),
            torch.ones(N, dtype=torch.float64),
            None,
            None,
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
