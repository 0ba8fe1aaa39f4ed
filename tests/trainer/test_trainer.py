"""The trainer end to end (embedded default, both engines), exact resume, the loss wiring against a
float64 evaluation of SPEC section 4, the presets, and the CLI/configuration plumbing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sdar import algo
from sdar.checkpoint import latest_checkpoint
from sdar.config import TrainConfig
from sdar.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle import oracle

SMALL = dict(
    tasks_per_step=2,
    group_size=2,
    max_turns=3,
    max_new_tokens=16,
    eval_episodes=3,
    eval_every=0,
    checkpoint_every=1,
    progress=False,
    tensorboard=False,
    token_budget=4096,
)


@pytest.fixture(scope="session")
def initial_model(tmp_path_factory) -> Path:
    """A briefly warm-started embedded model, built once for every trainer test."""
    from sdar.trainer import prepare_initial_model

    out = tmp_path_factory.mktemp("initial")
    config = TrainConfig(
        out_dir=str(out), warmstart_steps=8, warmstart_episodes=12, warmstart_batch=4, **SMALL
    )
    return prepare_initial_model(config, out, log=lambda *a: None)


def make_trainer(tmp: Path, initial: Path, **overrides):
    from sdar.trainer import Trainer

    options = {**SMALL, **overrides}
    config = TrainConfig(out_dir=str(tmp), initial_model=str(initial), **options)
    return Trainer(config, log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["vllm", "hf"])
def test_two_steps_write_metrics_and_a_checkpoint(tmp_path, initial_model, engine):
    trainer = make_trainer(tmp_path, initial_model, engine=engine, steps=2)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for key in (
        "success",
        "reward",
        "valid_ratio",
        "loss",
        "gate_mean",
        "gate_active",
        "gap_mean",
        "entropy",
        "kl",
        "tokens_per_second",
        "engine_seconds",
        "train_seconds",
    ):
        assert key in train[0] and train[0][key] is not None, key
    assert {r["label"] for r in records if r["kind"] == "eval"} == {"before", "after"}
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_000002"
    assert (tmp_path / "summary.json").exists() and summary["steps"] == 2
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, initial_model):
    straight = make_trainer(tmp_path / "straight", initial_model, steps=3)
    try:
        straight.train()
        expected = {k: v.clone() for k, v in straight.policy.state_dict().items()}
    finally:
        straight.close()

    interrupted = make_trainer(tmp_path / "resumed", initial_model, steps=2)
    try:
        interrupted.train()
    finally:
        interrupted.close()
    resumed = make_trainer(tmp_path / "resumed", initial_model, steps=3, resume=True)
    try:
        assert resumed.step == 2
        resumed.train()
        for name, tensor in resumed.policy.state_dict().items():
            assert torch.equal(tensor, expected[name]), name
    finally:
        resumed.close()


def test_loss_equals_a_float64_evaluation_of_spec(tmp_path, initial_model):
    """The trainer's micro-batch loss on fixed rows equals SPEC section 4 evaluated in float64 from
    the same rows: advantages per row, per-token old / reference / teacher log-probs, response mask,
    the global token count as normaliser."""
    from transformers import AutoModelForCausalLM

    from sdar.policy import LossTerms, pack, policy_loss, scatter_rows

    model = AutoModelForCausalLM.from_pretrained(str(initial_model), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    rows = [
        (
            torch.randint(0, vocab, (n,), generator=g).tolist(),
            torch.randint(0, vocab, (r,), generator=g).tolist(),
        )
        for n, r in ((9, 4), (5, 7), (12, 3))
    ]
    batch = pack(rows, pad_id=0)
    advantages = torch.tensor([1.3, -0.7, 0.4])
    per_token = [torch.randn(len(r), generator=g) * 0.3 - 5 for _, r in rows]
    old = scatter_rows(per_token, batch)
    ref = scatter_rows([t + torch.randn(len(t), generator=g) * 0.2 for t in per_token], batch)
    teacher = scatter_rows([t + torch.randn(len(t), generator=g) for t in per_token], batch)
    adv_tokens = scatter_rows(
        [torch.full((len(r),), float(a)) for (_, r), a in zip(rows, advantages, strict=True)], batch
    )
    token_count = 40.0  # as if these rows were part of a larger step
    options = dict(
        normalizer=token_count,
        sdar_coef=0.3,
        beta=5.0,
        gate="gap",
        objective="sdar",
        kl_coef=0.05,
        entropy_coef=0.01,
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=3.0,
        temperature=1.0,
    )
    loss, _ = policy_loss(model, batch, LossTerms(adv_tokens, old, ref, teacher), **options)

    with torch.no_grad():
        logits = model.double()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    model.float()
    response = batch.targets != -100
    result = oracle(
        logits[response],
        batch.targets[response],
        advantages=adv_tokens[response].double(),
        old_logprobs=old[response].double(),
        ref_logprobs=ref[response].double(),
        teacher_logprobs=teacher[response].double(),
        sdar_coef=0.3,
        beta=5.0,
        kl_coef=0.05,
        entropy_coef=0.01,
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=3.0,
    )
    expected = result.loss_sum / token_count
    assert (
        abs(float(loss.detach()) - float(expected))
        <= 1e-5 * float(result.row_loss.abs().sum() / token_count) + 1e-7
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(algo.PRESETS))
def test_every_preset_runs_a_step(tmp_path, initial_model, preset):
    trainer = make_trainer(tmp_path, initial_model, algo=preset, steps=1, engine="hf", eval_episodes=1)
    try:
        record = trainer.train_step()
    finally:
        trainer.close()
    assert record["step"] == 1 and record["tokens"] > 0
    assert (record["gate_mean"] > 0) == (algo.get_preset(preset).sdar_coef != 0)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    advantages = algo.group_advantages(rewards, groups)
    torch.testing.assert_close(advantages[:4], torch.tensor([1.0, -1.0, 1.0, -1.0]), atol=1e-5, rtol=0)
    assert torch.all(advantages[4:] == 0)


def test_rlsd_reweighting_formula():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.5])
    teacher = torch.tensor([-1.0, -3.0, -1.0, -3.0, -2.0])
    old = torch.full((5,), -2.0)
    out = algo.rlsd_advantages(adv, teacher, old, coef=0.5, clip=0.2)
    gap = teacher - old
    expected = adv * torch.exp(0.5 * torch.sign(adv) * gap).clamp(0.8, 1.2)
    torch.testing.assert_close(out, expected)
    assert (
        out[0] > adv[0] and out[1] < adv[1] and out[2] > adv[2] and out[3] < adv[3]
    )  # |A| up where endorsed
    preset = algo.get_preset("rlsd")
    assert algo.rlsd_coefficient(preset, 0) == 0.5 and algo.rlsd_coefficient(preset, 50) == 0.25
    assert algo.rlsd_coefficient(preset, 100) == 0.0 == algo.rlsd_coefficient(preset, 150)


def test_skill_sd_term_matches_its_formula(initial_model):
    """skill_sd adds coef * sg(rho) * k3(b - a) per response token (token mean over the step)."""
    from transformers import AutoModelForCausalLM

    from sdar.policy import LossTerms, pack, policy_loss, scatter_rows

    model = AutoModelForCausalLM.from_pretrained(str(initial_model), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    rows = [
        (
            torch.randint(0, vocab, (8,), generator=g).tolist(),
            torch.randint(0, vocab, (5,), generator=g).tolist(),
        )
    ]
    batch = pack(rows, pad_id=0)
    old = scatter_rows([torch.randn(5, generator=g) * 0.3 - 6], batch)
    teacher = scatter_rows([torch.randn(5, generator=g) - 6], batch)
    adv = scatter_rows([torch.full((5,), 0.8)], batch)
    common = dict(
        normalizer=5.0,
        sdar_coef=0.0,
        beta=5.0,
        gate="gap",
        objective="sdar",
        kl_coef=0.0,
        entropy_coef=0.0,
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=3.0,
        temperature=1.0,
    )
    terms = LossTerms(adv, old, None, teacher)
    base, stats = policy_loss(model, batch, terms, **common)
    with_sd, _ = policy_loss(model, batch, terms, skill_sd_coef=0.001, **common)
    response = batch.targets != -100
    a, b, rho = stats.student_logprobs[response], teacher[response], stats.ratio[response]
    expected = 0.001 * (rho * algo.k3(b - a)).sum() / 5.0
    torch.testing.assert_close(with_sd - base, expected, rtol=1e-4, atol=1e-9)


def test_config_precedence_file_then_flags(tmp_path):
    from sdar.cli import build_parser
    from sdar.config import config_from_args

    config_file = tmp_path / "run.yaml"
    config_file.write_text("algo: grpo\nlr: 0.001\nsteps: 7\n")
    args = build_parser().parse_args(
        ["train", "--config", str(config_file), "--steps", "9", "--no-warmstart"]
    )
    config = config_from_args(args)
    assert (config.algo, config.lr, config.steps, config.warmstart) == ("grpo", 0.001, 9, False)
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rate": 1}))
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "bad.json")])
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        config_from_args(args)


def test_unknown_algorithm_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        algo.get_preset("ppo")


def test_response_parsing_and_prompt():
    from sdar.prompts import build_prompt, parse_response

    good = parse_response("<think>find the mug</think><action>go to cabinet 1</action>")
    assert good.valid and good.action == "go to cabinet 1" and good.think == "find the mug"
    for bad in (
        "go to cabinet 1",
        "<action>go to cabinet 1</action>",
        "<think>x</think><action></action>",
        "",
    ):
        parsed = parse_response(bad)
        assert not parsed.valid and parsed.action == bad.strip()
    search = parse_response("<think>look it up</think><search>capital of Peru</search>", "search")
    assert search.valid and search.action == "<search>capital of Peru</search>"
    prompt = build_prompt(
        "Your task is to: x", "obs now", ["a", "b"], [("o1", "a1"), ("o2", "a2"), ("o3", "a3")]
    )
    assert "o1" not in prompt and "o2" in prompt and "o3" in prompt  # the last K=2 pairs
    assert prompt.rstrip().endswith("Task: Your task is to: x") and "Admissible actions: a | b" in prompt


def test_micro_batches_respect_the_token_budget():
    from sdar.policy import micro_batches

    lengths = [5, 100, 30, 60, 61, 7, 99]
    batches = micro_batches(lengths, token_budget=128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 128


def test_compare_summary_table_and_plot(tmp_path):
    from sdar.compare import summarise_comparison
    from sdar.metrics import MetricsLog

    runs = []
    curves = {
        ("grpo", 0): [0.1, 0.2],
        ("grpo", 1): [0.1, 0.4],
        ("sdar", 0): [0.1, 0.3],
        ("sdar", 1): [0.2, 0.3],
    }
    for (algo_name, seed), (before, after) in curves.items():
        run_dir = tmp_path / f"seed{seed}" / algo_name
        log = MetricsLog(run_dir, tensorboard=False)
        log.write({"kind": "eval", "label": "before", "step": 0, "success": before})
        log.write({"kind": "train", "step": 1, "success": 0.9})  # training records are not curves
        log.write({"kind": "eval", "label": "after", "step": 5, "success": after})
        runs.append({"algo": algo_name, "seed": seed, "dir": str(run_dir)})
    table = summarise_comparison(runs, tmp_path)
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    # grpo: before 10% ± 0, after 30% ± 10%, change +20% ± 10%; sdar: 15% ± 5%, 30% ± 0, +15% ± 5%
    assert "10.0% ± 0.0% | 30.0% ± 10.0% | +20.0% ± 10.0%" in lines["grpo"]
    assert "15.0% ± 5.0% | 30.0% ± 0.0% | +15.0% ± 5.0%" in lines["sdar"]
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["sdar"]["after"] == [0.3, 0.3]
    assert (tmp_path / "compare.png").stat().st_size > 0
