"""CPU benchmark of sdar_loss: native kernel vs the eager reference (issue acceptance figures).

Times forward, backward and forward+backward at N=2048, V=32768 in fp32 and bf16 for
- native:  sdar_loss(..., backend="cpu"), the fused C++ kernel;
- torch:   sdar_loss(..., backend="torch"), the library's eager reference (also computes stats);
- eager:   benchmarks/baselines.py, the minimal eager loss users write;
and prints ns per logit element, speed-up of native, and each one's peak extra memory for a
forward+backward relative to the size of the gradient tensor.

    python benchmarks/bench_cpu_op.py [--rows 2048] [--vocab 32768] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import eager_sdar_loss
from harness import machine_description, measure_loss

from sdar_kernels import cpu_capability, sdar_loss


def make_inputs(rows, vocab, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(rows, vocab, generator=g) * 2).to(dtype)
    teacher = (student.float() + torch.randn(rows, vocab, generator=g)).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    mask = torch.rand(rows, generator=g) < 0.9
    return student, teacher, targets, mask


def implementations():
    return {
        "native": lambda z, t, y, m: sdar_loss(z, t, y, m, backend="cpu"),
        "torch": lambda z, t, y, m: sdar_loss(z, t, y, m, backend="torch"),
        "eager": lambda z, t, y, m: eager_sdar_loss(z, t, y, m),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args(argv)

    print(f"machine: {machine_description()}; CPU kernels: {cpu_capability()}")
    print(f"N={args.rows} V={args.vocab}; times are median [p20, p80] of {args.repeats} runs")
    elements = args.rows * args.vocab
    header = (
        f"{'dtype':9} {'impl':7} {'fwd ms':>9} {'bwd ms':>9} {'fwd+bwd ms':>11} {'ns/elem':>8} "
        f"{'speed-up':>8} {'peak extra MiB':>15} {'x grad':>7}"
    )
    print(header)
    print("-" * len(header))
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        inputs = make_inputs(args.rows, args.vocab, dtype)
        grad_bytes = elements * inputs[0].element_size()
        results = {
            name: measure_loss(fn, *inputs, repeats=args.repeats) for name, fn in implementations().items()
        }
        native_time = results["native"].forward_backward.median_s
        for name, result in results.items():
            fwd, bwd, both, peak = (
                result.forward,
                result.backward,
                result.forward_backward,
                result.peak_extra_bytes,
            )
            print(
                f"{dtype_name:9} {name:7} {fwd.median_s * 1e3:9.1f} {bwd.median_s * 1e3:9.1f} "
                f"{both.median_s * 1e3:11.1f} {both.median_s * 1e9 / elements:8.2f} "
                f"{both.median_s / native_time:7.2f}x {peak / 2**20:15.1f} {peak / grad_bytes:7.2f}"
            )


if __name__ == "__main__":
    main()
