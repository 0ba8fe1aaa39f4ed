"""Memory capacity of the trainer's loss path: the most tokens per micro-batch whose loss
forward+backward fits under a memory cap.

The loss is the trainer's: GRPO clip + KL + entropy + lambda * SDAR from the final hidden states
h [N, D] and an LM head W [V, D] (fp32, both with gradients; teacher and reference log-probs per
token), by default at a Qwen2.5-0.5B head (V = 151,936, D = 896), for
- eager:        logits = h W^T, then the objective in eager PyTorch (the library's reference);
- fused-logits: logits = h W^T, then the fused row kernel;
- fused-linear: fused_linear_grpo_sdar_loss, which never holds the [N, V] logits.
Each probe (implementation, N) runs one forward+backward in a fresh subprocess and reports that
process's peak resident memory (everything: the interpreter, torch, the inputs, W's gradient);
N fits when that peak is at most the cap. N doubles from 256 until a probe fails or reaches
--max-rows, then a bisection narrows the boundary to --resolution rows.

    python benchmarks/bench_capacity.py [--cap-gib 4] [--vocab 151936] [--dim 896] [--max-rows 16384]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLEMENTATIONS = ("eager", "fused-logits", "fused-linear")


def probe(name: str, rows: int, dim: int, vocab: int) -> dict:
    """In this process: one forward+backward; peak RSS in bytes (run in a fresh subprocess)."""
    import torch

    sys.path.insert(0, HERE)
    from bench_fused_linear import loss_function, make_inputs

    torch.manual_seed(0)
    hidden, weight, *rest = make_inputs(rows, dim, vocab)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    started = time.perf_counter()
    loss = loss_function(name)(hidden, weight, *rest)
    loss.backward()
    seconds = time.perf_counter() - started
    if not torch.isfinite(loss) or not torch.isfinite(weight.grad).all():
        raise RuntimeError("non-finite loss or gradient")
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": seconds}


def run_probe(name: str, rows: int, dim: int, vocab: int, cap_bytes: int) -> dict:
    command = [sys.executable, __file__, "--probe", name, str(rows), "--dim", str(dim), "--vocab", str(vocab)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:  # killed (out of memory) or failed: does not fit
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"rows": rows, "fits": False, "error": tail}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rows": rows, "fits": result["peak_rss_bytes"] <= cap_bytes, **result}


def capacity(name, dim, vocab, cap_bytes, max_rows, resolution, log) -> dict:
    probes = []

    def check(rows):
        result = run_probe(name, rows, dim, vocab, cap_bytes)
        probes.append(result)
        peak = result.get("peak_rss_bytes")
        log(
            f"  {name:12} N={rows:6d}: "
            + (f"peak RSS {peak / 2**30:5.2f} GiB, {result['seconds']:6.1f} s" if peak else result["error"])
            + ("  fits" if result["fits"] else "  does not fit")
        )
        return result["fits"]

    low, high = 0, None
    rows = 256
    while rows <= max_rows:
        if check(rows):
            low = rows
            rows *= 2
        else:
            high = rows
            break
    if high is not None:
        while high - low > resolution:
            middle = (low + high) // 2 // resolution * resolution or resolution
            if middle in (low, high):
                break
            if check(middle):
                low = middle
            else:
                high = middle
    fitting = sorted((p for p in probes if p["fits"]), key=lambda p: p["rows"])
    slope = None
    if len(fitting) >= 2:  # bytes per token between the two largest fitting probes
        a, b = fitting[-2], fitting[-1]
        slope = (b["peak_rss_bytes"] - a["peak_rss_bytes"]) / (b["rows"] - a["rows"])
    return {
        "impl": name,
        "max_rows": low,
        "bounded_by_search": high is None,  # every probe fitted, up to --max-rows
        "bytes_per_token": slope,
        "probes": probes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cap-gib", type=float, default=4.0)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dim", type=int, default=896)
    parser.add_argument("--max-rows", type=int, default=16384, help="largest N probed")
    parser.add_argument("--resolution", type=int, default=128, help="bisection stops at this many rows")
    parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--json", default=os.path.join(HERE, "results", "capacity.json"))
    parser.add_argument("--probe", nargs=2, metavar=("IMPL", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]), args.dim, args.vocab)))
        return 0
    impls = args.impls.split(",")
    unknown = set(impls) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"--impls: unknown {sorted(unknown)}; choose from {', '.join(IMPLEMENTATIONS)}")

    sys.path.insert(0, HERE)
    from harness import machine_description

    cap_bytes = int(args.cap_gib * 2**30)
    machine = machine_description()
    print(f"machine: {machine}")
    print(f"cap {args.cap_gib} GiB peak RSS; V={args.vocab} D={args.dim} fp32; GRPO+KL+entropy+SDAR fwd+bwd")
    results = [
        capacity(n, args.dim, args.vocab, cap_bytes, args.max_rows, args.resolution, print) for n in impls
    ]
    print()
    print(f"| loss path | tokens per micro-batch under {args.cap_gib:g} GiB | vs eager |")
    print("| --- | --: | --: |")
    eager = next((r["max_rows"] for r in results if r["impl"] == "eager"), None)
    for result in results:
        shown = f"{result['max_rows']:,}" + (
            " (every probe fitted; largest probed)" if result["bounded_by_search"] else ""
        )
        ratio = f"{result['max_rows'] / eager:.1f}x" if eager else "-"
        if eager and result["bounded_by_search"]:
            ratio = "at least " + ratio
        print(f"| {result['impl']} | {shown} | {ratio} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(
            {
                "machine": machine,
                "cap_gib": args.cap_gib,
                "vocab": args.vocab,
                "dim": args.dim,
                "results": results,
            },
            handle,
            indent=1,
        )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
