"""The one AUROC of the project (rank statistic, ties count one half; no sklearn): the prior's and the evaluator's
per-label competence, the classifiers' competence, the mask AUROC of ours' diagnostics and of the paired metrics.

    auroc(scores, labels)            Mann-Whitney U / (n_pos n_neg), None when one class is missing
    auroc_counts(scores, pos, neg)   the same statistic from counts: `pos[i]` positives and `neg[i]` negatives share
                                     the score `scores[i]` (8-bit mask levels, pixel positions, bootstrap weights)
    per_label_auroc(probs, labels)   {NIH-14 label: AUROC or "n/a"}
"""
from __future__ import annotations

import numpy as np

from pipeline.data.canonical import NIH14


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve = Mann-Whitney U / (n_pos n_neg); None when only one class is present."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    u = average_ranks(scores)[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auroc_counts(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float | None:
    """AUROC of groups of samples: group i holds `pos[i]` positives and `neg[i]` negatives (any non-negative weights),
    all scored `scores[i]`. Equals `auroc` on the expanded samples: P(score_pos > score_neg) + 0.5 P(tie), with equal
    scores of different groups counted as ties. None when either class has zero total weight."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return None
    levels, group = np.unique(scores, return_inverse=True)
    p = np.bincount(group, weights=pos, minlength=len(levels))
    n = np.bincount(group, weights=neg, minlength=len(levels))
    neg_below = np.concatenate([[0.0], np.cumsum(n)[:-1]])  # negatives strictly below each distinct score
    return float((p * (neg_below + 0.5 * n)).sum() / (n_pos * n_neg))


def position_floor(opacity: np.ndarray, region: np.ndarray | None = None,
                   weights: np.ndarray | None = None) -> float | None:
    """Pooled pixel AUROC of the best map that ignores the image: the map that scores every pixel position p by the
    opacity frequency there, f(p) = #images with opacity at p / #images with p in the region.

    Why it is the best: a map that sees only the position assigns one score per position; by the Neyman-Pearson lemma
    the ROC curve of the pooled pixels is highest everywhere when positions are ranked by their likelihood ratio
    P(p | opacity) / P(p | background), which is monotone in f(p). So no image-blind map (a fixed lung-shaped blob,
    the lung mask smoothed, a heat map of where findings occur) beats it on these images, and a mask AUROC at or
    below it says nothing about whether the mask looked at the image. (N, H, W) bool `opacity` and `region`
    (default: all pixels); `weights` (N,) counts each image that many times (the bootstrap)."""
    o = np.asarray(opacity, bool)
    r = np.ones_like(o) if region is None else np.asarray(region, bool)
    w = np.ones(len(o)) if weights is None else np.asarray(weights, np.float64)
    return position_floor_counts(w @ (o & r).reshape(len(o), -1), w @ (~o & r).reshape(len(o), -1))


def position_floor_counts(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """position_floor from the opacity / background pixel counts at each position (flattened, any weights)."""
    seen = pos + neg > 0
    return auroc_counts(pos[seen] / (pos[seen] + neg[seen]), pos[seen], neg[seen])


def per_label_auroc(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | str]:
    """{label: AUROC or "n/a" (only one class among the test images: no number is invented)}."""
    out: dict[str, float | str] = {}
    for i, name in enumerate(NIH14):
        value = auroc(probs[:, i], labels[:, i])
        out[name] = "n/a" if value is None else round(value, 6)
    return out
