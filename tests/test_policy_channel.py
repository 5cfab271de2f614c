"""PolicyChannel end to end: a real world process, stock UnityEnvironment, a multi-chunk signed
policy, the world's acknowledgement, and inference mode acting exactly like the trainer's policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from avatar_meta import contract
from avatar_meta.envs.policy_channel import CHUNK_SIZE, PolicyChannel, chunk_records
from avatar_meta.export import policy_weights, signing
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.rl.policy import Policy, PolicySpec, update_obs_stats
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.policy_receiver import PolicyReceiver

torch.set_num_threads(1)
SPEC = PolicySpec(hidden=(512, 512))  # ~2.2 MB with the critic: 9 chunks, 3 exchanges
SEED = 7
AREAS = 2
STEPS = 25


def make_policy() -> tuple[Any, Any, Any]:
    params, buffers = Policy(SPEC).init(3)
    gen = torch.Generator().manual_seed(4)
    params = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in params.items()}
    buffers = update_obs_stats(buffers, torch.randn(100, SPEC.obs_size, generator=gen))
    return params, buffers, policy_weights.pack(SPEC, params, buffers, version=42, task_id="t")


def zeros(n: int) -> ActionTuple:
    return ActionTuple(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.int32))


def observe(env: Any, behavior: str) -> tuple[np.ndarray, np.ndarray]:
    decision, _ = env.get_steps(behavior)
    order = np.argsort(decision.agent_id)
    return decision.obs[0][order], decision.action_mask[0][order]


def test_chunking_stays_far_below_the_grpc_limit() -> None:
    records = chunk_records(0, 1, bytes(1_000_000))
    assert len(records) == 4 and max(len(r) for r in records) == 256 * 1024
    channel = PolicyChannel()
    channel.push(0, bytes(3_000_000))
    sizes = []
    while channel.pending_bytes:
        batch = channel.message_queue
        channel.message_queue = []
        sizes.append(sum(len(m) for m in batch))
    assert len(sizes) == 3 and max(sizes) <= 1024 * 1024


def test_receiver_refuses_bad_transfers_in_process(tmp_path: Path) -> None:
    key = signing.generate_private_key()
    receiver = PolicyReceiver(AREAS, key.public_key(), {0})
    weights = policy_weights.pack(
        PolicySpec(hidden=(8,)), *Policy(PolicySpec(hidden=(8,))).init(), version=1
    )
    good = signing.sign(weights, key).SerializeToString()
    for record in chunk_records(5, 1, good):  # area 5 does not exist
        receiver.receive(record)
    unsigned = pw.PolicyWeightsEnvelope(payload=weights.SerializeToString()).SerializeToString()
    for record in chunk_records(0, 2, unsigned):
        receiver.receive(record)
    receiver.receive(b"\x01\x00")  # short record
    assert receiver.policies == {}
    for record in reversed(chunk_records(0, 3, good, chunk_size=100)):  # any order
        receiver.receive(record)
    assert receiver.policies[0].version == 1
    assert b"Avatar/Policy/Rejected" in receiver.take_outgoing()


def test_streamed_policy_acts_like_the_trainer(open_world: Any, tmp_path: Path) -> None:
    _, public_path = signing.write_keypair(tmp_path / "keys")
    key = signing.load_private_key(tmp_path / "keys" / "private.pem")
    params, buffers, weights = make_policy()
    envelope = signing.sign(weights, key).SerializeToString()
    assert len(envelope) > 8 * CHUNK_SIZE

    channel, stats = PolicyChannel(), StatsSideChannel()
    env = open_world(
        seed=SEED,
        side_channels=[channel, stats],
        args=["--policy-public-key", str(public_path), "--inference-areas", "0"],
        num_areas=AREAS,
    )
    transfer = channel.push(0, envelope)
    tampered = bytearray(envelope)
    tampered[len(tampered) // 2] ^= 0x01
    bad_transfer = channel.push(1, bytes(tampered))
    env.reset()
    behavior = next(iter(env.behavior_specs))
    warmup = 0
    while channel.ack_for(bad_transfer) is None and warmup < 10:
        env.set_actions(behavior, zeros(AREAS))
        env.step()
        warmup += 1
    ack, bad_ack = channel.ack_for(transfer), channel.ack_for(bad_transfer)
    assert ack is not None and ack.accepted and ack.policy_version == 42, channel.acks
    assert bad_ack is not None and not bad_ack.accepted and "tampered" in bad_ack.reason
    reported = stats.get_and_reset_stats()
    assert reported["Avatar/Policy/Version"][0][0] == 42.0
    assert "Avatar/Policy/Rejected" in reported

    # From a reset on, area 0 is driven by the world's copy of the policy; the trainer sends 0s.
    env.reset()
    world_obs = [observe(env, behavior)[0]]
    for _ in range(STEPS):
        env.set_actions(behavior, zeros(AREAS))
        env.step()
        world_obs.append(observe(env, behavior)[0])
    env.close()

    # The same history in-process, with torch's deterministic action for area 0.
    plaza = Plaza(num_areas=AREAS, agents_per_area=1, seed=SEED)
    policy = Policy(SPEC)
    plaza.reset()
    for _ in range(warmup):
        plaza.step(np.zeros((AREAS, 2), np.float32), np.zeros(AREAS, np.int64))
    obs, mask = plaza.reset()
    local_obs = [obs]
    for _ in range(STEPS):
        act = policy.act(
            params,
            buffers,
            torch.from_numpy(obs[:1]),
            torch.from_numpy(mask[:1]),
            deterministic=True,
        )
        cont = np.zeros((AREAS, 2), np.float32)
        gesture = np.zeros(AREAS, np.int64)
        cont[0] = act.cont_action.clamp(-1, 1).numpy()[0]
        gesture[0] = int(act.gesture[0, 0])
        result = plaza.step(cont, gesture)
        obs, mask = result.obs, result.mask
        local_obs.append(obs)
    got, want = np.stack(world_obs), np.stack(local_obs)
    assert np.abs(want[1:, 0] - want[0, 0]).max() > 0.05, "the policy should move the avatar"
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert got.shape == (STEPS + 1, AREAS, contract.OBSERVATION_SIZE)
