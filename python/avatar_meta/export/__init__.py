"""Policies leaving the trainer: Sentis ONNX (and its contract check), PolicyWeights."""

from avatar_meta.export.onnx_contract import check_sentis_contract

__all__ = ["check_sentis_contract"]
