"""The ``"sdar"`` policy loss for verl, and the per-token-log-prob form of the objective it uses.

Mode: **recorded signature**. verl is not installed here (``pip install verl`` 0.9.1 would replace
transformers 5.19 by 5.10.4), so the tests install a stand-in of verl's registry and loss modules
built from the interface recorded in ``sdar_kernels/integrations/verl.py`` (verl 0.9.1 from PyPI:
``register_policy_loss`` / ``get_policy_loss_fn`` / ``agg_loss`` in ``verl/trainer/ppo/core_algos.py``,
``ppo_loss`` in ``verl/workers/utils/losses.py``). When verl is importable the registry tests run
against the real module instead (the ``ppo_loss`` test stays on the stand-in, whose batch is a dict).

The loss and its gradient with respect to the logits the log-probs came from are held to the
float64 SPEC oracle (tests/oracle.py) and to the fused op ``grpo_sdar_loss``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from oracle import oracle
from verl_stand_in import actor_config, stand_in_agg_loss, stand_in_modules, stand_in_ppo_loss

from sdar_kernels import grpo_sdar_loss
from sdar_kernels.integrations import verl as sdar_verl
from sdar_kernels.token_objective import grpo_sdar_token_loss


@pytest.fixture
def stand_in(monkeypatch):
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return sys.modules["verl.trainer.ppo.core_algos"]


@pytest.fixture
def core_algos(request, monkeypatch):
    try:
        import verl.trainer.ppo.core_algos as real
    except ImportError:
        return request.getfixturevalue("stand_in")
    monkeypatch.setattr(real, "POLICY_LOSS_REGISTRY", dict(real.POLICY_LOSS_REGISTRY))
    return real


def make_batch(seed: int = 0, rows: int = 3, length: int = 6, vocab: int = 11):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, length, vocab, generator=generator) * 2).requires_grad_(True)
    targets = torch.randint(0, vocab, (rows, length), generator=generator)
    log_prob = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    old = log_prob.detach() + 0.3 * torch.randn(rows, length, generator=generator)
    teacher = log_prob.detach() + torch.randn(rows, length, generator=generator)
    advantages = torch.randn(rows, 1, generator=generator).expand(rows, length).contiguous()
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 2:] = False
    return logits, targets, log_prob, old, teacher, advantages, mask


@pytest.mark.parametrize("objective", ["sdar", "pg"])
@pytest.mark.parametrize("gate", ["gap", "none"])
def test_registered_policy_loss_matches_spec_and_the_fused_op(core_algos, objective, gate):
    sdar_verl.register_sdar_policy_loss(sdar_coef=0.5, beta=5.0, gate=gate, objective=objective)
    loss_fn = core_algos.get_policy_loss_fn("sdar")
    logits, targets, log_prob, old, teacher, advantages, mask = make_batch()
    with sdar_verl.teacher_log_probs(teacher):
        loss, metrics = loss_fn(
            old_log_prob=old,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask,
            loss_agg_mode="token-mean",
            config=actor_config(),
            rollout_is_weights=None,
        )
    (grad,) = torch.autograd.grad(loss, logits)

    options = dict(
        clip_low=0.2, clip_high=0.28, dual_clip=3.0, sdar_coef=0.5, beta=5.0, gate=gate, objective=objective
    )
    vocab = logits.shape[-1]
    expected = oracle(
        logits.reshape(-1, vocab),
        targets.reshape(-1),
        teacher_logprobs=teacher.reshape(-1),
        weights=mask.reshape(-1).double(),
        advantages=advantages.reshape(-1),
        old_logprobs=old.reshape(-1),
        kl_coef=0.0,
        entropy_coef=0.0,
        **options,
    )
    count = float(mask.sum())
    assert float(loss) == pytest.approx(float(expected.loss_sum) / count, rel=1e-5, abs=1e-7)
    expected_grad = expected.grad(upstream_sum=1.0 / count).reshape(grad.shape)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-7)

    fused = logits.detach().clone().requires_grad_(True)
    fused_loss = grpo_sdar_loss(
        fused, targets, advantages, old, teacher=teacher, mask=mask, kl_coef=0.0, entropy_coef=0.0, **options
    )
    fused_loss.backward()
    torch.testing.assert_close(loss.detach(), fused_loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, fused.grad, rtol=1e-5, atol=1e-6)
    assert set(metrics) >= {"actor/pg_clipfrac", "actor/ppo_kl", "actor/sdar_loss", "actor/sdar_gate_mean"}


def test_sequence_mean_mode_and_rollout_weights(core_algos):
    loss_fn = sdar_verl.register_sdar_policy_loss(sdar_coef=0.5)
    _, _, log_prob, old, teacher, advantages, mask = make_batch(seed=1)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(2)) + 0.5
    mode = "seq-mean-token-mean"
    config = actor_config()
    loss, _ = loss_fn(old, log_prob, advantages, mask, mode, config, weights, teacher_log_prob=teacher)
    obj, _ = grpo_sdar_token_loss(
        log_prob, old, advantages, teacher_log_prob=teacher, clip_high=0.28, sdar_coef=0.5
    )
    expected = stand_in_agg_loss(obj * weights, mask, "seq-mean-token-mean")
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)


def test_sdar_ppo_loss_reads_the_teacher_from_the_batch(stand_in):
    sdar_verl.register_sdar_policy_loss(sdar_coef=0.5)
    _, _, log_prob, old, teacher, advantages, mask = make_batch(seed=3)
    data = {"old_log_probs": old, "advantages": advantages, "response_mask": mask}
    config = actor_config()
    with pytest.raises(KeyError, match="teacher_log_prob"):
        sdar_verl.sdar_ppo_loss(config, {"log_probs": log_prob}, data)
    with pytest.raises(ValueError, match="no teacher log-probs"):
        stand_in_ppo_loss(config, {"log_probs": log_prob}, data)
    data[sdar_verl.TEACHER_KEY] = teacher
    loss, _ = sdar_verl.sdar_ppo_loss(config, {"log_probs": log_prob}, data)
    direct, _ = stand_in.get_policy_loss_fn("sdar")(
        old, log_prob, advantages, mask, "token-mean", config, teacher_log_prob=teacher
    )
    torch.testing.assert_close(loss, direct)


def test_clear_errors(core_algos):
    with pytest.raises(ValueError, match="gate"):
        sdar_verl.make_sdar_policy_loss(gate="entropy")
    _, _, log_prob, old, teacher, advantages, mask = make_batch()
    loss_fn = sdar_verl.make_sdar_policy_loss()
    with pytest.raises(ValueError, match="config"):
        loss_fn(old, log_prob, advantages, mask, teacher_log_prob=teacher)
    with pytest.raises(ValueError, match="teacher_log_prob"):
        grpo_sdar_token_loss(log_prob, old, advantages)
    with pytest.raises(ValueError, match="advantages must have the log_prob shape"):
        grpo_sdar_token_loss(log_prob, old, advantages[:, :2], teacher_log_prob=teacher)
    with pytest.raises(ValueError, match="entropy"):
        grpo_sdar_token_loss(log_prob, old, advantages, teacher_log_prob=teacher, gate="soft_or")


def test_register_without_verl_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "verl", None)
    monkeypatch.delitem(sys.modules, "verl.trainer.ppo.core_algos", raising=False)
    with pytest.raises(ImportError, match="pip install verl"):
        sdar_verl.register_sdar_policy_loss()


def test_importing_sdar_kernels_needs_neither_trl_nor_verl():
    code = (
        "import sys, sdar_kernels, sdar_kernels.integrations, sdar_kernels.integrations.verl;"
        "bad = [m for m in ('trl', 'verl') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
