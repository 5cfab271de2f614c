"""Gradient-based meta-learners as pure functions over task batches (torch.func).

Environment-agnostic: learners take `(params, batch)` loss functions and task-stacked
batches, never environments. See docs/meta-learning.md.
"""

from avatar_meta.meta.core import (
    Learner,
    LossFn,
    MetaLearner,
    Params,
    TaskBatch,
    adapt,
    assign_grads,
    inner_grad,
    leaf_params,
    map_tasks,
    policy_losses,
    sgd_step,
    stack_tasks,
    step_sizes,
    task_slice,
)
from avatar_meta.meta.maml import MAML, MAMLConfig, maml_adapt, maml_meta_loss
from avatar_meta.meta.metasgd import (
    MetaSGD,
    MetaSGDConfig,
    MetaSGDParams,
    init_metasgd,
    metasgd_adapt,
    metasgd_meta_loss,
)
from avatar_meta.meta.reptile import (
    Reptile,
    ReptileConfig,
    reptile_adapt,
    reptile_meta_loss,
    reptile_update,
)

__all__ = [
    "MAML",
    "Learner",
    "LossFn",
    "MAMLConfig",
    "MetaLearner",
    "MetaSGD",
    "MetaSGDConfig",
    "MetaSGDParams",
    "Params",
    "Reptile",
    "ReptileConfig",
    "TaskBatch",
    "adapt",
    "assign_grads",
    "init_metasgd",
    "inner_grad",
    "leaf_params",
    "maml_adapt",
    "maml_meta_loss",
    "map_tasks",
    "metasgd_adapt",
    "metasgd_meta_loss",
    "policy_losses",
    "reptile_adapt",
    "reptile_meta_loss",
    "reptile_update",
    "sgd_step",
    "stack_tasks",
    "step_sizes",
    "task_slice",
]
