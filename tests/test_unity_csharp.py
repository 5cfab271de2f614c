"""The Unity package's C#, compiled and run under mono (no Unity Editor needed; issue 5).

- tools/csharp/build.sh compiles every Runtime/Editor/Tests script of
  unity_project/Packages/com.avatarmeta.agents against the stub assemblies in tools/csharp/stubs/
  (declarations of the UnityEngine / ML-Agents / NUnit API the package uses, same signatures as
  the real ones), so a typo or a wrong signature fails here, and builds ParityRunner.exe from the
  Unity-free core alone.
- StreamedPolicy on the shared vectors (tests/vectors/policy_v1.json) equals torch to 1e-5;
  tampered, unsigned, wrong-key and key-less loads are refused.
- The C# observation writer and scenario rewards equal the headless world's (plaza._observe,
  scenarios.SCENARIOS[...].reward) on states taken from a running plaza.
- TaskChannel / PolicyChannel bytes written by C# are parsed by Python and vice versa.
- The adaptation client (ClientRunner.exe, no Unity/Grpc.Core/Google.Protobuf): backoff schedule,
  bearer metadata, loopback/TLS rule, the main-thread queue, and Subscribe/Adapt over a scripted
  in-memory transport (reconnect with backoff, resume after the newest version, deadline renewal,
  retry rules, refusal of tampered / foreign / key-less envelopes signed here by Python); its
  request bytes decode with the Python service's own parsers. A real gRPC round trip is not
  possible here: Grpc.Core's native library does not exist for mono on this machine.
- The Editor window's trainer launcher starts, finds again and stops a real (fake trainer)
  process, and the export copies a run folder into Assets.

mono is installed by tools/setup_venv.sh (apt-get, as root). When `mcs` is missing, this module
installs it itself if it can (root + apt-get), else it skips with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.envs.policy_channel import chunk_records, decode_ack
from avatar_meta.export import signing
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.serve import wire
from avatar_meta.world import scenarios
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.side_channels import decode_task, encode_task

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "policy_v1.json"
PACKAGE = ROOT / "unity_project" / "Packages" / "com.avatarmeta.agents"
MONO_PACKAGES = ("mono-mcs", "mono-runtime", "libmono-system-core4.0-cil", "libmono-system4.0-cil")


def _ensure_mono() -> str | None:
    """None when mcs and mono are usable, else the reason they are not."""
    if shutil.which("mcs") and shutil.which("mono"):
        return None
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        return "mono (mcs) is not installed and cannot be apt-get installed here; run tools/setup_venv.sh as root"
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *MONO_PACKAGES]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(cmd, env=env, capture_output=True)
    if shutil.which("mcs") and shutil.which("mono"):
        return None
    return "apt-get could not install mono-mcs / mono-runtime"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _ensure_mono()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("csharp")
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "csharp" / "build.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"C# compilation failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _run(build: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mono", str(build / "ParityRunner.exe"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _requests(build: Path, tmp_path: Path, lines: list[str]) -> list[str]:
    path = tmp_path / "requests.txt"
    path.write_text("\n".join(lines) + "\n")
    proc = _run(build, "--lines", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) >= len(lines), proc.stdout
    return out


def test_every_script_compiles_against_the_stubs(build: Path) -> None:
    for name in (
        "AvatarMeta.Runtime.dll",
        "AvatarMeta.Runtime.NoGrpc.dll",
        "AvatarMeta.Editor.dll",
        "AvatarMeta.Tests.dll",
        "ParityRunner.exe",
        "ClientRunner.exe",
        "Google.Protobuf_Packed.dll",
        "Grpc.Core.dll",
        "System.Interactive.Async.dll",
    ):
        assert (build / name).is_file(), name
    scripts = {p.name for p in (PACKAGE / "Runtime").rglob("*.cs")}
    for expected in (
        "StreamedPolicy.cs",
        "AvatarAgent.cs",
        "AvatarArea.cs",
        "TaskChannel.cs",
        "PolicyChannel.cs",
        "AvatarEnvironment.cs",
        "AdaptationService.cs",  # generated messages: compiled too, against the Google.Protobuf stub
        "PolicyWeights.cs",
        "AdaptationClient.cs",
        "GrpcAdaptationTransport.cs",
        "AvatarAdaptationClient.cs",
    ):
        assert expected in scripts
    # Type names live in the assemblies' metadata: the generated messages are compiled in, the
    # Grpc.Core transport only where Grpc.Core exists (Editor / desktop players).
    runtime = (build / "AvatarMeta.Runtime.dll").read_bytes()
    no_grpc = (build / "AvatarMeta.Runtime.NoGrpc.dll").read_bytes()
    for name in (
        b"AdaptRequest",
        b"PolicyWeightsEnvelope",
        b"AdaptationClient",
        b"EpisodeRecorder",
    ):
        assert name in runtime and name in no_grpc, name
    assert b"AdaptationServiceMethods" in runtime and b"AdaptationServiceMethods" not in no_grpc
    assert b"Grpc.Core" in runtime and b"Grpc.Core" not in no_grpc


def test_runtime_asmdef_names_the_assemblies_ml_agents_ships() -> None:
    """com.unity.ml-agents 3.0.0 ships Plugins/Google.Protobuf_Packed.dll and
    Plugins/ProtoBuffer/{Grpc.Core,System.Interactive.Async}.dll; the runtime references exactly
    those, and build.sh compiles against stubs of the same names."""
    asmdef = json.loads((PACKAGE / "Runtime" / "AvatarMeta.Runtime.asmdef").read_text())
    assert asmdef["overrideReferences"] is True
    assert set(asmdef["precompiledReferences"]) == {
        "Google.Protobuf_Packed.dll",
        "Grpc.Core.dll",
        "System.Interactive.Async.dll",
    }
    assert "Unity.ML-Agents" in asmdef["references"]


def test_editmode_test_vectors_are_the_shared_ones() -> None:
    copy = PACKAGE / "Tests" / "Editor" / "policy_v1.json.txt"
    assert copy.read_bytes() == VECTORS.read_bytes(), "copy tests/vectors/policy_v1.json to " + str(
        copy.relative_to(ROOT)
    )


def test_streamed_policy_matches_torch_and_refuses_bad_envelopes(build: Path) -> None:
    vectors = json.loads(VECTORS.read_text())
    proc = _run(build, str(VECTORS))
    out = proc.stdout
    assert proc.returncode == 0 and "RESULT PASS" in out, out + proc.stderr
    rows = [line.split() for line in out.splitlines() if line.startswith("ROW ")]
    assert len(rows) == len(vectors["expected_continuous"])
    for row in rows:
        index = int(row[1])
        cont = [float(v) for v in row[3 : row.index("disc")]]
        disc = [int(v) for v in row[row.index("disc") + 1 :]]
        np.testing.assert_allclose(cont, vectors["expected_continuous"][index], atol=1e-5, rtol=0)
        assert disc == vectors["expected_discrete"][index]
    for label in ("TAMPERED", "WRONGKEY", "UNSIGNED", "NOKEY"):
        assert f"{label} REFUSED" in out, out
    assert f"KEYID {vectors['key_id']} expected" in out
    assert "ACTIVE_VERSION_AFTER_REFUSALS 1" in out  # refusals never replace the running policy
    assert "ALLOCATED_BYTES_1000 0" in out  # decisions allocate nothing


def test_observations_match_the_headless_world(build: Path, tmp_path: Path) -> None:
    plaza = Plaza(num_areas=4, agents_per_area=2, seed=7)
    rng = np.random.default_rng(0)
    requests, expected = [], []
    for step in range(60):
        if step % 6 == 0:
            obs = plaza._observe()
            v = plaza._visitors
            for i in range(plaza.n_agents):
                a = plaza._area_of[i]
                pos, vel, vpos, vvel = plaza._pos[i], plaza._vel[i], v.pos[a], v.vel[a]
                values = [pos.real, pos.imag, plaza._heading[i], vel.real, vel.imag]
                values += [plaza._top_speed[i], vpos.real, vpos.imag, vvel.real, vvel.imag]
                ints = [v.cue[a], plaza._last_gesture[i], plaza._steps[a], plaza._last_landmark[i]]
                numbers = " ".join(repr(float(x)) for x in values)
                requests.append(f"obs {numbers} " + " ".join(str(int(k)) for k in ints))
                expected.append(obs[i])
        cont = rng.uniform(-1, 1, size=(plaza.n_agents, 2))
        plaza.step(cont, rng.integers(0, 4, size=plaza.n_agents))
    out = _requests(build, tmp_path, requests)
    got = np.array([[float(x) for x in line.split()[1:]] for line in out], dtype=np.float64)
    np.testing.assert_allclose(got, np.array(expected, dtype=np.float64), atol=1e-6, rtol=0)


def test_landmark_touch_matches_the_headless_world(build: Path, tmp_path: Path) -> None:
    """C# TouchedLandmark = Plaza._touch_landmarks, on the radius and off it (previous kept)."""
    plaza, rng = Plaza(num_areas=1, agents_per_area=1, seed=2), np.random.default_rng(4)
    requests, expected, touched = [], [], 0
    for i in range(300):
        lx, lz = contract.LANDMARKS[i % len(contract.LANDMARKS)]
        radius = contract.LANDMARK_TOUCH_RADIUS * rng.choice([0.5, 0.999999, 1.000001, 2.0])
        angle = rng.uniform(-np.pi, np.pi)
        x, z = lx + radius * np.cos(angle), lz + radius * np.sin(angle)
        previous = int(rng.integers(-1, len(contract.LANDMARKS)))
        plaza._pos[0], plaza._last_landmark[0] = complex(x, z), previous
        plaza._touch_landmarks()
        expected.append(int(plaza._last_landmark[0]))
        touched += expected[-1] != previous
        requests.append(f"touch {float(x)!r} {float(z)!r} {previous}")
    out = _requests(build, tmp_path, requests)
    assert [int(line.split()[1]) for line in out] == expected
    assert 60 < touched < 240, "the draws must both touch and miss"


def test_body_dynamics_match_the_headless_world(build: Path, tmp_path: Path) -> None:
    plaza = Plaza(num_areas=1, agents_per_area=1, seed=5)
    plaza._noise[:] = 0.0  # noise samples are the only thing the C# body takes from outside
    rng = np.random.default_rng(1)
    requests, expected = [], []
    for i in range(200):
        # Half the starts hug an obstacle or a wall, so the collision pass is exercised.
        if i % 2:
            ox, oz, r = contract.OBSTACLES[i % len(contract.OBSTACLES)]
            angle = rng.uniform(-np.pi, np.pi)
            x, z = ox + (r + 0.31) * np.cos(angle), oz + (r + 0.31) * np.sin(angle)
        else:
            x, z = rng.uniform(-9.69, 9.69, size=2)
        heading, command = rng.uniform(-np.pi, np.pi), rng.uniform(-1.3, 1.3, size=2)
        plaza.place_avatar(0, float(x), float(z), float(heading))
        plaza._steps[:] = 0  # never let the episode clock end the episode here
        plaza.step(command[None, :], np.zeros(1, dtype=np.int64))
        top, turn = float(plaza._top_speed[0]), float(plaza._turn_rate[0])
        values = [x, z, heading, *command, top, turn]
        requests.append("move " + " ".join(repr(float(v)) for v in values))
        pos, vel = plaza._pos[0], plaza._vel[0]
        expected.append(
            [pos.real, pos.imag, plaza._heading[0], vel.real, vel.imag, plaza._speed[0]]
            + [float(plaza._slow[0])]
        )
    out = _requests(build, tmp_path, requests)
    got = np.array([[float(v) for v in line.split()[1:]] for line in out])
    np.testing.assert_allclose(got, np.array(expected), atol=1e-9, rtol=0)


def test_rewards_match_the_headless_world(build: Path, tmp_path: Path) -> None:
    rng = random.Random(3)
    requests, expected = [], []
    for _ in range(300):
        family = contract.FAMILIES[rng.randrange(len(contract.FAMILIES))]
        params = [0.0, 0.0, 0.0]
        for i, spec in enumerate(family.params):
            params[i] = (
                float(rng.randint(int(spec.low), int(spec.high)))
                if spec.integer
                else rng.uniform(spec.low, spec.high)
            )
        params = [float(np.float32(p)) for p in params]  # the C# task holds float32 parameters
        fwd = np.exp(1j * rng.uniform(-np.pi, np.pi))
        lm = contract.LANDMARKS[rng.randrange(3)]
        near = rng.random() < 0.5
        pos = (
            complex(*lm) + complex(rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5))
            if near
            else complex(rng.uniform(-9, 9), rng.uniform(-9, 9))
        )
        visitor = pos + complex(rng.uniform(-3, 3), rng.uniform(-3, 3))
        vel, vvel = (
            complex(rng.uniform(-2, 2), rng.uniform(-2, 2)),
            complex(rng.uniform(-1, 1), rng.uniform(-1, 1)),
        )
        gesture, prev, slot, greeted = (
            rng.randrange(4),
            rng.uniform(0, 10),
            rng.randrange(5),
            rng.random() < 0.3,
        )
        frame = scenarios.Frame(
            pos=np.array([pos]),
            vel=np.array([vel]),
            gesture=np.array([gesture]),
            visitor_pos=np.array([visitor]),
            visitor_vel=np.array([vvel]),
            visitor_forward=np.array([fwd]),
            visitor_dist=np.abs(np.array([pos - visitor])),
        )
        memory = scenarios.Memory(np.array([prev]), np.array([slot]), np.array([greeted]))
        outcome = scenarios.SCENARIOS[family.index].reward(frame, np.array(params)[:, None], memory)
        success = bool(outcome.success[0]) if outcome.success is not None else False
        expected.append(
            (
                float(outcome.reward[0]),
                bool(outcome.on_target[0]),
                success,
                float(outcome.memory.prev_dist[0]),
                int(outcome.memory.slot[0]),
                bool(outcome.memory.greeted[0]),
            )
        )
        numbers = [*params, pos.real, pos.imag, vel.real, vel.imag]
        tail = [visitor.real, visitor.imag, vvel.real, vvel.imag, fwd.real, fwd.imag, prev]
        requests.append(
            f"reward {family.index} "
            + " ".join(repr(float(x)) for x in numbers)
            + f" {gesture} "
            + " ".join(repr(float(x)) for x in tail)
            + f" {slot} {int(greeted)}"
        )
    out = _requests(build, tmp_path, requests)
    for line, want in zip(out, expected, strict=True):
        f = line.split()
        assert f[0] == "REWARD", line
        assert float(f[1]) == pytest.approx(want[0], abs=1e-9), (line, want)
        assert (f[2] == "1", f[3] == "1") == (want[1], want[2]), (line, want)
        assert float(f[4]) == pytest.approx(want[3], abs=1e-9)
        assert (int(f[5]), f[6] == "1") == (want[4], want[5])


def test_task_channel_bytes_round_trip(build: Path, tmp_path: Path) -> None:
    python_written = [
        encode_task(0, "greet_visitor", [1.0, 1.5], []),
        encode_task(-1, "patrol", [3.0], [2.5, 3.0, 0.1]),
        encode_task(7, "", [], []),
        encode_task(2, "pace_match", [1.0, 1.25, 0.75], [1.5, 2.0, 0.0])[:-2],  # truncated
    ]
    csharp_cases = [
        (3, "follow_visitor", [2.5], [1.0, 2.0, 0.05]),
        (-1, "reach_landmark", [2.0], []),
    ]
    lines = ["taskdecode " + p.hex() for p in python_written]
    lines += [
        f"taskencode {a} {f} {','.join(map(repr, p)) or '-'} {','.join(map(repr, b)) or '-'}"
        for a, f, p, b in csharp_cases
    ]
    out = _requests(build, tmp_path, lines)
    assert out[0] == "TASK 0 greet_visitor 1,1.5 -"
    assert out[1] == "TASK -1 patrol 3 2.5,3,0.1"
    assert out[2] == "TASK 7 - - -"
    assert out[3].startswith("ERR body:") and "past the end" in out[3], out[3]
    for line, (area, family, params, body) in zip(out[4:], csharp_cases, strict=True):
        payload = bytes.fromhex(line.split()[1])
        assert payload == encode_task(area, family, params, body)
        message = decode_task(payload)
        assert (message.area, message.family) == (area, family)
        np.testing.assert_allclose(message.params, params, rtol=1e-7)


def test_policy_channel_bytes_round_trip(build: Path, tmp_path: Path) -> None:
    out = _requests(
        build,
        tmp_path,
        ["ackencode 2 41 1 9 -", "ackencode -1 42 0 0 " + b"signature does not verify".hex()],
    )
    ack = decode_ack(bytes.fromhex(out[0].split()[1]))
    assert (ack.area, ack.transfer_id, ack.accepted, ack.policy_version, ack.reason) == (
        2,
        41,
        True,
        9,
        "",
    )
    ack = decode_ack(bytes.fromhex(out[1].split()[1]))
    assert (ack.area, ack.transfer_id, ack.accepted, ack.reason) == (
        -1,
        42,
        False,
        "signature does not verify",
    )

    envelope = bytes(range(256)) * 40 + b"tail"
    chunks = chunk_records(1, 5, envelope, flags=1, chunk_size=3000)
    order = [2, 0, 3, 1]
    assert len(chunks) == 4
    bad_area = chunk_records(9, 6, b"x")[0]
    out = _requests(
        build,
        tmp_path,
        ["chunks 4 " + ",".join(chunks[i].hex() for i in order) + "," + bad_area.hex()],
    )
    assert [line.split()[0] for line in out] == ["Incomplete"] * 3 + ["Completed", "Refused"]
    _, area, tid, flags, data = out[3].split()
    assert (int(area), int(tid), int(flags)) == (1, 5, 1)
    assert bytes.fromhex(data) == envelope
    assert "does not exist" in bytes.fromhex(out[4].split()[4]).decode()
    assert struct.unpack_from("<i", chunks[0])[0] == 1  # CHUNK kind, as the C# assembler expects


# ------------------------------------------------------------------------ adaptation client
def _client_vectors(path: Path) -> None:
    """Envelopes signed here with a fresh key: versions 1-3 for task greet/3, one for another
    behaviour, one for another task, one tampered (payload byte flipped after signing)."""
    shared = json.loads(VECTORS.read_text())
    payload = pw.PolicyWeightsEnvelope.FromString(base64.b64decode(shared["envelope_b64"])).payload
    key = signing.generate_private_key()

    def signed(version: int, task: str = "greet/3", behavior: str = "AvatarAgent") -> bytes:
        weights = pw.PolicyWeights.FromString(payload)
        weights.policy_version, weights.task_id, weights.behavior_name = version, task, behavior
        return signing.sign(weights, key).SerializeToString()

    tampered = bytearray(signed(6))
    tampered[40] ^= 1
    blobs = {
        "v1": signed(1),
        "v2": signed(2),
        "v3": signed(3),
        "other_behavior": signed(4, behavior="Other"),
        "other_task": signed(5, task="patrol/1"),
        "tampered": bytes(tampered),
    }
    out = {"public_key_pem": signing.public_pem(key.public_key()).decode()}
    out.update({k: base64.b64encode(v).decode() for k, v in blobs.items()})
    path.write_text(json.dumps(out))


def _default_sigint() -> None:
    """A job started in the background by a non-interactive shell (`make test &`, some CI
    runners) inherits SIGINT ignored, and a shell script cannot trap a signal ignored on entry;
    the runner's fake trainer must see SIGINT the way an Editor-launched trainer does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _client_run(build: Path, *args: str) -> str:
    proc = subprocess.run(
        ["mono", str(build / "ClientRunner.exe"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_default_sigint,
    )
    failed = [line for line in proc.stdout.splitlines() if " FAIL" in line]
    assert proc.returncode == 0 and "RESULT PASS" in proc.stdout and not failed, (
        proc.stdout + proc.stderr
    )
    return proc.stdout


def test_adaptation_client_logic_under_mono(build: Path, tmp_path: Path) -> None:
    vectors = tmp_path / "client_vectors.json"
    _client_vectors(vectors)
    out = _client_run(build, "--client", str(vectors))
    for name in (
        "backoff-grows-within-jitter-and-caps",
        "headers-bearer",
        "headers-refuse-injection",
        "options-refuse-plaintext-remote",
        "inbox-drops-oldest",
        "inbox-concurrent-producers",
        "subscribe-returns-immediately",
        "subscribe-event-sequence",
        "subscribe-rejects-tampered",
        "subscribe-resumes-after-latest",
        "subscribe-sends-token",
        "subscribe-deadline",
        "renewal-at-deadline-without-backoff",
        "dispose-cancels-stream",
        "adapt-retries-resource-exhausted",
        "adapt-no-retry-invalid-argument",
        "adapt-refuses-tampered",
        "adapt-cancellable-during-backoff",
        "no-key-refuses-everything",
    ):
        assert f"CHECK {name} PASS" in out, name
    # The schedule itself, recomputed here: n-th delay within +-20% of min(1.6^n, 30) seconds.
    delays = [
        float(x)
        for x in next(ln for ln in out.splitlines() if ln.startswith("BACKOFF ")).split()[1:]
    ]
    nominal = [min(1.6**n, 30.0) for n in range(len(delays))]
    for got, want in zip(delays, nominal, strict=True):
        assert 0.8 * want - 1e-6 <= got <= 1.2 * want + 1e-6, (got, want)
    assert max(delays) > 30.0 * 1.0 and delays[-1] <= 36.0  # capped, jitter on top of the cap


def test_adaptation_client_requests_decode_in_python(build: Path, tmp_path: Path) -> None:
    _client_run(build, "--encode", str(tmp_path))
    sub_bytes = (tmp_path / "subscribe.bin").read_bytes()
    sub = svc.SubscribeRequest.FromString(sub_bytes)
    assert (sub.behavior_name, sub.task_id, sub.after_version) == ("AvatarAgent", "greet/3", 42)
    assert sub.SerializeToString() == sub_bytes  # canonical encoding, byte for byte

    raw = (tmp_path / "adapt.bin").read_bytes()
    request = svc.AdaptRequest.FromString(raw)
    assert request.SerializeToString() == raw
    assert (request.behavior_name, request.task_hint, request.want_onnx, request.seed) == (
        "AvatarAgent",
        "greet/3",
        True,
        7,
    )
    size = contract.OBSERVATION_SIZE
    view = wire.decode_adapt_request(raw)  # the parser `avatar-meta serve` uses
    assert len(view.episodes) == len(request.episodes) == 2
    for e, (episode, parsed) in enumerate(zip(request.episodes, view.episodes, strict=True)):
        steps = 3 + 2 * e
        t = np.arange(steps)[:, None]
        obs = (e + 0.25 * t - 0.01 * np.arange(size)[None, :]).astype(np.float32)
        cont = np.stack([0.1 * t[:, 0] - 0.3, -0.2 * e + 0.05 * t[:, 0]], axis=1).astype(np.float32)
        disc = ((t[:, 0] + e) % 4).astype(np.float32)[:, None]
        odd = (t[:, 0] % 2 == 1).astype(np.float32)
        masks = np.stack([np.zeros(steps), odd, odd, (t[:, 0] % 3 == 2)], axis=1).astype(np.float32)
        rewards = (0.5 * t[:, 0] - e).astype(np.float32)
        assert (episode.steps, episode.obs_size, episode.num_continuous) == (steps, size, 2)
        assert (episode.num_branches, episode.mask_size, episode.interrupted) == (1, 4, e == 1)
        np.testing.assert_array_equal(np.array(episode.obs, np.float32).reshape(steps, size), obs)
        np.testing.assert_array_equal(parsed.obs.reshape(steps, size), obs)
        np.testing.assert_array_equal(parsed.continuous_actions.reshape(steps, 2), cont)
        np.testing.assert_array_equal(parsed.discrete_actions.reshape(steps, 1), disc)
        np.testing.assert_array_equal(parsed.action_masks.reshape(steps, 4), masks)
        np.testing.assert_array_equal(parsed.rewards, rewards)
        np.testing.assert_array_equal(parsed.dones, np.eye(steps, dtype=np.float32)[-1])
        # Same bytes as the Python service's own encoder for these values.
        python_bytes = wire.encode_episode(obs, cont, disc, rewards, masks, interrupted=e == 1)
        assert svc.Episode.FromString(python_bytes) == episode


def test_editor_trainer_process_and_export(build: Path, tmp_path: Path) -> None:
    out = _client_run(build, "--editor", str(tmp_path))
    for name in (
        "trainer-argv-exact",
        "trainer-working-directory",
        "trainer-attach",
        "trainer-attach-refuses-recycled-pid",
        "trainer-stop-sigint",
        "trainer-kill-after-grace",
        "export-paths",
        "export-never-private-key",
        "export-stays-in-assets",
    ):
        assert f"CHECK {name} PASS" in out, name


def test_hand_written_grpc_methods_match_the_proto() -> None:
    """Debian has no C# gRPC plugin, so AdaptationServiceMethods is written by hand: its service
    name, method names and call types must be the proto's."""
    proto = (ROOT / "protos" / "avatar_meta" / "v1" / "adaptation_service.proto").read_text()
    package = re.search(r"^package\s+([\w.]+);", proto, re.M).group(1)
    service = re.search(r"^service\s+(\w+)", proto, re.M).group(1)
    rpcs = re.findall(
        r"rpc\s+(\w+)\s*\(\s*(stream\s+)?\w+\s*\)\s*returns\s*\(\s*(stream\s+)?\w+\s*\)", proto
    )
    assert rpcs, "no rpc found in the proto"
    source = (PACKAGE / "Runtime" / "Serving" / "GrpcAdaptationTransport.cs").read_text()
    assert f'ServiceName = "{package}.{service}"' in source
    for name, client_stream, server_stream in rpcs:
        assert not client_stream, name
        kind = "ServerStreaming" if server_stream else "Unary"
        for variant in (name + "Raw", name):
            pattern = rf"{variant}\s*=\s*new Method<[^>]+>\(\s*MethodType\.{kind},\s*ServiceName,\s*\"{name}\""
            assert re.search(pattern, source), (variant, kind)


def test_status_codes_are_grpcs() -> None:
    import grpc

    source = (PACKAGE / "Runtime" / "Serving" / "AdaptationClient.cs").read_text()
    body = source[source.index("public enum AdaptationStatus") :]
    body = body[: body.index("}")]
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) = (\d+),", body)}
    expected = {
        "".join(part.capitalize() for part in code.name.split("_")): code.value[0]
        for code in grpc.StatusCode
    }
    expected["OK"] = expected.pop("Ok")
    assert codes == expected
