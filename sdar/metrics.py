"""Where a run's numbers go: a JSONL file (one record per step or evaluation), TensorBoard when it
is installed, and PNG plots of the curves at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to ``<out_dir>/metrics.jsonl`` (and TensorBoard scalars if available)."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL and plots only
                self._writer = None

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self._writer is not None:
            step = record.get("step", 0)
            prefix = record.get("kind", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TRAIN_CURVES = ("success", "reward", "valid_ratio", "loss", "gate_mean", "gap_mean", "entropy", "kl")


def plot_run(out_dir: str | Path) -> Path | None:
    """PNG of the training curves and the evaluation success rate of one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(Path(out_dir) / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    names = [n for n in TRAIN_CURVES if any(r.get(n) is not None for r in train)]
    figure, axes = plt.subplots(3, 3, figsize=(13, 10))
    for axis, name in zip(axes.flat, [*names, "eval success"], strict=False):
        if name == "eval success":
            axis.plot([r["step"] for r in evals], [r["success"] for r in evals], "o-", color="C3")
        else:
            points = [(r["step"], r[name]) for r in train if r.get(name) is not None]
            axis.plot([p[0] for p in points], [p[1] for p in points])
        axis.set_title(name)
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(names) + 1 :]:
        axis.axis("off")
    figure.tight_layout()
    path = Path(out_dir) / "curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
