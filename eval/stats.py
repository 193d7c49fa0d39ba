"""Small statistics shared by the evaluators: seed averages, confusion-matrix scores, rank AUROC, Wilcoxon.

Every function takes plain numpy arrays / lists and returns plain Python numbers (JSON-ready). Conventions that a
reader of a table needs are stated where they are decided (zero-division, ties, all-zero differences).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats as sps


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) of the finite values; std is None for fewer than two values."""
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v))}


def average_over_seeds(per_seed: dict[Any, dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{seed: {key: value}} -> {key: {"mean", "std", "n"}} (the paper's "Avg." columns, with the spread over seeds)."""
    return {k: mean_std(r.get(k) for r in per_seed.values()) for k in keys}


# --------------------------------------------------------------------------------------------------------------------
# Binary classification scores
# --------------------------------------------------------------------------------------------------------------------
def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """Counts of the 2x2 confusion matrix with 1 = positive (opacity)."""
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "tn": int((~t & ~p).sum()),
            "fn": int((t & ~p).sum())}


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, F1, recall, precision of the positive class (+ the confusion counts, N).

    A ratio with an empty denominator (no predicted positives for precision, no true positives for recall) is 0.0, as
    in scikit-learn's default `zero_division=0`; the counts are reported next to it so the reason is visible.
    """
    c = confusion(y_true, y_pred)
    n = c["tp"] + c["fp"] + c["tn"] + c["fn"]
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"acc": (c["tp"] + c["tn"]) / n if n else None, "f1": f1, "recall": recall, "precision": precision,
            "n": n, **c}


# --------------------------------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------------------------------
def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a positive > score of a negative) + 0.5 P(tie) (Mann-Whitney U / n1 n0).

    Computed from average ranks, so ties count one half. None when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = sps.rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------------------------------
# Paired test
# --------------------------------------------------------------------------------------------------------------------
def wilcoxon_paired(before: Sequence[float], after: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired samples (scipy, zero_method="wilcox": zero differences are dropped).

    Returns the two-sided p-value and the one-sided p-value for "before > after" (translation removes lesions). When
    every difference is zero the test is undefined: p-values are None and `note` says so (no evidence of change is
    not the same as p = 1 from a test).
    """
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape:
        raise ValueError(f"wilcoxon_paired: before and after differ in length ({len(b)} vs {len(a)})")
    d = b - a
    out: dict[str, Any] = {"n": int(len(d)), "n_nonzero": int(np.count_nonzero(d)),
                           "median_before": float(np.median(b)) if len(b) else None,
                           "median_after": float(np.median(a)) if len(a) else None,
                           "mean_before": float(b.mean()) if len(b) else None,
                           "mean_after": float(a.mean()) if len(a) else None,
                           "statistic": None, "p_two_sided": None, "p_greater": None, "note": ""}
    if out["n_nonzero"] == 0:
        out["note"] = "all paired differences are zero: the signed-rank test is undefined (no change detected)"
        return out
    two = sps.wilcoxon(b, a, zero_method="wilcox", alternative="two-sided")
    greater = sps.wilcoxon(b, a, zero_method="wilcox", alternative="greater")
    out.update(statistic=float(two.statistic), p_two_sided=float(two.pvalue), p_greater=float(greater.pvalue))
    return out
