"""`avatar-meta serve` as a real process on loopback, called by real clients (docs/serving.md).

One server process serves the whole module (start-up costs seconds); it runs with small caps
so the limit cases are cheap to trigger. Every bad-request test ends by checking that the
server still answers SERVING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from avatar_meta import contract
from avatar_meta.export import policy_weights, signing
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.serve import health, wire
from avatar_meta.serve.adapter import Adapter, InvalidRequest, make_checkpoint
from avatar_meta.serve.client import AdaptationClient, make_episode

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "avatar_meta.cli"]
TOKEN = "test-token-0123456789abcdef"
MAX_EPISODES, MAX_STEPS, MAX_BYTES = 8, 2000, 1_000_000

OBS_SIZE = contract.OBSERVATION_SIZE


def episodes(
    n: int = 4,
    steps: int = 50,
    seed: int = 0,
    *,
    lengths: list[int] | None = None,
    reward_scale: float = 1.0,
) -> list[svc.Episode]:
    """Synthetic episodes: `n` of `steps` steps, or one per entry of `lengths`; every third
    step masks gesture 1 and makes no gesture; odd episodes end by the step limit."""
    rng = np.random.default_rng(seed)
    out = []
    for i, t in enumerate(lengths or [steps] * n):
        masks = np.zeros((t, 4))
        masks[::3, 1] = 1
        gestures = rng.integers(0, 4, size=(t, 1))
        gestures[::3] = 0
        out.append(
            make_episode(
                rng.normal(size=(t, OBS_SIZE)),
                rng.normal(size=(t, 2)),
                gestures,
                rng.normal(size=t) * reward_scale,
                masks,
                interrupted=bool(i % 2),
            )
        )
    return out


class Server:
    def __init__(self, proc: subprocess.Popen[str], address: str, folder: Path) -> None:
        self.proc, self.address, self.folder = proc, address, folder
        self.public_key = signing.load_public_key(folder / "keys" / "public.pem")
        self.checkpoint = folder / "results" / "t" / "checkpoints" / "maml.pt"

    def client(self, token: str | None = TOKEN) -> AdaptationClient:
        return AdaptationClient(self.address, token=token, public_key=self.public_key)


def start_server(folder: Path, *extra: str) -> Server:
    log = open(folder / "server.log", "a")  # noqa: SIM115 - the server process owns it
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--run-id",
            "t",
            "--results-dir",
            str(folder / "results"),
            "--port",
            "0",
            "--token-file",
            str(folder / "token"),
            "--sign-key",
            str(folder / "keys" / "private.pem"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "serving ... on 127.0.0.1:PORT"
    if "serving" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {(folder / 'server.log').read_text()[-2000:]}")
    return Server(proc, line.split(" on ")[-1].strip(), folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    make_checkpoint(folder / "results" / "t" / "checkpoints" / "maml.pt", seed=3)
    signing.write_keypair(folder / "keys")
    (folder / "token").write_text(TOKEN + "\n")
    srv = start_server(
        folder,
        "--max-episodes",
        str(MAX_EPISODES),
        "--max-steps",
        str(MAX_STEPS),
        "--max-message-bytes",
        str(MAX_BYTES),
        "--max-workers",
        "1",
        "--max-queue",
        "1",
        "--grace-s",
        "5",
    )
    yield srv
    srv.proc.send_signal(signal.SIGTERM)  # graceful shutdown exits 0
    assert srv.proc.wait(timeout=20) == 0


def assert_serving(srv: Server) -> None:
    with srv.client() as c:
        assert c.health() == health.SERVING
        assert c.health("avatar_meta.v1.AdaptationService") == health.SERVING


def test_authenticated_round_trip_returns_verifiable_weights(server: Server) -> None:
    with server.client() as c:
        weights, response = c.adapt(episodes(), task_hint="greet/3", want_onnx=True)
    assert weights.behavior_name == "AvatarAgent" and weights.task_id == "greet/3"
    assert weights.policy_version >= 1 and not weights.descriptor.has_critic
    assert response.adapt_ms > 0
    import onnx

    model = onnx.load_from_string(response.onnx)
    names = {i.name for i in model.graph.initializer}
    assert "obs_mean" in names
    # tampering with the payload is caught by the same client
    tampered = svc.AdaptResponse()
    tampered.CopyFrom(response)
    tampered.weights.payload = response.weights.payload[:-1] + b"\x00"
    with pytest.raises(signing.VerificationError):
        AdaptationClient(server.address, public_key=server.public_key).verify(tampered.weights)


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
def test_missing_or_wrong_token_is_unauthenticated(server: Server, token: str | None) -> None:
    with server.client(token) as c:
        for call in (lambda: c.adapt(episodes(1)), lambda: next(iter(c.subscribe())), c.stats):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert_serving(server)


def test_service_weights_equal_in_process_adaptation(server: Server) -> None:
    eps = episodes(3, 60, seed=11)
    with server.client() as c:
        weights, _ = c.adapt(eps)
    adapter = Adapter(server.checkpoint)
    local = adapter.adapt(svc.AdaptRequest(behavior_name="AvatarAgent", episodes=eps))
    _, remote, _ = policy_weights.unpack(weights)
    assert set(remote) == {k for k in local if k.startswith("actor.")}
    for name, value in remote.items():
        torch.testing.assert_close(value, local[name].to(torch.float32), rtol=0, atol=1e-6)
    # adaptation changed the actor (it is not the meta-policy echoed back)
    assert not torch.equal(remote["actor.0.weight"], adapter.params["actor.0.weight"])


def test_subscribe_delivers_new_version_to_two_subscribers(server: Server) -> None:
    received: dict[int, list[int]] = {0: [], 1: []}
    ready = threading.Barrier(3)

    def listen(i: int) -> None:
        with server.client() as c:
            ready.wait()
            for w in c.subscribe(task_id="wave/1", timeout=20):
                received[i].append(w.policy_version)
                return

    threads = [threading.Thread(target=listen, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    ready.wait()
    with server.client() as c:
        _wait_for(lambda: c.stats().counters["subscribers"] >= 2)
        weights, _ = c.adapt(episodes(2), task_hint="wave/1")
    for t in threads:
        t.join(timeout=20)
    assert received == {0: [weights.policy_version], 1: [weights.policy_version]}


def _bad_requests() -> dict[str, tuple[svc.AdaptRequest, grpc.StatusCode, str]]:
    ok = episodes(1, 20)
    wide = svc.Episode()
    wide.CopyFrom(ok[0])
    wide.obs_size = 31
    nan = svc.Episode()
    nan.CopyFrom(ok[0])
    nan.rewards[5] = float("nan")
    inf = svc.Episode()
    inf.CopyFrom(ok[0])
    inf.obs[7] = float("inf")
    bad_gesture = svc.Episode()
    bad_gesture.CopyFrom(ok[0])
    bad_gesture.discrete_actions[0] = 9
    big = episodes(2, 4000)  # ~1.3 MB: over MAX_BYTES, refused by gRPC before any parsing
    inv, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED

    def req(eps: list[svc.Episode], behavior: str = "AvatarAgent") -> svc.AdaptRequest:
        return svc.AdaptRequest(behavior_name=behavior, episodes=eps)

    return {
        "unknown_behaviour": (req(ok, "Nope"), inv, "behavior_name"),
        "wrong_obs_width": (req([wide]), inv, "episodes[0].obs_size"),
        "nan": (req([nan]), inv, "episodes[0].rewards"),
        "inf": (req([inf]), inv, "episodes[0].obs"),
        "gesture_out_of_range": (req([bad_gesture]), inv, "episodes[0].discrete_actions"),
        "empty": (req([]), inv, "episodes"),
        "too_many_episodes": (req(episodes(MAX_EPISODES + 1, 5)), inv, "episodes"),
        "steps_over_cap": (req(episodes(3, MAX_STEPS // 2)), inv, "episodes.steps"),
        "message_too_big": (req(big), exhausted, ""),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests()))
def test_bad_request_is_refused_and_server_keeps_serving(server: Server, case: str) -> None:
    request, code, field = _bad_requests()[case]
    with server.client() as c, pytest.raises(grpc.RpcError) as err:
        c.adapt_raw(request)
    assert err.value.code() == code, err.value.details()
    assert field in (err.value.details() or "")
    assert_serving(server)


def test_fast_codec_matches_generated_messages() -> None:
    rng = np.random.default_rng(5)
    arrays = (
        rng.normal(size=(7, OBS_SIZE)),
        rng.normal(size=(7, 2)),
        rng.integers(0, 4, (7, 1)),
        rng.normal(size=7),
        np.eye(4)[rng.integers(0, 4, 7)],
    )
    raw = wire.encode_adapt_request(
        "AvatarAgent",
        [wire.encode_episode(*arrays, interrupted=True)],
        task_hint="x",
        want_onnx=True,
        seed=9,
    )
    message = svc.AdaptRequest.FromString(raw)
    assert message.episodes[0] == make_episode(*arrays, interrupted=True)
    assert (message.task_hint, message.want_onnx, message.seed) == ("x", True, 9)
    view = wire.decode_adapt_request(message.SerializeToString())
    ep = message.episodes[0]
    assert (view.behavior_name, view.seed, view.episodes[0].steps) == ("AvatarAgent", 9, 7)
    for name in (
        "obs",
        "continuous_actions",
        "discrete_actions",
        "action_masks",
        "rewards",
        "dones",
    ):
        np.testing.assert_array_equal(
            getattr(view.episodes[0], name), np.asarray(getattr(ep, name), np.float32)
        )
    with pytest.raises(wire.WireError):
        wire.decode_adapt_request(raw[:-3])


def test_validation_names_field_in_process(server: Server) -> None:
    adapter = Adapter(server.checkpoint)
    eps = episodes(1, 10)
    eps[0].num_continuous = 3
    with pytest.raises(InvalidRequest) as err:
        adapter.validate(svc.AdaptRequest(behavior_name="AvatarAgent", episodes=eps))
    assert err.value.field == "episodes[0].num_continuous"


def test_per_family_checkpoint_serves_the_chosen_family(tmp_path: Path) -> None:
    """A run with one meta-policy per family: the service needs --family, adapts from that
    family's parameters, and refuses a request whose task_hint names another family."""
    path = make_checkpoint(tmp_path / "maml.pt")
    ck = torch.load(path, weights_only=False)
    follow = {k: v + 0.01 for k, v in ck["params"].items()}
    ck["policy_keys"] = ["reach_landmark", "follow_visitor"]
    ck["params_by_key"] = {"reach_landmark": ck["params"], "follow_visitor": follow}
    torch.save(ck, path)
    with pytest.raises(ValueError, match="--family NAME"):
        Adapter(path)
    with pytest.raises(ValueError, match="choose one of reach_landmark, follow_visitor"):
        Adapter(path, family="patrol")
    adapter = Adapter(path, family="follow_visitor")
    assert all(torch.equal(adapter.params[k], follow[k]) for k in follow)
    request = svc.AdaptRequest(behavior_name="AvatarAgent", episodes=episodes(1, 10))
    adapter.validate(request)
    request.task_hint = "reach_landmark"
    with pytest.raises(InvalidRequest) as err:
        adapter.validate(request)
    assert err.value.field == "task_hint" and "--family reach_landmark" in str(err.value)
    with pytest.raises(ValueError, match="drop --family"):
        Adapter(make_checkpoint(tmp_path / "shared.pt"), family="patrol")


def test_deadline_and_back_pressure(server: Server) -> None:
    """A burst beyond workers + queue is refused at once; an impossible deadline fails fast."""
    payload = svc.AdaptRequest(
        behavior_name="AvatarAgent", episodes=episodes(8, 240)
    ).SerializeToString()
    codes: list[grpc.StatusCode] = []
    barrier = threading.Barrier(12)
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/avatar_meta.v1.AdaptationService/Adapt")

        def fire() -> None:
            barrier.wait()
            try:
                call(payload, timeout=30, metadata=(("authorization", f"Bearer {TOKEN}"),))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())

        threads = [threading.Thread(target=fire) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(grpc.RpcError) as err:
            call(payload, timeout=0.001, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert_serving(server)


_SUBSCRIBER = """
import sys
from avatar_meta.serve.client import AdaptationClient
c = AdaptationClient(sys.argv[1], token=sys.argv[2])
stream = c.stub.Subscribe(__import__("avatar_meta.proto_gen.v1.adaptation_service_pb2",
    fromlist=["x"]).SubscribeRequest(behavior_name="AvatarAgent"), metadata=c.metadata)
for _ in stream:
    pass
"""


def test_killed_subscriber_does_not_leak(server: Server) -> None:
    with server.client() as c:
        before = c.stats().counters["subscribers"]
        child = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, server.address, TOKEN])
        try:
            _wait_for(lambda: c.stats().counters["subscribers"] == before + 1)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        _wait_for(lambda: c.stats().counters["subscribers"] == before, timeout=15)
        assert c.stats().counters["subscribers"] == 0
    assert_serving(server)


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
def test_load_64_clients_for_60_seconds(server: Server) -> None:
    """60 s of 64 concurrent clients against a server with room for all of them (2 workers,
    queue 64): zero errors, and healthy and leak-free afterwards."""
    payload = wire.encode_adapt_request(
        "AvatarAgent",
        [
            wire.encode_episode(*a)
            for a in [(np.zeros((50, OBS_SIZE)), np.zeros((50, 2)), np.zeros((50, 1)), np.ones(50))]
            * 2
        ],
    )
    # --rate-limit 0: the 64 client threads share one token and one address, i.e. they are
    # one client to the per-client rate limit; this test is about capacity, not rate limits.
    roomy = start_server(
        server.folder, "--max-workers", "2", "--max-queue", "64", "--rate-limit", "0"
    )
    try:
        codes = _hammer(roomy, payload, clients=64, seconds=60.0)
        assert set(codes) == {"OK"}, codes
        assert_serving(roomy)
        with roomy.client() as c:
            counters = c.stats().counters
        assert counters["inflight"] == 0 and counters["codes.Adapt.OK"] == codes["OK"]
    finally:
        roomy.proc.send_signal(signal.SIGTERM)
        assert roomy.proc.wait(timeout=20) == 0


def _hammer(srv: Server, payload: bytes, clients: int, seconds: float) -> dict[str, int]:
    from collections import Counter

    codes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        with srv.client() as c:
            while time.monotonic() < stop:
                try:
                    c.adapt_encoded(payload, timeout=60)
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                with lock:
                    codes[code] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(codes)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_round_trip(server: Server) -> None:
    cert, key = _self_signed(server.folder)
    tls = start_server(server.folder, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        port = tls.address.rsplit(":", 1)[1]
        assert tls.address.startswith("[::]")  # TLS: all interfaces
        with AdaptationClient(
            f"localhost:{port}",
            token=TOKEN,
            public_key=server.public_key,
            root_cert=cert.read_bytes(),
        ) as c:
            weights, _ = c.adapt(episodes(1, 10))
            assert weights.policy_version >= 1
        with grpc.insecure_channel(f"localhost:{port}") as plain, pytest.raises(grpc.RpcError):
            health.check(plain, timeout=2)  # plaintext is not accepted on the TLS port
    finally:
        tls.proc.send_signal(signal.SIGTERM)
        assert tls.proc.wait(timeout=20) == 0


def test_server_reflection_lists_the_services(server: Server) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = stub.ServerReflectionInfo(
            iter([request]), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert "avatar_meta.v1.AdaptationService" in names
    assert "grpc.health.v1.Health" in names


def test_a_context_checkpoint_adapts_only_its_context(tmp_path: Path) -> None:
    """meta.adapt context: the service adapts the task context (as held-out evaluation
    does), its fast path equals the trainer's adaptation, and the weights it returns are the
    plain MLP with the context folded into the first layer's bias."""
    from avatar_meta.config import config_from_dict
    from avatar_meta.rl import Policy

    path = make_checkpoint(tmp_path / "maml.pt")
    ck = torch.load(path, weights_only=False)
    config = config_from_dict(
        {"policy": {"context_size": 4}, "meta": {"adapt": "context", "inner_lr": 5.0}}
    )
    params, _ = Policy(config.policy_spec()).init(seed=0)
    ck["params"], ck["config"] = params, config.to_dict()
    torch.save(ck, path)
    adapter = Adapter(path)
    request = svc.AdaptRequest(behavior_name="AvatarAgent", episodes=episodes(3, 60, seed=4))
    batch = adapter.to_batch(request)
    fast, reference = adapter.adapt_batch(batch), adapter.reference_adapt(batch)
    assert {k for k in params if not torch.equal(fast[k], params[k])} == {"actor.context"}
    for name in fast:
        torch.testing.assert_close(fast[name], reference[name], rtol=0, atol=1e-6)
    spec, packed, _ = policy_weights.unpack(adapter.pack(fast, version=1, task_id="t"))
    assert spec.context_size == 0 and "actor.context" not in packed


def test_an_encoder_checkpoint_infers_the_context_like_held_out_evaluation(
    tmp_path: Path,
) -> None:
    """meta.algorithms [encoder]: the service adapts like the trainer's own encoder step
    (`make_adapt_fn`), alone or vmapped over requests, writes only the task context, and
    ships the plain MLP."""
    from avatar_meta.config import config_from_dict
    from avatar_meta.meta.encoder import init_encoder
    from avatar_meta.rl import Policy, stack_batches
    from avatar_meta.training.evaluate import make_adapt_fn

    path = make_checkpoint(tmp_path / "encoder.pt", algorithm="encoder")
    ck = torch.load(path, weights_only=False)
    config = config_from_dict(
        {"policy": {"context_size": 4}, "meta": {"algorithms": ["encoder"], "encoder_hidden": 8}}
    )
    policy = Policy(config.policy_spec())
    params, _ = policy.init(seed=0)
    encoder = init_encoder(policy.spec, 8)
    encoder["encoder.out.weight"] = torch.randn(encoder["encoder.out.weight"].shape)
    ck["params"], ck["config"] = {**params, **encoder}, config.to_dict()
    torch.save(ck, path)
    adapter = Adapter(path)
    assert adapter.algorithm == "encoder"
    request = svc.AdaptRequest(behavior_name="AvatarAgent", episodes=episodes(3, 60, seed=4))
    batch = adapter.to_batch(request)
    first = request.episodes[0]
    obs = torch.tensor(first.obs).reshape(first.steps, -1)
    torch.testing.assert_close(batch.reward[: first.steps], torch.tensor(first.rewards))
    torch.testing.assert_close(batch.next_obs[: first.steps - 1], obs[1:])
    torch.testing.assert_close(batch.next_obs[first.steps - 1], obs[-1])  # no terminal obs
    served = adapter.adapt_batch(batch)
    stacked = {k: v[None] for k, v in adapter.params.items()}
    trainer = make_adapt_fn("encoder", config, policy, adapter.buffers)(
        stacked, stack_batches([batch]), 0
    )
    for name in params:
        torch.testing.assert_close(served[name], trainer[name][0], rtol=0, atol=1e-6)
    assert {k for k in params if not torch.equal(served[k], params[k])} == {"actor.context"}
    # requests of different lengths adapted in one vmap call equal one at a time
    requests = [
        svc.AdaptRequest(behavior_name="AvatarAgent", episodes=episodes(n, t, seed=s))
        for s, (n, t) in enumerate([(2, 30), (1, 11), (3, 25)])
    ]
    batches = adapter.to_batches(requests)
    for one, together in zip(batches, adapter.adapt_many(batches), strict=True):
        alone = adapter.reference_adapt(one)
        assert set(together) == set(alone)
        for name in alone:
            torch.testing.assert_close(together[name], alone[name], rtol=0, atol=1e-5)
    spec, packed, _ = policy_weights.unpack(adapter.pack(served, version=1, task_id="t"))
    assert spec.context_size == 0 and not any(
        k.startswith(("encoder.", "actor.ctx")) for k in packed
    )
