"""``SDARGRPOTrainer``: one real TRL ``GRPOTrainer`` step on a tiny local Qwen2 (CPU, no vLLM).

Checks that the step trains (parameters move, the logged loss is finite), that the teacher
log-probs are the same model's scores of the completion under the teacher prompt, and that the
loss and the logged SDAR term equal an independent float64 evaluation of SPEC (tests/oracle.py and
direct PyTorch) on the very tensors the adapter used.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install trl (the SDAR TRL adapter needs it)")
pytest.importorskip("datasets", reason="TRL's trainer needs the datasets package")

from oracle import oracle
from tiny_models import build_tiny_model

SKILL = "skill : open the door before you go north . "
TEMPERATURE = 1.5  # not 1, so that every scoring path must apply it
PROMPTS = ["go north and open the door", "take the red key from the table", "look at the small box"]


def teacher_prompt(prompt: str) -> str:
    return SKILL + prompt


def lengthy_reward(completions, **kwargs):
    return [float(len(completion)) for completion in completions]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp("trl_tiny"), tie=False)
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return path, model, tokenizer


def test_one_sdar_grpo_step(tmp_path, tiny_model):
    from datasets import Dataset

    from sdar_kernels.integrations.trl import SDARGRPOConfig, SDARGRPOTrainer

    _, model, tokenizer = tiny_model
    initial = copy.deepcopy(model).eval()
    config = SDARGRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        use_vllm=False,
        bf16=False,
        temperature=TEMPERATURE,  # TRL defaults to bf16 autocast; fp32 keeps the comparisons tight
        beta=0.01,  # KL to the reference model, exercised too
        sdar_coef=1.0,
        sdar_beta=5.0,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SDARGRPOTrainer(
        model=model,
        reward_funcs=lengthy_reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
        processing_class=tokenizer,
        teacher_prompt_fn=teacher_prompt,
    )
    calls = []
    objective = trainer.sdar_objective

    def recording_objective(*args):
        loss, stats = objective(*args)
        calls.append(([a.detach().clone() if torch.is_tensor(a) else a for a in args], loss.detach(), stats))
        return loss, stats

    trainer.sdar_objective = recording_objective
    trainer.train()

    # 1. the step trained
    assert len(calls) == 1
    moved = [
        name
        for (name, before), after in zip(initial.named_parameters(), model.parameters(), strict=True)
        if not torch.equal(before, after.detach())
    ]
    assert moved, "no parameter changed"
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert math.isfinite(logged["loss"])
    assert logged["completions/max_length"] > 1

    (logits, ids, advantages, old, teacher, ref, weights, normalizer), loss, stats = calls[0]
    n_rows, length = ids.shape
    assert logits.shape[:2] == (n_rows, length) and teacher.shape == (n_rows, length)
    assert ref is not None

    # 2. teacher log-probs: the initial weights scoring each completion after its teacher prompt (rows
    #    are shuffled, so each row must match one of the prompts)
    teacher_prompts = trainer.processing_class(text=[teacher_prompt(p) for p in PROMPTS])["input_ids"]
    for row in range(n_rows):
        size = int(weights[row].ne(0).sum())
        completion = ids[row, :size]
        candidates = []
        for prompt_ids in teacher_prompts:
            sequence = torch.tensor([list(prompt_ids) + completion.tolist()])
            with torch.no_grad():
                logits_row = initial(sequence).logits[0, len(prompt_ids) - 1 : -1].double() / TEMPERATURE
            candidates.append(torch.log_softmax(logits_row, -1).gather(-1, completion[:, None])[:, 0])
        errors = [float((c - teacher[row, :size].double()).abs().max()) for c in candidates]
        assert min(errors) < 2e-5, f"row {row}: teacher log-probs match no teacher prompt's scores ({errors})"

    # 3. the loss the adapter returned = SPEC section 4 in float64 (tests/oracle.py), same tensors
    flat = oracle(
        logits.reshape(-1, logits.shape[-1]),
        ids.reshape(-1),
        teacher_logprobs=teacher.reshape(-1),
        weights=weights.reshape(-1),
        advantages=advantages.reshape(-1),
        old_logprobs=old.reshape(-1),
        ref_logprobs=ref.reshape(-1),
        beta=5.0,
        sdar_coef=1.0,
        dual_clip=None,
        kl_coef=0.01,
        entropy_coef=0.0,
        temperature=TEMPERATURE,
    )
    divisor = float(normalizer)
    assert float(loss) == pytest.approx(float(flat.loss_sum) / divisor, rel=1e-5, abs=1e-7)

    # 4. the SDAR term it logged = g (b - a), direct PyTorch in float64
    a = torch.log_softmax(logits.double() / TEMPERATURE, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    gap = teacher.double() - a
    term = (weights.double() * torch.sigmoid(5.0 * gap) * gap).sum() / divisor
    assert logged["sdar/loss"] == pytest.approx(float(term), rel=1e-5, abs=1e-8)
    assert torch.allclose(stats.gate.double(), torch.sigmoid(5.0 * gap) * weights.ne(0), atol=1e-5)


def test_refuses_unsupported_options(tmp_path, tiny_model):
    from datasets import Dataset

    from sdar_kernels.integrations.trl import SDARGRPOConfig, SDARGRPOTrainer

    _, model, tokenizer = tiny_model
    config = SDARGRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        report_to=[],
        use_cpu=True,
        loss_type="cispo",
        beta=0.0,
    )
    with pytest.raises(ValueError, match="loss_type='cispo'"):
        SDARGRPOTrainer(
            model=model,
            reward_funcs=lengthy_reward,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
            processing_class=tokenizer,
            teacher_prompt_fn=teacher_prompt,
        )
    with pytest.raises(TypeError, match="teacher_prompt_fn"):
        SDARGRPOTrainer(model=model, reward_funcs=lengthy_reward, args=config, teacher_prompt_fn="skills")
