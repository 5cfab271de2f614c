"""rl/: GAE, the masked actor-critic and the policy-gradient losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar_meta.rl import (
    MASKED_LOGIT,
    Policy,
    PolicySpec,
    PPOConfig,
    RLBatch,
    discounted_returns,
    flatten_params,
    gae,
    make_batch,
    pg_loss,
    ppo_loss,
    ppo_terms,
    stack_batches,
    unflatten_params,
    update_obs_stats,
)

SMALL = PolicySpec(obs_size=5, hidden=(8, 8), num_continuous=2, discrete_branches=(3,))


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Small ops: one thread is fastest and robust when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------
def _gae_reference(r, v, done, intr, last_v, term_v, gamma, lam):  # type: ignore[no-untyped-def]
    """Plain-Python GAE over one [T] trajectory (the textbook recursion)."""
    T = len(r)
    adv = [0.0] * T
    acc = 0.0
    for t in reversed(range(T)):
        if done[t] or intr[t]:
            nv = term_v[t] if intr[t] else 0.0
            acc = 0.0
        else:
            nv = v[t + 1] if t + 1 < T else last_v
        delta = r[t] + gamma * nv - v[t]
        acc = delta + gamma * lam * acc
        adv[t] = acc
    return adv


def test_gae_hand_computed() -> None:
    # t0 ordinary, t1 terminates, t2 ordinary, t3 interrupted (timeout), t4 bootstraps.
    r = torch.tensor([1.0, 2.0, 0.5, 1.0, 0.0])
    v = torch.tensor([0.5, 1.0, 0.2, 0.4, 0.3])
    done = torch.tensor([False, True, False, True, False])
    intr = torch.tensor([False, False, False, True, False])
    term_v = torch.tensor([0.0, 9.0, 0.0, 0.7, 0.0])  # 9.0 must be ignored (true terminal)
    g, lam = 0.9, 0.8
    adv, ret = gae(r, v, done, torch.tensor(0.6), intr, term_v, gamma=g, lam=lam)
    d4 = 0.0 + g * 0.6 - 0.3
    d3 = 1.0 + g * 0.7 - 0.4
    d2 = 0.5 + g * 0.4 - 0.2
    d1 = 2.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    a4, a3 = d4, d3
    a2 = d2 + g * lam * a3
    a1 = d1
    a0 = d0 + g * lam * a1
    torch.testing.assert_close(adv, torch.tensor([a0, a1, a2, a3, a4]))
    torch.testing.assert_close(ret, adv + v)


def test_gae_matches_loop_reference_batched() -> None:
    gen = torch.Generator().manual_seed(3)
    B, T, g, lam = 4, 37, 0.97, 0.9
    r = torch.randn(B, T, generator=gen, dtype=torch.float64)
    v = torch.randn(B, T, generator=gen, dtype=torch.float64)
    done = torch.rand(B, T, generator=gen) < 0.1
    intr = done & (torch.rand(B, T, generator=gen) < 0.5)
    term_v = torch.randn(B, T, generator=gen, dtype=torch.float64)
    last_v = torch.randn(B, generator=gen, dtype=torch.float64)
    adv, _ = gae(r, v, done, last_v, intr, term_v, gamma=g, lam=lam)
    for b in range(B):
        ref = _gae_reference(
            r[b].tolist(),
            v[b].tolist(),
            done[b].tolist(),
            intr[b].tolist(),
            float(last_v[b]),
            term_v[b].tolist(),
            g,
            lam,
        )
        np.testing.assert_allclose(adv[b].numpy(), ref, atol=1e-12)


def test_lambda_one_returns_equal_discounted_returns() -> None:
    gen = torch.Generator().manual_seed(4)
    r = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    done = torch.rand(3, 20, generator=gen) < 0.15
    intr = done & (torch.rand(3, 20, generator=gen) < 0.5)
    term_v = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    last_v = torch.randn(3, generator=gen, dtype=torch.float64)
    _, ret = gae(r, v, done, last_v, intr, term_v, gamma=0.95, lam=1.0)
    torch.testing.assert_close(ret, discounted_returns(r, done, last_v, intr, term_v, gamma=0.95))


def test_interruption_without_terminal_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="terminal_values"):
        gae(
            torch.ones(3),
            torch.ones(3),
            torch.tensor([0, 0, 1]),
            torch.tensor(0.0),
            interrupted=torch.tensor([0, 0, 1]),
        )


# ---------------------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------------------
def _mask(n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.rand(n, 3, generator=gen) < 0.5
    m[torch.arange(n), torch.randint(0, 3, (n,), generator=gen)] = False  # >= 1 allowed
    return m


def test_masked_gestures_are_never_sampled_and_have_minus_inf_ish_log_prob() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=1)
    params["actor.logits.weight"] = params["actor.logits.weight"] * 300  # peaky logits
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2000, 5, generator=gen)
    mask = _mask(2000, gen)
    res = policy.act(params, buffers, obs, mask, generator=gen)
    picked = mask.gather(1, res.gesture)
    assert not picked.any(), "sampled a masked gesture"
    det = policy.act(params, buffers, obs, mask, deterministic=True)
    assert not mask.gather(1, det.gesture).any()
    assert torch.isfinite(res.log_prob).all()
    # log-prob of a masked choice: finite, hugely negative; entropy finite; gradients finite.
    rows = mask[:, 0]  # rows where gesture 0 is masked: ask for its log-prob anyway
    assert rows.any()
    zeros = torch.zeros(2000, 1, dtype=torch.long)
    lp = policy.log_prob(params, buffers, obs, mask, res.cont_action, zeros)
    assert torch.isfinite(lp).all() and (lp[rows] < MASKED_LOGIT / 2).all()
    assert (lp[~rows] > -100).all()
    ent = policy.entropy(params, buffers, obs, mask)
    assert torch.isfinite(ent).all()

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            policy.entropy(p, buffers, obs, mask).mean()
            + policy.log_prob(p, buffers, obs, mask, res.cont_action, res.gesture).mean()
        )

    grads = torch.func.grad(loss)(params)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_log_prob_and_entropy_match_torch_distributions() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=2, dtype=torch.float64)
    params["actor.log_std"] = torch.tensor([-0.3, 0.4], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    mask = _mask(16, gen)
    res = policy.act(params, buffers, obs, mask, generator=gen)
    out = policy.forward(params, buffers, obs, mask)
    normal = torch.distributions.Normal(out.mean, out.log_std.exp())
    probs = torch.softmax(out.logits, -1)
    cat = torch.distributions.Categorical(probs=probs)
    ref = normal.log_prob(res.cont_action).sum(-1) + cat.log_prob(res.gesture[:, 0])
    torch.testing.assert_close(res.log_prob, ref)
    ent_ref = normal.entropy().sum(-1) + cat.entropy()
    torch.testing.assert_close(policy.entropy(params, buffers, obs, mask), ent_ref)


def test_log_std_floor_and_init() -> None:
    policy = Policy(SMALL)
    params, _ = policy.init()
    torch.testing.assert_close(policy.log_std(params), torch.zeros(2))
    params["actor.log_std"] = torch.full((2,), -50.0)
    assert (policy.log_std(params) >= SMALL.log_std_floor).all()


def test_obs_stats_match_numpy_over_several_batches() -> None:
    policy = Policy(SMALL)
    _, buffers = policy.init()
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 5)).astype(np.float32) for n in (7, 100, 1)]
    for c in chunks:
        buffers = update_obs_stats(buffers, torch.from_numpy(c))
    allx = np.concatenate(chunks).astype(np.float64)
    np.testing.assert_allclose(buffers["obs_mean"].numpy(), allx.mean(0), rtol=1e-5)
    np.testing.assert_allclose(buffers["obs_var"].numpy(), allx.var(0), rtol=1e-5)
    assert float(buffers["obs_count"]) == 108
    z = policy.normalize(buffers, torch.from_numpy(allx.astype(np.float32)))
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-2


def test_flat_packing_and_spec_round_trip() -> None:
    params, _ = Policy(SMALL).init(seed=5)
    flat = flatten_params(SMALL, params)
    back = unflatten_params(SMALL, flat)
    assert list(back) == list(params)
    for k in params:
        torch.testing.assert_close(back[k], params[k])
    assert PolicySpec.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="activation"):
        PolicySpec(activation="gelu")
    assert PolicySpec().obs_size == 35 and PolicySpec().discrete_branches == (4,)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def _toy_batch(policy: Policy, params, buffers, n: int = 64, seed: int = 0) -> RLBatch:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, SMALL.obs_size, generator=gen)
    mask = _mask(n, gen)
    res = policy.act(params, buffers, obs, mask, generator=gen)
    adv = torch.randn(n, generator=gen)
    return make_batch(
        obs,
        mask,
        res.cont_action,
        res.gesture,
        adv,
        torch.randn(n, generator=gen),
        res.log_prob,
        res.value,
    )


def test_pg_step_raises_log_prob_of_positive_advantage_actions() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    batch = _toy_batch(policy, params, buffers)
    loss, grads = (
        pg_loss(params, batch, policy=policy, buffers=buffers),
        torch.func.grad(pg_loss)(params, batch, policy=policy, buffers=buffers),
    )
    assert torch.isfinite(loss)
    new = {k: p - 1e-2 * grads[k] for k, p in params.items()}
    args = (batch.obs, batch.mask, batch.cont_action, batch.gesture)
    delta = policy.log_prob(new, buffers, *args) - policy.log_prob(params, buffers, *args)
    adv = batch.advantages - batch.advantages.mean()
    assert float((delta * adv).sum()) > 0
    assert float(pg_loss(new, batch, policy=policy, buffers=buffers)) < float(loss)


def test_ppo_loss_at_collection_params_and_its_gradient() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    batch = _toy_batch(policy, params, buffers)
    cfg = PPOConfig(ent_coef=0.0, vf_coef=0.0)
    terms = ppo_terms(params, batch, policy=policy, buffers=buffers, cfg=cfg)
    assert abs(float(terms.policy_loss)) < 1e-5  # ratio 1, normalised advantages mean 0
    assert float(terms.approx_kl) < 1e-9 and float(terms.clip_frac) == 0.0
    # At ratio 1 the PPO gradient equals the PG gradient.
    g_ppo = torch.func.grad(ppo_loss)(params, batch, policy=policy, buffers=buffers, cfg=cfg)
    g_pg = torch.func.grad(pg_loss)(params, batch, policy=policy, buffers=buffers)
    for k in g_pg:
        torch.testing.assert_close(g_ppo[k], g_pg[k], atol=1e-6, rtol=1e-4)


def test_ppo_clip_stops_the_gradient_and_value_loss_pulls_towards_returns() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    batch = _toy_batch(policy, params, buffers, n=8)
    # All ratios 1.5 with positive advantages: clipped, no policy gradient.
    clipped = batch._replace(
        old_log_prob=batch.old_log_prob - math.log(1.5), advantages=torch.linspace(1, 2, 8)
    )
    cfg = PPOConfig(ent_coef=0.0, vf_coef=1.0, normalize_advantages=False)
    g = torch.func.grad(ppo_loss)(params, clipped, policy=policy, buffers=buffers, cfg=cfg)
    assert all(float(g[k].abs().max()) == 0 for k in g if k.startswith("actor."))
    new = {k: p - 1e-2 * g[k] for k, p in params.items()}
    err = (policy.value(params, buffers, batch.obs) - batch.returns).square().mean()
    err_new = (policy.value(new, buffers, batch.obs) - batch.returns).square().mean()
    assert float(err_new) < float(err)


def test_padding_does_not_change_losses() -> None:
    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    a, b = (
        _toy_batch(policy, params, buffers, n=10),
        _toy_batch(policy, params, buffers, n=16, seed=1),
    )
    stacked = stack_batches([a, b])
    assert stacked.obs.shape[:2] == (2, 16) and float(stacked.weight[0].sum()) == 10
    for fn, kw in ((pg_loss, {}), (ppo_loss, {"cfg": PPOConfig(clip_value_loss=True)})):
        padded = fn(params, RLBatch(*(x[0] for x in stacked)), policy=policy, buffers=buffers, **kw)
        plain = fn(params, a, policy=policy, buffers=buffers, **kw)
        torch.testing.assert_close(padded, plain)


# ---------------------------------------------------------------------------------------------
# task context (CAVIA) and the imitation loss
# ---------------------------------------------------------------------------------------------
def test_folding_the_context_gives_the_same_function() -> None:
    from avatar_meta.rl.policy import CONTEXT_KEYS, fold_context

    spec = PolicySpec(obs_size=5, hidden=(8, 8), num_continuous=2, context_size=3)
    policy = Policy(spec)
    params, buffers = policy.init(seed=0)
    assert set(CONTEXT_KEYS) <= set(params) and params["actor.context"].shape == (3,)
    params["actor.context"] = torch.randn(3)
    obs = torch.randn(16, 5)
    plain_spec, plain = fold_context(spec, params)
    assert plain_spec.context_size == 0 and not set(CONTEXT_KEYS) & set(plain)
    got, want = (
        Policy(plain_spec).forward(plain, buffers, obs),
        policy.forward(params, buffers, obs),
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # the context changes the actor only, and a zero context is the plain network
    params["actor.context"] = torch.zeros(3)
    zero = policy.forward(params, buffers, obs)
    assert not torch.allclose(zero.mean, want.mean)
    torch.testing.assert_close(zero.value, want.value)


def test_imitation_loss_pulls_the_mean_and_gesture_towards_the_expert() -> None:
    from avatar_meta.rl.losses import GuidedBatch, imitation_loss, stack_guided

    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    rl = _toy_batch(policy, params, buffers, n=64)
    gen = torch.Generator().manual_seed(1)
    expert_cont = torch.rand(64, 2, generator=gen) * 2 - 1
    expert_gesture = torch.zeros(64, 1, dtype=torch.long)  # "none" is never masked
    no_code = torch.zeros(64, 0)
    batch = GuidedBatch(rl, expert_cont, expert_gesture, no_code)

    def loss(p):  # type: ignore[no-untyped-def]
        return imitation_loss(p, batch, policy=policy, buffers=buffers, vf_coef=0.0)

    start = float(loss(params))
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(p.values(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss(p).backward()
        opt.step()
    assert float(loss(p).detach()) < 0.3 * start

    def p_none(q):  # type: ignore[no-untyped-def]
        logits = policy.forward(q, buffers, rl.obs, rl.mask).logits.detach()
        return float(torch.softmax(logits, -1)[:, 0].mean())

    assert p_none(p) > max(0.7, p_none(params) + 0.3)
    assert torch.equal(p["actor.log_std"].detach(), params["actor.log_std"])  # noise untouched
    # a masked expert gesture and padding rows do not count
    masked = GuidedBatch(rl, expert_cont, torch.where(rl.mask[:, 1:2], 1, 0), no_code)
    assert rl.mask[:, 1].any()
    assert float(imitation_loss(params, masked, policy=policy, buffers=buffers)) < 1e3
    short = GuidedBatch(
        RLBatch(*(t[:10] for t in rl)), expert_cont[:10], masked.expert_gesture[:10], no_code[:10]
    )
    stacked = stack_guided([masked, short])
    padded = torch.utils._pytree.tree_map(lambda t: t[1], stacked)
    assert padded.rl.obs.shape[0] == 64 and float(padded.rl.weight.sum()) == 10
    a = imitation_loss(params, short, policy=policy, buffers=buffers)
    b = imitation_loss(params, padded, policy=policy, buffers=buffers)
    torch.testing.assert_close(a, b)
    assert math.isfinite(float(a))


def test_going_past_a_saturated_expert_command_is_no_error() -> None:
    """The world clips commands to [-1, 1]: beyond a label at the clip is the same command,
    short of it is not, and an unsaturated label is still a target from both sides."""
    from avatar_meta.rl.losses import command_error

    expert = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.5, 0.5, 0.99])
    mean = torch.tensor([1.7, 0.8, -1.4, -0.7, 0.9, 0.1, 1.2])
    want = torch.tensor([0.0, -0.2, 0.0, 0.3, 0.4, -0.4, 0.0])
    torch.testing.assert_close(command_error(mean, expert), want)
    # the gradient still pulls a short command up to the bound
    short = torch.tensor([0.8], requires_grad=True)
    command_error(short, torch.tensor([1.0])).square().sum().backward()
    assert short.grad is not None and float(short.grad) < 0


def test_imitating_a_full_speed_expert_commands_full_speed_everywhere() -> None:
    """Trained on rows whose expert says full speed, the imitation's forward command reaches
    the clip on (nearly) every row; a squared error would leave about half of them short."""
    from avatar_meta.rl.losses import GuidedBatch, imitation_loss

    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    rl = _toy_batch(policy, params, buffers, n=64)
    gen = torch.Generator().manual_seed(2)
    turn = torch.rand(64, 1, generator=gen) - 0.5
    expert = torch.cat([torch.ones(64, 1), turn], 1)
    batch = GuidedBatch(rl, expert, torch.zeros(64, 1, dtype=torch.long), torch.zeros(64, 0))
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(p.values(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        imitation_loss(p, batch, policy=policy, buffers=buffers, vf_coef=0.0).backward()
        opt.step()
    mean = policy.forward(p, buffers, rl.obs, rl.mask).mean.detach()
    assert float((mean[:, 0] >= 0.99).float().mean()) >= 0.95
    assert float((mean[:, 1] - turn[:, 0]).abs().mean()) < 0.1  # unsaturated: still a target


def test_guided_loss_is_imitation_alone_or_ppo_plus_weighted_imitation() -> None:
    from avatar_meta.rl.losses import GuidedBatch, guided_loss, imitation_loss

    policy = Policy(SMALL)
    params, buffers = policy.init(seed=0)
    rl = _toy_batch(policy, params, buffers, n=32)
    batch = GuidedBatch(
        rl, torch.zeros(32, 2), torch.zeros(32, 1, dtype=torch.long), torch.zeros(32, 0)
    )
    kw = {"policy": policy, "buffers": buffers}
    alone = guided_loss(params, batch, ppo=None, **kw)
    torch.testing.assert_close(alone, imitation_loss(params, batch, **kw))
    cfg = PPOConfig()
    mixed = guided_loss(params, batch, ppo=cfg, imitation_weight=2.0, **kw)
    want = ppo_loss(params, rl, cfg=cfg, **kw) + 2.0 * imitation_loss(
        params, batch, vf_coef=0.0, **kw
    )
    torch.testing.assert_close(mixed, want)
