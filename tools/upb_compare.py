"""Issue 7, option (a) vs (b): decode one world message with protobuf 5 (upb) vs our decoder.

Run with the project's venv: `.venv/bin/python tools/upb_compare.py [--venv DIR]`.

1. In this interpreter (protobuf 3.20.3, pure Python): dump the serialised FileDescriptorProtos
   of mlagents-envs' `communicator_objects` (what regenerated `_pb2` modules would contain)
   and real world messages for 8, 32 and 64 agents written by the fast world codec; time our
   decoder (`fast_decode.decode_agent_infos`) and stock `steps_from_proto` on them.
2. In a separate venv with protobuf 5 (upb; created with pip if `--venv` does not exist):
   load those descriptors into a pool, parse the same bytes, and pull the per-agent fields
   into numpy (the least a `steps_from_proto` over upb messages must do).
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import pkgutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UPB_SIDE = r"""
import pickle, sys, time
import numpy as np
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.internal import api_implementation
files, msgs = pickle.load(open(sys.argv[1], "rb"))
pool, done = descriptor_pool.DescriptorPool(), set()
def add(name):
    if name not in done:
        data, deps = files[name]
        for d in deps:
            add(d)
        pool.AddSerializedFile(data)
        done.add(name)
for name in files:
    add(name)
Msg = message_factory.GetMessageClass(pool.FindMessageTypeByName("communicator_objects.UnityMessageProto"))
def extract(raw):
    m = Msg.FromString(raw)
    infos = next(iter(m.unity_output.rl_output.agentInfos.values())).value
    return (np.array([i.observations[0].float_data.data for i in infos], np.float32),
            np.array([i.reward for i in infos], np.float32), np.array([i.id for i in infos]),
            np.array([i.done for i in infos], bool), np.array([i.action_mask for i in infos], bool))
print("protobuf", api_implementation.Type())
for n, raw in msgs.items():
    for name, fn in (("upb parse", Msg.FromString), ("upb parse + numpy fields", extract)):
        fn(raw); t = time.perf_counter()
        for _ in range(300): fn(raw)
        print(f"{n:>3} agents  {name:<28} {(time.perf_counter() - t) / 300 * 1e3:.3f} ms")
"""


def dump(path: Path) -> None:
    import mlagents_envs.communicator_objects as co
    from mlagents_envs.base_env import (
        ActionSpec,
        BehaviorSpec,
        DimensionProperty,
        ObservationSpec,
        ObservationType,
    )
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.rpc_utils import steps_from_proto

    from avatar_meta import contract
    from avatar_meta.envs.fast_decode import decode_agent_infos
    from avatar_meta.envs.fast_env import _split_output
    from avatar_meta.world.types import StepResult
    from avatar_meta.world.unity_client import BEHAVIOR_KEY, FastCodec

    files = {}
    for m in pkgutil.iter_modules(co.__path__):
        if m.name.endswith("_pb2"):
            d = importlib.import_module(f"{co.__name__}.{m.name}").DESCRIPTOR
            files[d.name] = (d.serialized_pb, [x.name for x in d.dependencies])
    size = contract.OBSERVATION_SIZE
    spec = BehaviorSpec(
        [
            ObservationSpec(
                (size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, contract.SENSOR_NAME
            )
        ],
        ActionSpec(contract.NUM_CONTINUOUS_ACTIONS, contract.DISCRETE_BRANCHES),
    )
    rng = np.random.default_rng(0)
    msgs = {}
    for n in (8, 32, 64):
        result = StepResult(
            obs=rng.standard_normal((n, size)).astype(np.float32),
            reward=rng.standard_normal(n).astype(np.float32),
            done=np.zeros(n, bool),
            interrupted=np.zeros(n, bool),
            terminal_obs=np.zeros((n, size), np.float32),
            mask=np.zeros((n, contract.DISCRETE_BRANCHES[0]), bool),
        )
        raw = FastCodec().step_message(result, b"", False)
        msgs[n] = raw

        def ours(raw: bytes = raw) -> object:
            return decode_agent_infos(_split_output(raw).infos[BEHAVIOR_KEY], spec)

        def stock(raw: bytes = raw) -> object:
            m = UnityMessageProto.FromString(raw)
            return steps_from_proto(m.unity_output.rl_output.agentInfos[BEHAVIOR_KEY].value, spec)

        for name, fn, reps in (("ours (numpy, protobuf 3.20)", ours, 300), ("stock", stock, 30)):
            fn()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            ms = (time.perf_counter() - t) / reps * 1e3
            print(f"{n:>3} agents  {name:<28} {ms:.3f} ms")
    path.write_bytes(pickle.dumps((files, msgs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default="/tmp/avatar-meta-upb", help="protobuf 5 venv")
    args = parser.parse_args()
    venv = Path(args.venv)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "protobuf>=5,<6", "numpy"]
        subprocess.run(pip, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "input.pkl"
        dump(data)
        code = str(Path(tmp) / "upb_side.py")
        Path(code).write_text(UPB_SIDE)
        subprocess.run([str(venv / "bin" / "python"), code, str(data)], check=True)


if __name__ == "__main__":
    main()
