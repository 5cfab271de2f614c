"""meta/: MAML, FOMAML, Reptile and Meta-SGD against explicit references (float64)."""

from __future__ import annotations

import pytest
import torch

from avatar_meta.meta import (
    MAML,
    MAMLConfig,
    MetaSGD,
    MetaSGDConfig,
    Reptile,
    ReptileConfig,
    TaskBatch,
    leaf_params,
    policy_losses,
    task_slice,
)
from avatar_meta.rl import Policy, PolicySpec, PPOConfig, RLBatch, make_batch, stack_batches

SPEC = PolicySpec(obs_size=5, hidden=(8, 8), num_continuous=2, discrete_branches=(3,))
POLICY = Policy(SPEC)
K, N = 3, 12
Params = dict[str, torch.Tensor]


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Small ops: one thread is fastest and robust when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _task_batch(params: Params, buffers: Params, seed: int, n: int = N) -> RLBatch:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, SPEC.obs_size, generator=gen, dtype=torch.float64)
    mask = torch.rand(n, 3, generator=gen) < 0.4
    mask[:, 0] = False
    res = POLICY.act(params, buffers, obs, mask, generator=gen)
    noise = 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)  # ratios != 1 exactly
    return make_batch(
        obs,
        mask,
        res.cont_action,
        res.gesture,
        advantages=torch.randn(n, generator=gen, dtype=torch.float64),
        returns=torch.randn(n, generator=gen, dtype=torch.float64),
        old_log_prob=res.log_prob + noise,
        values=res.value,
    )


@pytest.fixture(scope="module")
def setup() -> tuple[Params, Params, TaskBatch]:
    params, buffers = POLICY.init(seed=0, dtype=torch.float64)
    # Non-trivial heads so the second-order term is visible.
    gen = torch.Generator().manual_seed(9)
    for k in ("actor.mu.weight", "actor.logits.weight"):
        params[k] = 0.5 * torch.randn(params[k].shape, generator=gen, dtype=torch.float64)
    support = stack_batches([_task_batch(params, buffers, s) for s in range(K)])
    query = stack_batches([_task_batch(params, buffers, 100 + s) for s in range(K)])
    return params, buffers, TaskBatch(support, query)


def _losses(buffers: Params):  # type: ignore[no-untyped-def]
    return policy_losses(POLICY, buffers, PPOConfig(ent_coef=0.01, clip_value_loss=False))


def _explicit_maml_grad(
    params: Params, buffers: Params, tasks: TaskBatch, lrs: list[float], first_order: bool
) -> Params:
    """Reference: per-task unroll with torch.autograd.grad(create_graph=True)."""
    inner, outer = _losses(buffers)
    theta = leaf_params(params)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(K):
        p = dict(theta)
        for lr in lrs:
            g = torch.autograd.grad(
                inner(p, task_slice(tasks.support, i)),
                list(p.values()),
                create_graph=not first_order,
                allow_unused=True,
            )
            p = {
                k: v - lr * (torch.zeros_like(v) if gi is None else gi)
                for (k, v), gi in zip(p.items(), g, strict=True)
            }
        total = total + outer(p, task_slice(tasks.query, i)) / K
    grads = torch.autograd.grad(total, list(theta.values()))
    return dict(zip(theta, grads, strict=True))


def _close(a: Params, b: Params, atol: float = 1e-10, rtol: float = 1e-7) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=k)


def test_maml_meta_gradient_equals_explicit_unroll(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    cfg = MAMLConfig(inner_lr=0.5, inner_lr_decay=0.5, inner_steps=2)
    grads, _ = MAML(*_losses(buffers), cfg).meta_grad(params, tasks)
    _close(grads, _explicit_maml_grad(params, buffers, tasks, [0.5, 0.25], first_order=False))


def test_maml_meta_gradient_equals_finite_differences(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    maml = MAML(*_losses(buffers), MAMLConfig(inner_lr=0.5, inner_steps=2))
    grads, _ = maml.meta_grad(params, tasks)
    gen = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(6):  # directional derivatives along random directions cover every entry
        d = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        plus = maml.meta_loss({k: v + eps * d[k] for k, v in params.items()}, tasks)
        minus = maml.meta_loss({k: v - eps * d[k] for k, v in params.items()}, tasks)
        fd = float(plus - minus) / (2 * eps)
        analytic = float(sum((grads[k] * d[k]).sum() for k in params))
        assert abs(fd - analytic) < 1e-5 * max(1.0, abs(analytic)), (fd, analytic)
    names = list(params)
    for j in range(12):  # and some single coordinates
        k = names[j % len(names)]
        idx = int(torch.randint(0, params[k].numel(), (1,), generator=gen))
        e = torch.zeros(params[k].numel(), dtype=torch.float64)
        e[idx] = eps
        e = e.reshape(params[k].shape)
        fd = float(
            maml.meta_loss({**params, k: params[k] + e}, tasks)
            - maml.meta_loss({**params, k: params[k] - e}, tasks)
        ) / (2 * eps)
        assert abs(fd - float(grads[k].reshape(-1)[idx])) < 1e-5, (k, idx)


def test_fomaml_drops_exactly_the_second_order_term(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    cfg = MAMLConfig(inner_lr=0.5, inner_steps=2, first_order=True)
    fo, _ = MAML(*_losses(buffers), cfg).meta_grad(params, tasks)
    _close(fo, _explicit_maml_grad(params, buffers, tasks, [0.5, 0.25], first_order=True))
    so = _explicit_maml_grad(params, buffers, tasks, [0.5, 0.25], first_order=False)
    gap = max(float((fo[k] - so[k]).abs().max()) for k in fo)
    assert gap > 1e-4, "second-order term should matter on this problem"


@pytest.mark.parametrize("algo", ["maml", "fomaml", "metasgd", "reptile"])
def test_vmap_and_task_loop_give_the_same_numbers(setup, algo: str) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    inner, outer = _losses(buffers)
    results = []
    for use_vmap in (True, False):
        if algo in ("maml", "fomaml"):
            cfg = MAMLConfig(inner_steps=2, first_order=algo == "fomaml", use_vmap=use_vmap)
            learner: MAML | MetaSGD | Reptile = MAML(inner, outer, cfg)
            meta: object = params
        elif algo == "metasgd":
            mcfg = MetaSGDConfig(inner_steps=2, per_step=True, use_vmap=use_vmap)
            learner = MetaSGD(inner, outer, mcfg)
            meta = learner.init(params)
        else:
            learner = Reptile(outer, ReptileConfig(inner_steps=3, minibatches=2, use_vmap=use_vmap))
            meta = params
        loss, grads = torch.func.grad_and_value(learner.meta_loss)(meta, tasks)[::-1]
        adapted = learner.adapt_tasks(meta, tasks.support)  # type: ignore[arg-type]
        results.append((loss, grads, adapted))
    (l1, g1, a1), (l2, g2, a2) = results
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
    for t1, t2 in ((g1, g2), (a1, a2)):
        flat1, flat2 = torch.utils._pytree.tree_leaves(t1), torch.utils._pytree.tree_leaves(t2)
        for x, y in zip(flat1, flat2, strict=True):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_vmap_matches_loop_in_float32() -> None:
    params, buffers = POLICY.init(seed=0)
    batches = [
        _task_batch(
            {k: v.double() for k, v in params.items()},
            {k: v.double() for k, v in buffers.items()},
            s,
        )
        for s in range(2 * K)
    ]
    tasks32 = TaskBatch(
        *(
            stack_batches(
                [RLBatch(*(x.float() if x.is_floating_point() else x for x in b)) for b in part]
            )
            for part in (batches[:K], batches[K:])
        )
    )
    out = []
    for use_vmap in (True, False):
        m = MAML(*_losses(buffers), MAMLConfig(inner_steps=2, use_vmap=use_vmap))
        out.append(m.meta_grad(params, tasks32))
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-6, rtol=0)
    for k in params:
        torch.testing.assert_close(out[0][0][k], out[1][0][k], atol=1e-6, rtol=1e-5)


def test_metasgd_with_maml_step_sizes_reproduces_maml(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    inner, outer = _losses(buffers)
    maml = MAML(inner, outer, MAMLConfig(inner_lr=0.5, inner_lr_decay=0.5, inner_steps=2))
    msgd = MetaSGD(
        inner, outer, MetaSGDConfig(init_lr=0.5, init_lr_decay=0.5, inner_steps=2, per_step=True)
    )
    g_maml, l_maml = maml.meta_grad(params, tasks)
    meta = msgd.init(params)
    g_msgd, l_msgd = msgd.meta_grad(meta, tasks)
    torch.testing.assert_close(l_msgd, l_maml, atol=1e-12, rtol=0)
    _close(g_msgd.init, g_maml)
    # One step: dL/dalpha_j = -g_support_j * grad L_query(theta')_j (elementwise), per task.
    one = MetaSGD(inner, outer, MetaSGDConfig(init_lr=0.3, inner_steps=1))
    meta1 = one.init(params)
    g1, _ = one.meta_grad(meta1, tasks)
    ref = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(K):
        s, q = task_slice(tasks.support, i), task_slice(tasks.query, i)
        gs = torch.func.grad(inner)(params, s)
        adapted = {k: v - 0.3 * gs[k] for k, v in params.items()}
        gq = torch.func.grad(outer)(adapted, q)
        for k in ref:
            ref[k] -= gs[k] * gq[k] / K
    _close(g1.lrs[0], ref)


def test_reptile_moves_parameters_towards_the_adapted_ones(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    _, outer = _losses(buffers)
    cfg = ReptileConfig(inner_lr=0.05, inner_steps=4, minibatches=2, epsilon=0.3)
    reptile = Reptile(outer, cfg)
    # Reference inner loop: explicit autograd SGD over contiguous minibatches, per task.
    phis = []
    for i in range(K):
        phi = leaf_params(params)
        sup = task_slice(tasks.support, i)
        for step in range(4):
            h = N // 2 * (step % 2)
            mb = RLBatch(*(x[h : h + N // 2] for x in sup))
            g = torch.autograd.grad(outer(phi, mb), list(phi.values()))
            phi = leaf_params({k: v - 0.05 * gi for (k, v), gi in zip(phi.items(), g, strict=True)})
        phis.append({k: v.detach() for k, v in phi.items()})
    mean_phi = {k: torch.stack([p[k] for p in phis]).mean(0) for k in params}
    new = reptile.update(params, tasks.support)
    _close(new, {k: v + 0.3 * (mean_phi[k] - v) for k, v in params.items()})
    before = sum(float((params[k] - mean_phi[k]).square().sum()) for k in params)
    after = sum(float((new[k] - mean_phi[k]).square().sum()) for k in params)
    assert after < before
    # The surrogate's gradient is theta - mean phi, so SGD with lr = epsilon is the update.
    g = torch.func.grad(reptile.meta_loss)(params, tasks)
    _close(g, {k: params[k] - mean_phi[k] for k in params})


def test_object_api_matches_the_functional_meta_gradient(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    inner, outer = _losses(buffers)
    maml = MAML(inner, outer, MAMLConfig(inner_steps=2, adapt_prefix="actor."))
    grads, _ = maml.meta_grad(params, tasks)
    theta = leaf_params(params)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(K):
        learner = maml.clone(theta)
        learner.adapt(task_slice(tasks.support, i))  # a batch
        learner.adapt(lambda p, i=i: inner(p, task_slice(tasks.support, i)))  # a callable
        total = total + outer(learner.params, task_slice(tasks.query, i)) / K
    total.backward()
    _close({k: v.grad for k, v in theta.items()}, grads)  # type: ignore[misc]
    # Critic is not adapted with adapt_prefix="actor.", and the learner can predict.
    adapted = maml.adapt(params, task_slice(tasks.support, 0))
    torch.testing.assert_close(adapted["critic.0.weight"], params["critic.0.weight"])
    fwd = MAML(inner, outer, maml.config, forward=lambda p, o: POLICY.value(p, buffers, o))
    learner = fwd.clone(params).adapt(task_slice(tasks.support, 0))  # plain tensors: torch.func
    assert learner(tasks.query.obs[0]).shape == (N,)


def test_adapt_tasks_matches_per_task_adapt(setup) -> None:  # type: ignore[no-untyped-def]
    params, buffers, tasks = setup
    maml = MAML(*_losses(buffers), MAMLConfig(inner_steps=3))
    stacked = maml.adapt_tasks(params, tasks.support)
    for i in range(K):
        _close(task_slice(stacked, i), maml.adapt(params, task_slice(tasks.support, i)))


def test_meta_rl_loop_improves_the_adapted_return() -> None:
    """The trainer's cycle end to end on a hidden-goal bandit (continuous goal + gesture):
    support with theta -> GAE -> adapt_tasks -> query with the adapted policies -> PPO outer."""
    from avatar_meta.meta import assign_grads
    from avatar_meta.rl import gae

    spec = PolicySpec(
        obs_size=4, hidden=(32, 32), num_continuous=2, discrete_branches=(3,), normalize_obs=False
    )
    pol = Policy(spec)
    params, buffers = pol.init(0)
    gen = torch.Generator().manual_seed(0)
    tasks_k, n = 8, 64

    def collect(p: Params, goal: torch.Tensor, gesture: torch.Tensor) -> tuple[RLBatch, float]:
        obs = torch.randn(n, 4, generator=gen)
        mask = torch.zeros(n, 3, dtype=torch.bool)
        a = pol.act(p, buffers, obs, mask, generator=gen)
        r = -(a.cont_action - goal).square().sum(-1) + (a.gesture[:, 0] == gesture).float()
        done = torch.ones(n, 1, dtype=torch.bool)  # one-step episodes
        adv, ret = gae(r[:, None], a.value[:, None], done, torch.zeros(n))
        batch = make_batch(
            obs, mask, a.cont_action, a.gesture, adv[:, 0], ret[:, 0], a.log_prob, a.value
        )
        return batch, float(r.mean())

    maml = MAML(*policy_losses(pol, buffers), MAMLConfig(inner_lr=0.5, adapt_prefix="actor."))
    theta = leaf_params(params)
    opt = torch.optim.Adam(theta.values(), 3e-3)
    pre, post = [], []
    for _ in range(60):
        goals = torch.rand(tasks_k, 2, generator=gen) * 2 - 1
        gestures = torch.randint(0, 3, (tasks_k,), generator=gen)
        p = {k: v.detach() for k, v in theta.items()}
        sup = [collect(p, goals[i], gestures[i]) for i in range(tasks_k)]
        support = stack_batches([b for b, _ in sup])
        adapted = maml.adapt_tasks(p, support)
        qry = [collect(task_slice(adapted, i), goals[i], gestures[i]) for i in range(tasks_k)]
        tasks = TaskBatch(support, stack_batches([b for b, _ in qry]))
        for _ in range(2):  # outer PPO epochs on the same query batch
            grads, _ = maml.meta_grad({k: v.detach() for k, v in theta.items()}, tasks)
            assign_grads(theta, grads)
            opt.step()
        pre.append(sum(r for _, r in sup) / tasks_k)
        post.append(sum(r for _, r in qry) / tasks_k)
    assert sum(post) > sum(pre) + 0.5 * len(pre), "one adaptation step should help clearly"
    assert sum(post[-10:]) / 10 > sum(post[:10]) / 10 + 0.3, (post[:10], post[-10:])
