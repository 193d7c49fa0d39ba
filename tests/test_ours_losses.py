"""Eq. 1-8 of the paper (ours/losses.py) against hand computations on small tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ours.losses import (blend, gram_matrix, instance_norm, l_bam, l_classifier, l_feature, l_structural, l_style,
                         l_mil, l_sparse, l_total, lsgan, normalise_mask, p_repul, p_upper)
from ours.model import OPACITY_LABELS, label_filter
from pipeline.prior import NIH14


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- Eq. 1 --------------------------------------------------------------------------------------------------------
def test_mask_normalisation_maps_tanh_range_to_unit_interval():
    assert normalise_mask(t([-1.0, 0.0, 1.0, 0.5])).tolist() == [0.0, 0.5, 1.0, 0.75]


def test_eq1_blend_by_hand():
    out = t([[[[0.5, -1.0], [1.0, 0.0]]]])
    src = t([[[[1.0, 1.0], [-1.0, -0.5]]]])
    m = t([[[[0.0, 1.0], [0.25, 1.0]]]])
    # m*o + (1-m)*s: 0*0.5+1*1, 1*-1+0*1, 0.25*1+0.75*-1, 1*0+0*-0.5
    assert blend(out, m, src).flatten().tolist() == [1.0, -1.0, -0.5, 0.0]


def test_eq1_mask_all_zero_keeps_source_all_one_takes_output():
    out, src = torch.rand(2, 1, 4, 4) * 2 - 1, torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.equal(blend(out, torch.zeros(2, 1, 4, 4), src), src)
    assert torch.equal(blend(out, torch.ones(2, 1, 4, 4), src), out)


# --- Eq. 2 --------------------------------------------------------------------------------------------------------
def test_eq2_upper_penalty_by_hand():
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    # mean reduction: image 1 area 1.0 -> (1 - 0.75)^2 = 0.0625; image 2 area 0 -> 0; batch mean 0.03125
    assert p_upper(torch.cat([ones, zeros]), 0.75) == pytest.approx(0.03125)
    # area below F_upper is free
    assert p_upper(torch.full((1, 1, 2, 2), 0.5), 0.75) == 0.0
    # literal pixel sum: sum = 4 -> (4 - 0.75)^2
    assert p_upper(ones, 0.75, "sum") == pytest.approx(3.25 ** 2)
    # mask all zero: no penalty in either reduction
    assert p_upper(zeros, 0.75, "sum") == 0.0


def test_eq2_acl_reading_is_acl_gans_size_term():
    """ACL-GAN's code: ReLU(sum over pixels of (m - F_upper))^2, then / (H W): a 2x2 mask of 1.0 -> (4 x 0.25)^2 / 4."""
    ones = torch.ones(1, 1, 2, 2)
    assert p_upper(ones, 0.75, "acl") == pytest.approx((4 * 0.25) ** 2 / 4)
    # seeded, and no image with a pixel sum of (m - 0.5) near 0, where float32 cancellation would decide the test:
    # one image well above the cap, one well below (no penalty), one in between
    m = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    m = (m + torch.tensor([0.25, -0.25, 0.1]).view(3, 1, 1, 1)).clamp(0, 1)
    sums = [float((x.double() - 0.5).sum()) for x in m]
    assert sums[0] > 5 and sums[1] < -5 and sums[2] > 2, sums
    by_hand = sum(max(0.0, v) ** 2 / 64 for v in sums) / 3  # float64, by hand
    assert p_upper(m, 0.5, "acl") == pytest.approx(by_hand, rel=1e-5)


def test_lower_bound_mirrors_eq2_and_is_off_at_zero():
    from ours.losses import p_lower

    zeros, half = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    assert p_lower(zeros, 0.0) == 0.0 and p_lower(half, 0.3) == 0.0
    assert p_lower(zeros, 0.3) == pytest.approx(0.09)  # mean: (0.3 - 0)^2
    assert p_lower(zeros, 0.3, "acl") == pytest.approx((4 * 0.3) ** 2 / 4)
    assert p_lower(zeros, 0.3, "sum") == pytest.approx((4 * 0.3) ** 2)


# --- Eq. 3 --------------------------------------------------------------------------------------------------------
def _repul_by_hand(values, c=0.1, h=0.2, eps=0.01):
    return [math.pow(1.0 / (abs(v - c) + eps), h) for v in values]


def test_eq3_repulsion_by_hand_mean_and_sum():
    values = [0.1, 0.6, 1.0, 0.0]
    mask = t(values).view(1, 1, 2, 2)
    per_pixel = _repul_by_hand(values)
    assert p_repul(mask, 0.1, 0.2, 0.01) == pytest.approx(sum(per_pixel) / 4, rel=1e-6)
    assert p_repul(mask, 0.1, 0.2, 0.01, "sum") == pytest.approx(sum(per_pixel), rel=1e-6)


def test_eq3_peaks_at_f_central_and_pushes_away_from_it():
    at = p_repul(torch.full((1, 1, 1, 1), 0.1))
    assert at == pytest.approx(100.0 ** 0.2, rel=1e-6)  # (1 / eps)^F_height
    for near in (0.1 - 1e-3, 0.1 + 1e-3, 0.05, 0.2):
        assert p_repul(torch.full((1, 1, 1, 1), near)) < at
    # gradient descent moves a pixel away from F_central on either side
    m = t([0.05, 0.2]).view(1, 1, 1, 2).requires_grad_()
    p_repul(m).backward()
    g = m.grad.flatten()
    assert g[0] > 0 and g[1] < 0
    # mask all 0 and all 1: hand values
    assert p_repul(torch.zeros(1, 1, 2, 2)) == pytest.approx((1 / 0.11) ** 0.2, rel=1e-6)
    assert p_repul(torch.ones(1, 1, 2, 2)) == pytest.approx((1 / 0.91) ** 0.2, rel=1e-6)


# --- Eq. 4 --------------------------------------------------------------------------------------------------------
def test_eq4_bam_by_hand():
    opacity = torch.full((1, 1, 2, 2), 0.8)  # opacity-labelled: contributes nothing, whatever its mask
    normal1 = torch.full((1, 1, 2, 2), 0.5)
    normal2 = t([0.0, 0.0, 0.5, 0.5]).view(1, 1, 2, 2)  # mean |m| = 0.25, sum = 1.0
    masks = torch.cat([opacity, normal1, normal2])
    keep = torch.tensor([False, True, True])
    assert l_bam(masks, keep) == pytest.approx((0 + 0.5 + 0.25) / 3)
    assert l_bam(masks, keep, "sum") == pytest.approx((0 + 2.0 + 1.0) / 3)


def test_eq4_bam_is_zero_for_opacity_labelled_inputs():
    masks = torch.rand(3, 1, 4, 4) + 0.5
    assert l_bam(masks, torch.zeros(3, dtype=torch.bool)) == 0.0
    assert l_bam(torch.zeros(2, 1, 4, 4), torch.ones(2, dtype=torch.bool)) == 0.0  # all-0 masks on normals


# --- Eq. 5, 6 -----------------------------------------------------------------------------------------------------
def _in_numpy(x: np.ndarray, eps=1e-5) -> np.ndarray:
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)  # biased, as instance norm
    return (x - mean) / np.sqrt(var + eps)


def test_eq5_structural_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    b = np.array([4.0, 1.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    expected = float(((_in_numpy(a) - _in_numpy(b)) ** 2).mean())
    assert l_structural(t(a), t(b)) == pytest.approx(expected, rel=1e-5)
    # value by hand for a: mean 2.5, var 1.25 -> (x - 2.5) / sqrt(1.25)
    assert instance_norm(t(a)).flatten()[0] == pytest.approx(-1.5 / math.sqrt(1.25 + 1e-5), rel=1e-5)


def test_eq5_ignores_per_channel_gain_and_offset():
    f = torch.randn(2, 3, 4, 4)
    assert l_structural(2.0 * f + 3.0, f) == pytest.approx(0.0, abs=1e-6)
    assert l_structural(f.flip(-1), f) > 0.1


def test_eq6_style_gram_by_hand():
    f = t([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, h=1, w=2
    # F F^T = [[5, 11], [11, 25]]; default / (h w = 2), "chw" / (C h w = 4)
    assert gram_matrix(f)[0].tolist() == [[2.5, 5.5], [5.5, 12.5]]
    assert gram_matrix(f, "chw")[0].tolist() == [[1.25, 2.75], [2.75, 6.25]]
    assert l_style(f, torch.zeros_like(f)) == pytest.approx((2.5 ** 2 + 2 * 5.5 ** 2 + 12.5 ** 2) / 4)
    assert l_style(f, torch.zeros_like(f), "chw") == pytest.approx((1.25 ** 2 + 2 * 2.75 ** 2 + 6.25 ** 2) / 4)
    # the Gram matrix ignores where features are: a spatial flip has the same style
    g = torch.randn(2, 3, 4, 4)
    assert l_style(g.flip(-1), g) == pytest.approx(0.0, abs=1e-10)
    assert l_feature(t(2.0), t(4.0), 0.5) == pytest.approx(4.0)  # 0.5 * 4 + 2


# --- Eq. 7 --------------------------------------------------------------------------------------------------------
def _logits(positive: dict[str, float], default: float = -2.0) -> torch.Tensor:
    z = torch.full((1, 14), default)
    for name, value in positive.items():
        z[0, NIH14.index(name)] = value
    return z


def test_q_selects_exactly_the_configured_labels():
    q = label_filter(["Edema", "Mass"])
    assert q.nonzero().flatten().tolist() == sorted([NIH14.index("Edema"), NIH14.index("Mass")])
    q6 = label_filter(OPACITY_LABELS)
    assert {NIH14[i] for i in q6.nonzero().flatten().tolist()} == {
        "Atelectasis", "Consolidation", "Edema", "Effusion", "Infiltration", "Pneumonia"}


def test_eq7_classifier_by_hand_positive_selection():
    q = label_filter(OPACITY_LABELS)
    # source: positive for Atelectasis and Effusion (in q) and Cardiomegaly (not in q)
    source = _logits({"Atelectasis": 2.0, "Effusion": 2.0, "Cardiomegaly": 3.0})
    translated = _logits({"Atelectasis": 1.0, "Effusion": -1.0, "Cardiomegaly": 5.0, "Edema": 4.0}, default=0.0)
    # selected: Atelectasis, Effusion; BCE(1 - sigmoid(z), 1) = -log(1 - sigmoid(z)) = log(1 + e^z)
    expected = (math.log(1 + math.e ** 1.0) + math.log(1 + math.e ** -1.0)) / 2
    assert l_classifier(translated, source, q) == pytest.approx(expected, rel=1e-6)


def test_eq7_inversion_rewards_removed_findings():
    q = label_filter(OPACITY_LABELS)
    source = _logits({"Pneumonia": 4.0})
    removed = _logits({"Pneumonia": -8.0})  # translated: prior no longer sees pneumonia
    kept = _logits({"Pneumonia": 8.0})  # translated: pneumonia still there
    assert l_classifier(removed, source, q) == pytest.approx(math.log(1 + math.exp(-8.0)), rel=1e-5)
    assert l_classifier(kept, source, q) == pytest.approx(math.log(1 + math.exp(8.0)), rel=1e-5)


def test_eq7_literal_q_selection_and_empty_selection():
    q = label_filter(["Edema", "Pneumonia"])
    source = _logits({"Edema": 2.0})  # Pneumonia negative in the source
    z = _logits({"Edema": 0.5, "Pneumonia": 1.5}, default=0.0)
    # "q": Edema target 1 -> log(1 + e^0.5); Pneumonia target 0 -> BCE(1 - s(1.5), 0) = -log(s(1.5)) = log(1 + e^-1.5)
    expected = (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-1.5))) / 2
    assert l_classifier(z, source, q, select="q") == pytest.approx(expected, rel=1e-6)
    # nothing positive in the source: zero loss, still differentiable
    zt = torch.zeros(2, 14, requires_grad=True)
    loss = l_classifier(zt, torch.full((2, 14), -3.0), q)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(zt.grad) == 0


def test_eq7_threshold_is_strict_and_target_has_no_gradient():
    q = label_filter(["Edema"])
    src = torch.zeros(1, 14, requires_grad=True)  # sigmoid(0) = 0.5: not above p = 0.5
    assert l_classifier(torch.zeros(1, 14), src, q, threshold=0.5) == 0.0
    src2 = _logits({"Edema": 1.0}).requires_grad_()
    z = torch.zeros(1, 14, requires_grad=True)
    l_classifier(z, src2, q).backward()
    assert src2.grad is None and z.grad[0, NIH14.index("Edema")] == pytest.approx(0.5)  # d softplus(z)/dz = s(0)


# --- Eq. 8 and LSGAN ----------------------------------------------------------------------------------------------
def test_eq8_total_by_hand():
    terms = {k: t(v) for k, v in dict(p_upper=1.0, p_repul=2.0, bam=3.0, structural=4.0, style=5.0, classifier=6.0,
                                       adv_gan=7.0, adv_acl=8.0, rec=9.0).items()}
    # 0.01 (1 + 2) + 0.1 * 3 + 0.5 (0.5 * 5 + 4) + 0.5 * 6 + 2 (7 + 0.2 * 8) + 1 * 9
    expected = 0.03 + 0.3 + 3.25 + 3.0 + 17.2 + 9.0
    assert l_total(terms) == pytest.approx(expected, rel=1e-6)
    without_bam = {k: v for k, v in terms.items() if k != "bam"}
    assert l_total(without_bam) == pytest.approx(expected - 0.3, rel=1e-6)
    # the variant term (not in the paper) counts only with its own weight
    assert l_total({**terms, "mil": t(10.0)}) == pytest.approx(expected, rel=1e-6)
    assert l_total({**terms, "mil": t(10.0)}, lambda_mil=0.5) == pytest.approx(expected + 5.0, rel=1e-6)
    assert l_total({**terms, "cycle": t(4.0)}) == pytest.approx(expected, rel=1e-6)
    assert l_total({**terms, "cycle": t(4.0)}, lambda_cycle=2.5) == pytest.approx(expected + 10.0, rel=1e-6)
    assert l_total({**terms, "sparse": t(3.0)}) == pytest.approx(expected, rel=1e-6)
    assert l_total({**terms, "sparse": t(3.0)}, lambda_sparse=4.0) == pytest.approx(expected + 12.0, rel=1e-6)


def test_sparse_variant_by_hand():
    """L_sparse (not in the paper): the mean mask value, per image then over the batch; 0 for empty masks, 1 for
    full ones, and independent of the image count."""
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, :2, :2] = 1.0  # 4 of 16 pixels on -> 0.25
    m[1, 0, 0, 0] = 0.8  # 0.8 / 16 = 0.05
    assert l_sparse(m).item() == pytest.approx((0.25 + 0.05) / 2, rel=1e-6)
    assert l_sparse(torch.zeros(3, 1, 8, 8)).item() == 0.0 and l_sparse(torch.ones(5, 1, 8, 8)).item() == 1.0


def test_mil_variant_by_hand():
    """L_mil: BCE of each image's top-fraction mean mask (by numpy sort) against 1 (to translate) / 0 (keep)."""
    import numpy as np

    g = torch.Generator().manual_seed(7)
    on, off = torch.rand(3, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g) * 0.3
    def top(m):  # mean of the 12 largest of 64 pixels (fraction 0.2 -> int(12.8) = 12)
        return np.sort(m.reshape(len(m), -1).double().numpy(), axis=1)[:, -12:].mean(1)
    p_on, p_off = top(on), top(off)
    expected = 0.5 * (-np.log(p_on).mean() - np.log(1 - p_off).mean())
    assert l_mil(on, off, 0.2).item() == pytest.approx(expected, rel=1e-5)
    # the images to keep pooled over their own top fraction: 0.05 of 64 pixels -> the 3 largest
    p_off3 = np.sort(off.reshape(2, -1).double().numpy(), axis=1)[:, -3:].mean(1)
    expected3 = 0.5 * (-np.log(p_on).mean() - np.log(1 - p_off3).mean())
    assert l_mil(on, off, 0.2, 0.05).item() == pytest.approx(expected3, rel=1e-5) and expected3 > expected
    # it rewards a mask that is on somewhere in images to translate and off everywhere in images to keep
    ideal_on = torch.zeros(3, 1, 8, 8)
    ideal_on[:, :, :4, :4] = 1.0  # a quarter of the image: covers the top 20 %
    assert l_mil(ideal_on, torch.zeros(2, 1, 8, 8)).item() < 1e-3
    assert l_mil(torch.zeros(3, 1, 8, 8), torch.ones(2, 1, 8, 8)).item() > 9.0


def test_lsgan_sums_scales():
    outs = [torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 1, 1), -1.0)]
    assert lsgan(outs, 1.0) == pytest.approx(0.25 + 4.0)
    assert lsgan(outs, 0.0) == pytest.approx(0.25 + 1.0)
