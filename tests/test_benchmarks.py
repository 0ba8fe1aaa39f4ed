"""The benchmark scripts stay runnable and fair: every baseline they time computes the same loss
and gradients as the float64 oracle, the sweep writes its files, and the capacity search finds the
boundary it is meant to find."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_capacity  # noqa: E402
import bench_loss  # noqa: E402
from implementations import linear_implementations, logits_implementations  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("group", ["logits", "linear"])
def test_every_runnable_implementation_matches_the_oracle(group, dtype):
    config = bench_loss.Config(group, 96, 1001, dtype, 0.5, dim=48 if group == "linear" else 0)
    leaves, rest = bench_loss.make_inputs(config, CPU, seed=3)
    impls = logits_implementations(CPU) if group == "logits" else linear_implementations(CPU)
    runnable = [i for i in impls if i.fn is not None and not i.name.startswith("compile-1")]
    assert {"eager", "compile-8" if group == "linear" else "compile-4"} <= {i.name for i in runnable}
    for impl in runnable:
        status, loss_error, grad_error = bench_loss.check(impl, config, leaves, rest)
        assert status == "ok", (impl.name, loss_error, grad_error)
    liger = next(i for i in impls if i.name == "liger")
    assert liger.fn is None and "CUDA" in liger.reason


def test_a_wrong_implementation_is_reported_as_wrong():
    config = bench_loss.Config("logits", 32, 257, "float32", 0.0)
    leaves, rest = bench_loss.make_inputs(config, CPU)
    (eager,) = [i for i in logits_implementations(CPU) if i.name == "eager"]
    off_by_a_bit = bench_loss.Implementation("wrong", lambda z, t, y, m: 1.01 * eager.fn(z, t, y, m))
    assert bench_loss.check(off_by_a_bit, config, leaves, rest)[0] == "wrong"


def test_sweep_writes_csv_json_and_plot(tmp_path):
    args = [
        "--group",
        "logits",
        "--rows",
        "64,128",
        "--vocab",
        "515",
        "--repeats",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert bench_loss.main(args) == 0
    with open(tmp_path / "bench_loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["rows"] for r in rows} == {"64", "128"}
    ours = [r for r in rows if r["impl"] == "sdar (cpu)"]
    assert len(ours) == 2 and all(r["status"] == "ok" and float(r["forward_backward_ms"]) > 0 for r in ours)
    assert all(r["status"] == "not runnable" for r in rows if r["impl"] == "liger")
    meta = json.loads((tmp_path / "bench_loss.json").read_text())
    assert meta["copy_bandwidth_bytes_per_s"] > 0 and len(meta["results"]) == len(rows)
    assert (tmp_path / "bench_loss.png").stat().st_size > 0

    # --replot rebuilds the same rows and floors from the JSON alone
    (tmp_path / "bench_loss.png").unlink()
    assert bench_loss.main(["--replot", str(tmp_path / "bench_loss.json")]) == 0
    again = json.loads((tmp_path / "bench_loss.json").read_text())
    assert again["results"] == meta["results"]
    assert (tmp_path / "bench_loss.png").stat().st_size > 0


def test_capacity_search_finds_the_boundary(monkeypatch):
    """With a fake probe whose peak grows linearly in N, doubling then bisection lands on the
    largest N under the cap (to the resolution), and an implementation that always fits is
    reported as bounded by the search."""
    per_token, fixed = {"eager": 1000, "flat": 0}, 50_000

    def fake_probe(name, rows, dim, vocab, cap_bytes):
        peak = fixed + per_token[name] * rows
        return {"rows": rows, "fits": peak <= cap_bytes, "peak_rss_bytes": peak, "seconds": 0.0}

    monkeypatch.setattr(bench_capacity, "run_probe", fake_probe)
    cap = fixed + 1000 * 3000  # eager fits up to N = 3000
    result = bench_capacity.capacity("eager", 8, 16, cap, max_rows=65536, resolution=64, log=lambda s: None)
    assert 3000 - 64 < result["max_rows"] <= 3000 and not result["bounded_by_search"]
    assert result["bytes_per_token"] == pytest.approx(1000)
    flat = bench_capacity.capacity("flat", 8, 16, cap, max_rows=4096, resolution=64, log=lambda s: None)
    assert flat["max_rows"] == 4096 and flat["bounded_by_search"]


def test_capacity_probe_reports_peak_rss():
    result = bench_capacity.run_probe("fused-linear", 64, 32, 257, cap_bytes=1 << 40)
    assert result["fits"] and result["peak_rss_bytes"] > 10 * 2**20


def test_capacity_outputs_table_plot_and_replot(tmp_path):
    """The table reports each implementation's largest fitting N, its peak and the ratio to eager;
    ``--replot`` rebuilds the same table from the saved JSON."""
    gib = 2**30

    def probe(rows, peak_gib, fits):
        return {"rows": rows, "fits": fits, "peak_rss_bytes": int(peak_gib * gib), "seconds": 1.0}

    saved = {
        "machine": "test machine",
        "cap_gib": 4.0,
        "vocab": 151936,
        "dim": 896,
        "results": [
            {
                "impl": "eager",
                "max_rows": 1024,
                "bounded_by_search": False,
                "bytes_per_token": 3 * 2**20,
                "probes": [probe(512, 2.5, True), probe(1024, 3.5, True), probe(2048, 6.5, False)],
            },
            {
                "impl": "fused-linear",
                "max_rows": 4096,
                "bounded_by_search": True,
                "bytes_per_token": 8 * 2**10,
                "probes": [probe(2048, 2.2, True), probe(4096, 2.25, True)],
            },
        ],
    }
    written = bench_capacity.write_outputs(saved, str(tmp_path / "capacity.json"))
    table = (tmp_path / "capacity.md").read_text()
    assert "| eager | 1,024 | 3.50 GiB | 3,072 KiB | 1.0x |" in table
    flat_row = "| fused-linear | 4,096 (all probes fit; largest probed) | 2.25 GiB | 8 KiB | at least 4.0x |"
    assert flat_row in table
    assert "test machine" in table
    if any(path.endswith(".png") for path in written):
        assert (tmp_path / "capacity.png").stat().st_size > 0
    (tmp_path / "capacity.md").unlink()
    assert bench_capacity.main(["--replot", str(tmp_path / "capacity.json")]) == 0
    assert (tmp_path / "capacity.md").read_text() == table
