"""Make stock ``mlagents-learn``'s ONNX export work on torch >= 2.9.

Since torch 2.9, ``torch.onnx.export`` defaults to the dynamo (``torch.export``) exporter. That
path needs the ``onnxscript`` package and, where it is installed, writes graphs (opset 18+, ONNX
functions) that ML-Agents' Sentis importer rejects. mlagents 1.1.0 calls ``torch.onnx.export``
from ``mlagents.trainers.torch_entities.model_serialization`` without ``dynamo=False``, so a
stock training run crashes when it writes its final ``<Behavior>.onnx``.

The fix swaps the name ``torch`` *inside that one module* for a thin proxy that forwards
everything to the real torch, except that ``torch.onnx.export`` is called with ``dynamo=False``
(the TorchScript exporter) and, unless the caller chose one, ML-Agents' own opset
(``SerializationSettings.onnx_opset``, 9). All other arguments pass through untouched, and torch
itself is not modified, so every other user of ``torch.onnx.export`` keeps the default.

It is installed by the ``mlagents.trainer_type`` entry point (``avatar_meta.plugin``), which
mlagents calls at start-up, and can be switched off with ``AVATAR_META_PATCH_EXPORT=0``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

ENV_VAR = "AVATAR_META_PATCH_EXPORT"
"""Set to 0 / false / no / off to leave mlagents' export call as it is."""
TARGET_MODULE = "mlagents.trainers.torch_entities.model_serialization"
"""The only module whose view of ``torch`` is changed."""
FALLBACK_OPSET = 9
"""ML-Agents' export opset, used if mlagents' SerializationSettings cannot be read."""

_OFF_VALUES = frozenset({"0", "false", "no", "off"})
_LEGACY_EXPORTER_WARNING = r".*legacy TorchScript-based ONNX export.*"

_lock = threading.Lock()
_announced = False


def _logger() -> logging.Logger:
    # mlagents' loggers get a stdout handler and follow `--debug`; use one when mlagents is here.
    try:
        from mlagents_envs.logging_util import get_logger
    except ImportError:  # pragma: no cover - mlagents-envs is a dependency in practice
        return logging.getLogger(__name__)
    mla_logger: logging.Logger = get_logger(__name__)
    return mla_logger


logger = _logger()


def patch_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``AVATAR_META_PATCH_EXPORT`` is 0, false, no or off (case-insensitive)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR, "1").strip().lower() not in _OFF_VALUES


def _mlagents_opset() -> int:
    try:
        from mlagents.trainers.settings import SerializationSettings
    except ImportError:  # pragma: no cover
        return FALLBACK_OPSET
    return int(SerializationSettings.onnx_opset)


def _export_accepts_dynamo(export: Callable[..., Any]) -> bool:
    try:
        return "dynamo" in inspect.signature(export).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _announce(opset: int) -> None:
    """Log the one info line, once per process, as soon as a handler would show it."""
    global _announced
    if _announced or not logger.isEnabledFor(logging.INFO):
        return
    _announced = True
    logger.info(
        "avatar-meta: mlagents ONNX export uses the TorchScript exporter (dynamo=False, "
        f"opset {opset}) so Sentis can load it; set {ENV_VAR}=0 to disable."
    )


def _make_export(real_export: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real_export)
    def export(*args: Any, **kwargs: Any) -> Any:
        kwargs["dynamo"] = False
        if kwargs.get("opset_version") is None:
            kwargs["opset_version"] = _mlagents_opset()
        _announce(int(kwargs["opset_version"]))
        with warnings.catch_warnings():
            # We choose the TorchScript exporter on purpose; its deprecation notice is noise here.
            warnings.filterwarnings(
                "ignore", message=_LEGACY_EXPORTER_WARNING, category=DeprecationWarning
            )
            return real_export(*args, **kwargs)

    export.__avatar_meta_export_fix__ = True  # type: ignore[attr-defined]
    return export


class _Proxy:
    """Forwards attribute reads to ``target`` except for the names in ``overrides``."""

    def __init__(self, target: Any, overrides: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_overrides", dict(overrides))

    def __getattr__(self, name: str) -> Any:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_target"), name)

    def __dir__(self) -> list[str]:
        target = object.__getattribute__(self, "_target")
        return sorted(set(dir(target)) | set(object.__getattribute__(self, "_overrides")))

    def __repr__(self) -> str:
        target = object.__getattribute__(self, "_target")
        return f"<avatar-meta export-fix proxy of {target!r}>"


class _TorchProxy(_Proxy):
    """What ``model_serialization.torch`` becomes while the fix is installed."""

    @property
    def real_torch(self) -> ModuleType:
        target: ModuleType = object.__getattribute__(self, "_target")
        return target


def _target_module() -> ModuleType:
    return importlib.import_module(TARGET_MODULE)


def is_installed() -> bool:
    """True when mlagents' model_serialization currently sees the patched ``torch.onnx.export``."""
    try:
        module = _target_module()
    except ImportError:
        return False
    return isinstance(getattr(module, "torch", None), _TorchProxy)


def install() -> bool:
    """Install the fix (idempotent). Returns True if it is active afterwards.

    Does nothing (and returns False) when mlagents is not importable or when this torch's
    ``torch.onnx.export`` has no ``dynamo`` argument (torch < 2.5 only has the TorchScript path).
    """
    with _lock:
        try:
            module = _target_module()
        except ImportError:
            logger.debug("avatar-meta export fix: mlagents is not installed, nothing to patch")
            return False
        current = getattr(module, "torch", None)
        if isinstance(current, _TorchProxy):
            return True
        if current is None or not hasattr(current, "onnx"):
            logger.warning(f"avatar-meta export fix: {TARGET_MODULE} has no torch; not patched")
            return False
        real_export = current.onnx.export
        if not _export_accepts_dynamo(real_export):
            logger.debug("avatar-meta export fix: torch.onnx.export has no dynamo flag; not needed")
            return False
        onnx_proxy = _Proxy(current.onnx, {"export": _make_export(real_export)})
        module.torch = _TorchProxy(current, {"onnx": onnx_proxy})  # type: ignore[attr-defined]
        logger.debug(f"avatar-meta export fix installed in {TARGET_MODULE}")
    _announce(_mlagents_opset())
    return True


def uninstall() -> bool:
    """Give model_serialization its real ``torch`` back. Returns True if the fix was installed."""
    with _lock:
        try:
            module = _target_module()
        except ImportError:
            return False
        current = getattr(module, "torch", None)
        if not isinstance(current, _TorchProxy):
            return False
        module.torch = current.real_torch  # type: ignore[attr-defined]
        logger.debug(f"avatar-meta export fix removed from {TARGET_MODULE}")
        return True


def apply_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Install the fix unless ``AVATAR_META_PATCH_EXPORT`` turns it off (then remove it).

    Returns True if the fix is active afterwards.
    """
    if patch_enabled(environ):
        return install()
    uninstall()
    logger.info(f"avatar-meta: mlagents ONNX export left unpatched ({ENV_VAR}=0)")
    return False
