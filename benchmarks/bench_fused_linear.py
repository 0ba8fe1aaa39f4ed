"""Fused-linear loss vs the eager logits path: time and peak extra memory as N grows.

The trainer's loss: GRPO + KL + entropy + lambda * SDAR from final hidden states h [N, D] and the
LM head W [V, D] (fp32), with teacher and reference log-probs given per token. Implementations:
- eager:        logits = h W^T, then the library's eager reference (backend="torch");
- fused-logits: logits = h W^T, then the fused row kernel (backend="cpu");
- fused-linear: fused_linear_grpo_sdar_loss (no [N, V] tensor).
Each (implementation, N) runs in its own subprocess (clean allocator, and an out-of-memory kill
cannot take the run down); an implementation whose estimated footprint exceeds the machine's
available memory is reported as skipped.

    python benchmarks/bench_fused_linear.py [--rows 2048,8192,32768] [--dim 512] [--vocab 32768]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import machine_description, measure_loss  # noqa: E402

from sdar_kernels import grpo_sdar_loss  # noqa: E402
from sdar_kernels.fused_linear import fused_linear_grpo_sdar_loss  # noqa: E402

IMPLEMENTATIONS = ("eager", "fused-logits", "fused-linear")
# rough peak multiples of one [N, V] fp32 tensor, to skip what cannot fit
FOOTPRINT = {"eager": 6, "fused-logits": 3, "fused-linear": 0}


def make_inputs(rows, dim, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) / dim**0.5
    targets = torch.randint(0, vocab, (rows,), generator=g)
    per_token = [
        torch.randn(rows, generator=g) * s + m for s, m in ((1.0, 0.0), (0.3, -8.0), (0.3, -8.0), (1, -9))
    ]
    advantages, old, ref, teacher = per_token
    mask = torch.rand(rows, generator=g) < 0.9
    return hidden, weight, targets, advantages, old, ref, teacher.clamp(max=0), mask


def loss_function(name):
    def eager_like(backend):
        def loss(hidden, weight, targets, advantages, old, ref, teacher, mask):
            logits = F.linear(hidden, weight)
            return grpo_sdar_loss(
                logits,
                targets,
                advantages,
                old,
                teacher=teacher,
                ref_logprobs=ref,
                mask=mask,
                backend=backend,
            )

        return loss

    def fused_linear(hidden, weight, targets, advantages, old, ref, teacher, mask):
        return fused_linear_grpo_sdar_loss(
            hidden, weight, targets, advantages, old, teacher=teacher, ref_logprobs=ref, mask=mask
        )

    return {"eager": eager_like("torch"), "fused-logits": eager_like("cpu"), "fused-linear": fused_linear}[
        name
    ]


def measure_one(name, rows, dim, vocab, repeats):
    inputs = make_inputs(rows, dim, vocab)
    fn = loss_function(name)
    weight = inputs[1].requires_grad_(True)

    def with_weight(hidden, *rest):
        return fn(hidden, weight, *rest)

    result = measure_loss(with_weight, inputs[0], *inputs[2:], repeats=repeats)
    return dict(
        forward_backward_s=result.forward_backward.median_s,
        p20_s=result.forward_backward.p20_s,
        p80_s=result.forward_backward.p80_s,
        peak_extra_bytes=result.peak_extra_bytes,
    )


def available_bytes():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 60


def run_in_subprocess(name, rows, dim, vocab, repeats):
    logits_bytes = rows * vocab * 4
    if FOOTPRINT[name] * logits_bytes > 0.8 * available_bytes():
        return {"skipped": f"needs about {FOOTPRINT[name] * logits_bytes / 2**30:.0f} GiB"}
    command = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--rows",
        str(rows),
        "--dim",
        str(dim),
        "--vocab",
        str(vocab),
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        return {"skipped": f"failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="2048,8192,32768")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, int(args.rows), args.dim, args.vocab, args.repeats)))
        return 0

    print(f"machine: {machine_description()}")
    print(
        f"D={args.dim} V={args.vocab} fp32; forward+backward median of {args.repeats} runs; "
        "peak extra memory beyond the inputs (gradients included)"
    )
    header = f"{'N':>6} {'impl':13} {'fwd+bwd s':>10} {'x eager':>8} {'peak extra MiB':>15} {'x eager':>8}"
    print(header)
    print("-" * len(header))
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        by_name = {
            name: run_in_subprocess(name, rows, args.dim, args.vocab, args.repeats)
            for name in IMPLEMENTATIONS
        }
        eager = by_name["eager"]
        for name, result in by_name.items():
            results.append(dict(rows=rows, impl=name, **result))
            if "skipped" in result:
                print(f"{rows:6d} {name:13} skipped: {result['skipped']}")
                continue
            time_ratio = memory_ratio = "-"
            if "skipped" not in eager:
                time_ratio = f"{result['forward_backward_s'] / eager['forward_backward_s']:.2f}"
                memory_ratio = f"{result['peak_extra_bytes'] / eager['peak_extra_bytes']:.3f}"
            print(
                f"{rows:6d} {name:13} {result['forward_backward_s']:10.2f} {time_ratio:>8} "
                f"{result['peak_extra_bytes'] / 2**20:15.1f} {memory_ratio:>8}"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                dict(machine=machine_description(), dim=args.dim, vocab=args.vocab, results=results),
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
