"""meta/metric.py: Prototypical and Matching Networks against hand-written references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar_meta.meta import metric, styles
from avatar_meta.meta.metric import Episode, EpisodeSampler, MatchingNet, MetricConfig, ProtoNet

D_IN, D_OUT, N_WAY, K_SHOT, N_Q = 6, 4, 3, 2, 4


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _episode(seed: int = 0) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    return Episode(
        torch.randn(N_WAY * K_SHOT, D_IN, generator=gen, dtype=torch.float64),
        torch.arange(N_WAY).repeat_interleave(K_SHOT),
        torch.randn(N_Q, D_IN, generator=gen, dtype=torch.float64),
        torch.tensor([0, 1, 2, 1]),
    )


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    return metric.init_mlp([D_IN, 8, D_OUT], seed=seed, dtype=torch.float64)


def test_prototypes_are_class_means() -> None:
    emb = torch.randn(7, 3, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    protos = metric.prototypes(emb, labels, 3)
    for c in range(3):
        torch.testing.assert_close(protos[c], emb[labels == c].mean(0))


def test_protonet_logits_are_negative_squared_distances() -> None:
    params, ep = _params(), _episode()
    logits = metric.protonet_logits(
        metric.mlp_encode, params, ep.support_x, ep.support_y, ep.query_x, N_WAY
    )
    s_emb = metric.mlp_encode(params, ep.support_x)
    q_emb = metric.mlp_encode(params, ep.query_x)
    for q in range(N_Q):
        for c in range(N_WAY):
            proto = s_emb[ep.support_y == c].mean(0)
            ref = -float(((q_emb[q] - proto) ** 2).sum())
            assert float(logits[q, c]) == pytest.approx(ref, rel=1e-10, abs=1e-10)


def test_matching_attention_is_cosine_softmax() -> None:
    params, ep = _params(), _episode()
    s_emb = metric.mlp_encode(params, ep.support_x)
    q_emb = metric.mlp_encode(params, ep.query_x)
    att = metric.cosine_attention(q_emb, s_emb, scale=3.0)
    torch.testing.assert_close(att.sum(-1), torch.ones(N_Q, dtype=torch.float64))
    for q in range(N_Q):
        cos = [
            float(q_emb[q] @ s_emb[i] / (q_emb[q].norm() * s_emb[i].norm()))
            for i in range(len(s_emb))
        ]
        ref = np.exp(3.0 * np.array(cos))
        np.testing.assert_allclose(att[q].numpy(), ref / ref.sum(), rtol=1e-10)
    log_probs = metric.matching_logits(
        metric.mlp_encode, params, ep.support_x, ep.support_y, ep.query_x, N_WAY, scale=3.0
    )
    per_class = att @ F.one_hot(ep.support_y, N_WAY).double()
    torch.testing.assert_close(log_probs, per_class.log())
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(N_Q, dtype=torch.float64))


def _reference_protonet_loss(params: dict[str, torch.Tensor], ep: Episode) -> torch.Tensor:
    """Loop-based reference: explicit prototypes, distances and log-softmax."""
    s = [metric.mlp_encode(params, ep.support_x[i : i + 1])[0] for i in range(len(ep.support_x))]
    protos = [
        torch.stack([s[i] for i in range(len(s)) if int(ep.support_y[i]) == c]).mean(0)
        for c in range(N_WAY)
    ]
    total = torch.zeros((), dtype=torch.float64)
    for q in range(N_Q):
        f = metric.mlp_encode(params, ep.query_x[q : q + 1])[0]
        logits = torch.stack([-((f - p) ** 2).sum() for p in protos])
        total = total - torch.log_softmax(logits, 0)[int(ep.query_y[q])]
    return total / N_Q


def test_protonet_gradient_matches_reference() -> None:
    params, ep = _params(), _episode()
    eps = Episode(*(t.unsqueeze(0) for t in ep))  # a batch of one episode (vmapped path)
    learner = ProtoNet(metric.mlp_encode, params)
    grads = torch.func.grad(lambda p: learner.loss(p, eps, N_WAY))(params)
    ref = torch.func.grad(lambda p: _reference_protonet_loss(p, ep))(params)
    for k in params:
        torch.testing.assert_close(grads[k], ref[k])
    # and against finite differences on one weight
    key, h = "enc.0.w", 1e-6
    bumped = {k: v.clone() for k, v in params.items()}
    bumped[key][0, 0] += h
    fd = (_reference_protonet_loss(bumped, ep) - _reference_protonet_loss(params, ep)) / h
    assert float(grads[key][0, 0]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)


def test_matching_fce_gradients_and_shapes() -> None:
    params = _params() | metric.init_fce(D_OUT, dtype=torch.float64)
    ep = _episode()
    eps = Episode(*(t.unsqueeze(0) for t in ep))
    learner = MatchingNet(metric.mlp_encode, params, fce_steps=2)
    grads = torch.func.grad(lambda p: learner.loss(p, eps, N_WAY))(params)
    assert set(grads) == set(params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    lp = learner.log_probs(ep.support_x, ep.support_y, ep.query_x)
    assert lp.shape == (N_Q, N_WAY)
    with pytest.raises(ValueError):
        MatchingNet(metric.mlp_encode, _params(), fce_steps=1)


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, D_IN)) * 2
    y = np.repeat(np.arange(8), 12)
    return (centres[y] + rng.normal(size=(len(y), D_IN))).astype(np.float32), y


def test_training_is_deterministic_under_a_seed() -> None:
    x, y = _blobs(0)
    runs = []
    for _ in range(2):
        learner = ProtoNet(
            metric.mlp_encode,
            metric.init_mlp([D_IN, 8, D_OUT], seed=3),
            MetricConfig(steps=5, seed=3),
        )
        learner.fit(EpisodeSampler(x, y, range(6), N_WAY, K_SHOT, 3, seed=1))
        runs.append((learner.history, learner.params))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        assert torch.equal(runs[0][1][k], runs[1][1][k])


def test_sampler_classes_are_disjoint_and_episodes_well_formed() -> None:
    x, y = _blobs(0)
    sampler = EpisodeSampler(x, y, [6, 7, 5], 3, 2, 4, seed=0)
    ep, chosen = sampler.sample()
    assert sorted(chosen) == [5, 6, 7]
    assert ep.support_x.shape == (6, D_IN) and ep.query_x.shape == (12, D_IN)
    rows = {tuple(r) for r in ep.support_x.numpy().round(6)}
    assert not rows & {tuple(r) for r in ep.query_x.numpy().round(6)}
    assert set(styles.TRAIN).isdisjoint(styles.HELDOUT)


def test_episodic_training_beats_nearest_neighbour_on_digits_1shot() -> None:
    from avatar_meta.meta.digits import digits_data

    x_tr, y_tr, x_te, y_te = digits_data()
    learner = ProtoNet(
        metric.with_input(metric.conv_encode),
        metric.init_conv(32, 2, seed=0),
        MetricConfig(steps=300, lr=1e-3, seed=0),
    )
    learner.fit(EpisodeSampler(x_tr, y_tr, sorted(set(y_tr.tolist())), 15, 1, 5, seed=0))
    test = dict(x=x_te, y=y_te, classes=range(5, 10), n_way=5, k_shot=1, n_query=5)
    nn = metric.episode_accuracy(metric.nearest_neighbour_predict, EpisodeSampler(**test), 300)
    proto = metric.episode_accuracy(learner.predict, EpisodeSampler(**test), 300)
    assert proto.mean > nn.mean + 0.01, (proto, nn)
