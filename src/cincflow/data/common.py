"""Shared pieces of the data layer.

* :class:`UInt8ArrayDataset` - images from a uint8 array of shape (N, C, H, W) (in memory
  or a read-only ``np.memmap``), optionally restricted to a subset of indices; each item
  is a ``torch.uint8`` tensor [C, H, W] (no label), optionally augmented with seeded draws.
* :func:`seeded_split` - reproducible partition of ``range(n)`` into held-out parts and
  the rest.
* :func:`cached_uint8_array` - one-time conversion of raw files into a uint8 ``.npy``
  cache (N, C, H, W) (written atomically: temp file, then ``os.replace``), then loaded
  with ``np.load(..., mmap_mode="r")`` so that processes/DDP ranks share the pages.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm


def draw_seed(seed: int, index: int, draw: int) -> int:
    """The seed of the ``draw``-th augmentation of item ``index`` (an integer mix of the three)."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15) ^ (int(index) * 0xBF58476D1CE4E5B9) ^ (int(draw) * 0x94D049BB133111EB)
    return mixed % 2**63


class UInt8ArrayDataset(Dataset):
    """``array[indices[i]]`` as a uint8 tensor [C, H, W], passed through ``transform``.

    Augmentation is deterministic given ``seed``: ``transform(img, generator=g)`` gets a fresh
    generator seeded by :func:`draw_seed` (``seed``, i, k) for the k-th time item i is drawn. The
    counts ``draws`` [N] live in shared memory, so DataLoader workers (any number) count together
    and every pass over the data draws new augmentations; the global RNG plays no part.

    If ``mmap_path`` is given, ``array`` is a memory map of that ``.npy`` file; pickling
    the dataset (spawned DataLoader workers) then sends only the path and the worker
    reopens the memory map instead of copying the data.
    """

    def __init__(
        self,
        array: np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[..., torch.Tensor] | None = None,
        mmap_path: str | os.PathLike | None = None,
        seed: int = 0,
    ):
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array (N, C, H, W), got {array.dtype} {array.shape}")
        self.array = array
        self.indices = np.arange(len(array)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.mmap_path = None if mmap_path is None else str(mmap_path)
        self.seed = int(seed)
        self.draws = None if transform is None else torch.zeros(len(self.indices), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = torch.from_numpy(np.array(self.array[self.indices[i]], dtype=np.uint8, copy=True))
        if self.transform is None:
            return img
        k = int(self.draws[i])
        self.draws[i] = k + 1  # item i is drawn by one worker at a time (once per pass)
        return self.transform(img, generator=torch.Generator().manual_seed(draw_seed(self.seed, i, k)))

    def images(self, n: int | None = None) -> torch.Tensor:
        """The first ``n`` images (all if ``n`` is None), untransformed, uint8 [n, C, H, W]."""
        idx = self.indices if n is None else self.indices[:n]
        return torch.from_numpy(np.array(self.array[idx], dtype=np.uint8, copy=True))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.mmap_path is not None:
            state["array"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.array is None:
            self.array = np.load(self.mmap_path, mmap_mode="r")


def seeded_split(n: int, holdout_sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into ``[rest, holdout_0, holdout_1, ...]`` (each sorted).

    The permutation depends only on ``(n, seed)``: the same seed always gives the same
    parts. Raises ``ValueError`` unless the rest keeps at least one element.
    """
    sizes = [int(s) for s in holdout_sizes]
    if any(s < 0 for s in sizes) or sum(sizes) >= n:
        raise ValueError(
            f"the held-out splits ({' + '.join(map(str, sizes))} images: data.val_size, data.test_size) do not "
            f"fit the {n} images of the dataset with at least one left for training: choose smaller ones"
        )
    perm = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for s in sizes:
        parts.append(np.sort(perm[start : start + s]))
        start += s
    return [np.sort(perm[start:]), *parts]


def cached_uint8_array(
    path: str | os.PathLike,
    item_shape: tuple[int, ...],
    plan: Callable[[], tuple[int, Iterable[np.ndarray]]],
    desc: str,
) -> np.ndarray:
    """Return the uint8 array (N, *item_shape) cached at ``path``, memory-mapped read-only.

    An existing, readable cache of the right dtype and item shape is used as is (the
    sources are not even looked at, so they may be deleted after conversion; delete the
    cache to rebuild it). Otherwise ``plan()`` is called; it must return ``(n, chunks)``
    where ``chunks`` yields uint8 arrays (k, *item_shape) adding up to ``n`` images.
    They are written into a temporary ``.npy`` in the same directory (with a tqdm
    progress bar) which is then moved into place with ``os.replace``: a crash or a
    concurrent reader never sees a half-written cache.
    """
    path = Path(path)
    item_shape = tuple(int(s) for s in item_shape)
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            warnings.warn(f"cache {path} is unreadable ({err}); rebuilding it", stacklevel=2)
        else:
            if arr.dtype == np.uint8 and arr.shape[1:] == item_shape:
                return arr
            warnings.warn(
                f"cache {path} holds {arr.dtype} {arr.shape}, expected uint8 (N, *{item_shape}); rebuilding it",
                stacklevel=2,
            )
            del arr
    n, chunks = plan()
    shape = (int(n), *item_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        pos = 0
        with tqdm(total=shape[0], desc=desc, unit="img") as bar:
            for chunk in chunks:
                k = len(chunk)
                if pos + k > shape[0] or tuple(chunk.shape[1:]) != item_shape:
                    raise RuntimeError(
                        f"while building {path}: got a chunk of shape {chunk.shape} at position {pos}, "
                        f"expected chunks of (k, *{item_shape}) adding up to {shape[0]} (did the source "
                        "files change during conversion?)"
                    )
                out[pos : pos + k] = chunk
                pos += k
                bar.update(k)
        if pos != shape[0]:
            raise RuntimeError(f"while building {path}: got {pos} images, expected {shape[0]}")
        out.flush()
        del out
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return np.load(path, mmap_mode="r")
