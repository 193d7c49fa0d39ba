"""eval/localisation.py: does the prior point at the opacity? Each map against an independent computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from eval.localisation import class_activation_maps, localisation, map_auroc, prior_maps
from pipeline.data.canonical import NIH14, OPACITY_LABELS
from pipeline.prior import PriorNet


def tiny_prior() -> PriorNet:
    torch.manual_seed(0)
    return PriorNet(input_size=64).eval()


def test_map_auroc_is_one_for_the_truth_zero_for_its_inverse_and_skips_images_without_both_classes():
    truth = torch.zeros(3, 8, 8, dtype=torch.bool)
    truth[0, 2:4, 2:4] = True
    truth[1, 5:, :] = True  # image 2 has no opacity: undefined, left out
    maps = truth.float() + 0.01 * torch.rand(3, 8, 8)
    for m, expected in ((maps, 1.0), (-maps, 0.0), (torch.zeros(3, 8, 8), 0.5)):  # zeros: all ties
        out = map_auroc(m, truth)
        assert (out["mean"], out["lo"], out["hi"], out["n"]) == (expected, expected, expected, 2)
    maps[1] = -maps[1]  # image 1 now ranks its opacity last: mean 0.5, the interval spans both images' values
    out = map_auroc(maps, truth)
    assert out["mean"] == 0.5 and out["lo"] == 0.0 and out["hi"] == 1.0


def test_class_activation_maps_average_to_the_logits():
    """Global average pooling is linear, so a label's CAM averaged over positions plus its bias is its logit: the
    CAM is computed from the same features and weights as the prediction (not from another layer or label)."""
    net = tiny_prior()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    idx = [NIH14.index(n) for n in OPACITY_LABELS]
    with torch.no_grad():
        cams = class_activation_maps(net, net.features(x), idx)
        logits = net(x)[:, idx]
    assert cams.shape == (2, len(idx), 2, 2)
    assert torch.allclose(cams.mean((2, 3)) + net.densenet.classifier.bias[idx], logits, atol=1e-5)


def test_saliency_is_the_input_gradient_of_the_opacity_logits():
    """Against central finite differences in float64 at four pixels (smoothing off)."""
    net = tiny_prior().double()
    x = (torch.rand(1, 1, 64, 64, dtype=torch.float64) * 2 - 1)
    idx = [NIH14.index(n) for n in OPACITY_LABELS]
    sal = prior_maps(net, x, list(OPACITY_LABELS), smooth=1)["saliency"]
    eps = 1e-6
    for i, j in [(5, 7), (20, 40), (33, 33), (60, 2)]:
        e = torch.zeros_like(x)
        e[0, 0, i, j] = eps
        with torch.no_grad():
            fd = (net(x + e)[:, idx].sum() - net(x - e)[:, idx].sum()) / (2 * eps)
        assert abs(float(sal[0, i, j]) - abs(float(fd))) <= 1e-6 + 1e-4 * abs(float(fd)), (i, j)


def test_localisation_scores_every_map_on_the_images_with_an_opacity():
    """A synthetic opacity that is the brightest region: the intensity map finds it (AUROC 1), which also checks
    that the truth is read in the images' orientation; the prior's maps are defined on the same images."""
    net = tiny_prior()
    images = torch.full((4, 1, 64, 64), -0.5)
    truth = torch.zeros(4, 1, 64, 64, dtype=torch.bool)
    for k in range(4):
        truth[k, 0, 10 + 8 * k:26 + 8 * k, 12:30] = True
    images[truth] = 0.9
    out = localisation(net, images, truth, list(OPACITY_LABELS), batch_size=3)
    assert out["n_images"] == 4 and out["intensity"]["mean"] == 1.0
    # the image-blind reference: the opacity frequency at each position, scored per image (scipy's Mann-Whitney U)
    freq = truth[:, 0].float().mean(0).numpy()
    by_hand = [mannwhitneyu(freq[t], freq[~t]).statistic / (t.sum() * (~t).sum()) for t in truth[:, 0].numpy()]
    assert out["position"]["mean"] == pytest.approx(float(np.mean(by_hand)), rel=1e-9)
    assert out["position"]["mean"] < 1.0  # the boxes move: position alone cannot find them
    assert all(0.0 <= out[k]["lo"] <= out[k]["mean"] <= out[k]["hi"] <= 1.0 for k in ("cam", "saliency"))


def test_weak_label_localiser_finds_a_blob_from_domain_labels_alone_and_not_untrained():
    """The data-localisability reference: trained only on "has a blob" vs "has none", its pixel map finds the blob
    (the synthetic task of ours/sanity.py); the same net untrained does not, so the score comes from the training."""
    from eval.localisation import weak_label_localisation, weak_label_localiser
    from ours.sanity import blob_set

    train, test = blob_set(128, seed=0), blob_set(32, seed=1)
    scores = {}
    for steps in (0, 300):
        net = weak_label_localiser(train.a, train.b, steps=steps, fraction=0.2, width=16, batch_size=8)
        scores[steps] = weak_label_localisation(net, test.a, test.blob, test.b, fraction=0.2)
    trained, untrained = scores[300], scores[0]
    assert trained["n_images"] == 32 and trained["n_normals"] == 32
    assert trained["pixel"]["mean"] >= 0.9, trained
    assert trained["image"] >= 0.9, trained
    assert untrained["pixel"]["mean"] < 0.8, untrained
    assert trained["pixel"]["mean"] > trained["position"]["mean"] + 0.1, trained  # it looks at each image
    lo, hi = trained["pixel"]["lo"], trained["pixel"]["hi"]
    assert lo <= trained["pixel"]["mean"] <= hi
