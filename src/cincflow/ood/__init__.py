"""Out-of-distribution detection with a likelihood model (docs/method.md section 8).

- :mod:`.images`: other data converted to the model's images (:func:`fit_images`), per-image
  bits/dim (:func:`bits_per_image`);
- :mod:`.levels`: log p(x) split into each level's log-determinant and latent prior (:func:`level_terms`);
- :mod:`.scores`: the scores (higher = more OOD): bits/dim, the complexity-corrected S-score (PNG,
  JPEG-2000), per-level shares and the last scale, the likelihood ratio, the typicality test;
- :mod:`.metrics`: AUROC, AUPR-in/out, FPR at 95 % TPR (:func:`detection_metrics`);
- :mod:`.table`, :mod:`.figure`: the table (Markdown, CSV, JSON) and the histograms;
- :mod:`.evaluation`: :func:`ood_evaluation`, all of it for several OOD sets in one call.
"""
from .evaluation import ood_evaluation, resolve_scores, score_set
from .figure import score_figure
from .images import LUMA, bits_per_image, fit_images, image_batches
from .levels import LevelTerms, level_terms
from .metrics import auroc, detection_metrics
from .scores import (SCORE_NAMES, TypicalityTest, bpd, complexity_bpd, last_scale, level_bpd, likelihood_ratio,
                     s_score, typicality, typicality_test)
from .table import summary, table_rows

__all__ = [
    "LUMA", "LevelTerms", "SCORE_NAMES", "TypicalityTest", "auroc", "bits_per_image", "bpd", "complexity_bpd",
    "detection_metrics", "fit_images", "image_batches", "last_scale", "level_bpd", "level_terms",
    "likelihood_ratio", "ood_evaluation", "resolve_scores", "s_score", "score_figure", "score_set",
    "summary", "table_rows", "typicality", "typicality_test",
]
