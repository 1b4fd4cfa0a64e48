"""Detection metrics of an OOD score (higher = more OOD), from torchmetrics' ROC curve.

n_in in-distribution and n_out OOD scores. Every metric sees the scores only through their order:
they are replaced by their dense ranks scaled to [0, 1] before torchmetrics (so it never mistakes
them for logits, and ties stay ties), and a NaN score counts as the most OOD value (above +inf, tied
with other NaNs). The areas are summed in float64 from the curve's counts (torchmetrics returns
rates in float32; the counts are recovered exactly for sets of up to 2^23 images).

- AUROC: OOD positive; = P(s_out > s_in) + P(s_out = s_in) / 2 (the trapezoidal area); 1 = separated.
- AUPR-out: average precision with OOD positive; AUPR-in: in-distribution positive, scores negated.
  AP = sum_k (R_k - R_{k-1}) P_k over the distinct thresholds (torchmetrics' binary_average_precision).
- FPR at 95 % TPR (Hendrycks & Gimpel 2017; Liang et al. 2018): in-distribution positive. The
  threshold t is the smallest score value at which at least 95 % of the in-distribution images are
  called in-distribution (s <= t); FPR = the share of OOD images also called in-distribution
  (s_out <= t). 0 = no OOD image passes; t is reported in the score's units.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError

TPR = 0.95


def _ranked(in_scores: torch.Tensor, out_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(preds [N] in [0, 1]: dense ranks of in then out scores, NaN -> inf; the distinct values [U],
    ascending; labels [N], 1 = OOD)."""
    for role, values in (("in-distribution", in_scores), ("OOD", out_scores)):
        if values.numel() == 0:
            raise ConfigError(f"the {role} scores are empty: score at least one image of each set")
    both = torch.cat([in_scores.flatten(), out_scores.flatten()]).double().cpu()
    both = torch.where(torch.isnan(both), math.inf, both)
    values, inverse = torch.unique(both, sorted=True, return_inverse=True)
    labels = torch.cat([torch.zeros(in_scores.numel()), torch.ones(out_scores.numel())]).long()
    return inverse.double() / max(len(values) - 1, 1), values, labels


def _curve(preds: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchmetrics' ROC of ``preds`` (in [0, 1], higher = positive) as counts: (TP [K], FP [K] (int64),
    thresholds [K]) at the thresholds from 'none positive' (0, 0) to 'all positive'."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, thresholds = binary_roc(preds, positive)
    n_pos = int(positive.sum())
    tp = (tpr.double() * n_pos).round().long()
    fp = (fpr.double() * (len(positive) - n_pos)).round().long()
    return tp, fp, thresholds


def _average_precision(tp: torch.Tensor, fp: torch.Tensor) -> float:
    """sum_k (R_k - R_{k-1}) P_k with R_k = TP_k / TP_K, P_k = TP_k / (TP_k + FP_k)."""
    steps, tp1, fp1 = (tp[1:] - tp[:-1]).double(), tp[1:].double(), fp[1:].double()
    return float((steps * tp1 / (tp1 + fp1).clamp(min=1)).sum() / tp[-1])


def detection_metrics(in_scores: torch.Tensor, out_scores: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out, FPR at 95 % TPR and its threshold t (module docstring) of the
    scores of in-distribution [n_in] and OOD [n_out] images."""
    preds, values, is_out = _ranked(in_scores, out_scores)
    tp, fp, _ = _curve(preds, is_out)
    n_in, n_out = len(in_scores.flatten()), len(out_scores.flatten())
    auroc = float(((fp[1:] - fp[:-1]).double() * (tp[1:] + tp[:-1]).double()).sum() / (2 * n_in * n_out))
    tp_in, fp_in, thresholds = _curve(1 - preds, 1 - is_out)  # in-distribution positive: the order reversed
    k = int(torch.nonzero(tp_in >= math.ceil(TPR * n_in - 1e-9))[0])
    rank = round((1 - float(thresholds[k])) * max(len(values) - 1, 1))
    return {"auroc": auroc, "aupr_in": _average_precision(tp_in, fp_in), "aupr_out": _average_precision(tp, fp),
            "fpr_at_95_tpr": float(fp_in[k]) / n_out, "threshold_at_95_tpr": float(values[rank])}


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """AUROC of the score as a detector of the ``out`` images = P(out > in) + P(out = in) / 2; 0.5
    is chance, < 0.5 means the out images score lower."""
    return detection_metrics(in_scores, out_scores)["auroc"]
