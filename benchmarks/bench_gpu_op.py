"""GPU benchmark of sdar_loss: the CUDA kernel, the Triton kernel and the eager references.

At Qwen-sized shapes (V=151936, N=4096 and 16384, bf16) it first checks each backend's loss and
gradient against the eager fp32 reference (a wrong result is marked WRONG, not reported as fast),
then times forward, backward and forward+backward and prints achieved GB/s next to a measured
device-to-device copy bandwidth (the floor a memory-bound kernel can reach).

    python benchmarks/bench_gpu_op.py [--rows 4096,16384] [--vocab 151936]

Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import eager_sdar_loss
from harness import machine_description, measure_loss, time_call

import sdar_kernels
from sdar_kernels import sdar_loss


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy: bytes read + bytes written per second."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    timing = time_call(lambda _: dst.copy_(src), warmup=3, repeats=10, device="cuda")
    return 2 * nbytes / timing.median_s / 1e9


def implementations():
    impls = {
        name: (lambda b: lambda z, t, y, m: sdar_loss(z, t, y, m, backend=b))(name)
        for name in sdar_kernels.available_backends("cuda")
        if name != "torch"
    }
    impls["torch"] = lambda z, t, y, m: sdar_loss(z, t, y, m, backend="torch")
    impls["eager"] = lambda z, t, y, m: eager_sdar_loss(z, t, y, m)
    return impls


def make_inputs(rows, vocab, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    student = (torch.randn(rows, vocab, generator=g, device="cuda") * 2).to(dtype)
    teacher = (student.float() + torch.randn(rows, vocab, generator=g, device="cuda")).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g, device="cuda")
    mask = torch.rand(rows, generator=g, device="cuda") < 0.9
    return student, teacher, targets, mask


def check(fn, inputs, reference):
    """Max relative errors of loss and gradient against the eager fp32 reference."""
    student, teacher, targets, mask = inputs
    z = student.detach().requires_grad_(True)
    loss = fn(z, teacher, targets, mask)
    loss.backward()
    ref_loss, ref_grad = reference
    loss_err = abs(float(loss) - float(ref_loss)) / max(abs(float(ref_loss)), 1e-12)
    grad_err = float((z.grad.float() - ref_grad.float()).abs().max() / ref_grad.float().abs().max())
    return loss_err, grad_err


def run_shape(rows: int, vocab: int, repeats: int, floor_gbs: float) -> None:
    inputs = make_inputs(rows, vocab, torch.bfloat16)
    student, teacher, targets, mask = inputs
    z = student.detach().requires_grad_(True)
    ref_loss = sdar_loss(z, teacher, targets, mask, backend="torch")
    ref_loss.backward()
    reference = (ref_loss.detach(), z.grad)
    moved = 2 * rows * vocab * student.element_size()  # forward: student + teacher; backward: student + grad
    for name, fn in implementations().items():
        try:
            loss_err, grad_err = check(fn, inputs, reference)
            result = measure_loss(fn, *inputs, repeats=repeats, device="cuda")
        except torch.cuda.OutOfMemoryError:
            print(f"{rows:6d} {name:7} out of memory")
            torch.cuda.empty_cache()
            continue
        fwd, bwd, both = result.forward, result.backward, result.forward_backward
        total_gbs = 2 * moved / both.median_s / 1e9
        verdict = "ok" if loss_err < 1e-3 and grad_err < 2e-2 else "WRONG"
        print(
            f"{rows:6d} {name:7} {verdict:5} {loss_err:9.1e} {grad_err:9.1e} {fwd.median_s * 1e3:8.2f} "
            f"{bwd.median_s * 1e3:8.2f} {both.median_s * 1e3:8.2f} {moved / fwd.median_s / 1e9:9.0f} "
            f"{moved / bwd.median_s / 1e9:9.0f} {100 * total_gbs / floor_gbs:6.0f}% "
            f"{result.peak_extra_bytes / 2**30:9.2f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="4096,16384")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu_op.py: no CUDA device on this machine; nothing to measure (exit 0).")
        return 0

    print(f"machine: {machine_description()}")
    floor = copy_bandwidth_gbs()
    print(f"device-to-device copy bandwidth: {floor:.0f} GB/s (read + write)")
    header = (
        f"{'N':>6} {'impl':7} {'check':5} {'loss err':>9} {'grad err':>9} "
        f"{'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>8} "
        f"{'fwd GB/s':>9} {'bwd GB/s':>9} {'% copy':>7} {'peak GiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for rows in (int(r) for r in args.rows.split(",")):
        run_shape(rows, args.vocab, args.repeats, floor)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
