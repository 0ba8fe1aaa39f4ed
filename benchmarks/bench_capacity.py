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

Writes results/capacity.json (every probe), capacity.md (the table) and capacity.png (peak RSS vs N
against the cap); --replot JSON rebuilds the table and plot from a saved run.

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


def table(saved: dict) -> str:
    """Markdown: the largest fitting N per implementation, its peak RSS and the ratio to eager."""
    cap = saved["cap_gib"]
    lines = [
        f"Machine: {saved['machine']}; V={saved['vocab']}, D={saved['dim']}, fp32; cap {cap:g} GiB peak RSS.",
        "",
        f"| loss path | tokens per micro-batch under {cap:g} GiB | peak RSS there"
        " | marginal memory per token | vs eager |",
        "| --- | --: | --: | --: | --: |",
    ]
    results = saved["results"]
    eager = next((r["max_rows"] for r in results if r["impl"] == "eager"), None)
    for result in results:
        best = max((p for p in result["probes"] if p["fits"]), key=lambda p: p["rows"], default=None)
        shown = f"{result['max_rows']:,}"
        if result["bounded_by_search"]:
            shown += " (all probes fit; largest probed)"
        peak = f"{best['peak_rss_bytes'] / 2**30:.2f} GiB" if best else "-"
        slope = result.get("bytes_per_token")
        per_token = f"{slope / 2**10:,.0f} KiB" if slope and slope > 0 else "-"
        ratio = f"{result['max_rows'] / eager:.1f}x" if eager else "-"
        if eager and result["bounded_by_search"]:
            ratio = "at least " + ratio
        lines.append(f"| {result['impl']} | {shown} | {peak} | {per_token} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(saved: dict, path: str) -> None:
    """Peak RSS vs N per implementation (log2 N), with the cap as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, result in enumerate(saved["results"]):
        points = sorted(
            (p["rows"], p["peak_rss_bytes"] / 2**30) for p in result["probes"] if "peak_rss_bytes" in p
        )
        axis.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            color=f"C{index}",
            label=result["impl"],
        )
    axis.axhline(
        saved["cap_gib"], color="black", linestyle="--", linewidth=1, label=f"cap {saved['cap_gib']:g} GiB"
    )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("N (tokens per micro-batch)")
    axis.set_ylabel("peak RSS of the process (GiB)")
    axis.set_title(
        f"loss forward+backward, V={saved['vocab']}, D={saved['dim']}, fp32\n{saved['machine']}", fontsize=9
    )
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(saved: dict, json_path: str) -> list[str]:
    """<stem>.json, <stem>.md and <stem>.png next to ``json_path``; returns the paths written."""
    stem = os.path.splitext(os.path.abspath(json_path))[0]
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".json", "w") as handle:
        json.dump(saved, handle, indent=1)
    with open(stem + ".md", "w") as handle:
        handle.write(table(saved))
    written = [stem + ".json", stem + ".md"]
    try:
        plot(saved, stem + ".png")
        written.append(stem + ".png")
    except ImportError as error:  # matplotlib is optional
        print(f"no plot: {error}")
    return written


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
    parser.add_argument(
        "--json",
        default=os.path.join(HERE, "results", "capacity.json"),
        help="results file; the .md table and .png plot are written beside it",
    )
    parser.add_argument("--replot", metavar="JSON", help="rewrite the table and plot from a saved run")
    parser.add_argument("--probe", nargs=2, metavar=("IMPL", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]), args.dim, args.vocab)))
        return 0
    if args.replot:
        with open(args.replot) as handle:
            saved = json.load(handle)
        print(table(saved))
        print("wrote " + ", ".join(write_outputs(saved, args.replot)))
        return 0
    impls = args.impls.split(",")
    unknown = set(impls) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"--impls: unknown {sorted(unknown)}; choose from {', '.join(IMPLEMENTATIONS)}")
    if args.cap_gib <= 0 or args.max_rows < 256 or args.resolution < 1:
        parser.error("--cap-gib must be > 0, --max-rows >= 256 and --resolution >= 1")

    sys.path.insert(0, HERE)
    from harness import machine_description

    cap_bytes = int(args.cap_gib * 2**30)
    machine = machine_description()
    print(f"machine: {machine}")
    print(f"cap {args.cap_gib} GiB peak RSS; V={args.vocab} D={args.dim} fp32; GRPO+KL+entropy+SDAR fwd+bwd")
    results = [
        capacity(n, args.dim, args.vocab, cap_bytes, args.max_rows, args.resolution, print) for n in impls
    ]
    saved = {
        "machine": machine,
        "cap_gib": args.cap_gib,
        "vocab": args.vocab,
        "dim": args.dim,
        "results": results,
    }
    print()
    print(table(saved))
    print("wrote " + ", ".join(write_outputs(saved, args.json)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
