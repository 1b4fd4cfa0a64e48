"""The OOD evaluation of a model: every score of :mod:`cincflow.ood.scores` on the in-distribution
test set and several OOD sets, their metrics in one table (``ood_table.{md,csv,json}``) and one
picture (``ood_scores.png``). Every input is checked before any image is scored."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..pixels import bits_per_dim, preprocess
from .figure import score_figure
from .images import image_batches
from .levels import level_terms
from .scores import (LAST_SCALE, SCORE_NAMES, bpd, check_codec, codec_available, complexity_bpd,
                     last_scale, level_bpd, likelihood_ratio, s_score, score_columns, score_label, typicality,
                     typicality_test)
from .table import TABLE_FILES, table_rows, write_table

FIGURE_FILE = "ood_scores.png"
NEEDS_REFERENCE = ("the OOD score 'ratio' needs a reference model: give ood_reference_ckpt=<a second model's "
                   "checkpoint> or drop 'ratio'")
CONVENTION = "higher score = more out-of-distribution; OOD is the positive class of AUROC, AUPR-out"


@torch.no_grad()
def score_set(model: nn.Module, batches: Iterable[torch.Tensor], seed: int, columns: Sequence[str],
              reference_model: nn.Module | None = None, max_images: int | None = None, name: str = "data",
              ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Per-image scores [N] (float64, CPU) of the uint8 images of ``batches`` (fitted to the model's
    channels and size, at most ``max_images``): 'bpd' and every image-level column of ``columns``,
    from one forward pass per batch (the reference model: a second pass on the same dequantised
    images, noise of a generator seeded ``seed`` as in ``Glow.bits_per_dim``); and the conversion notes."""
    if "ratio" in columns and reference_model is None:
        raise ConfigError(NEEDS_REFERENCE)
    gen, param = torch.Generator().manual_seed(int(seed)), model.top_prior
    out: dict[str, list[torch.Tensor]] = {}
    notes: list[str] = []
    for images, notes in image_batches(batches, int(model.in_channels), int(model.image_size), max_images):
        x = preprocess(images.to(param.device), int(model.n_bits), True, param.dtype, gen)
        terms = level_terms(model, x)
        got = {"bpd": bpd(terms)}
        levels = [c for c in columns if c.startswith("level_")]
        if levels:
            shares = level_bpd(terms)
            got.update({c: shares[:, int(c.split("_")[1]) - 1] for c in levels})
        if LAST_SCALE in columns:
            got[LAST_SCALE] = last_scale(terms)
        for codec in ("png", "jp2"):
            if f"s_{codec}" in columns:
                got[f"s_{codec}"] = s_score(got["bpd"], complexity_bpd(images, codec, int(model.n_bits)))
        if "ratio" in columns:
            ref = reference_model.top_prior
            ref_bpd = bits_per_dim(reference_model.log_prob(x.to(ref.device, ref.dtype)), terms.num_dims, terms.n_bits)
            got["ratio"] = likelihood_ratio(got["bpd"], ref_bpd.to(x))
        for key, values in got.items():
            out.setdefault(key, []).append(values.double().cpu())
    if not out:
        raise ConfigError(f"the data set {name!r} of the out-of-distribution check has no images: "
                          "give a set with at least one image")
    return {key: torch.cat(values) for key, values in out.items()}, notes


def resolve_scores(scores: Sequence[str] | None, reference_model: nn.Module | None, has_train: bool) -> list[str]:
    """``scores`` checked against :data:`SCORE_NAMES`; None: every score that applies here (s_jp2
    where Pillow writes JPEG-2000, typicality with training images, ratio with a reference model)."""
    if scores is None:
        return ["bpd", "s_png", *(["s_jp2"] if codec_available("jp2") else []), "levels",
                *(["typicality"] if has_train else []), *(["ratio"] if reference_model is not None else [])]
    names = [scores] if isinstance(scores, str) else list(scores)
    for name in names:
        if name not in SCORE_NAMES:
            raise ConfigError(f"unknown OOD score {name!r}: choose from {', '.join(SCORE_NAMES)}")
    if not names:
        raise ConfigError(f"no OOD score chosen: choose at least one of {', '.join(SCORE_NAMES)}")
    return names


def _positive_int(name: str, value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer ({what}), got {value!r}")


def _shape(model: nn.Module) -> str:
    c, s = int(model.in_channels), int(model.image_size)
    return f"[{c}, {s}, {s}] at {int(model.n_bits)} bits"


def _known_size(data: Iterable, max_images: int | None) -> int | None:
    """The number of images ``data`` yields, where known without iterating (a DataLoader's dataset,
    a list of batches), capped at ``max_images``."""
    if hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
        n = len(data.dataset)
    elif isinstance(data, (list, tuple)) and all(isinstance(b, torch.Tensor) for b in data):
        n = sum(b.shape[0] for b in data)
    else:
        return None
    return n if max_images is None else min(n, max_images)


def check_typicality_batch(batch: int, sizes: Iterable[tuple[str, str, int | None]]) -> None:
    """ConfigError when a typicality batch of ``batch`` images is larger than a set: ``sizes`` holds
    (role, name, number of images or None when not known yet) of each set."""
    for role, name, n in sizes:
        if n is not None and batch > n:
            raise ConfigError(f"the typicality batch M={batch} is larger than the {role} set {name!r} ({n} images): "
                              f"choose typicality_batch <= {n} or give that set more images")


def _roles(sets: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(role, name, item) of each set, the in-distribution set first."""
    return [("in-distribution" if i == 0 else "OOD", name, item) for i, (name, item) in enumerate(sets.items())]


def check_request(model: nn.Module, names: list[str], sets: dict[str, Iterable], train_data: Iterable | None,
                  reference_model: nn.Module | None, typicality_batch: int, typicality_bootstrap: int,
                  typicality_quantile: float, max_images: int | None) -> None:
    """Every input of :func:`ood_evaluation` (``sets``: the in-distribution set first), one ConfigError each."""
    if len(sets) < 2:
        raise ConfigError("no OOD data set given: pass at least one (ood_data=<data>)")
    if max_images is not None:
        _positive_int("max_images", max_images, "the most images scored per set, or None for all")
    if "s_jp2" in names:
        check_codec("jp2")
    if "ratio" in names and reference_model is None:
        raise ConfigError(NEEDS_REFERENCE)
    if reference_model is not None and _shape(reference_model) != _shape(model):
        raise ConfigError(f"the reference model scores images {_shape(reference_model)}, the model "
                          f"{_shape(model)}: give ood_reference_ckpt= a model of the model's image shape and bits")
    if "typicality" not in names:
        return
    if train_data is None:
        raise ConfigError("the OOD score 'typicality' needs the training images (train_data): pass them or "
                          "drop 'typicality'")
    _positive_int("typicality_batch", typicality_batch, "the number M of images per batch")
    _positive_int("typicality_bootstrap", typicality_bootstrap, "the number K of bootstrapped training batches")
    q = typicality_quantile
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
        raise ConfigError(f"typicality_quantile must be a number strictly between 0 and 1 (e.g. 0.99), got {q!r}")
    sizes = [("training", "train", train_data), *_roles(sets)]
    check_typicality_batch(typicality_batch, [(r, n, _known_size(d, max_images)) for r, n, d in sizes])


def _typicality(model: nn.Module, values: dict[str, dict[str, torch.Tensor]], train_data: Iterable, seed: int,
                batch: int, bootstrap: int, quantile: float, max_images: int | None) -> dict[str, Any]:
    """The typicality test's reference from the training images; each set's batch scores added to
    ``values`` under 'typicality' (the permutation of a generator seeded ``seed`` for every set)."""
    train_bpd = score_set(model, train_data, seed, [], None, max_images, "train")[0]["bpd"]
    sizes = [("training", "train", len(train_bpd)), *((r, n, len(v["bpd"])) for r, n, v in _roles(values))]
    check_typicality_batch(batch, sizes)
    test = typicality_test(train_bpd, batch, bootstrap, quantile, torch.Generator().manual_seed(int(seed)))
    for scores in values.values():
        scores["typicality"] = typicality(scores["bpd"], test, torch.Generator().manual_seed(int(seed)))
    rejected = {name: float((v["typicality"] > test.threshold).double().mean()) for name, v in values.items()}
    return {**asdict(test), "train_images": len(train_bpd), "rejected": rejected}


def ood_evaluation(model: nn.Module, in_data: Iterable[torch.Tensor], ood_data: Mapping[str, Iterable[torch.Tensor]],
                   output_dir: Path, *, train_data: Iterable[torch.Tensor] | None = None, in_name: str = "test",
                   scores: Sequence[str] | None = None, seed: int = 0, typicality_batch: int = 10,
                   typicality_bootstrap: int = 1000, typicality_quantile: float = 0.99,
                   reference_model: nn.Module | None = None, max_images: int | None = None) -> dict[str, Any]:
    """Score ``in_data`` and every set of ``ood_data`` (name -> uint8 batches) with ``scores`` (None:
    :func:`resolve_scores`), compare each OOD set with ``in_data`` and write ``ood_table.{md,csv,json}``
    and ``ood_scores.png`` in ``output_dir`` (which must exist). Returns the record of ``ood_table.json``:
    'rows' (:func:`~cincflow.ood.table.table_rows`), 'scores' (column -> axis label), 'typicality'
    (the test's reference, each set's share of batches with T above its threshold), 'conversion'
    (per set) and 'files'."""
    output_dir = Path(output_dir)
    names = resolve_scores(scores, reference_model, train_data is not None)
    sets = {in_name: in_data, **ood_data}
    if len(sets) != len(ood_data) + 1:
        raise ConfigError(f"an OOD set is named {in_name!r} like the in-distribution set: give it another name")
    check_request(model, names, sets, train_data, reference_model, typicality_batch, typicality_bootstrap,
                  typicality_quantile, max_images)
    columns = score_columns(names, len(model.levels))
    values, conversion = {}, {}
    for name, data in sets.items():
        values[name], notes = score_set(model, data, seed, columns, reference_model, max_images, name)
        conversion[name] = notes or ["none: same channels and size as the model"]
    labels = {c: score_label(c, typicality_batch) for c in columns}
    record: dict[str, Any] = {"in_distribution": in_name, "ood_sets": list(ood_data), "seed": seed,
                              "convention": CONVENTION, "scores": labels, "conversion": conversion}
    if "typicality" in columns:
        record["typicality"] = _typicality(model, values, train_data, seed, typicality_batch, typicality_bootstrap,
                                           typicality_quantile, max_images)
    table = {name: {c: v[c] for c in columns} for name, v in values.items()}
    record["rows"] = table_rows(table, in_name, columns)
    files = {**TABLE_FILES, "png": FIGURE_FILE}
    record["files"] = {fmt: str(output_dir / name) for fmt, name in files.items()}
    write_table(record, f"OOD scores against {in_name!r} (in-distribution): {CONVENTION}")
    thresholds = {r["score"]: r["threshold_at_95_tpr"] for r in record["rows"] if r["role"] == "ood"}
    score_figure(table, in_name, columns, thresholds, typicality_batch).savefig(record["files"]["png"])
    return record
