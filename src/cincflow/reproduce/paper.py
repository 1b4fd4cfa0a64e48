"""The published numbers (docs/method.md section 6) and which configuration reproduces which table row.

Configurations are keyed (dataset, conv, coupling) with dataset in {"cifar10", "imagenet32",
"imagenet64"}; the ImageNet numbers are for the van den Oord variant (``data=imagenet32_oord``,
``data=imagenet64_oord``).
"""
from __future__ import annotations

from ..layers import step as _step

DATASETS = {"cifar10": "CIFAR-10", "imagenet32": "ImageNet32", "imagenet64": "ImageNet64"}
CONVS = tuple(_step.CONVS)  # glow, emerging, cinc: the tables' column order
#: trained without an epoch limit in the official commands (docs/method.md section 5)
UNTIL_STOPPED = ("imagenet32", "imagenet64")
COUPLINGS = ("affine", "quad")

# Table 1 (CInC poster): bits/dim. Columns Glow, Emerging, CInC 3x3 (= cinc + affine), +Quad.
BPD = {
    ("cifar10", "glow", "affine"): 3.36,
    ("cifar10", "emerging", "affine"): 3.34,
    ("cifar10", "cinc", "affine"): 3.3498,
    ("cifar10", "cinc", "quad"): 3.347,
    ("imagenet32", "glow", "affine"): 4.09,
    ("imagenet32", "emerging", "affine"): 4.09,
    ("imagenet32", "cinc", "affine"): 4.0140,
    ("imagenet32", "cinc", "quad"): 4.0377,
    ("imagenet64", "glow", "affine"): 3.81,
    ("imagenet64", "emerging", "affine"): 3.81,
    ("imagenet64", "cinc", "affine"): 3.8946,
    ("imagenet64", "cinc", "quad"): 3.8514,
}
BPD_COLUMN = {
    ("glow", "affine"): "Glow",
    ("emerging", "affine"): "Emerging",
    ("cinc", "affine"): "CInC 3x3",
    ("cinc", "quad"): "+Quad",
}

# Table 2 (CInC poster): quad-coupling ablation on CIFAR-10, bits/dim (training length unconfirmed).
ABLATION = {
    ("cifar10", "emerging", "affine"): 3.3851,
    ("cifar10", "emerging", "quad"): 3.3612,
    ("cifar10", "cinc", "affine"): 3.4209,
    ("cifar10", "cinc", "quad"): 3.3879,
}

# Table 3 (CInC poster): seconds to sample 100 images on one CPU core (no ImageNet64 entry).
SAMPLING_SECONDS = {
    ("cifar10", "emerging", "affine"): 2.45,
    ("cifar10", "cinc", "affine"): 1.31,
    ("imagenet32", "emerging", "affine"): 4.96,
    ("imagenet32", "cinc", "affine"): 2.76,
}


def experiment_name(dataset: str, conv: str, coupling: str) -> str:
    """The experiment config (conf/experiment/paper/<name>.yaml) of a configuration."""
    return f"{dataset}_{conv}_{coupling}"


def paper_tables_of(dataset: str, conv: str, coupling: str) -> list[str]:
    """Which published tables a configuration reproduces a row of (for the experiment tags)."""
    key = (dataset, conv, coupling)
    tables = []
    if key in BPD:
        tables.append(f"table1_bpd:{DATASETS[dataset]}/{BPD_COLUMN[(conv, coupling)]}")
    if key in ABLATION:
        tables.append(f"table2_quad_ablation:{conv}/{coupling}")
    if key in SAMPLING_SECONDS:
        tables.append(f"table3_sampling_time:{DATASETS[dataset]}/{conv}")
    return tables
