"""The headless avatar world: a stand-in for a Unity build that speaks the ML-Agents protocol.

- `plaza`: the vectorised numpy simulation (areas, avatars, visitors, rewards).
- `scenarios`: the six scenario families' visitor behaviours and reward formulas.
- `scripted`: hand-written controllers per family (reward sanity and oracle checks).
- `unity_client`: the Unity side of the ML-Agents gRPC protocol around a Plaza.
- `launcher`: the executable that `UnityEnvironment(file_name=...)` and `mlagents-learn --env` start.

It never imports the learners (`meta/`, `rl/`).
"""
