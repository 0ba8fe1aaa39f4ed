"""The snippets of README.md's "Use it in your framework" section run: the plain-PyTorch one as
written, the TRL one on a tiny local Qwen2 (its config gets CPU-sized overrides: one step, short
completions), the verl one against the recorded-interface stand-in of verl
(tests/integrations/verl_stand_in.py)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch
from verl_stand_in import actor_config, stand_in_modules

DOC = Path(__file__).resolve().parents[2] / "README.md"


def snippet(heading: str) -> str:
    """The first python code block after the ``### heading`` line."""
    text = DOC.read_text()
    section = text[text.index(f"### {heading}") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_plain_pytorch_snippet_runs():
    namespace: dict = {}
    exec(compile(snippet("Plain PyTorch"), "plain_pytorch_snippet", "exec"), namespace)
    assert math.isfinite(float(namespace["loss"]))
    grad = namespace["student_logits"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_trl_snippet_runs(tmp_path, monkeypatch):
    pytest.importorskip("trl", reason="TRL is not installed: pip install trl")
    from tiny_models import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import sdar_kernels.integrations.trl as adapter

    path = build_tiny_model(tmp_path / "model", tie=True)
    overrides = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=4,
        max_completion_length=8,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )

    class SmallConfig(adapter.SDARGRPOConfig):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, **overrides})

    monkeypatch.setattr(adapter, "SDARGRPOConfig", SmallConfig)
    namespace = dict(
        model=AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32),
        tokenizer=AutoTokenizer.from_pretrained(str(path), padding_side="left"),
        reward_fn=lambda completions, **kwargs: [float(len(c)) for c in completions],
        prompts=["go north and open the door", "take the red key"] * 4,
    )
    exec(compile(snippet("TRL"), "trl_snippet", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert math.isfinite(logged["loss"]) and math.isfinite(logged["sdar/loss"])


def test_verl_snippet_runs(monkeypatch):
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)

    class Actor:
        def set_loss_fn(self, loss_fn):
            self.loss_fn = loss_fn

    namespace = dict(actor=Actor(), actor_config=actor_config())
    exec(compile(snippet("verl"), "verl_snippet", "exec"), namespace)
    generator = torch.Generator().manual_seed(0)
    log_prob = (-torch.rand(2, 5, generator=generator)).requires_grad_(True)
    data = {
        "old_log_probs": log_prob.detach() - 0.1,
        "advantages": torch.tensor([[1.0], [-1.0]]).expand(2, 5),
        "response_mask": torch.ones(2, 5, dtype=torch.bool),
        "teacher_log_prob": log_prob.detach() + 0.5,
    }
    # verl's engine calls the loss with keywords (recorded from verl 0.9.1's FSDP engine)
    loss, metrics = namespace["actor"].loss_fn(model_output={"log_probs": log_prob}, data=data, dp_group=None)
    loss.backward()
    assert math.isfinite(float(loss)) and log_prob.grad.abs().sum() > 0
    assert metrics["actor/sdar_gate_mean"] > 0.5  # the teacher endorses every token here
