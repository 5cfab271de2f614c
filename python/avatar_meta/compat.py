"""Checks of the dependency stack that mlagents-envs 1.1.0 silently relies on.

mlagents-envs ships `_pb2` modules generated for protobuf 3.x. protobuf 4+ (pulled in by a
recent onnxruntime or onnx) makes them fail at import or, worse, mis-serialise.
`check_stack()` turns that into one clear error that names the fix.
"""

from __future__ import annotations

import warnings


class StackError(RuntimeError):
    """The installed packages cannot run mlagents-envs 1.1.0 correctly."""


def check_stack() -> None:
    """Import mlagents-envs' generated messages and round-trip one; raise StackError if broken."""
    import google.protobuf

    major = int(google.protobuf.__version__.split(".")[0])
    if major != 3:
        raise StackError(
            f"protobuf {google.protobuf.__version__} is installed, but mlagents-envs 1.1.0 needs "
            "protobuf 3.20.x. Something (often onnxruntime > 1.26) upgraded it: run "
            "`make setup` again, which installs under requirements/constraints.txt."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    msg = UnityMessageProto()
    msg.header.status = 200
    msg.unity_output.rl_initialization_output.name = "avatar-meta"
    back = UnityMessageProto.FromString(msg.SerializeToString())
    if back.unity_output.rl_initialization_output.name != "avatar-meta":
        raise StackError("mlagents-envs messages do not round-trip: reinstall with `make setup`.")
