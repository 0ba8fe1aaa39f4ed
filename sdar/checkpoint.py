"""Checkpoints that survive a crash: weights (safetensors), optimiser and scheduler state, every RNG
state, the step and the data cursor, written to a temporary folder and renamed into place, with a
``latest`` pointer updated last. ``--resume`` continues from the newest complete checkpoint exactly.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def model_state(model) -> dict[str, torch.Tensor]:
    """The model's tensors, contiguous and unshared (tied weights saved once per name)."""
    return {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002  (the global RNG others may use)
        "torch": torch.random.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.random.set_rng_state(state["torch"])


def save_checkpoint(
    folder: str | Path, step: int, *, model, optimizer, scheduler, trainer_state: dict
) -> Path:
    """Writes ``folder/step_<step>`` atomically and points ``folder/latest`` at it."""
    folder = Path(folder)
    final = folder / f"step_{step:06d}"
    staging = folder / f".step_{step:06d}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_file(model_state(model), str(staging / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        staging / "training_state.pt",
    )
    (staging / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=1))
    for handle in staging.iterdir():  # make the bytes durable before the rename publishes them
        with open(handle, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    pointer = folder / "latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / "latest")
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint under ``folder``, or None."""
    pointer = Path(folder) / "latest"
    if not pointer.exists():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


def load_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None) -> dict:
    """Restores weights, optimiser, scheduler and RNG states; returns the trainer state dict."""
    path = Path(path)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith("lm_head.weight")]  # tied heads
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}"
        )
    training = torch.load(path / "training_state.pt", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(training["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(training["scheduler"])
    set_rng_state(training["rng"])
    return json.loads((path / "trainer_state.json").read_text())
