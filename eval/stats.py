"""Small statistics shared by the evaluators: seed averages, confusion-matrix scores, the exact Wilcoxon
signed-rank test, bootstrap intervals and paired differences. The AUROC is the core's (pipeline.auroc),
re-exported here so that the whole project has one.

Every function takes plain numpy arrays / lists and returns plain Python numbers (JSON-ready). Conventions that a
reader of a table needs are stated where they are decided (zero-division, ties, all-zero differences).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats as sps

from pipeline.auroc import auroc  # noqa: F401  (the one AUROC: rank statistic, ties count one half)


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
# Paired test: Wilcoxon signed-rank, exact under ties and zeros
# --------------------------------------------------------------------------------------------------------------------
EXACT_MAX_N = 1000  # exact null distribution up to this many non-zero differences (DP over n^2 states), else normal


def signed_rank_null(doubled_ranks: np.ndarray) -> np.ndarray:
    """Exact null distribution of W+ (x2, so mid-ranks are integers): P(2 W+ = k), k = 0 .. sum(doubled_ranks).

    Under H0 each non-zero difference is positive or negative with probability 1/2, independently, given the
    observed absolute values (the permutation distribution conditional on the ranks, ties included).
    """
    r = np.asarray(doubled_ranks, dtype=np.int64)
    dist = np.zeros(int(r.sum()) + 1)
    dist[0] = 1.0
    top = 0
    for k in r:  # dist_new[w] = (dist[w] + dist[w - k]) / 2
        shifted = np.zeros_like(dist)
        shifted[k:top + k + 1] = dist[:top + 1]
        dist = 0.5 * (dist + shifted)
        top += int(k)
    return dist


def wilcoxon_paired(before: Sequence[float], after: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired samples; zero differences are dropped (Wilcox's zero method) and the
    p-values come from the exact permutation distribution of W+ given the observed mid-ranks (ties handled exactly).

    scipy's default silently switches to the normal approximation as soon as a zero difference is present, which
    moves p a lot when few differences are non-zero (five +1/+2 differences among 30 pairs: 0.038 there, exactly
    2/32 = 0.0625 here). Above EXACT_MAX_N non-zero differences the normal approximation with tie correction is used
    (`method` says which). Returns the two-sided p-value and the one-sided p-value for "before > after"
    (translation removes lesions). When every difference is zero the test is undefined: p-values are None and `note`
    says so (no evidence of change is not the same as p = 1 from a test).
    """
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape:
        raise ValueError(f"wilcoxon_paired: before and after differ in length ({len(b)} vs {len(a)})")
    d = b - a
    nz = d[d != 0]
    out: dict[str, Any] = {"n": int(len(d)), "n_nonzero": int(len(nz)),
                           "median_before": float(np.median(b)) if len(b) else None,
                           "median_after": float(np.median(a)) if len(a) else None,
                           "mean_before": float(b.mean()) if len(b) else None,
                           "mean_after": float(a.mean()) if len(a) else None,
                           "statistic": None, "p_two_sided": None, "p_greater": None, "method": None,
                           "zeros": "dropped (Wilcox); the test conditions on the non-zero differences", "note": ""}
    if len(nz) == 0:
        out["note"] = "all paired differences are zero: the signed-rank test is undefined (no change detected)"
        return out
    ranks = sps.rankdata(np.abs(nz))  # mid-ranks: tied values share the mean of the ranks they span
    w_plus = float(ranks[nz > 0].sum())
    out["statistic"] = w_plus  # W+ = sum of the ranks of the positive differences (before > after)
    if len(nz) <= EXACT_MAX_N:
        doubled = np.rint(2 * ranks).astype(np.int64)
        dist = signed_rank_null(doubled)
        k = np.arange(len(dist))
        obs = int(round(2 * w_plus))
        centre = doubled.sum() / 2.0
        p_greater = float(dist[k >= obs].sum())
        p_two = float(dist[np.abs(k - centre) >= abs(obs - centre) - 1e-9].sum())
        out.update(p_two_sided=min(1.0, p_two), p_greater=min(1.0, p_greater), method="exact")
    else:
        n = len(nz)
        mu = n * (n + 1) / 4.0
        _, counts = np.unique(np.abs(nz), return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24.0 - (counts**3 - counts).sum() / 48.0
        z = (w_plus - mu) / math.sqrt(var) if var > 0 else 0.0
        out.update(p_two_sided=float(min(1.0, 2 * sps.norm.sf(abs(z)))), p_greater=float(sps.norm.sf(z)),
                   method="normal approximation with tie correction")
    return out


# --------------------------------------------------------------------------------------------------------------------
# 95 % intervals
# --------------------------------------------------------------------------------------------------------------------
N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values: Any, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """Mean and percentile bootstrap interval of per-image values, over images and, with several seeds, over seeds.

    `values`: (N,) per-image values, or (S, N) per seed and image (the same N images under each seed). Each replicate
    draws S seeds and N images with replacement (a two-stage bootstrap; images stay paired across seeds) and takes
    the mean. Non-finite values are left out of every mean. Returns {"mean", "lo", "hi", "n", "seeds", "level",
    "n_boot", "method"}; lo/hi are None with fewer than 2 finite images.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None]
    s, n = v.shape
    finite = np.isfinite(v)
    n_ok = int(finite.all(axis=0).sum()) if s > 1 else int(finite.sum())
    out: dict[str, Any] = {"mean": None, "lo": None, "hi": None, "n": n_ok, "seeds": int(s), "level": level,
                           "n_boot": n_boot, "method": "percentile bootstrap over images" +
                           (" and seeds (two-stage)" if s > 1 else "")}
    if not finite.any():
        return out
    out["mean"] = float(np.nanmean(np.where(finite, v, np.nan)))
    if n_ok < 2:
        return out
    rng = np.random.default_rng(seed)
    vv = np.where(finite, v, np.nan)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, np.int64)
        cols = rng.integers(0, n, n)
        stats[i] = np.nanmean(vv[np.ix_(rows, cols)])
    alpha = (1 - level) / 2
    out["lo"], out["hi"] = (float(x) for x in np.nanquantile(stats, [alpha, 1 - alpha]))
    return out


def ratio_of_means_ci(numerator: Any, denominator: Any, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> dict[str, Any]:
    """mean(numerator) / mean(denominator) with a percentile bootstrap interval, for two disjoint image sets scored by
    the same models (e.g. the mean mask on normals over that on opacity images: Eq. 4 wants it at most a quarter).

    `numerator`: (Nn,) or (S, Nn), `denominator`: (Nd,) or (S, Nd), row s = seed s of the same model. Each replicate
    draws S seeds with replacement (the same draw for both sets: a seed is one model) and, independently, Nn and Nd
    images; non-finite values are left out. Returns {"value", "lo", "hi", "n_numerator", "n_denominator", "seeds",
    "level", "n_boot", "method"}; value is None when the denominator's mean is not positive, lo/hi None with fewer
    than 2 finite images on either side."""
    a = np.atleast_2d(np.asarray(numerator, dtype=np.float64))
    b = np.atleast_2d(np.asarray(denominator, dtype=np.float64))
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"ratio_of_means_ci: {a.shape[0]} seeds in the numerator, {b.shape[0]} in the denominator")
    s = a.shape[0]
    a, b = np.where(np.isfinite(a), a, np.nan), np.where(np.isfinite(b), b, np.nan)
    na, nb = int(np.isfinite(a).any(axis=0).sum()), int(np.isfinite(b).any(axis=0).sum())
    out: dict[str, Any] = {"value": None, "lo": None, "hi": None, "n_numerator": na, "n_denominator": nb,
                           "seeds": int(s), "level": level, "n_boot": n_boot,
                           "method": "percentile bootstrap of the ratio of means over images (each set drawn "
                                     "independently)" + (" and seeds (one draw for both sets)" if s > 1 else "")}
    if na == 0 or nb == 0 or not np.nanmean(b) > 0:
        return out
    out["value"] = float(np.nanmean(a) / np.nanmean(b))
    if na < 2 or nb < 2:
        return out
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, np.int64)
        den = np.nanmean(b[np.ix_(rows, rng.integers(0, b.shape[1], b.shape[1]))])
        num = np.nanmean(a[np.ix_(rows, rng.integers(0, a.shape[1], a.shape[1]))])
        stats[i] = num / den if den > 0 else np.nan
    alpha = (1 - level) / 2
    out["lo"], out["hi"] = (float(x) for x in np.nanquantile(stats, [alpha, 1 - alpha]))
    return out


def paired_difference(method: Any, reference: Any, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Per-image paired comparison of a metric: mean difference (method - reference) with its bootstrap interval,
    and the exact Wilcoxon test on the seed-averaged per-image values. (N,) or (S, N) for `method`; (N,) or (S, N)
    for `reference` (broadcast over seeds)."""
    m = np.atleast_2d(np.asarray(method, dtype=np.float64))
    r = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    diff = m - r
    ci = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    ok = np.isfinite(diff).all(axis=0)
    test = wilcoxon_paired(np.nanmean(m, axis=0)[ok], np.nanmean(np.broadcast_to(r, m.shape), axis=0)[ok])
    return {"diff": ci, "wilcoxon_p_two_sided": test["p_two_sided"], "wilcoxon_method": test["method"],
            "n": int(ok.sum())}


def basic_bootstrap_interval(point: float, replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The basic (reverse-percentile) bootstrap interval [2 t - q_hi, 2 t - q_lo]: for set-level statistics with an
    N-dependent bias (FID, KID), resampling with replacement shifts every replicate in one direction; the basic
    interval reflects that shift back around the point estimate."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    alpha = (1 - level) / 2
    q_lo, q_hi = np.quantile(r, [alpha, 1 - alpha])
    return float(2 * point - q_hi), float(2 * point - q_lo)
