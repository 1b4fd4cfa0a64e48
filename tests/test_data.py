"""Tests of the data layer (cincflow.data) on fixture files in the real on-disk formats.

Fixtures are written under pytest's tmp_path: CIFAR-10 python pickles, ImageNet npz batches
(Chrabaszcz) and PNG folders (van den Oord) at 32x32 and 64x64, and SVHN .mat files. Digits and
photos use the real bundled data. Nothing touches the network: the download tests patch
torchvision's downloaders to fail the way they do offline.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
import zipfile
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

from cincflow.data import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageNet32ChrabaszczDataModule,
    ImageNet32OordDataModule,
    ImageNet64ChrabaszczDataModule,
    ImageNet64OordDataModule,
    PhotosDataModule,
    SVHNDataModule,
)
from cincflow.data.augment import RandomShiftFlip, shift_image
from cincflow.data.base import UInt8ImageDataModule
from cincflow.errors import CorruptDataError, DatasetNotFoundError
from cincflow.data.photos import PHOTO_SPLIT

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
NPZ_FILES = [f"train_data_batch_{i}.npz" for i in range(1, 11)] + ["val_data.npz"]


# ----------------------------------------------------------------------------- fixtures


def random_hwc(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """n random RGB images (n, size, size, 3), as photos are stored (height, width, channel)."""
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def planar_rows(hwc: np.ndarray) -> np.ndarray:
    """CIFAR/ImageNet row format, spelt out: the R plane row-major, then G, then B."""
    return np.stack([np.concatenate([img[:, :, c].ravel() for c in range(3)]) for img in hwc])


def mark(hwc: np.ndarray) -> None:
    """Known pixels in image 0 (row y, column x; S = size): R(3,5)=200, G(0,S-1)=100, B(S-1,0)=50."""
    last = hwc.shape[1] - 1
    hwc[0, 3, 5, 0] = 200
    hwc[0, 0, last, 1] = 100
    hwc[0, last, 0, 2] = 50


def check_marks(img: torch.Tensor) -> None:
    last = img.shape[-1] - 1
    assert img[0, 3, 5] == 200 and img[1, 0, last] == 100 and img[2, last, 0] == 50


def to_chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc.transpose(0, 3, 1, 2).copy())


def write_cifar(root: Path, per_batch: int = 12, n_test: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 pickles as in cifar-10-python.tar.gz; returns (train, test) images (N, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = random_hwc(rng, 5 * per_batch)
    test = random_hwc(rng, n_test)
    mark(train[per_batch:])  # first image of data_batch_2
    mark(test)
    chunks = [train[i * per_batch : (i + 1) * per_batch] for i in range(5)] + [test]
    for name, imgs in zip(CIFAR_FILES, chunks):
        entry = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, len(imgs)).tolist(),
            b"data": planar_rows(imgs),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(imgs))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return train, test


def write_npz_batches(root: Path, size: int = 32, sizes=(3, 4, 5, 3, 4, 5, 3, 4, 5, 4), n_val: int = 7, seed: int = 0):
    """Chrabaszcz et al. npz batches of size x size images (rows of 3 size^2); returns (train, val)
    images (N, size, size, 3)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = random_hwc(rng, sum(sizes), size)
    val = random_hwc(rng, n_val, size)
    mark(train[sizes[0]:])  # first image of train_data_batch_2
    mark(val)
    bounds = np.cumsum((0, *sizes))
    chunks = [train[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [val]
    for name, imgs in zip(NPZ_FILES, chunks):
        np.savez(root / name, data=planar_rows(imgs), labels=rng.integers(1, 1001, len(imgs)))
    return train, val


def write_png_folders(root: Path, size: int = 32, n_train: int = 30, n_valid: int = 6, seed: int = 0):
    """van den Oord et al. PNG folders train_SxS/, valid_SxS/; returns (train, valid) images
    (N, size, size, 3) in file-name order."""
    rng = np.random.default_rng(seed)
    out = []
    for folder, n in ((f"train_{size}x{size}", n_train), (f"valid_{size}x{size}", n_valid)):
        (root / folder).mkdir(parents=True)
        imgs = random_hwc(rng, n, size)
        mark(imgs)
        for i, img in enumerate(imgs):
            Image.fromarray(img, mode="RGB").save(root / folder / f"{i:05d}.png")
        out.append(imgs)
    return tuple(out)


def write_svhn(root: Path, n_train: int = 14, n_test: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's SVHN files {train,test}_32x32.mat: X uint8 [32, 32, 3, N] (row, column, channel,
    image) and y [N, 1] in 1..10; returns (train, test) images (N, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        imgs = random_hwc(rng, n)
        mark(imgs)
        labels = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        scipy.io.savemat(root / name, {"X": imgs.transpose(1, 2, 3, 0), "y": labels})
        out.append(imgs)
    return tuple(out)


def all_train_val(dm) -> torch.Tensor:
    """Train + val images put back in source order (the split is a partition of the source)."""
    idx = np.concatenate([dm.train_set.indices, dm.val_set.indices])
    imgs = torch.cat([dm.train_set.images(), dm.val_set.images()])
    return imgs[np.argsort(idx)]


def cat_batches(loader) -> torch.Tensor:
    return torch.cat(list(loader))


def check_loaders(dm) -> None:
    shape = (dm.in_channels, dm.image_size, dm.image_size)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8
        assert batch.ndim == 4 and tuple(batch.shape[1:]) == shape
        assert batch.shape[0] == min(dm.batch_size, len(loader.dataset))


# ----------------------------------------------------------------------------- augmentation


def test_shift_image_semantics():
    img = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4)
    down_right = shift_image(img, 1, 2, "zeros")
    assert down_right.dtype == torch.uint8
    assert torch.equal(down_right[0, 1:, 2:], img[0, :-1, :-2])
    assert (down_right[0, 0] == 0).all() and (down_right[0, :, :2] == 0).all()
    up_left = shift_image(img, -1, -1, "replicate")
    assert torch.equal(up_left[0, :3, :3], img[0, 1:, 1:])
    assert torch.equal(up_left[0, 3, :3], img[0, 3, 1:]) and torch.equal(up_left[0, :3, 3], img[0, 1:, 3])
    assert torch.equal(shift_image(img, 0, 0), img)


def test_random_shift_flip_draws_are_shifted_flipped_copies():
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = RandomShiftFlip(max_shift=2, flip=True, pad_mode="zeros")
    candidates = [
        t
        for dy in range(-2, 3)
        for dx in range(-2, 3)
        for t in (shift_image(img, dy, dx, "zeros"), shift_image(img, dy, dx, "zeros").flip(-1))
    ]
    gen = torch.Generator().manual_seed(1)
    draws = [aug(img, generator=gen) for _ in range(40)]
    assert all(d.dtype == torch.uint8 and any(torch.equal(d, c) for c in candidates) for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) > 5
    with pytest.raises(ValueError):
        RandomShiftFlip(pad_mode="reflect")


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar10_reads_pickles_channel_planar(tmp_path):
    train, test = write_cifar(tmp_path)
    dm = CIFAR10DataModule(str(tmp_path), batch_size=8, val_size=10, augment=False)
    assert (dm.in_channels, dm.image_size, dm.n_bits) == (3, 32, 8)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 10, 10)
    assert sorted(np.concatenate([dm.train_set.indices, dm.val_set.indices])) == list(range(60))
    assert torch.equal(all_train_val(dm), to_chw(train))
    assert torch.equal(dm.test_set.images(), to_chw(test))
    check_marks(all_train_val(dm)[12])  # first image of data_batch_2
    check_marks(cat_batches(dm.test_dataloader())[0])
    # val/test: fixed order, nothing dropped; train: full batches only
    assert torch.equal(cat_batches(dm.val_dataloader()), to_chw(train)[dm.val_set.indices])
    assert [len(b) for b in dm.train_dataloader()] == [8] * 6
    check_loaders(dm)
    assert torch.equal(dm.train_images(5), to_chw(train)[dm.train_set.indices[:5]])


def test_cifar10_split_and_train_order_are_seeded(tmp_path):
    write_cifar(tmp_path)

    def make(**kw):
        dm = CIFAR10DataModule(str(tmp_path), batch_size=8, val_size=10, augment=False, **kw)
        dm.setup("fit")
        return dm

    a, b = make(seed=3), make(seed=3)
    assert np.array_equal(a.val_set.indices, b.val_set.indices)
    assert torch.equal(cat_batches(a.train_dataloader()), cat_batches(b.train_dataloader()))
    c = make(seed=4)  # another shuffling seed: same split, another order
    assert np.array_equal(a.val_set.indices, c.val_set.indices)
    assert not torch.equal(cat_batches(a.train_dataloader()), cat_batches(c.train_dataloader()))
    d = make(seed=3, split_seed=1)
    assert not np.array_equal(a.val_set.indices, d.val_set.indices)


def test_cifar10_augmentation_only_on_train(tmp_path):
    train, test = write_cifar(tmp_path)
    dm = CIFAR10DataModule(str(tmp_path), batch_size=8, val_size=10, augment=True, max_shift=2)
    dm.setup("fit")
    raw = to_chw(train)
    torch.manual_seed(0)
    first = dm.train_set.indices[0]
    draws = [dm.train_set[0] for _ in range(20)]
    assert all(d.dtype == torch.uint8 and d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(d, raw[first]) for d in draws)
    assert torch.equal(cat_batches(dm.val_dataloader()), raw[dm.val_set.indices])
    assert torch.equal(cat_batches(dm.test_dataloader()), to_chw(test))
    assert torch.equal(dm.train_images(50), raw[dm.train_set.indices])  # never augmented


def test_cifar10_augmentation_is_deterministic_given_the_seed(tmp_path):
    """Same data seed -> the same augmented epochs, whatever the global RNG and the number of
    workers; another seed -> other augmentations; every epoch draws new ones; the draw counts
    travel in the DataModule's state_dict (checkpoints), so a resumed run continues them."""
    write_cifar(tmp_path)

    def epochs(seed, n=2, workers=0, global_seed=0, state=None):
        dm = CIFAR10DataModule(str(tmp_path), batch_size=8, val_size=10, seed=seed, num_workers=workers)
        dm.setup("fit")
        if state is not None:
            dm.load_state_dict(state)
        torch.manual_seed(global_seed)
        return [cat_batches(dm.train_dataloader()) for _ in range(n)], dm

    (a1, a2), dm = epochs(seed=3)
    (b1, b2), _ = epochs(seed=3, workers=2, global_seed=99)
    (c1, _), _ = epochs(seed=4)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    # the loader order is the same for both epochs here (a seeded DataLoader generator restarts),
    # so a difference between them is the augmentation's
    assert not torch.equal(a1, a2)
    (resumed,), _ = epochs(seed=3, n=1, state=epochs(seed=3, n=1)[1].state_dict())
    assert torch.equal(resumed, a2)
    assert int(dm.state_dict()["augment_draws"].sum()) == 2 * 48  # 2 epochs of the 48 training images
    plain = CIFAR10DataModule(str(tmp_path), batch_size=8, val_size=10, augment=False)
    plain.setup("fit")
    assert plain.state_dict() == {}
    with pytest.warns(UserWarning, match="start afresh"):
        plain.load_state_dict(dm.state_dict())


def test_cifar10_missing_files_without_download(tmp_path):
    dm = CIFAR10DataModule(str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-10-python.tar.gz" in msg
    assert all(name in msg for name in CIFAR_FILES)


def test_cifar10_failed_download_gives_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    dm = CIFAR10DataModule(str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    msg = str(info.value)
    assert "missing: test_batch" in msg and "name resolution" in msg and str(tmp_path) in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_cifar10_corrupt_pickles(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(CorruptDataError, match="data_batch_3"):
        CIFAR10DataModule(str(tmp_path)).setup("fit")
    with open(path, "wb") as f:  # well-formed pickle, wrong shape
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    with pytest.raises(CorruptDataError, match=r"data_batch_3.*\(4, 1024\)"):
        CIFAR10DataModule(str(tmp_path)).setup("fit")


# ----------------------------------------------------------------------------- ImageNet (npz)

NPZ_MODULES = {32: ImageNet32ChrabaszczDataModule, 64: ImageNet64ChrabaszczDataModule}
PNG_MODULES = {32: ImageNet32OordDataModule, 64: ImageNet64OordDataModule}
SIZES = pytest.mark.parametrize("size", [32, 64])


@SIZES
def test_imagenet_npz_reads_batches_and_caches_once(tmp_path, size):
    train, val = write_npz_batches(tmp_path / "in", size)
    dm = NPZ_MODULES[size](str(tmp_path / "in"), batch_size=4, val_size=5)
    assert (dm.in_channels, dm.image_size, dm.n_bits) == (3, size, 8)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (35, 5, 7)
    assert torch.equal(all_train_val(dm), to_chw(train))
    assert torch.equal(cat_batches(dm.test_dataloader()), to_chw(val))
    check_marks(all_train_val(dm)[3])  # first image of train_data_batch_2
    check_marks(dm.test_set.images(1)[0])
    check_loaders(dm)

    cache = tmp_path / "in" / "cache"
    names = [f"imagenet{size}_npz_train.npy", f"imagenet{size}_npz_val.npy"]
    assert sorted(p.name for p in cache.iterdir()) == names
    assert np.load(cache / names[0], mmap_mode="r").shape == (40, 3, size, size)
    assert isinstance(dm.train_set.array, np.memmap) and isinstance(dm.test_set.array, np.memmap)
    old = 1_000_000_000
    for p in cache.iterdir():
        os.utime(p, (old, old))
    for name in NPZ_FILES:  # the cache is used as is: the sources are no longer needed
        (tmp_path / "in" / name).unlink()
    again = NPZ_MODULES[size](str(tmp_path / "in"), batch_size=4, val_size=5)
    again.prepare_data()
    again.setup("fit")
    assert all(p.stat().st_mtime == old for p in cache.iterdir())
    assert np.array_equal(again.val_set.indices, dm.val_set.indices)
    assert torch.equal(again.train_images(35), dm.train_images(35))


@SIZES
def test_imagenet_npz_missing_files(tmp_path, size):
    with pytest.raises(DatasetNotFoundError) as info:
        NPZ_MODULES[size](str(tmp_path)).setup("fit")
    msg = str(info.value)
    assert all(name in msg for name in NPZ_FILES)
    assert f"ImageNet{size} (Chrabaszcz et al. 2017, {size}x{size})" in msg and "requires login" in msg
    archives = {32: ["Imagenet32_train_npz.zip", "Imagenet32_val_npz.zip"],
                64: ["Imagenet64_train_part1_npz.zip", "Imagenet64_train_part2_npz.zip", "Imagenet64_val_npz.zip"]}
    assert all(name in msg for name in archives[size])
    write_npz_batches(tmp_path, size)
    (tmp_path / "train_data_batch_7.npz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing: train_data_batch_7\.npz\)"):
        NPZ_MODULES[size](str(tmp_path)).setup("fit")


@SIZES
def test_imagenet_npz_corrupt_files(tmp_path, size):
    write_npz_batches(tmp_path, size)
    path = tmp_path / "train_data_batch_4.npz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(CorruptDataError, match="train_data_batch_4.npz"):
        NPZ_MODULES[size](str(tmp_path), val_size=5).setup("fit")
    np.savez(path, data=np.zeros((3, 1024), np.uint8), labels=np.ones(3))  # wrong shape
    with pytest.raises(CorruptDataError, match=rf"train_data_batch_4.npz.*\(3, 1024\).*N x {3 * size * size}"):
        NPZ_MODULES[size](str(tmp_path), val_size=5).setup("fit")
    with zipfile.ZipFile(path, "w") as zf:  # an archive without 'data'
        zf.writestr("labels.npy", b"")
    with pytest.raises(CorruptDataError, match="train_data_batch_4.npz.*no 'data'"):
        NPZ_MODULES[size](str(tmp_path), val_size=5).setup("fit")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # no partial cache


def test_imagenet_npz_of_the_other_resolution_is_refused(tmp_path):
    """The 32x32 and 64x64 releases share file names: the wrong one is named, not reshaped."""
    write_npz_batches(tmp_path, 32)
    with pytest.raises(CorruptDataError, match=r"train_data_batch_1.npz.*\(3, 3072\).*N x 12288"):
        ImageNet64ChrabaszczDataModule(str(tmp_path), val_size=5).setup("fit")


def test_memmapped_dataset_pickles_by_path(tmp_path):
    write_npz_batches(tmp_path)
    dm = ImageNet32ChrabaszczDataModule(str(tmp_path), val_size=5)
    dm.setup("fit")
    blob = pickle.dumps(dm.train_set)
    assert len(blob) < 10_000  # the images are not copied into the pickle
    clone = pickle.loads(blob)
    assert isinstance(clone.array, np.memmap)
    assert torch.equal(clone.images(), dm.train_set.images())


def test_train_order_same_with_worker_processes(tmp_path):
    write_npz_batches(tmp_path)
    orders = []
    for workers in (0, 2):
        dm = ImageNet32ChrabaszczDataModule(str(tmp_path), batch_size=4, num_workers=workers, seed=7, val_size=5)
        dm.setup("fit")
        orders.append(cat_batches(dm.train_dataloader()))
    assert orders[0].shape == (32, 3, 32, 32)  # 35 images, drop_last
    assert torch.equal(orders[0], orders[1])


# ----------------------------------------------------------------------------- ImageNet (PNG)


@SIZES
def test_imagenet_png_reads_folders_and_caches_once(tmp_path, size):
    train, valid = write_png_folders(tmp_path, size)
    dm = PNG_MODULES[size](str(tmp_path), batch_size=4, val_size=6, cache_dir=str(tmp_path / "c"))
    assert (dm.in_channels, dm.image_size, dm.n_bits) == (3, size, 8)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 6)
    assert torch.equal(all_train_val(dm), to_chw(train))
    assert torch.equal(dm.test_set.images(), to_chw(valid))
    check_marks(all_train_val(dm)[0])
    check_loaders(dm)
    caches = sorted((tmp_path / "c").iterdir())
    assert [p.name for p in caches] == [f"train_{size}x{size}.npy", f"valid_{size}x{size}.npy"]
    assert isinstance(dm.train_set.array, np.memmap)
    stamps = [p.stat().st_mtime_ns for p in caches]
    PNG_MODULES[size](str(tmp_path), val_size=6, cache_dir=str(tmp_path / "c")).setup("fit")
    assert [p.stat().st_mtime_ns for p in caches] == stamps


@SIZES
def test_imagenet_png_default_cache_location(tmp_path, size):
    write_png_folders(tmp_path, size, n_train=5, n_valid=2)
    PNG_MODULES[size](str(tmp_path), val_size=1).prepare_data()
    assert (tmp_path / "cache" / f"train_{size}x{size}.npy").is_file()
    assert np.load(tmp_path / "cache" / f"valid_{size}x{size}.npy").shape == (2, 3, size, size)


@SIZES
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_imagenet_png_missing_folder(tmp_path, state, size):
    if state == "empty":
        (tmp_path / f"train_{size}x{size}").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        PNG_MODULES[size](str(tmp_path)).setup("fit")
    msg = str(info.value)
    assert f"Downsampled ImageNet {size}x{size} (van den Oord et al. 2016)" in msg
    assert f"train_{size}x{size}.tar" in msg and f"valid_{size}x{size}.tar" in msg
    assert f"download and extract so that {tmp_path}/train_{size}x{size}/*.png exists" in msg


@SIZES
@pytest.mark.parametrize("problem", ["size", "grey", "rgba", "truncated", "not_png"])
def test_imagenet_png_bad_files(tmp_path, problem, size):
    write_png_folders(tmp_path, size, n_train=5, n_valid=2)
    bad = tmp_path / f"train_{size}x{size}" / "00003.png"
    other = 96 - size  # the other release: 64 for 32 and 32 for 64
    if problem == "size":
        Image.new("RGB", (other, other)).save(bad)
    elif problem == "grey":
        Image.new("L", (size, size)).save(bad)
    elif problem == "rgba":
        Image.new("RGBA", (size, size)).save(bad)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CorruptDataError, match="00003.png") as info:
        PNG_MODULES[size](str(tmp_path), val_size=1).setup("fit")
    if problem == "size":
        assert f"expected a {size}x{size} RGB PNG" in str(info.value) and f"got {other}x{other}" in str(info.value)
    assert not any((tmp_path / "cache").iterdir())  # the temp file was removed


# ----------------------------------------------------------------------------- SVHN


def test_svhn_reads_mat_files(tmp_path, monkeypatch):
    import torchvision.datasets.svhn

    def no_download(*args, **kwargs):
        raise AssertionError("the files are there: nothing may be downloaded")

    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", no_download)
    train, test = write_svhn(tmp_path)
    dm = SVHNDataModule(str(tmp_path), batch_size=4, val_size=4)
    assert (dm.in_channels, dm.image_size, dm.n_bits) == (3, 32, 8)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 4, 6)
    assert torch.equal(all_train_val(dm), to_chw(train))
    assert torch.equal(cat_batches(dm.test_dataloader()), to_chw(test))
    check_marks(all_train_val(dm)[0])
    check_marks(dm.test_set.images(1)[0])
    check_loaders(dm)
    assert torch.equal(dm.train_images(3), to_chw(train)[dm.train_set.indices[:3]])  # no augmentation


def test_svhn_failed_download_gives_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.svhn

    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", offline)
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        SVHNDataModule(str(tmp_path)).setup("fit")
    assert calls == ["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"]  # only the missing file
    msg = str(info.value)
    assert "missing: test_32x32.mat" in msg and "name resolution" in msg and str(tmp_path) in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        SVHNDataModule(str(tmp_path / "nowhere"), download=False).setup("fit")
    assert len(calls) == 1


def test_svhn_corrupt_files(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:3000])  # truncated
    with pytest.raises(CorruptDataError, match="train_32x32.mat"):
        SVHNDataModule(str(tmp_path), val_size=2).setup("fit")
    scipy.io.savemat(path, {"X": np.zeros((28, 28, 1, 5), np.uint8), "y": np.ones((5, 1))})  # wrong shape
    with pytest.raises(CorruptDataError, match=r"train_32x32.mat.*\(28, 28, 1, 5\)"):
        SVHNDataModule(str(tmp_path), val_size=2).setup("fit")
    scipy.io.savemat(path, {"y": np.ones((5, 1))})
    with pytest.raises(CorruptDataError, match="train_32x32.mat.*no 'X'"):
        SVHNDataModule(str(tmp_path), val_size=2).setup("fit")


# ----------------------------------------------------------------------------- digits


def test_digits_real_data():
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(batch_size=64)
    assert (dm.in_channels, dm.image_size, dm.n_bits) == (1, 8, 5)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1437, 180, 180)
    parts = [dm.train_set.indices, dm.val_set.indices, dm.test_set.indices]
    assert sorted(np.concatenate(parts)) == list(range(1797))
    everything = torch.cat([dm.train_set.images(), dm.val_set.images(), dm.test_set.images()])
    everything = everything[np.argsort(np.concatenate(parts))]
    raw = torch.from_numpy(load_digits().images)
    assert torch.equal(everything[:, 0].long(), torch.clamp(raw.long() * 16, max=255))
    levels = sorted(set(everything.flatten().tolist()))
    assert levels == [16 * v for v in range(16)] + [255]
    assert len({v >> (8 - dm.n_bits) for v in levels}) == 17  # 5-bit bins keep the 17 levels apart
    check_loaders(dm)
    assert [len(b) for b in dm.train_dataloader()] == [64] * (1437 // 64)
    other = DigitsDataModule()
    other.setup("fit")
    assert np.array_equal(other.test_set.indices, dm.test_set.indices)
    assert torch.equal(next(iter(other.train_dataloader())), next(iter(dm.train_dataloader())))


def test_small_train_set_keeps_its_only_batch():
    dm = DigitsDataModule(batch_size=2000)
    dm.setup("fit")
    assert [len(b) for b in dm.train_dataloader()] == [1437]


# ----------------------------------------------------------------------------- photos


@pytest.fixture(scope="module")
def photos():
    dm = PhotosDataModule(batch_size=32)
    dm.setup("fit")
    return dm


def test_photos_counts_and_split_by_source(photos):
    assert (photos.in_channels, photos.image_size, photos.n_bits) == (3, 32, 8)
    assert (len(photos.train_set), len(photos.val_set), len(photos.test_set)) == (3497, 494, 617)
    for split, ds in (("train", photos.train_set), ("val", photos.val_set), ("test", photos.test_set)):
        assert len(photos.sources[split]) == len(ds)
        assert set(photos.sources[split]) == set(PHOTO_SPLIT[split])
    names = [set(PHOTO_SPLIT[s]) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    # no patch of a val/test photo appears in the training set
    train_bytes = {img.tobytes() for img in photos.train_set.array}
    assert not any(img.tobytes() in train_bytes for img in photos.test_set.array)
    assert not any(img.tobytes() in train_bytes for img in photos.val_set.array)
    check_loaders(photos)


def test_photos_patches_and_augmentation(photos):
    import skimage.data

    astronaut = torch.from_numpy(skimage.data.astronaut()[:32, 32:64].transpose(2, 0, 1).copy())
    assert any(torch.equal(img, astronaut) for img in photos.train_set.images())
    first = photos.train_images(64)
    assert first.dtype == torch.uint8 and first.shape == (64, 3, 32, 32)
    assert len(set(photos.sources["train"][:64])) == 3  # the first patches mix all training photos
    torch.manual_seed(0)
    draws = [photos.train_set[0] for _ in range(12)]
    assert {torch.equal(d, first[0]) for d in draws} == {True, False}
    assert any(torch.equal(d, first[0].flip(-1)) for d in draws)
    assert torch.equal(cat_batches(photos.test_dataloader()), torch.from_numpy(photos.test_set.array))


# ----------------------------------------------------------------------------- Hydra configs


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF_DATA.glob("*.yaml")))
def test_config_instantiates(name, tmp_path):
    """Every data choice builds its DataModule without touching a file, and the DataModule's own
    config (:meth:`data_config`, what checkpoints keep) rebuilds an equal one."""
    cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    assert cfg.batch_size == 64 and cfg.num_workers == 0
    if "data_dir" in cfg:
        cfg.data_dir = str(tmp_path)
    OmegaConf.resolve(cfg)
    dm = hydra.utils.instantiate(cfg)
    assert isinstance(dm, UInt8ImageDataModule) and cfg._target_.endswith(type(dm).__name__)
    assert dm.batch_size == 64 and dm.num_workers == 0 and dm.seed == 0
    assert isinstance(dm.in_channels, int) and isinstance(dm.image_size, int) and isinstance(dm.n_bits, int)
    again = hydra.utils.instantiate(dm.data_config())
    assert type(again) is type(dm) and again.data_config() == dm.data_config()
    assert {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}.items() <= {
        k: list(v) if isinstance(v, tuple) else v for k, v in dm.data_config().items()}.items()
    assert not any(tmp_path.iterdir())  # constructing touches no files


def test_training_order_is_the_datamodules_own_and_resumes_by_epoch():
    """The train loader's sampler is the base class's: the order depends only on (seed, epoch), so a
    DataModule used outside the jobs resumes identically once Lightning sets the epoch."""
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    orders = []
    for epoch in (0, 1, 1):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat(list(loader)))
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[1], orders[2])
    other = DigitsDataModule(batch_size=16, seed=1)
    other.setup("fit")
    assert not torch.equal(torch.cat(list(other.train_dataloader())), orders[0])
