"""Vocabulary-parallel losses: 2 and 3 gloo processes on the CPU equal the unsharded op."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sdar_kernels import grpo_sdar_loss, sdar_loss
from sdar_kernels.parallel import vocab_parallel_grpo_sdar_loss, vocab_parallel_sdar_loss

CASES = [
    dict(kind="sdar", teacher="logits", dtype=torch.float32, gate="gap"),
    dict(kind="sdar", teacher="logprobs", dtype=torch.float32, gate="soft_or", temperature=0.8),
    dict(kind="sdar", teacher="logits", dtype=torch.bfloat16, gate="entropy", reduction="none"),
    dict(kind="grpo", teacher="logits", dtype=torch.float32, gate="gap"),
    dict(kind="grpo", teacher="none", dtype=torch.float32, gate="gap", dual_clip=None),
    dict(kind="grpo", teacher="logprobs", dtype=torch.float64, gate="soft_or", objective="pg"),
]


def make_case(seed, n_rows=29, vocab=1001, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n_rows, vocab, generator=g, dtype=torch.float64) * 2
    teacher = student + torch.randn(n_rows, vocab, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n_rows,), generator=g)
    targets[:3] = -100
    mask = torch.rand(n_rows, generator=g) < 0.8
    own = torch.log_softmax(student, -1).gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return dict(
        student=student.to(dtype),
        teacher=teacher.to(dtype),
        teacher_logprobs=torch.log_softmax(teacher, -1)
        .gather(-1, targets.clamp(min=0)[:, None])
        .squeeze(-1)
        .to(acc),
        targets=targets,
        mask=mask,
        advantages=torch.randn(n_rows, generator=g, dtype=torch.float64).to(acc),
        old=(own + 0.3 * torch.randn(n_rows, generator=g, dtype=torch.float64)).to(acc),
        ref=(own + 0.5 * torch.randn(n_rows, generator=g, dtype=torch.float64)).to(acc),
    )


def run_case(case, data, logits, teacher_slice, parallel):
    options = {k: v for k, v in case.items() if k not in ("kind", "teacher", "dtype")}
    teacher = {"logits": teacher_slice, "logprobs": data["teacher_logprobs"], "none": None}[case["teacher"]]
    if case["kind"] == "sdar":
        fn = vocab_parallel_sdar_loss if parallel else sdar_loss
        return fn(logits, teacher, data["targets"], data["mask"], return_stats=True, **options)
    fn = vocab_parallel_grpo_sdar_loss if parallel else grpo_sdar_loss
    return fn(
        logits,
        data["targets"],
        data["advantages"],
        data["old"],
        teacher=teacher,
        ref_logprobs=data["ref"],
        mask=data["mask"],
        return_stats=True,
        sdar_coef=0.3,
        kl_coef=0.05,
        entropy_coef=0.02,
        **options,
    )


def worker(rank, world_size, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for index, case in enumerate(CASES):
            data = make_case(index, dtype=case["dtype"])
            vocab = data["student"].shape[1]
            bounds = torch.tensor_split(torch.arange(vocab), world_size)[rank]  # contiguous, uneven slices
            start, end = int(bounds[0]), int(bounds[-1]) + 1
            local = data["student"][:, start:end].clone().requires_grad_(True)
            loss, stats = run_case(case, data, local, data["teacher"][:, start:end], parallel=True)
            upstream = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape).to(loss.dtype)
            loss.backward(upstream)
            full = data["student"].clone().requires_grad_(True)
            expected, expected_stats = run_case(case, data, full, data["teacher"], parallel=False)
            expected.backward(upstream)
            tolerance = (
                dict(rtol=1e-5, atol=1e-6) if case["dtype"] != torch.bfloat16 else dict(rtol=1e-2, atol=1e-4)
            )
            torch.testing.assert_close(loss, expected, **tolerance, msg=f"case {case}: loss")
            torch.testing.assert_close(
                local.grad, full.grad[:, start:end], **tolerance, msg=f"case {case}: grad"
            )
            for name in expected_stats._fields:
                torch.testing.assert_close(
                    getattr(stats, name),
                    getattr(expected_stats, name),
                    rtol=1e-5,
                    atol=2e-5,
                    msg=f"case {case}: stat {name}",
                )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_vocab_parallel_equals_the_unsharded_op(world_size):
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(world_size, os.path.join(folder, "rendezvous")), nprocs=world_size, join=True)


def test_needs_an_initialised_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    data = make_case(0, n_rows=4, vocab=10)
    with pytest.raises(RuntimeError, match=r"initialised torch\.distributed process group"):
        vocab_parallel_sdar_loss(data["student"], data["teacher"], data["targets"])
