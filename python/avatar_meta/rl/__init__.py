"""Policy networks, GAE and policy-gradient losses as pure functions of (params, batch).

Environment-agnostic: nothing here knows about worlds or protocols; rollouts arrive as
tensors (see `RLBatch`).
"""

from avatar_meta.rl.gae import bootstrap_values, discounted_returns, gae
from avatar_meta.rl.losses import (
    PPOConfig,
    PPOTerms,
    RLBatch,
    make_batch,
    make_pg_loss,
    make_ppo_loss,
    normalize_advantages,
    pad_batch,
    pg_loss,
    ppo_loss,
    ppo_terms,
    stack_batches,
    weighted_mean,
)
from avatar_meta.rl.policy import (
    MASKED_LOGIT,
    ActResult,
    Buffers,
    Params,
    Policy,
    PolicyOutput,
    PolicySpec,
    actor_keys,
    flatten_params,
    init_buffers,
    init_params,
    param_shapes,
    unflatten_params,
    update_obs_stats,
)

__all__ = [
    "MASKED_LOGIT",
    "ActResult",
    "Buffers",
    "PPOConfig",
    "PPOTerms",
    "Params",
    "Policy",
    "PolicyOutput",
    "PolicySpec",
    "RLBatch",
    "actor_keys",
    "bootstrap_values",
    "discounted_returns",
    "flatten_params",
    "gae",
    "init_buffers",
    "init_params",
    "make_batch",
    "make_pg_loss",
    "make_ppo_loss",
    "normalize_advantages",
    "pad_batch",
    "param_shapes",
    "pg_loss",
    "ppo_loss",
    "ppo_terms",
    "stack_batches",
    "unflatten_params",
    "update_obs_stats",
    "weighted_mean",
]
