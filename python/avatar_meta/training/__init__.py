"""The main job: meta-training (`meta_loop`), held-out evaluation (`evaluate`), the run
driver behind `avatar-meta train` (`run`), and the shared held-out record (`records`).

Imports are lazy: `from avatar_meta.training import records` stays cheap.
"""
