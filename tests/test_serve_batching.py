"""Serve-time adaptation: the cheaper path equals the trainer's, micro-batches equal single
requests, deadlines drop queued work, and per-client rate limits (real server process)."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from avatar_meta.export import policy_weights, signing
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.rl import gae
from avatar_meta.rl.losses import pg_loss
from avatar_meta.serve import fast
from avatar_meta.serve.adapter import VMAP_ROWS, Adapter, _groups, make_checkpoint
from avatar_meta.serve.batching import Batcher, Job, RateLimiter, client_key
from test_serve import TOKEN, Server, episodes, start_server


def request(lengths: list[int], seed: int) -> svc.AdaptRequest:
    eps = episodes(lengths=lengths, seed=seed, reward_scale=1 + seed)
    return svc.AdaptRequest(behavior_name="AvatarAgent", episodes=eps)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Adapter:
    path = make_checkpoint(tmp_path_factory.mktemp("ck") / "maml.pt", seed=5)
    return Adapter(path)


def test_gae_padded_is_bit_identical_to_rl_gae() -> None:
    rng = np.random.default_rng(0)
    lengths = np.array([7, 3, 7, 1, 5])
    e, t = len(lengths), 7
    rew = rng.normal(size=(e, t)).astype(np.float32)
    val = rng.normal(size=(e, t)).astype(np.float32)
    inter = np.array([True, False, False, True, True])
    done = np.arange(t)[None, :] >= lengths[:, None] - 1
    inter_steps = np.zeros((e, t), bool)
    inter_steps[np.arange(e), lengths - 1] = inter
    want_adv, want_ret = gae(
        torch.from_numpy(rew),
        torch.from_numpy(val),
        torch.from_numpy(done),
        torch.zeros(e),
        interrupted=torch.from_numpy(inter_steps),
        terminal_values=torch.from_numpy(val),
        gamma=0.99,
        lam=0.95,
    )
    adv, ret = fast.gae_padded(rew, val, lengths, inter, 0.99, 0.95)
    valid = np.arange(t)[None, :] < lengths[:, None]
    np.testing.assert_array_equal(adv[valid], want_adv.numpy()[valid])
    np.testing.assert_array_equal(ret[valid], want_ret.numpy()[valid])


def test_critic_free_loss_and_gradient_are_bit_identical(adapter: Adapter) -> None:
    batch = adapter.to_batch(request([40, 25], seed=1))
    p, b = adapter.policy, adapter.buffers
    keys = [k for k in adapter.params if k.startswith("actor.")]

    def grads(loss_fn):  # type: ignore[no-untyped-def]
        fixed = {k: v for k, v in adapter.params.items() if k not in keys}
        sub = {k: adapter.params[k] for k in keys}
        return torch.func.grad(lambda s: loss_fn({**fixed, **s}, batch))(sub)

    def full(params, batch):  # type: ignore[no-untyped-def]
        return pg_loss(params, batch, policy=p, buffers=b)

    def lean(params, batch):  # type: ignore[no-untyped-def]
        return fast.actor_pg_loss(params, batch, policy=p, buffers=b)

    assert torch.equal(full(adapter.params, batch), lean(adapter.params, batch))
    g_full, g_lean = grads(full), grads(lean)
    for k in keys:
        assert torch.equal(g_full[k], g_lean[k]), k


def _reference_batch(adapter: Adapter, req: svc.AdaptRequest) -> tuple[torch.Tensor, ...]:
    """Advantages/returns as the service computed them before (full forward, rl.gae)."""
    eps, spec = req.episodes, adapter.spec
    e, t_max = len(eps), max(ep.steps for ep in eps)
    obs = torch.zeros(e, t_max, spec.obs_size)
    rew = torch.zeros(e, t_max)
    done = torch.ones(e, t_max, dtype=torch.bool)
    inter = torch.zeros(e, t_max, dtype=torch.bool)
    valid = torch.zeros(e, t_max, dtype=torch.bool)
    for i, ep in enumerate(eps):
        t = ep.steps
        obs[i, :t] = torch.tensor(list(ep.obs)).reshape(t, -1)
        rew[i, :t] = torch.tensor(list(ep.rewards))
        done[i, : t - 1] = False
        inter[i, t - 1] = ep.interrupted
        valid[i, :t] = True
    values = adapter.policy.forward(adapter.params, adapter.buffers, obs.reshape(e * t_max, -1))
    v = values.value.reshape(e, t_max)
    adv, ret = gae(rew, v, done, torch.zeros(e), inter, v, adapter.gamma, adapter.lam)
    return adv[valid], ret[valid]


def test_serve_adaptation_matches_the_trainers(adapter: Adapter) -> None:
    """GAE inputs equal the old path's; the adapted actor equals `make_adapt_fn`'s (the
    held-out evaluation step, full pg_loss, vmap over one task) to float32 rounding."""
    req = request([60, 33, 60], seed=2)
    batch = adapter.to_batch(req)
    adv, ret = _reference_batch(adapter, req)
    torch.testing.assert_close(batch.advantages, adv, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.returns, ret, rtol=0, atol=1e-6)
    ours, trainer = adapter.adapt_batch(batch), adapter.reference_adapt(batch)
    for k, v in trainer.items():
        if k.startswith("actor."):
            torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-6)
    assert not torch.equal(ours["actor.0.weight"], adapter.params["actor.0.weight"])


@pytest.mark.parametrize("vmap_rows", [4096, 150])
def test_micro_batch_equals_one_request_at_a_time(adapter: Adapter, vmap_rows: int) -> None:
    """One vmap call over all (4096) or split into vmap groups and singles (150 rows)."""
    lengths = [[50, 20], [9], [30, 30, 12], [80, 80], [5, 5]]
    reqs = [request(ls, seed) for seed, ls in enumerate(lengths)]
    adapter.vmap_rows = vmap_rows
    try:
        together = adapter.adapt_many(adapter.to_batches(reqs))
    finally:
        adapter.vmap_rows = VMAP_ROWS
    for req, got in zip(reqs, together, strict=True):
        alone = adapter.adapt(req)
        for k in alone:
            torch.testing.assert_close(got[k], alone[k], rtol=0, atol=1e-5)


def test_vmap_groups_bound_padded_rows() -> None:
    assert _groups([70, 9, 72, 160, 10], 4096) == [[0, 1, 2, 3, 4]]
    assert _groups([70, 9, 72, 160, 10], 150) == [[0, 1], [2], [3], [4]]
    assert _groups([4000] * 3, 4096) == [[0], [1], [2]]


@pytest.mark.parametrize("algorithm", ["metasgd", "reptile"])
def test_other_algorithms_batch_like_the_trainer(tmp_path: Path, algorithm: str) -> None:
    path = make_checkpoint(tmp_path / f"{algorithm}.pt", seed=1, algorithm=algorithm)
    if algorithm == "metasgd":  # learned per-parameter step sizes
        ck = torch.load(path, weights_only=False)
        gen = torch.Generator().manual_seed(0)
        ck["metasgd_lrs"] = [
            {k: torch.rand(v.shape, generator=gen) for k, v in ck["params"].items() if "actor" in k}
        ]
        torch.save(ck, path)
    ad = Adapter(path)
    reqs = [request([12, 7], seed=3), request([9], seed=4)]
    batches = ad.to_batches(reqs)
    for batch, got in zip(batches, ad.adapt_many(batches), strict=True):
        want = ad.reference_adapt(batch)
        for k in want:
            if k.startswith("actor."):
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5)


class _CountingAdapter:
    """Stands in for Adapter in Batcher unit tests: records which requests it computed."""

    def __init__(self) -> None:
        self.seen: list[list[object]] = []

    def to_batches(self, requests: list[object], check: bool = False) -> list[object]:
        self.seen.append(list(requests))
        time.sleep(0.05)
        return list(requests)

    def adapt_many(self, batches: list[object]) -> list[dict[str, torch.Tensor]]:
        return [{"x": torch.zeros(1)} for _ in batches]


def test_batcher_batches_waiting_jobs_and_drops_expired_ones() -> None:
    fake = _CountingAdapter()
    batcher = Batcher(fake, workers=1, max_batch=4, window_s=0.0)  # type: ignore[arg-type]
    try:
        blocker = Job("first", None)  # type: ignore[arg-type]
        assert batcher.submit(blocker)
        time.sleep(0.01)  # the worker is busy with "first" for 50 ms
        expired = Job("expired", time.monotonic() - 1)  # type: ignore[arg-type]
        gone = Job("gone", None, is_active=lambda: False)  # type: ignore[arg-type]
        live = [Job(f"r{i}", time.monotonic() + 10) for i in range(3)]  # type: ignore[arg-type]
        for job in (expired, gone, *live):
            assert batcher.submit(job)
        assert blocker.wait(5) and all(j.wait(5) for j in live)
        assert not expired.wait(1) and not gone.wait(1)
        assert fake.seen == [["first"], ["r0", "r1", "r2"]]
        assert {j.batch_size for j in live} == {3}
        waiting = Job("late", time.monotonic() + 10)  # type: ignore[arg-type]
        waiting.abandon()  # caller gave up before a worker claimed it: never computed
        assert batcher.submit(waiting) and not waiting.wait(0.2) and waiting.dropped
        assert fake.seen[-1] != ["late"]
    finally:
        batcher.close()


def test_rate_limiter_token_bucket() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.allow("a", now=0.0)[0] for _ in range(4)] == [True, True, True, False]
    ok, wait = rl.allow("a", now=0.0)
    assert not ok and wait == pytest.approx(0.5)
    assert rl.allow("b", now=0.0)[0]  # buckets are per client
    assert rl.allow("a", now=0.5)[0] and not rl.allow("a", now=0.5)[0]
    assert RateLimiter(rate=0).allow("a")[0]  # 0 = off


class _Context:
    def __init__(self, peer: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self._peer, self._metadata = peer, metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_client_key_is_host_and_token_not_port() -> None:
    bearer = (("authorization", "Bearer abc"),)
    a = client_key(_Context("ipv4:10.0.0.1:5000", bearer))
    assert a == client_key(_Context("ipv4:10.0.0.1:6000", bearer))  # reconnecting: same
    assert a != client_key(_Context("ipv4:10.0.0.2:5000", bearer))  # other machine
    assert a != client_key(_Context("ipv4:10.0.0.1:5000", (("authorization", "Bearer x"),)))
    assert "abc" not in a
    assert client_key(_Context("ipv6:[::1]:7000", ())) == "peer:ipv6:[::1]"


# ------------------------------------------------------------------------- real server process
RATE, BURST = 2.0, 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve-batching")
    make_checkpoint(folder / "results" / "t" / "checkpoints" / "maml.pt", seed=3)
    signing.write_keypair(folder / "keys")
    (folder / "token").write_text(TOKEN + "\n")
    srv = start_server(
        folder,
        "--max-workers",
        "1",
        "--max-batch",
        "8",
        "--batch-window-ms",
        "50",
        "--rate-limit",
        f"{RATE:g}/s",
        "--rate-burst",
        str(BURST),
    )
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=20) == 0


def test_service_batches_concurrent_requests_exactly(server: Server) -> None:
    reqs = [request([40 + 7 * i, 25], seed=10 + i) for i in range(6)]
    answers: dict[int, svc.AdaptResponse] = {}
    barrier = threading.Barrier(len(reqs))

    def call(i: int) -> None:
        with server.client() as c:
            barrier.wait()
            answers[i] = c.adapt_raw(reqs[i], timeout=30)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with server.client() as c:
        counters = c.stats().counters
    assert counters["largest_batch"] > 1, dict(counters)
    local = Adapter(server.checkpoint)
    versions = set()
    for i, req in enumerate(reqs):
        with server.client() as c:
            weights = c.verify(answers[i].weights)  # each answer signed on its own
        versions.add(weights.policy_version)
        _, remote, _ = policy_weights.unpack(weights)
        want = local.adapt(req)
        for k, v in remote.items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=1e-5)
    assert len(versions) == len(reqs)


def test_rate_limit_refuses_with_resource_exhausted(server: Server) -> None:
    req = request([5], seed=0)
    codes, messages = [], []
    t0 = time.monotonic()
    with server.client() as c:
        for _ in range(BURST + 4):
            try:
                c.adapt_raw(req, timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                messages.append(err.details() or "")
        elapsed = time.monotonic() - t0
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes.count(grpc.StatusCode.OK) <= BURST + RATE * elapsed + 1
        assert all("rate limit of 2 requests/s per client (burst 10)" in m for m in messages)
        time.sleep(1.0 / RATE + 0.1)  # one token back
        c.adapt_raw(req, timeout=10)
        assert c.stats().counters["rate_limited"] >= 1


def test_compute_floor_counts_every_weight_of_the_policy_it_adapts() -> None:
    """The bench's compute floor multiplies exactly the policy's weight matrices: the forward
    products cover each actor and critic weight once per row, and the backward pass adds
    the actor's weight gradients (same size) and the input gradients of its deeper layers."""
    from avatar_meta import contract
    from avatar_meta.benchmarks.adaptation import request_gemms
    from avatar_meta.rl.policy import Policy, PolicySpec

    params, _ = Policy(PolicySpec(hidden=(128, 64))).init(seed=0)
    weights = {k: v.numel() for k, v in params.items() if k.endswith("weight")}
    actor = sum(n for k, n in weights.items() if k.startswith("actor."))
    critic = sum(n for k, n in weights.items() if k.startswith("critic."))
    deeper = actor - weights["actor.0.weight"]
    rows = 1000
    shapes = request_gemms(contract.OBSERVATION_SIZE, (128, 64), 6, rows)
    macs = sum(m * k * n for m, k, n in shapes)
    assert macs == rows * (critic + 2 * actor + deeper)


def test_bench_times_the_encoder_step_alone_and_batched(tmp_path: Path) -> None:
    """`bench adaptation`'s encoder entry runs the encoder checkpoint both ways."""
    from avatar_meta.benchmarks.adaptation import _encoder_step

    checkpoint = make_checkpoint(tmp_path / "encoder.pt", hidden=(16, 16), algorithm="encoder")
    assert Adapter(checkpoint).algorithm == "encoder"
    entry = _encoder_step(checkpoint, reps=1)
    assert entry["batch_size"] == 8
    assert _groups([entry["steps_per_request"]] * 8, VMAP_ROWS) == [list(range(8))]
    times = [v for k, v in entry.items() if k.endswith("cpu_ms_per_request")]
    assert len(times) == 3 and all(math.isfinite(t) and t > 0 for t in times)
