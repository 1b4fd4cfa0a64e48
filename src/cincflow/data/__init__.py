"""Data layer: LightningDataModules yielding uint8 image batches [B, C, H, W] (values 0..255).

Every DataModule exposes ``in_channels``, ``image_size``, ``n_bits`` and
``train_images(n)``; see :mod:`cincflow.data.base` for the full contract.
"""

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.cifar10 import CIFAR10DataModule
from cincflow.data.digits import DigitsDataModule
from cincflow.data.errors import CorruptDataError, DatasetNotFoundError
from cincflow.data.imagenet import (
    ImageNet32ChrabaszczDataModule,
    ImageNet32OordDataModule,
    ImageNet64ChrabaszczDataModule,
    ImageNet64OordDataModule,
)
from cincflow.data.photos import PhotosDataModule
from cincflow.data.svhn import SVHNDataModule

#: name (as in ``conf/data/<name>.yaml``) -> DataModule class
DATAMODULES: dict[str, type[UInt8ImageDataModule]] = {
    "cifar10": CIFAR10DataModule,
    "imagenet32_oord": ImageNet32OordDataModule,
    "imagenet32_chrabaszcz": ImageNet32ChrabaszczDataModule,
    "imagenet64_oord": ImageNet64OordDataModule,
    "imagenet64_chrabaszcz": ImageNet64ChrabaszczDataModule,
    "svhn": SVHNDataModule,
    "digits": DigitsDataModule,
    "photos": PhotosDataModule,
}

__all__ = [
    "DATAMODULES",
    "CIFAR10DataModule",
    "CorruptDataError",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "ImageNet32ChrabaszczDataModule",
    "ImageNet32OordDataModule",
    "ImageNet64ChrabaszczDataModule",
    "ImageNet64OordDataModule",
    "PhotosDataModule",
    "SVHNDataModule",
    "UInt8ImageDataModule",
]
