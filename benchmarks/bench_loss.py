"""Kernel throughput and memory of the SDAR loss against what users would pick instead.

For every configuration (N tokens, V vocabulary, D hidden size for the fused-linear group, dtype,
mask density) and every implementation in ``benchmarks/implementations.py``:

1. correctness first: the implementation's loss and gradients on the first rows of the same inputs
   are compared with a float64 evaluation of SPEC (``tests/oracle.py``); a wrong result is reported
   as wrong and not timed;
2. forward, backward and forward+backward time: median and p20/p80 over repeats after warm-up
   (torch.compile's compilation happens in the check, before any timing), synchronising on GPUs;
3. op-incremental peak memory: bytes the op allocates beyond its inputs (gradients included);
4. the floor: bytes an op must move (logits group: read z and the teacher of each kept row forward,
   read z of each kept row and write every gradient row backward) as a fraction of the machine's
   measured copy bandwidth, and for the fused-linear group the fraction of the machine's measured
   matmul rate (one [2048, D] x [D, 8192] product) that the 6 N_kept D V forward+backward FLOPs of
   h W^T represent; other matmul shapes can run a little faster than that reference.

    python benchmarks/bench_loss.py --quick            # < 2 minutes on a 2-core CPU
    python benchmarks/bench_loss.py                    # the one-factor-at-a-time sweep
    python benchmarks/bench_loss.py --group logits --rows 1024,4096 --vocab 151936 --dtypes bfloat16

Writes <out>/bench_loss[_quick].csv, .json, .md (a table per group: forward+backward time, speed-up
over eager, peak extra memory) and .png (time and memory vs N per implementation).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from harness import machine_description, peak_extra_bytes, synchronize, time_call  # noqa: E402
from implementations import Implementation, linear_implementations, logits_implementations  # noqa: E402
from oracle import oracle  # noqa: E402

CHECK_ROWS = 64
# relative tolerances of the oracle check (loss, gradient), per group and dtype: bf16 logits are
# exact inputs (fp32 math after the upcast, bf16 gradient out); bf16 h W^T rounds the logits too
TOLERANCES = {
    ("logits", "float32"): (1e-4, 1e-3),
    ("logits", "bfloat16"): (1e-3, 1e-2),
    ("linear", "float32"): (1e-4, 1e-3),
    ("linear", "bfloat16"): (3e-2, 6e-2),
}


@dataclass(frozen=True)
class Config:
    group: str  # "logits" | "linear"
    rows: int
    vocab: int
    dtype: str
    mask_density: float  # fraction of tokens masked out
    dim: int = 0  # linear group only

    def label(self) -> str:
        extra = f" D={self.dim}" if self.group == "linear" else ""
        return f"{self.group} N={self.rows} V={self.vocab}{extra} {self.dtype} masked={self.mask_density:.0%}"


@dataclass
class Row:
    config: Config
    impl: str
    status: str  # ok | wrong | error | skipped | not runnable
    note: str = ""
    check_loss_error: float | None = None
    check_grad_error: float | None = None
    times_ms: dict = field(default_factory=dict)  # phase -> [median, p20, p80]
    peak_extra_mib: float | None = None
    floor_fraction: float | None = None  # bandwidth (logits) or matmul (linear) fraction, fwd+bwd

    def flat(self) -> dict:
        out = {**asdict(self.config), "impl": self.impl, "status": self.status, "note": self.note}
        out.update(check_loss_error=self.check_loss_error, check_grad_error=self.check_grad_error)
        for phase in ("forward", "backward", "forward_backward"):
            median, p20, p80 = self.times_ms.get(phase, (None, None, None))
            out.update({f"{phase}_ms": median, f"{phase}_p20_ms": p20, f"{phase}_p80_ms": p80})
        out.update(peak_extra_mib=self.peak_extra_mib, floor_fraction=self.floor_fraction)
        return out

    @classmethod
    def from_flat(cls, flat: dict) -> Row:
        """The inverse of ``flat`` (a row of a written JSON file)."""
        config = Config(**{name: flat[name] for name in Config.__dataclass_fields__})
        times = {
            phase: [flat[f"{phase}_ms"], flat[f"{phase}_p20_ms"], flat[f"{phase}_p80_ms"]]
            for phase in ("forward", "backward", "forward_backward")
            if flat.get(f"{phase}_ms") is not None
        }
        return cls(
            config,
            flat["impl"],
            flat["status"],
            flat["note"],
            flat["check_loss_error"],
            flat["check_grad_error"],
            times,
            flat["peak_extra_mib"],
            flat["floor_fraction"],
        )


# ---------------------------------------------------------------------------------------------------------
# inputs


def make_inputs(config: Config, device: torch.device, seed: int = 0) -> tuple[list, list]:
    """(leaves, rest): the tensors that get gradients, and the others, in call order."""
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, config.dtype)
    n, v = config.rows, config.vocab
    mask = (torch.rand(n, generator=g) >= config.mask_density).float()
    targets = torch.randint(0, v, (n,), generator=g)
    if config.group == "logits":
        student = torch.randn(n, v, generator=g) * 2
        teacher = student + torch.randn(n, v, generator=g)
        leaves, rest = [student.to(dtype)], [teacher.to(dtype), targets, mask]
    else:
        hidden = torch.randn(n, config.dim, generator=g)
        weight = torch.randn(v, config.dim, generator=g) * (2.0 / config.dim**0.5)
        teacher_logprobs = -torch.rand(n, generator=g) * 8 - 4
        leaves, rest = [hidden.to(dtype), weight.to(dtype)], [targets, teacher_logprobs, mask]
    return [t.to(device) for t in leaves], [t.to(device) for t in rest]


def head_rows(config: Config, leaves: list, rest: list, rows: int) -> tuple[list, list]:
    """The first ``rows`` tokens of the inputs (the LM head is shared, not sliced)."""
    if config.group == "logits":
        return [leaves[0][:rows]], [rest[0][:rows], rest[1][:rows], rest[2][:rows]]
    return [leaves[0][:rows], leaves[1]], [t[:rows] for t in rest]


def footprint_bytes(config: Config, impl: str) -> int:
    """A generous estimate of an implementation's peak, to skip what cannot fit in memory."""
    logits = config.rows * config.vocab * 4
    if impl.startswith("sdar"):
        return logits * (3 if config.group == "logits" else 0) + config.vocab * max(config.dim, 1) * 12
    return logits * 7


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


# ---------------------------------------------------------------------------------------------------------
# correctness against the float64 oracle


def expected(config: Config, leaves: list, rest: list) -> tuple[float, list[torch.Tensor]]:
    """The float64 loss and gradients (per leaf) of SPEC section 3 on these inputs."""
    if config.group == "logits":
        (z,), (t, y, m) = leaves, rest
        result = oracle(z, y, teacher_logits=t, weights=m, beta=5.0)
        normaliser = max(float(result.weight_sum), 1.0)
        return float(result.loss_sum) / normaliser, [result.grad(1.0 / normaliser)]
    (h, w), (y, b, m) = leaves, rest
    h64, w64 = h.detach().double().cpu(), w.detach().double().cpu()
    result = oracle(h64 @ w64.T, y, teacher_logprobs=b, weights=m, beta=5.0)
    normaliser = max(float(result.weight_sum), 1.0)
    grad_logits = result.grad(1.0 / normaliser)
    return float(result.loss_sum) / normaliser, [grad_logits @ w64, grad_logits.T @ h64]


def check(impl: Implementation, config: Config, leaves: list, rest: list) -> tuple[str, float, float]:
    """(status, relative loss error, relative gradient error) on the first CHECK_ROWS tokens."""
    small_leaves, small_rest = head_rows(config, leaves, rest, CHECK_ROWS)
    want_loss, want_grads = expected(config, small_leaves, small_rest)
    fresh = [t.detach().clone().requires_grad_(True) for t in small_leaves]
    loss = impl.fn(*fresh, *small_rest)
    loss.backward()
    loss_error = abs(float(loss.detach()) - want_loss) / max(abs(want_loss), 1e-3)
    grad_error = 0.0
    for leaf, want in zip(fresh, want_grads, strict=True):
        scale = float(want.abs().max()) or 1.0
        grad_error = max(grad_error, float((leaf.grad.double().cpu() - want).abs().max()) / scale)
    loss_tol, grad_tol = TOLERANCES[(config.group, config.dtype)]
    ok = math.isfinite(loss_error) and loss_error <= loss_tol and grad_error <= grad_tol
    return ("ok" if ok else "wrong"), loss_error, grad_error


# ---------------------------------------------------------------------------------------------------------
# timing, memory and the machine's floors


def measure(impl: Implementation, leaves: list, rest: list, repeats: int, device) -> tuple[dict, float]:
    def fresh():
        return [t.detach().requires_grad_(True) for t in leaves]

    def forward(state):
        return impl.fn(*state, *rest)

    def forward_backward(state):
        impl.fn(*state, *rest).backward()

    def with_loss():
        state = fresh()
        return state, impl.fn(*state, *rest)

    timings = {
        "forward": time_call(forward, setup=fresh, warmup=1, repeats=repeats, device=device),
        "backward": time_call(
            lambda s: s[1].backward(), setup=with_loss, warmup=1, repeats=repeats, device=device
        ),
        "forward_backward": time_call(
            forward_backward, setup=fresh, warmup=1, repeats=repeats, device=device
        ),
    }

    def step():
        state = fresh()
        impl.fn(*state, *rest).backward()
        return [t.grad for t in state]

    peak = peak_extra_bytes(step, device=device)
    times = {k: [t.median_s * 1e3, t.p20_s * 1e3, t.p80_s * 1e3] for k, t in timings.items()}
    return times, peak / 2**20


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second (read + write) of a 256 MiB tensor copy: the memory-bound floor."""
    source = torch.empty(64 * 2**20, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    timing = time_call(lambda _: target.copy_(source), warmup=2, repeats=7, device=device)
    return 2 * source.numel() * 4 / timing.median_s


def matmul_rate(device: torch.device, dtype: torch.dtype, dim: int) -> float:
    """FLOP/s of a [2048, dim] x [dim, 8192] matmul in ``dtype``: the compute-bound floor."""
    a = torch.randn(2048, dim, device=device).to(dtype)
    b = torch.randn(dim, 8192, device=device).to(dtype)
    timing = time_call(lambda _: a @ b, warmup=2, repeats=5, device=device)
    return 2 * 2048 * dim * 8192 / timing.median_s


def floor_fraction(config: Config, row: Row, floors: dict) -> float | None:
    seconds = row.times_ms.get("forward_backward", [None])[0]
    if not seconds:
        return None
    seconds /= 1e3
    # masked rows need no reads and no matmul work, only their (zero) gradient row written
    kept = config.rows * (1.0 - config.mask_density)
    if config.group == "logits":
        element = torch.finfo(getattr(torch, config.dtype)).bits // 8
        moved = (3 * kept + config.rows) * config.vocab * element
        return moved / seconds / floors["bandwidth"]
    flops = 6 * kept * config.dim * config.vocab
    return flops / seconds / floors[("matmul", config.dtype, config.dim)]


# ---------------------------------------------------------------------------------------------------------
# the sweep


def sweep(args) -> list[Config]:
    """Explicit lists give their full product; otherwise the one-factor-at-a-time sweep."""
    configs = []
    if args.quick:
        configs += [Config("logits", n, 32768, "float32", 0.0) for n in (512, 2048)]
        configs += [Config("linear", 512, 32768, "float32", 0.0, dim=256)]
    elif args.rows or args.vocab or args.dtypes or args.masks:
        for group in args.group:
            for n in _ints(args.rows or "2048"):
                for v in _ints(args.vocab or "32768"):
                    for dtype in (args.dtypes or "float32").split(","):
                        for mask in _floats(args.masks or "0"):
                            configs.append(
                                Config(group, n, v, dtype, mask, dim=args.dim if group == "linear" else 0)
                            )
    else:
        if "logits" in args.group:
            base = dict(group="logits", rows=2048, vocab=32768, dtype="float32", mask_density=0.0)
            configs += [Config(**{**base, "rows": n}) for n in (512, 1024, 2048, 4096, 8192)]
            configs += [Config(**{**base, "rows": 1024, "vocab": v}) for v in (128256, 151936)]
            configs += [Config(**{**base, "dtype": "bfloat16"})]
            configs += [Config(**{**base, "mask_density": d}) for d in (0.5, 0.8)]
        if "linear" in args.group:
            base = dict(group="linear", rows=2048, vocab=32768, dtype="float32", mask_density=0.0, dim=896)
            # h W^T dominates here (6 N D V flops): N kept small on CPU; bf16 via --dtypes (a CPU
            # without AVX-512 BF16 runs bf16 matmuls far below its fp32 rate)
            configs += [Config(**{**base, "rows": n}) for n in (512, 1024, 2048)]
            configs += [Config(**{**base, "rows": 512, "vocab": 151936})]
            configs += [Config(**{**base, "rows": 512, "mask_density": 0.8})]
    return [c for c in configs if c.group in args.group]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def run_config(config: Config, device, repeats: int, floors: dict, log) -> list[Row]:
    leaves, rest = make_inputs(config, device)
    impls = logits_implementations(device) if config.group == "logits" else linear_implementations(device)
    rows = []
    for impl in impls:
        row = Row(config, impl.name, "not runnable", impl.reason)
        if impl.fn is not None:
            try:
                if footprint_bytes(config, impl.name) > 0.8 * available_bytes(device):
                    row.status, row.note = "skipped", "estimated peak exceeds available memory"
                else:
                    row.status, row.check_loss_error, row.check_grad_error = check(impl, config, leaves, rest)
                    if row.status == "ok":
                        row.times_ms, row.peak_extra_mib = measure(impl, leaves, rest, repeats, device)
                        row.floor_fraction = floor_fraction(config, row, floors)
                    else:
                        row.note = (
                            f"loss error {row.check_loss_error:.1e}, grad error {row.check_grad_error:.1e}"
                        )
            except Exception as error:  # reported, never fatal: the other implementations still run
                row.status, row.note = "error", f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        rows.append(row)
        log(format_row(row))
    return rows


HEADER = (
    f"{'config':44} {'impl':18} {'status':8} {'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>8} "
    f"{'[p20, p80]':>17} {'peak MiB':>9} {'floor':>6}"
)


def format_row(row: Row) -> str:
    start = f"{row.config.label():44} {row.impl:18} {row.status:8}"
    if row.status != "ok":
        return f"{start} {row.note}"
    fwd, bwd, both = (row.times_ms[k] for k in ("forward", "backward", "forward_backward"))
    spread = f"[{both[1]:.1f}, {both[2]:.1f}]"
    floor = f"{row.floor_fraction:.0%}" if row.floor_fraction is not None else "-"
    return (
        f"{start} {fwd[0]:8.1f} {bwd[0]:8.1f} {both[0]:8.1f} {spread:>17} {row.peak_extra_mib:9.1f} "
        f"{floor:>6}"
    )


# ---------------------------------------------------------------------------------------------------------
# output


def write_outputs(rows: list[Row], meta: dict, stem: str) -> list[str]:
    flat = [r.flat() for r in rows]
    with open(stem + ".csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    with open(stem + ".json", "w") as handle:
        json.dump({**meta, "results": flat}, handle, indent=1)
    with open(stem + ".md", "w") as handle:
        handle.write(markdown_tables(flat, meta))
    written = [stem + ".csv", stem + ".json", stem + ".md"]
    if plot(flat, meta, stem + ".png"):
        written.append(stem + ".png")
    return written


def markdown_tables(flat: list[dict], meta: dict) -> str:
    """One table per group: a row per configuration, a column per implementation, each cell the
    median forward+backward time, its speed-up over eager, and the peak extra memory."""
    command = meta["command"].strip()
    lines = [f"Machine: {meta['machine']}; `{command}`; median of {meta['repeats']} runs.", ""]
    for group in ("logits", "linear"):
        rows = [r for r in flat if r["group"] == group]
        if not rows:
            continue
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        keyed = [(Row.from_flat(r).config, r) for r in rows]  # each row's Config, built once
        configs = list(dict.fromkeys(config for config, _ in keyed))
        lines += [
            "| " + " | ".join([f"{group} config", *impls]) + " |",
            "| --- |" + " --: |" * len(impls),
        ]
        for config in configs:
            cells = {r["impl"]: r for c, r in keyed if c == config}
            eager = cells.get("eager", {}).get("forward_backward_ms")
            label = config.label().removeprefix(group + " ")
            line = [label]
            for impl in impls:
                row = cells.get(impl)
                if row is None or row["status"] != "ok":
                    line.append(row["status"] if row else "")
                    continue
                ms = row["forward_backward_ms"]
                speedup = f" ({eager / ms:.1f}x)" if eager else ""
                line.append(f"{ms:.1f} ms{speedup}, {row['peak_extra_mib']:.0f} MiB")
            lines.append("| " + " | ".join(line) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(flat: list[dict], meta: dict, path: str) -> bool:
    """Forward+backward time and peak memory vs N per implementation, one row of panels per group
    (the configurations of the N sweep: the other factors at their base values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("logits", "linear") if any(r["group"] == g and r["status"] == "ok" for r in flat)]
    if not groups:
        return False
    figure, axes = plt.subplots(len(groups), 2, figsize=(11, 4 * len(groups)), squeeze=False)
    for axis_row, group in zip(axes, groups, strict=True):
        ok = [r for r in flat if r["group"] == group and r["status"] == "ok"]
        base = max(
            {(r["vocab"], r["dtype"], r["mask_density"], r["dim"]) for r in ok},
            key=lambda k: len(
                {r["rows"] for r in ok if (r["vocab"], r["dtype"], r["mask_density"], r["dim"]) == k}
            ),
        )
        series = [r for r in ok if (r["vocab"], r["dtype"], r["mask_density"], r["dim"]) == base]
        for index, impl in enumerate(dict.fromkeys(r["impl"] for r in series)):
            points = sorted(
                (r["rows"], r["forward_backward_ms"], r["peak_extra_mib"])
                for r in series
                if r["impl"] == impl
            )
            n = [p[0] for p in points]
            style = dict(
                marker="o", color=f"C{index}", label=impl, linewidth=2.5 if impl.startswith("sdar") else 1.2
            )
            axis_row[0].plot(n, [p[1] for p in points], **style)
            axis_row[1].plot(n, [p[2] for p in points], **style)
        vocab, dtype, mask, dim = base
        what = f"V={vocab}{f', D={dim}' if group == 'linear' else ''}, {dtype}, masked {mask:.0%}"
        for axis, ylabel in zip(axis_row, ("forward+backward ms (median)", "peak extra MiB"), strict=True):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("N (tokens)")
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3, which="both")
            axis.set_title(f"{group}: {what}", fontsize=9)
        axis_row[0].legend(fontsize=8)
    figure.suptitle(meta["machine"], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def replot(path: str) -> int:
    """Rewrite <stem>.csv/.json/.md/.png next to ``path`` from its measurements, with today's formulas."""
    with open(path) as handle:
        saved = json.load(handle)
    meta = {k: v for k, v in saved.items() if k != "results"}
    floors = {"bandwidth": meta["copy_bandwidth_bytes_per_s"]}
    for key, rate in meta["matmul_flops_per_s"].items():
        dtype, dim = key.split("/D=")
        floors[("matmul", dtype, int(dim))] = rate
    rows = [Row.from_flat(flat) for flat in saved["results"]]
    print(f"machine: {meta['machine']}")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        if row.status == "ok":
            row.floor_fraction = floor_fraction(row.config, row, floors)
        print(format_row(row))
    for written in write_outputs(rows, meta, os.path.splitext(path)[0]):
        print(f"wrote {written}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="three small configurations (< 2 minutes on CPU)"
    )
    parser.add_argument("--group", default="logits,linear", type=lambda s: s.split(","))
    parser.add_argument("--rows", help="comma-separated N (with --vocab/--dtypes/--masks: full product)")
    parser.add_argument("--vocab")
    parser.add_argument("--dtypes")
    parser.add_argument("--masks", help="mask densities: fraction of tokens masked out, e.g. 0,0.5,0.8")
    parser.add_argument("--dim", type=int, default=896, help="hidden size D of the fused-linear group")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per phase (default 5; quick 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument(
        "--replot",
        metavar="JSON",
        help="re-derive floors, table, CSV and PNG from a written JSON file without measuring again",
    )
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.replot)
    unknown = set(args.group) - {"logits", "linear"}
    if unknown:
        parser.error(f"--group: unknown {sorted(unknown)}; expected logits and/or linear")
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 5)
    started = time.perf_counter()
    configs = sweep(args)

    machine = machine_description()
    print(f"machine: {machine}")
    floors = {"bandwidth": copy_bandwidth(device)}
    for config in configs:
        if config.group == "linear":
            key = ("matmul", config.dtype, config.dim)
            if key not in floors:
                floors[key] = matmul_rate(device, getattr(torch, config.dtype), config.dim)
    print(
        f"floors: copy bandwidth {floors['bandwidth'] / 1e9:.1f} GB/s"
        + "".join(
            f"; {k[1]} matmul (D={k[2]}) {v / 1e9:.0f} GFLOP/s" for k, v in floors.items() if k != "bandwidth"
        )
    )
    print(
        f"times: median of {repeats} runs after warm-up; 'floor' = fraction of the floor reached by fwd+bwd"
    )
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for config in configs:
        rows += run_config(config, device, repeats, floors, log=print)
        synchronize(device)
    meta = {
        "machine": machine,
        "device": str(device),
        "command": "python benchmarks/bench_loss.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": repeats,
        "copy_bandwidth_bytes_per_s": floors["bandwidth"],
        "matmul_flops_per_s": {f"{k[1]}/D={k[2]}": v for k, v in floors.items() if k != "bandwidth"},
        "seconds": time.perf_counter() - started,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "bench_loss_quick" if args.quick else "bench_loss")
    for path in write_outputs(rows, meta, stem):
        print(f"wrote {path}")
    print(f"done in {meta['seconds']:.0f} s")
    return 0 if all(r.status in ("ok", "skipped", "not runnable") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
