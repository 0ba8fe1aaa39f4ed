"""Drop-in adapters of the SDAR objective for other RL frameworks.

Each adapter is its own module and imports its framework only when that module is imported, so
``import sdar_kernels`` (and ``import sdar_kernels.integrations``) never needs TRL or verl:

- :mod:`sdar_kernels.integrations.trl`: ``SDARGRPOTrainer`` / ``SDARGRPOConfig``, TRL's
  ``GRPOTrainer`` with the fused GRPO + SDAR objective and a user-supplied teacher prompt builder.
- :mod:`sdar_kernels.integrations.verl`: a policy loss registered as ``"sdar"`` in verl's
  policy-loss registry (``register_sdar_policy_loss()``), teacher log-probs read from the batch key
  ``teacher_log_prob``.

The per-token-log-prob form of the objective that verl needs (no logits) is
:mod:`sdar_kernels.token_objective`, which depends on torch only.
"""

__all__: list[str] = []
