"""A stand-in for the parts of verl the SDAR adapter touches, built from the interface recorded in
``sdar_kernels/integrations/verl.py`` (verl 0.9.1 from PyPI). verl itself is not installed in this
environment (its pins would replace transformers), so the adapter's tests run against this."""

from __future__ import annotations

import types


def stand_in_agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size=1, batch_num_tokens=None, **unused):
    """verl 0.9.1's ``agg_loss`` for the two modes used here (recorded behaviour)."""
    mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        tokens = mask.sum() if batch_num_tokens is None else batch_num_tokens
        return (loss_mat * mask).sum() / tokens * dp_size
    if loss_agg_mode == "seq-mean-token-mean":
        per_sequence = (loss_mat * mask).sum(-1) / (mask.sum(-1) + 1e-8)
        present = (mask.sum(-1) > 0).to(loss_mat.dtype)
        return (per_sequence * present).sum() / present.sum() * dp_size
    raise NotImplementedError(loss_agg_mode)


def stand_in_ppo_loss(config, model_output, data, dp_group=None):
    """verl 0.9.1's ``ppo_loss`` reduced to its policy-loss call (recorded keyword call)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    loss_fn = get_policy_loss_fn(config.policy_loss["loss_mode"])
    return loss_fn(
        old_log_prob=data["old_log_probs"],
        log_prob=model_output["log_probs"],
        advantages=data["advantages"],
        response_mask=data["response_mask"].bool(),
        loss_agg_mode=config.loss_agg_mode,
        config=config,
        rollout_is_weights=data.get("rollout_is_weights"),
    )


def stand_in_modules() -> dict[str, types.ModuleType]:
    registry: dict = {}
    core_algos = types.ModuleType("verl.trainer.ppo.core_algos")
    core_algos.POLICY_LOSS_REGISTRY = registry

    def register_policy_loss(name):
        def decorator(func):
            registry[name] = func
            return func

        return decorator

    def get_policy_loss_fn(name):
        if name not in registry:
            raise ValueError(f"Unsupported loss mode: {name}")
        return registry[name]

    core_algos.register_policy_loss = register_policy_loss
    core_algos.get_policy_loss_fn = get_policy_loss_fn
    core_algos.agg_loss = stand_in_agg_loss
    losses = types.ModuleType("verl.workers.utils.losses")
    losses.ppo_loss = stand_in_ppo_loss
    names = ["verl", "verl.trainer", "verl.trainer.ppo", "verl.workers", "verl.workers.utils"]
    modules = {name: types.ModuleType(name) for name in names}
    modules["verl.trainer.ppo.core_algos"] = core_algos
    modules["verl.workers.utils.losses"] = losses
    return modules


class ActorConfig(dict):
    """The fields of verl's ActorConfig the loss reads: attribute access and ``.get`` as verl's configs."""

    __getattr__ = dict.get


def actor_config(**overrides) -> ActorConfig:
    values = dict(
        clip_ratio=0.2,
        clip_ratio_low=None,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
        global_batch_info={},
        loss_agg_mode="token-mean",
        policy_loss={"loss_mode": "sdar"},
    )
    return ActorConfig({**values, **overrides})
