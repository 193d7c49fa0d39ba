"""Paired metrics on the DRR benchmark (eval/README.md; beyond the paper): the clean twin is hidden ground truth.

For each opacity image x with twin t (the same rendering without findings), true opacity mask O and lung mask L, and
its translation y = G(x) with activation mask m (all intensities scaled to [0, 1]):
- PSNR and SSIM of y vs t, over the whole image and over the lung field ("before" = the same for x vs t);
- residual opacity: mean |y - t| inside O ("after") vs mean |x - t| inside O ("before"), and their ratio;
- change outside the findings: mean |y - x| outside O (anatomy that should be left alone);
- activation-mask AUROC of m against O (pixels of all opacity images pooled) and the best IoU of {m >= level} over
  every 8-bit level;
and for each normal image z: mean |G(z) - z| (a translator should leave normals alone) and the mean mask value
(per image, so that the mask's area on normals over that on opacity images, Eq. 4's target, gets an interval).

PSNR = 10 log10(1 / MSE) per image (data range 1), averaged over images (identical images: infinite, left out and
counted). SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, over the
valid window positions (no padding); the lung-field SSIM averages the SSIM map over window centres inside the lungs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.auroc import auroc_counts, position_floor_counts
from pipeline.auroc import position_floor  # noqa: F401  (the floor lives with the one AUROC; used as paired.position_floor)

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
PSNR_CAP = 100.0  # dB, per-image values only: an exact reconstruction (the oracle) has infinite PSNR


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1]."""
    return np.asarray(images, dtype=np.float64) / 255.0


def psnr(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image PSNR in dB of (N, H, W) arrays in [0, 1], optionally over the pixels of a bool mask."""
    err = (np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2
    if mask is None:
        mse = err.reshape(len(err), -1).mean(1)
    else:
        m = mask.reshape(len(mask), -1).astype(bool)
        e = err.reshape(len(err), -1)
        mse = np.array([e[i][m[i]].mean() if m[i].any() else np.nan for i in range(len(e))])
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def _gaussian_window() -> torch.Tensor:
    r = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-r**2 / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, 11, 11)


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map (N, H-10, W-10) of (N, H, W) arrays in [0, 1] (valid window positions)."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    a = torch.from_numpy(np.asarray(x, np.float64))[:, None]
    b = torch.from_numpy(np.asarray(y, np.float64))[:, None]
    w = _gaussian_window()
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s[:, 0].numpy()


def ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image mean SSIM; with a mask, over the window centres inside it (NaN when none is, or when the image is
    smaller than the 11x11 window)."""
    if min(np.shape(x)[-2:]) < SSIM_WINDOW:
        return np.full(len(x), np.nan)
    s = ssim_map(x, y)
    if mask is None:
        return s.reshape(len(s), -1).mean(1)
    h = (SSIM_WINDOW - 1) // 2
    centres = np.asarray(mask, bool)[:, h:h + s.shape[1], h:h + s.shape[2]]
    return np.array([s[i][centres[i]].mean() if centres[i].any() else np.nan for i in range(len(s))])


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image mean of (N, ...) values over the pixels of a bool mask (NaN where the mask is empty)."""
    d = np.asarray(values, np.float64).reshape(len(values), -1)
    m = np.asarray(mask, bool).reshape(len(mask), -1)
    return np.array([d[i][m[i]].mean() if m[i].any() else np.nan for i in range(len(d))])


def masked_abs_diff(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image mean |x - y| over the pixels of a bool mask (NaN where the mask is empty)."""
    return _masked_mean(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), mask)


def masked_signed_diff(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image mean (x - y) over the pixels of a bool mask (NaN where the mask is empty): the signed excess.

    Inside the true opacity, x - twin is the opacity's added brightness (> 0 on the DRR benchmark); y - twin after a
    translation says how much of it is left (0: the twin's level; < 0: darker than the twin)."""
    return _masked_mean(np.asarray(x, np.float64) - np.asarray(y, np.float64), mask)


def masked_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image Pearson r of x and y over the pixels of a bool mask (NaN with < 3 pixels or a constant side).

    Inside the true opacity, r(y, twin) says how much of the anatomy under the opacity the output keeps: a
    translation that restores the brightness but paints a generic lung there has a small signed excess and a low r."""
    xs = np.asarray(x, np.float64).reshape(len(x), -1)
    ys = np.asarray(y, np.float64).reshape(len(y), -1)
    m = np.asarray(mask, bool).reshape(len(mask), -1)
    out = np.full(len(xs), np.nan)
    for i in range(len(xs)):
        a, b = xs[i][m[i]], ys[i][m[i]]
        if len(a) < 3:
            continue
        a, b = a - a.mean(), b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 0:
            out[i] = float((a * b).sum() / den)
    return out


def level_histograms(values_u8: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each 8-bit level among positive and negative pixels."""
    v = np.asarray(values_u8, np.uint8).ravel()
    t = np.asarray(truth, bool).ravel()
    return np.bincount(v[t], minlength=256).astype(np.float64), np.bincount(v[~t], minlength=256).astype(np.float64)


def auroc_from_levels(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Exact AUROC of 8-bit scores from level histograms: P(pos > neg) + 0.5 P(tie) (Mann-Whitney U / n1 n0)."""
    return auroc_counts(np.arange(len(pos)), pos, neg)


def best_iou_from_levels(pos: np.ndarray, neg: np.ndarray) -> tuple[float | None, int | None]:
    """max over levels L of IoU({value >= L}, truth) and the arg-max level (0..255)."""
    if pos.sum() == 0:
        return None, None
    tp = np.cumsum(pos[::-1])[::-1]  # positives with value >= L
    fp = np.cumsum(neg[::-1])[::-1]
    fn = pos.sum() - tp
    iou = tp / (tp + fp + fn)
    best = int(np.argmax(iou))
    return float(iou[best]), best


# --------------------------------------------------------------------------------------------------------------------
# Does the mask localise the opacity beyond where opacities usually are?
# --------------------------------------------------------------------------------------------------------------------
REGIONS = ("image", "lung_field")


def localisation_region(opacity: np.ndarray, lungs: np.ndarray, name: str) -> np.ndarray:
    """The pixels a localisation AUROC ranks: every pixel, or the lung field (lung mask or true opacity: an opacity
    such as an effusion may reach outside the segmented lung)."""
    o = np.asarray(opacity, bool)
    return np.ones_like(o) if name == "image" else (np.asarray(lungs, bool) | o)


def mask_localisation(masks: list[np.ndarray], opacity: np.ndarray, lungs: np.ndarray, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Pooled pixel AUROC of the activation mask against the true opacity, beside the position floor, over the whole
    image and over the lung field, with 95 % percentile bootstrap intervals.

    `masks`: one uint8 (N, H, W) array per training seed (the same N opacity images); `opacity`, `lungs`: bool
    (N, H, W). For each region: "mask" (mean over seeds of the pooled AUROC), "floor" (position_floor on the same
    images) and "margin" (mask - floor): {"value", "lo", "hi"}; each bootstrap replicate draws seeds and images with
    replacement (two-stage, images paired across seeds) and recomputes all three. "beyond_position": the margin's
    interval lies above 0 (the mask ranks opacity pixels higher than any image-blind map could). "per_seed": each
    seed's pooled AUROC on all images, in the order of `masks`."""
    o = np.asarray(opacity, bool)
    n, s = len(o), len(masks)
    alpha = (1 - level) / 2
    out: dict[str, Any] = {"n": int(n), "seeds": int(s), "n_boot": int(n_boot), "level": level,
                           "method": "pooled pixel AUROC; percentile bootstrap over images" +
                                     (" and seeds (two-stage)" if s > 1 else "")}
    rng = np.random.default_rng(seed)
    draws = [(rng.integers(0, s, s), np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(n_boot)]
    for name in REGIONS:
        r = localisation_region(o, lungs, name)
        # per seed and image: 8-bit level histograms of the mask over opacity / background pixels of the region
        hp = np.zeros((s, n, 256))
        hn = np.zeros((s, n, 256))
        for k, m in enumerate(masks):
            m = np.asarray(m, np.uint8)
            for i in range(n):
                hp[k, i] = np.bincount(m[i][o[i] & r[i]], minlength=256)
                hn[k, i] = np.bincount(m[i][~o[i] & r[i]], minlength=256)
        levels = np.arange(256)
        pos_at = (o & r).reshape(n, -1).astype(np.float32)  # (N, H*W): which positions of image i count as opacity
        neg_at = (~o & r).reshape(n, -1).astype(np.float32)

        def stats(seeds: np.ndarray, w: np.ndarray, per_seed: list | None = None) -> tuple[float, float]:
            if per_seed is None:
                per_seed = [auroc_counts(levels, w @ hp[k], w @ hn[k]) for k in seeds]
            floor = position_floor_counts(w.astype(np.float32) @ pos_at, w.astype(np.float32) @ neg_at)
            if floor is None or any(v is None for v in per_seed):
                return np.nan, np.nan
            return float(np.mean(per_seed)), floor

        full = [auroc_counts(levels, hp[k].sum(0), hn[k].sum(0)) for k in range(s)]  # each seed, all images
        mask, floor = stats(np.arange(s), np.ones(n), full)
        reps = np.array([stats(ks, w) for ks, w in draws]) if n_boot else np.empty((0, 2))

        def interval(point: float, values: np.ndarray) -> dict[str, Any]:
            v = values[np.isfinite(values)]
            lo, hi = (float(x) for x in np.quantile(v, [alpha, 1 - alpha])) if len(v) and n > 1 else (None, None)
            return {"value": None if not np.isfinite(point) else float(point), "lo": lo, "hi": hi}

        margin = interval(mask - floor, reps[:, 0] - reps[:, 1]) if n_boot else {"value": mask - floor}
        out[name] = {"mask": interval(mask, reps[:, 0]), "floor": interval(floor, reps[:, 1]), "margin": margin,
                     "beyond_position": bool(margin.get("lo") is not None and margin["lo"] > 0),
                     "per_seed": full}
    return out


def _list(v: np.ndarray) -> list[float | None]:
    """Per-image values for the metric file: NaN and +-inf (identical images) become None."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(v, np.float64)]


def _mean(v: np.ndarray) -> float | None:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def image_quality(images: np.ndarray, twins: np.ndarray, lungs: np.ndarray) -> dict[str, Any]:
    """PSNR/SSIM (whole image and lung field) of uint8 images vs their uint8 twins."""
    x, t = to_unit(images), to_unit(twins)
    p, p_lung = psnr(x, t), psnr(x, t, lungs)
    return {"psnr": _mean(p), "psnr_lung": _mean(p_lung), "psnr_identical": int(np.isinf(p).sum()),
            "ssim": _mean(ssim(x, t)), "ssim_lung": _mean(ssim(x, t, lungs))}


def paired_opacity_metrics(originals: np.ndarray, twins: np.ndarray, lungs: np.ndarray, opacity: np.ndarray,
                           translated: np.ndarray | None = None, masks: np.ndarray | None = None) -> dict[str, Any]:
    """Everything measured on opacity images; uint8 (N, H, W) images/masks, bool lungs/opacity."""
    out: dict[str, Any] = {"n": int(len(originals)), "before": image_quality(originals, twins, lungs)}
    x, t = to_unit(originals), to_unit(twins)
    before = masked_abs_diff(x, t, opacity)
    out["residual_opacity_before"] = _mean(before)
    excess_before = masked_signed_diff(x, t, opacity)  # the opacity's added brightness
    corr_before = masked_corr(x, t, opacity)
    out["opacity_excess_before"], out["anatomy_corr_before"] = _mean(excess_before), _mean(corr_before)
    per_image: dict[str, list] = {"residual_opacity_before": _list(before),
                                  "psnr_before": _list(np.minimum(psnr(x, t), PSNR_CAP)),
                                  "anatomy_corr_before": _list(corr_before)}
    if translated is not None:
        y = to_unit(translated)
        after = masked_abs_diff(y, t, opacity)
        out["after"] = image_quality(translated, twins, lungs)
        out["residual_opacity_after"] = _mean(after)
        ok = np.isfinite(before) & np.isfinite(after) & (before > 0)
        out["residual_opacity_ratio"] = _mean(after[ok] / before[ok]) if ok.any() else None
        outside = masked_abs_diff(y, x, ~np.asarray(opacity, bool))
        out["change_outside_opacity"] = _mean(outside)
        # the residual split in two: the brightness left (signed, 1 = Identity, 0 = the twin's level) and the anatomy
        # kept under the opacity (r with the twin; the input's r is anatomy_corr_before)
        bright = np.isfinite(excess_before) & (excess_before > 0)
        excess = np.where(bright, masked_signed_diff(y, t, opacity) / np.where(bright, excess_before, 1), np.nan)
        corr = masked_corr(y, t, opacity)
        out["opacity_excess_ratio"], out["anatomy_corr"] = _mean(excess), _mean(corr)
        per_image.update(residual_opacity_after=_list(after),
                         opacity_excess_ratio=_list(excess), anatomy_corr=_list(corr),
                         residual_opacity_ratio=_list(np.where(ok, after / np.where(before > 0, before, 1), np.nan)),
                         change_outside_opacity=_list(outside),
                         psnr_after=_list(np.minimum(psnr(y, t), PSNR_CAP)))
    out["per_image"] = per_image
    if masks is not None:
        pos, neg = level_histograms(masks, opacity)
        iou, level = best_iou_from_levels(pos, neg)
        out["mask_auroc"] = auroc_from_levels(pos, neg)
        out["mask_best_iou"] = iou
        out["mean_mask"] = float(to_unit(masks).mean())  # the mask's area on opacity images (vs normals: Eq. 4)
        per_image["mean_mask"] = _list(to_unit(masks).reshape(len(masks), -1).mean(1))
        out["mask_best_threshold"] = None if level is None else level / 255.0
    return out


def normal_change_metrics(originals: np.ndarray, translated: np.ndarray,
                          masks: np.ndarray | None = None) -> dict[str, Any]:
    """How much a translator changes normal images (it should not): mean |G(z) - z| in [0, 1] units, PSNR, masks."""
    z, y = to_unit(originals), to_unit(translated)
    diff = np.abs(y - z).reshape(len(z), -1).mean(1)
    p = psnr(y, z)
    out = {"n": int(len(z)), "mean_abs_change": _mean(diff), "psnr_vs_input": _mean(p),
           "psnr_identical": int(np.isinf(p).sum())}
    out["per_image"] = {"mean_abs_change": _list(diff)}
    if masks is not None:
        out["mean_mask"] = float(to_unit(masks).mean())
        out["per_image"]["mean_mask"] = _list(to_unit(masks).reshape(len(masks), -1).mean(1))
    return out
