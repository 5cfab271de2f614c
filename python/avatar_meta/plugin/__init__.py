"""mlagents-learn plugin entry points.

``pyproject.toml`` declares ``avatar_meta = "avatar_meta.plugin:register_plugin"`` in the
``mlagents.trainer_type`` entry-point group. ``mlagents-learn`` (``parse_command_line`` in
``mlagents.trainers.learn``) calls every function in that group once at start-up, through
``mlagents.plugins.trainer_type.register_trainer_plugins()``, before it reads the trainer config.

``register_plugin`` returns the trainer types this package adds (none yet) and, as a side effect,
installs the ONNX export fix from :mod:`avatar_meta.plugin.export_fix` so that a stock
``mlagents-learn`` run can write its ``.onnx`` on torch >= 2.9. Set
``AVATAR_META_PATCH_EXPORT=0`` to leave mlagents untouched.
"""

from __future__ import annotations

from typing import Any

from avatar_meta.plugin import export_fix

__all__ = ["export_fix", "register_plugin"]


def register_plugin() -> tuple[dict[str, Any], dict[str, Any]]:
    """mlagents ``trainer_type`` plugin hook: ``({name: Trainer}, {name: Settings})``."""
    export_fix.apply_from_environment()
    trainer_types: dict[str, Any] = {}
    trainer_settings: dict[str, Any] = {}
    return trainer_types, trainer_settings
