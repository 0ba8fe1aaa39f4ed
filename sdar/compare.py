"""Side-by-side summary of several training runs: held-out success before and after, and the
evaluation curves with the mean and spread over seeds."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .metrics import read_metrics


def run_curve(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, held-out success) of a run's evaluations, including before (step 0) and after."""
    points = {}
    for record in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if record.get("kind") == "eval":
            points[record["step"]] = record["success"]
    return sorted(points.items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def summarise_comparison(runs: list[dict], out: str | Path) -> str:
    """Writes compare.json, compare.md and compare.png under ``out``; returns the markdown table."""
    out = Path(out)
    curves: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
    for run in runs:
        curves[run["algo"]].append(run_curve(run["dir"]))
    table = [
        "| algorithm | seeds | held-out success before | after | change |",
        "| --- | --: | --: | --: | --: |",
    ]
    summary = {}
    for algo, per_seed in curves.items():
        before = [c[0][1] for c in per_seed if c]
        after = [c[-1][1] for c in per_seed if c]
        change = [a - b for a, b in zip(after, before, strict=True)]
        (bm, bs), (am, asd), (cm, cs) = _mean_std(before), _mean_std(after), _mean_std(change)
        summary[algo] = {"before": before, "after": after, "curves": per_seed}
        table.append(
            f"| {algo} | {len(per_seed)} | {bm:.1%} ± {bs:.1%} | {am:.1%} ± {asd:.1%} | "
            f"{cm:+.1%} ± {cs:.1%} |"
        )
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    text = "\n".join(table)
    (out / "compare.md").write_text(text + "\n")
    _plot(curves, out / "compare.png")
    return text


def _plot(curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (algo, per_seed) in enumerate(sorted(curves.items())):
        steps = sorted({step for curve in per_seed for step, _ in curve})
        means, lows, highs = [], [], []
        for step in steps:
            values = [dict(curve)[step] for curve in per_seed if step in dict(curve)]
            means.append(statistics.fmean(values))
            lows.append(min(values))
            highs.append(max(values))
        color = f"C{index}"
        axis.plot(steps, means, "o-", color=color, label=f"{algo} (mean of {len(per_seed)} seeds)")
        axis.fill_between(steps, lows, highs, color=color, alpha=0.2)
    axis.set_xlabel("training step")
    axis.set_ylabel("held-out success rate")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("held-out success: mean and min-max over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
