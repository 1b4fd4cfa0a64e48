"""cinc-flow: Glow-style normalizing flows with characterizable invertible 3x3 convolutions."""
from .layers.actnorm import ActNorm
from .layers.cinc import CInCConv
from .layers.coupling import AdditiveCoupling, AffineCoupling
from .layers.emerging import EmergingConv
from .layers.invconv1x1 import InvConv1x1
from .layers.quad import QuadCoupling
from .layers.sequential import FlowSequential
from .layers.split import Split
from .layers.squeeze import Squeeze
from .model import Glow
from .params import count_parameters
from .preprocess import bits_per_dim, postprocess, preprocess
from .sampling import InverseAccuracyWarning, sample_with_check

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "CInCConv",
    "EmergingConv",
    "FlowSequential",
    "Glow",
    "InvConv1x1",
    "InverseAccuracyWarning",
    "QuadCoupling",
    "Split",
    "Squeeze",
    "bits_per_dim",
    "load",
    "count_parameters",
    "postprocess",
    "preprocess",
    "sample_with_check",
]


def __getattr__(name: str):
    """``cincflow.load`` (:func:`cincflow.training.loading.load`), imported on first use: ``import
    cincflow`` itself stays free of Lightning and Hydra."""
    if name == "load":
        from .training.loading import load

        return load
    raise AttributeError(f"module 'cincflow' has no attribute {name!r}")
