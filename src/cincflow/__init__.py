"""cinc-flow: Glow-style normalizing flows with characterizable invertible 3x3 convolutions.

Every public name is imported on first use (PEP 562), so ``import cincflow`` and ``import
cincflow.errors`` load nothing heavy: torch comes with the first layer or model, Lightning only with
:func:`load` (:func:`cincflow.training.loading.load`)."""
from __future__ import annotations

import importlib

_HOMES = {
    "ActNorm": "layers.actnorm",
    "AdditiveCoupling": "layers.coupling",
    "AffineCoupling": "layers.coupling",
    "CInCConv": "layers.cinc",
    "Coupling": "layers.coupling",
    "EmergingConv": "layers.emerging",
    "FlowSequential": "layers.sequential",
    "Glow": "model",
    "InvConv1x1": "layers.invconv1x1",
    "InverseAccuracyWarning": "sampling",
    "QuadCoupling": "layers.quad",
    "Split": "layers.split",
    "Squeeze": "layers.squeeze",
    "bits_per_dim": "pixels",
    "count_parameters": "params",
    "load": "training.loading",
    "postprocess": "pixels",
    "preprocess": "pixels",
    "sample_with_check": "sampling",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'cincflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
