"""The task encoder (meta/encoder.py): pooling semantics, multi-step adaptation, vmap, and
that meta-training it end to end learns to read a hidden task value off the support data."""

from __future__ import annotations

import pytest
import torch

from avatar_meta.meta import TaskBatch, stack_tasks, task_slice
from avatar_meta.meta.encoder import (
    SEEN_KEYS,
    EncoderConfig,
    TaskEncoder,
    encoder_adapt,
    init_encoder,
)
from avatar_meta.rl import Policy, PolicySpec, RLBatch, make_batch
from avatar_meta.rl.losses import stack_batches

torch.set_num_threads(1)
SPEC = PolicySpec(hidden=(16, 16), context_size=3)
POLICY = Policy(SPEC)


def batch(n: int, seed: int, task_value: float = 0.0, standardise: bool = False) -> RLBatch:
    """n random transitions whose rewards and returns reveal `task_value`."""
    g = torch.Generator().manual_seed(seed)
    adv = torch.randn(n, generator=g)
    if standardise:
        adv = (adv - adv.mean()) / adv.std(unbiased=False)
    return make_batch(
        torch.randn(n, SPEC.obs_size, generator=g),
        torch.zeros(n, SPEC.num_discrete, dtype=torch.bool),
        torch.randn(n, SPEC.num_continuous, generator=g),
        torch.randint(0, SPEC.num_discrete, (n,), generator=g),
        adv,
        task_value + 0.1 * torch.randn(n, generator=g),
        torch.zeros(n),
        torch.zeros(n),
        reward=task_value + 0.1 * torch.randn(n, generator=g),
        next_obs=torch.randn(n, SPEC.obs_size, generator=g),
    )


def meta_params(seed: int = 0, out_scale: float = 0.5) -> dict[str, torch.Tensor]:
    """Policy + encoder params with a non-zero output layer (a trained-looking encoder)."""
    params, _ = POLICY.init(seed=seed)
    enc = init_encoder(SPEC, hidden=8, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    enc["encoder.out.weight"] = out_scale * torch.randn(
        enc["encoder.out.weight"].shape, generator=g
    )
    return {**params, **enc}


BUFFERS = POLICY.init()[1]


def adapt(params: dict[str, torch.Tensor], support: RLBatch) -> dict[str, torch.Tensor]:
    return encoder_adapt(params, support, policy=POLICY, buffers=BUFFERS)


def test_an_untrained_encoder_leaves_the_policy_as_it_is() -> None:
    params, _ = POLICY.init(seed=0)
    params = {**params, **init_encoder(SPEC, hidden=8)}
    adapted = adapt(params, batch(50, 1))
    for name in params:
        assert torch.equal(adapted[name], params[name]), name
    assert set(adapted) == set(params) | set(SEEN_KEYS) | {"encoder.prior"}


def test_the_context_ignores_row_order_and_padding() -> None:
    params, support = meta_params(), batch(40, 2)
    context = adapt(params, support)["actor.context"]
    order = torch.randperm(40)
    shuffled = RLBatch(*(x[order] for x in support))
    torch.testing.assert_close(adapt(params, shuffled)["actor.context"], context)
    padded = stack_batches([support, batch(70, 3)])  # the first task gains 30 zero-weight rows
    first = RLBatch(*(x[0] for x in padded))
    torch.testing.assert_close(adapt(params, first)["actor.context"], context)
    assert not torch.allclose(adapt(params, batch(40, 4, 2.0))["actor.context"], context)


def test_only_the_context_changes_among_policy_weights() -> None:
    params = meta_params()
    adapted = adapt(params, batch(30, 5))
    changed = {k for k in params if not torch.equal(adapted[k], params[k])}
    assert changed == {"actor.context"}


def test_a_second_step_infers_from_both_batches_not_on_top_of_the_first() -> None:
    """Step 2 pools batch 2 into batch 1's statistics: with advantages already standardised
    per batch (so per-batch normalisation is the identity on the union too), two steps equal
    one step on the concatenation, and the prior is the meta-policy's, not step 1's."""
    params = meta_params()
    b1, b2 = batch(30, 6, standardise=True), batch(50, 7, standardise=True)
    both = RLBatch(*(torch.cat([x, y]) for x, y in zip(b1, b2, strict=True)))
    two_steps = adapt(adapt(params, b1), b2)
    once = adapt(params, both)
    for name in ("actor.context", *SEEN_KEYS):
        torch.testing.assert_close(two_steps[name], once[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two_steps["encoder.prior"], params["actor.context"])


def test_vmap_and_the_task_loop_give_the_same_meta_gradient() -> None:
    params = {k: v.requires_grad_(True) for k, v in meta_params().items()}
    supports = stack_batches([batch(20 + 5 * i, 10 + i, float(i)) for i in range(4)])
    queries = stack_batches([batch(25, 20 + i, float(i)) for i in range(4)])

    def outer(p: dict[str, torch.Tensor], query: RLBatch) -> torch.Tensor:
        return POLICY.forward(p, BUFFERS, query.obs).mean.square().mean()

    grads = {}
    for use_vmap in (True, False):
        learner = TaskEncoder(POLICY, BUFFERS, outer, EncoderConfig(8, use_vmap))
        grads[use_vmap], _ = learner.meta_grad(params, TaskBatch(supports, queries))
    for name, g in grads[True].items():
        torch.testing.assert_close(g, grads[False][name], rtol=1e-5, atol=1e-6)
    assert grads[True]["encoder.out.weight"].abs().sum() > 0  # the loss reaches the encoder
    assert grads[True]["encoder.0.weight"].abs().sum() > 0


def test_meta_training_learns_to_read_a_hidden_value_off_the_support_data() -> None:
    """Each task hides a value v in [-1, 1] that only its support returns reveal; the outer
    loss asks the adapted policy's mean action to equal v. A few hundred Adam steps on the
    meta-gradient must bring the held-out error well below what ignoring the data scores."""
    torch.manual_seed(0)
    params = {k: v.clone().requires_grad_(True) for k, v in meta_params(out_scale=0.0).items()}

    def outer(p: dict[str, torch.Tensor], query: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        obs, target = query
        return (POLICY.forward(p, BUFFERS, obs).mean[:, 0] - target).square().mean()

    def tasks(values: torch.Tensor, seed: int) -> TaskBatch:
        supports = stack_batches([batch(16, seed + i, float(v)) for i, v in enumerate(values)])
        g = torch.Generator().manual_seed(seed)
        queries = stack_tasks(
            [(torch.randn(8, SPEC.obs_size, generator=g), v.expand(8)) for v in values]
        )
        return TaskBatch(supports, queries)

    learner = TaskEncoder(POLICY, BUFFERS, outer, EncoderConfig(8))
    held = tasks(torch.linspace(-1, 1, 9), 10_000)
    before = float(learner.meta_loss(params, held).detach())
    optimizer = torch.optim.Adam(params.values(), lr=3e-3)
    for it in range(300):
        grads, _ = learner.meta_grad(params, tasks(torch.rand(8) * 2 - 1, 100 * it))
        for name, g in grads.items():
            params[name].grad = g
        optimizer.step()
    after = float(learner.meta_loss(params, held).detach())
    ignore_data = float(torch.linspace(-1, 1, 9).var(unbiased=False))  # best constant action
    assert before == pytest.approx(ignore_data, rel=0.3)
    assert after < 0.2 * ignore_data


def test_the_supervised_task_loss_is_added_only_where_codes_exist() -> None:
    """With a guided query carrying task codes, the meta-loss is the outer loss plus
    task_weight x the decoded-code error; with weight 0 the decoder gets no gradient."""
    from avatar_meta.meta.encoder import task_code_loss
    from avatar_meta.rl.losses import GuidedBatch, stack_guided

    params, _ = POLICY.init(seed=0)
    params = {**params, **init_encoder(SPEC, hidden=8, code_size=5)}
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    supports = stack_batches([batch(20, i, float(i)) for i in range(3)])
    queries = stack_guided(
        [
            GuidedBatch(
                batch(10 + i, 30 + i),
                torch.zeros(10 + i, 2),
                torch.zeros(10 + i, 1, dtype=torch.long),
                torch.full((10 + i, 5), float(i)),
            )
            for i in range(3)
        ]
    )
    tasks = TaskBatch(supports, queries)

    def outer(p: dict[str, torch.Tensor], query: GuidedBatch) -> torch.Tensor:
        return POLICY.forward(p, BUFFERS, query.rl.obs).mean.square().mean()

    plain = TaskEncoder(POLICY, BUFFERS, outer, EncoderConfig(8, 5, task_weight=0.0))
    weighted = TaskEncoder(POLICY, BUFFERS, outer, EncoderConfig(8, 5, task_weight=2.0))
    code_losses = [
        task_code_loss(adapt(params, task_slice(supports, i)), task_slice(queries, i))
        for i in range(3)
    ]
    expected = plain.meta_loss(params, tasks) + 2.0 * torch.stack(code_losses).mean()
    torch.testing.assert_close(weighted.meta_loss(params, tasks), expected)
    assert float((expected - plain.meta_loss(params, tasks)).detach()) > 0  # codes vs decoded 0
    grads, _ = plain.meta_grad(params, tasks)
    assert float(grads["encoder.decode.bias"].detach().abs().sum()) == 0.0
    grads, _ = weighted.meta_grad(params, tasks)
    assert float(grads["encoder.decode.bias"].detach().abs().sum()) > 0.0
