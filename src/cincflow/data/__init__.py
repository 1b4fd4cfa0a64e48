"""Data layer: LightningDataModules yielding uint8 image batches [B, C, H, W] (values 0..255).

Every DataModule exposes ``in_channels``, ``image_size``, ``n_bits`` and
``train_images(n)``; see :mod:`cincflow.data.base` for the full contract.
"""

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.cifar10 import CIFAR10DataModule
from cincflow.data.digits import DigitsDataModule
from cincflow.data.imagenet import (
    ImageNet32ChrabaszczDataModule,
    ImageNet32OordDataModule,
    ImageNet64ChrabaszczDataModule,
    ImageNet64OordDataModule,
)
from cincflow.data.photos import PhotosDataModule
from cincflow.data.svhn import SVHNDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "ImageNet32ChrabaszczDataModule",
    "ImageNet32OordDataModule",
    "ImageNet64ChrabaszczDataModule",
    "ImageNet64OordDataModule",
    "PhotosDataModule",
    "SVHNDataModule",
    "UInt8ImageDataModule",
]
