"""Out-of-distribution scores of a likelihood model (docs/method.md section 8).

Convention: for every score, HIGHER = MORE OUT-OF-DISTRIBUTION, so every metric treats the OOD
images as the positive class. All scores are in bits/dim or differences of bits/dim; D = C H W.

=============  ==================================================================================
name           score
=============  ==================================================================================
bpd            bits/dim = -log2 p(x) / D + n_bits, p the model-space density (Nalisnick et al. 2019)
s_png, s_jp2   S = bpd(x) - L(x) / D, L(x) the bits of x's lossless PNG / JPEG-2000 file
               (Serra et al. 2020)
levels         each level's share of the bits/dim: level_1 ... level_{L-1}, last_scale
last_scale     the last (top) level's share alone (Schirrmeister et al. 2020)
typicality     |mean bpd of a batch of M images - mean bpd of the training set|, one per batch
               (Nalisnick et al. 2019b)
ratio          bpd(x) - bpd_reference(x) against a second model (Schirrmeister et al. 2020)
=============  ==================================================================================
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..pixels import bits_per_dim
from .levels import LevelTerms

SCORE_NAMES = ("bpd", "s_png", "s_jp2", "levels", "last_scale", "typicality", "ratio")
CODECS = {"png": ("PNG", {"compress_level": 9}), "jp2": ("JPEG2000", {"irreversible": False})}  # lossless both
LAST_SCALE = "last_scale"


def bpd(terms: LevelTerms) -> torch.Tensor:
    """bpd(x) = -(log p(x) - D n_bits ln 2) / (D ln 2), [B]: the model's bits/dim (higher: less likely)."""
    return bits_per_dim(terms.log_prob, terms.num_dims, terms.n_bits)


def level_bpd(terms: LevelTerms) -> torch.Tensor:
    """Each level's share of the bits/dim, [B, L]:

        bpd_i(x) = -(ld_i + lp_i) / (D ln 2) + n_bits D_i / D,        sum_i bpd_i(x) = bpd(x),

    ld_i the log-determinant of level i's flow, lp_i its latent's prior log-density (the split
    prior's for i < L, the top prior's for i = L), D_i = the size of that latent (sum D_i = D)."""
    share = torch.tensor(terms.level_dims, dtype=terms.logdet.dtype, device=terms.logdet.device) / terms.num_dims
    return -(terms.logdet + terms.latent_log_prob) / (terms.num_dims * math.log(2.0)) + terms.n_bits * share


def last_scale(terms: LevelTerms) -> torch.Tensor:
    """The last-scale score bpd_L(x) (:func:`level_bpd` of the top level: its flow's log-determinant
    and the top prior), [B]."""
    return level_bpd(terms)[:, -1]


def level_columns(levels: int) -> list[str]:
    """The names of :func:`level_bpd`'s columns: level_1 (the finest) ... level_{L-1}, last_scale."""
    return [f"level_{i + 1}" for i in range(levels - 1)] + [LAST_SCALE]


def codec_available(codec: str) -> bool:
    """Whether Pillow can write ``codec`` ('png', 'jp2') here (JPEG-2000 needs OpenJPEG)."""
    from PIL import features

    return codec == "png" or (codec == "jp2" and bool(features.check("jpg_2000")))


def check_codec(codec: str) -> None:
    """ConfigError unless ``codec`` is one of :data:`CODECS` and Pillow can write it here."""
    if codec not in CODECS:
        raise ConfigError(f"unknown compressor {codec!r}: choose from {', '.join(CODECS)}")
    if not codec_available(codec):
        raise ConfigError("this Pillow cannot write JPEG-2000 (no OpenJPEG): use the PNG complexity score s_png")


def complexity_bpd(images: torch.Tensor, codec: str = "png", n_bits: int = 8) -> torch.Tensor:
    """L(x) / D, [B] (float64): the bits 8 * len(file) of each uint8 image [B, C, H, W] (C = 1 or 3)
    losslessly compressed by Pillow ('png': compress_level 9; 'jp2': JPEG-2000, reversible wavelet)
    per dimension D = C H W, the image first reduced to the model's n_bits: floor(x / 2^(8 - n_bits))."""
    check_codec(codec)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"the complexity scores need uint8 images [B, 1 or 3, H, W], got {images.dtype} "
                          f"{list(images.shape)}: score 1- or 3-channel images")
    from PIL import Image

    fmt, options = CODECS[codec]
    pixels = torch.div(images, 2 ** (8 - n_bits), rounding_mode="floor").permute(0, 2, 3, 1).cpu().numpy()
    bits = []
    for pic in pixels:
        buffer = io.BytesIO()
        Image.fromarray(pic[..., 0] if pic.shape[-1] == 1 else pic).save(buffer, format=fmt, **options)
        bits.append(8 * len(buffer.getvalue()))
    return torch.tensor(bits, dtype=torch.float64) / math.prod(images.shape[1:])


def s_score(bpd_values: torch.Tensor, complexity: torch.Tensor) -> torch.Tensor:
    """S(x) / D = bpd(x) - L(x) / D (Serra et al. 2020: S = -log2 P(x) - L(x), P(x) the probability of
    the image's bin, so bpd = -log2 P(x) / D): the bits the model needs beyond a generic compressor.
    Simple images (low L) that the model finds likely for their simplicity alone are no longer
    favoured; higher = more OOD."""
    return bpd_values - complexity.to(bpd_values)


def likelihood_ratio(bpd_values: torch.Tensor, reference_bpd: torch.Tensor) -> torch.Tensor:
    """bpd(x) - bpd_ref(x) = -log2 (p(x) / p_ref(x)) / D: the log-likelihood ratio against a reference
    model (smaller, or trained on more general data), which cancels what both models find easy;
    higher = more OOD."""
    return bpd_values - reference_bpd.to(bpd_values)


@dataclass(frozen=True)
class TypicalityTest:
    """The in-distribution reference of the typicality test: the training set's mean bits/dim and
    the threshold on T for batches of ``batch`` images."""

    train_mean: float
    threshold: float
    batch: int
    quantile: float
    bootstrap: int


def typicality_test(train_bpd: torch.Tensor, batch: int, bootstrap: int, quantile: float,
                    generator: torch.Generator) -> TypicalityTest:
    """Nalisnick et al. 2019b: H = mean bpd of the training set; K = ``bootstrap`` batches of M =
    ``batch`` training images drawn with replacement (``torch.randint(N, (K, M))`` of ``generator``),
    T_k = |mean bpd(batch k) - H|; threshold = the ``quantile`` of T_1..T_K (linear interpolation)."""
    train_mean = train_bpd.mean()
    index = torch.randint(len(train_bpd), (bootstrap, batch), generator=generator)
    stats = (train_bpd[index].mean(1) - train_mean).abs()
    return TypicalityTest(float(train_mean), float(torch.quantile(stats, quantile)), batch, quantile, bootstrap)


def typicality(bpd_values: torch.Tensor, test: TypicalityTest, generator: torch.Generator) -> torch.Tensor:
    """T = |mean bpd of a batch of M images - H| for floor(N / M) disjoint batches of the N images
    (a ``torch.randperm(N)`` of ``generator``, the last N mod M images left out), [N // M]. A batch
    is called OOD when T > ``test.threshold``; higher = more OOD."""
    m = test.batch
    order = torch.randperm(len(bpd_values), generator=generator)[: len(bpd_values) // m * m]
    return (bpd_values[order].view(-1, m).mean(1) - test.train_mean).abs()


def score_columns(names: Sequence[str], levels: int) -> list[str]:
    """The score columns of ``names`` (each of :data:`SCORE_NAMES`), 'levels' expanded to
    :func:`level_columns`, each column once, in order."""
    columns = [c for name in names for c in (level_columns(levels) if name == "levels" else [name])]
    return list(dict.fromkeys(columns))


def score_label(column: str, typicality_batch: int | None = None) -> str:
    """The axis label of a score column: what it is, in which unit (higher = more OOD)."""
    if column.startswith("level_") or column == LAST_SCALE:
        level = "the last level" if column == LAST_SCALE else f"level {column.split('_')[1]}"
        return f"{column}: share of {level} in bits/dim"
    labels = {
        "bpd": "bpd: bits/dim",
        "s_png": "s_png: bits/dim - PNG bits/dim",
        "s_jp2": "s_jp2: bits/dim - JPEG-2000 bits/dim",
        "typicality": f"typicality: |batch mean bits/dim - train mean| (M={typicality_batch})",
        "ratio": "ratio: bits/dim - reference bits/dim",
    }
    return labels[column]
