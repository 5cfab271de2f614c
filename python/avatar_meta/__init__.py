"""avatar-meta: meta-learning backend for Unity ML-Agents avatars."""

__version__ = "0.1.0"
