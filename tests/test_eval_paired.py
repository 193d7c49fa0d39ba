"""Paired DRR metrics against independent computations: PSNR by hand, SSIM against a loop-based reference of Wang et
al. (2004), AUROC against scipy's Mann-Whitney U, best IoU against brute force, residual opacity by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from eval import paired
from eval.stats import auroc
from pipeline.auroc import auroc_counts


def test_psnr_by_hand():
    x = np.zeros((2, 8, 8))
    y = np.full((2, 8, 8), 0.1)
    y[1] = 0.01
    assert paired.psnr(x, y) == pytest.approx([20.0, 40.0])  # 10 log10(1 / 0.01), 10 log10(1 / 1e-4)
    mask = np.zeros((2, 8, 8), bool)
    mask[:, :2] = True
    y2 = y.copy()
    y2[:, 2:] = 0.5  # outside the mask: ignored by the masked PSNR
    assert paired.psnr(x, y2, mask) == pytest.approx([20.0, 40.0])
    assert np.isinf(paired.psnr(x, x)).all()


def ssim_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map by explicit loops over windows: Gaussian 11x11 weights (sigma 1.5), C1 = (0.01)^2, C2 = (0.03)^2."""
    r = np.arange(11) - 5
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    h, wd = a.shape
    out = np.zeros((h - 10, wd - 10))
    for i in range(h - 10):
        for j in range(wd - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            out[i, j] = ((2 * ma * mb + 1e-4) * (2 * cov + 9e-4)) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4))
    return out


def test_ssim_matches_loop_reference():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 18))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ref = np.stack([ssim_reference(a[i], b[i]) for i in range(2)])
    assert np.allclose(paired.ssim_map(a, b), ref, atol=1e-10)
    assert paired.ssim(a, b) == pytest.approx(ref.reshape(2, -1).mean(1), abs=1e-10)
    mask = np.zeros(a.shape, bool)
    mask[:, 7:10, 6:12] = True  # window centres (7..9, 6..11) -> map rows 2..4, cols 1..6
    assert paired.ssim(a, b, mask) == pytest.approx(ref[:, 2:5, 1:7].reshape(2, -1).mean(1), abs=1e-10)
    assert paired.ssim(a, a) == pytest.approx([1.0, 1.0])


def test_auroc_matches_mann_whitney():
    rng = np.random.default_rng(1)
    truth = rng.random((3, 10, 10)) < 0.3
    values = np.clip(rng.normal(100, 40, truth.shape) + 60 * truth, 0, 255).astype(np.uint8)  # 8-bit: many ties
    u = sps.mannwhitneyu(values[truth], values[~truth]).statistic
    expected = u / (truth.sum() * (~truth).sum())
    pos, neg = paired.level_histograms(values, truth)
    assert paired.auroc_from_levels(pos, neg) == pytest.approx(expected, rel=1e-12)
    assert auroc(values, truth) == pytest.approx(expected, rel=1e-12)
    assert paired.auroc_from_levels(pos, np.zeros(256)) is None


def test_best_iou_matches_brute_force():
    rng = np.random.default_rng(2)
    truth = rng.random((2, 12, 12)) < 0.25
    values = np.clip(rng.normal(90, 50, truth.shape) + 80 * truth, 0, 255).astype(np.uint8)
    brute = [((values >= t) & truth).sum() / ((values >= t) | truth).sum() for t in range(256)]
    iou, level = paired.best_iou_from_levels(*paired.level_histograms(values, truth))
    assert iou == pytest.approx(max(brute)) and brute[level] == pytest.approx(max(brute))


def test_residual_opacity_and_normal_change_by_hand():
    twin = np.full((1, 4, 4), 100, np.uint8)
    original = twin.copy()
    original[0, :2, :2] = 200  # the opacity: +100 on 4 pixels
    opacity = original > 150
    lungs = np.ones_like(opacity)
    translated = twin.copy()
    translated[0, :2, :2] = 150  # half of it removed
    translated[0, 3, 3] = 151  # one pixel outside the finding changed by 51
    res = paired.paired_opacity_metrics(original, twin, lungs, opacity, translated,
                                        masks=(opacity * 255).astype(np.uint8))
    assert res["residual_opacity_before"] == pytest.approx(100 / 255)
    assert res["residual_opacity_after"] == pytest.approx(50 / 255)
    assert res["residual_opacity_ratio"] == pytest.approx(0.5)
    assert res["change_outside_opacity"] == pytest.approx(51 / 255 / 12)
    assert res["mask_auroc"] == 1.0 and res["mask_best_iou"] == 1.0
    assert res["after"]["psnr"] == pytest.approx(10 * np.log10(1 / ((4 * 50**2 + 51**2) / 255**2 / 16)))
    assert res["after"]["ssim"] is None  # 4x4 is smaller than the 11x11 SSIM window: undefined, not invented
    normal = paired.normal_change_metrics(twin, translated)
    assert normal["mean_abs_change"] == pytest.approx((4 * 50 + 51) / 255 / 16)


def test_residual_split_into_brightness_left_and_anatomy_kept():
    """The two parts of the residual against independent computations: the signed excess by hand, Pearson r against
    scipy per image; a translation that takes the brightness away but paints a flat lung keeps no anatomy."""
    rng = np.random.default_rng(5)
    twin = rng.integers(60, 140, (3, 8, 8)).astype(np.uint8)  # textured lung
    opacity = np.zeros((3, 8, 8), bool)
    opacity[:, 2:6, 2:6] = True
    original = twin.copy()
    original[opacity] += 80  # +80 levels of brightness on 16 pixels per image
    lungs = np.ones_like(opacity)
    flat = original.copy()  # the brightness taken away, the texture under it replaced by the twin's mean level
    for i in range(3):
        flat[i][opacity[i]] = int(round(twin[i][opacity[i]].mean()))
    half = original.copy()
    half[opacity] -= 40  # half the brightness taken away, texture kept
    res = paired.paired_opacity_metrics(original, twin, lungs, opacity, half)
    assert res["opacity_excess_before"] == pytest.approx(80 / 255)
    assert res["opacity_excess_ratio"] == pytest.approx(0.5)
    assert res["anatomy_corr"] == pytest.approx(1.0) and res["anatomy_corr_before"] == pytest.approx(1.0)
    res = paired.paired_opacity_metrics(original, twin, lungs, opacity, flat)
    assert abs(res["opacity_excess_ratio"]) < 0.02  # the twin's mean level (rounded to an 8-bit level)
    assert np.isnan(paired.masked_corr(flat / 255, twin / 255, opacity)).all()  # a constant output: r undefined
    assert res["anatomy_corr"] is None
    noisy = np.clip(twin.astype(int) + rng.integers(-40, 41, twin.shape), 0, 255).astype(np.uint8)
    r = paired.masked_corr(noisy / 255, twin / 255, opacity)
    expected = [sps.pearsonr(noisy[i][opacity[i]].astype(float), twin[i][opacity[i]].astype(float))[0]
                for i in range(3)]
    assert r == pytest.approx(expected, rel=1e-9)
    assert paired.masked_signed_diff(noisy / 255, twin / 255, opacity) == pytest.approx(
        [(noisy[i][opacity[i]].astype(float) - twin[i][opacity[i]]).mean() / 255 for i in range(3)])
    empty = np.zeros_like(opacity)
    assert np.isnan(paired.masked_signed_diff(noisy / 255, twin / 255, empty)).all()


def test_auroc_counts_equals_the_rank_auroc_of_the_expanded_samples():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 40).astype(float) / 5  # few distinct values: ties across groups
    pos, neg = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    expanded = np.concatenate([np.repeat(scores, pos), np.repeat(scores, neg)])
    labels = np.concatenate([np.ones(pos.sum(), bool), np.zeros(neg.sum(), bool)])
    u = sps.mannwhitneyu(expanded[labels], expanded[~labels]).statistic
    assert auroc_counts(scores, pos, neg) == pytest.approx(u / (pos.sum() * neg.sum()), rel=1e-12)
    assert auroc_counts(scores, pos, neg) == pytest.approx(auroc(expanded, labels), rel=1e-12)
    assert auroc_counts(scores, pos, np.zeros(40)) is None


def _lung_and_opacity(n: int = 30, size: int = 24, seed: int = 4):
    """Two fixed lung fields with opacities of random size at random places inside them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lungs = np.zeros((n, size, size), bool)
    lungs[:, 3:21, 3:10] = True
    lungs[:, 3:21, 14:21] = True
    opacity = np.zeros_like(lungs)
    for i in range(n):
        cy, cx = rng.integers(5, 19), rng.choice([6, 17]) + rng.integers(-2, 3)
        opacity[i] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(2, 5) ** 2) & lungs[i]
    return lungs, opacity


def test_position_floor_is_the_frequency_maps_auroc_and_no_image_blind_map_beats_it():
    lungs, opacity = _lung_and_opacity()
    field = paired.localisation_region(opacity, lungs, "lung_field")
    freq = opacity.mean(0)
    assert paired.position_floor(opacity) == pytest.approx(auroc(np.broadcast_to(freq, opacity.shape), opacity))
    in_field = (opacity & field).sum(0) / np.maximum(field.sum(0), 1)
    assert paired.position_floor(opacity, field) == pytest.approx(
        auroc(np.broadcast_to(in_field, opacity.shape)[field], opacity[field]))
    rng = np.random.default_rng(5)
    smooth = np.asarray(paired.F.avg_pool2d(paired.torch.from_numpy(lungs[:1].astype(np.float64))[None], 5, 1, 2)[0, 0])
    blind = [lungs[0].astype(float), smooth, freq + 0.05 * rng.random(freq.shape)] + \
            [rng.random(freq.shape) for _ in range(10)]
    for m in blind:  # any map that ignores the image, scored like a mask (pooled over the same pixels)
        assert auroc(np.broadcast_to(m, opacity.shape), opacity) <= paired.position_floor(opacity) + 1e-12
        assert auroc(np.broadcast_to(m, opacity.shape)[field], opacity[field]) <= \
            paired.position_floor(opacity, field) + 1e-12
    # the lung mask alone already scores high over the whole image: why the floor is reported beside the mask
    assert auroc(np.broadcast_to(lungs[0], opacity.shape), opacity) > 0.75


def test_mask_localisation_separates_a_mask_that_looks_from_one_that_does_not():
    lungs, opacity = _lung_and_opacity()
    looks = np.where(opacity, 200, 40).astype(np.uint8)  # follows each image's opacity
    blind = np.broadcast_to(np.round(opacity.mean(0) * 255).astype(np.uint8), opacity.shape)  # the best blind map
    good = paired.mask_localisation([looks, looks], opacity, lungs, n_boot=200)
    bad = paired.mask_localisation([blind], opacity, lungs, n_boot=200)
    for region in paired.REGIONS:
        assert good[region]["mask"]["value"] == pytest.approx(1.0)
        assert good[region]["beyond_position"] and good[region]["margin"]["lo"] > 0
        # the blind map is the floor up to 8-bit rounding; the refitted floor of each replicate is optimistic
        # (in-sample), so its margin's interval sits at or below 0
        assert not bad[region]["beyond_position"] and bad[region]["margin"]["hi"] <= 0.005
        assert bad[region]["mask"]["value"] == pytest.approx(bad[region]["floor"]["value"], abs=0.02)
    assert bad["lung_field"]["floor"]["value"] < bad["image"]["floor"]["value"]
    assert good["seeds"] == 2 and bad["n"] == len(opacity)


def test_mask_localisation_per_seed_is_each_seeds_pooled_auroc():
    lungs, opacity = _lung_and_opacity()
    rng = np.random.default_rng(6)
    masks = [np.clip(np.where(opacity, 120, 60) + rng.normal(0, s, opacity.shape), 0, 255).astype(np.uint8)
             for s in (20, 80)]  # a sharper and a noisier mask
    out = paired.mask_localisation(masks, opacity, lungs, n_boot=0)
    for region in paired.REGIONS:
        r = paired.localisation_region(opacity, lungs, region)
        expected = [auroc(m[r].astype(float), opacity[r]) for m in masks]
        assert out[region]["per_seed"] == pytest.approx(expected, rel=1e-12)
        assert out[region]["mask"]["value"] == pytest.approx(np.mean(expected), rel=1e-12)
        assert expected[0] > expected[1]  # the noise level shows: the per-seed values are not one number twice
