"""Classifiers: Acc/F1/Recall/Precision against a hand-computed confusion matrix and scikit-learn; the four timm
architectures build offline with one input channel and two outputs; training runs and predicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eval import classification as cm
from eval.stats import binary_scores, mean_std


def test_scores_against_hand_computed_confusion_matrix():
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
    y_pred = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    # by hand: TP = 3 (idx 0, 1, 3), FN = 2 (2, 9), FP = 2 (5, 8), TN = 3 (4, 6, 7)
    s = binary_scores(y_true, y_pred)
    assert (s["tp"], s["fn"], s["fp"], s["tn"], s["n"]) == (3, 2, 2, 3, 10)
    assert s["acc"] == pytest.approx(6 / 10)
    assert s["precision"] == pytest.approx(3 / 5) and s["recall"] == pytest.approx(3 / 5)
    assert s["f1"] == pytest.approx(2 * 0.6 * 0.6 / 1.2)


def test_scores_match_scikit_learn_including_zero_division():
    metrics = pytest.importorskip("sklearn.metrics")  # an extra independent reference where installed
    accuracy_score, f1_score = metrics.accuracy_score, metrics.f1_score
    precision_score, recall_score = metrics.precision_score, metrics.recall_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 2, 15), rng.integers(0, 2, 15)
        s = binary_scores(y_true, y_pred)
        assert s["acc"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert s["f1"] == pytest.approx(f1_score(y_true, y_pred, zero_division=0))
        assert s["recall"] == pytest.approx(recall_score(y_true, y_pred, zero_division=0))
        assert s["precision"] == pytest.approx(precision_score(y_true, y_pred, zero_division=0))
    none = binary_scores(np.array([1, 0, 1]), np.array([0, 0, 0]))  # no predicted positives
    assert none["precision"] == 0.0 and none["f1"] == 0.0 and none["acc"] == pytest.approx(1 / 3)


def test_seed_average_uses_sample_std():
    assert mean_std([1.0, 2.0, 4.0]) == {"mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4], ddof=1)),
                                         "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


@pytest.mark.parametrize("arch", cm.ARCHITECTURES)
def test_architectures_build_offline_one_channel_two_classes(arch):
    net = cm.build_classifier(arch).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 2)


def test_train_and_predict():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, (6, 32, 32)).astype(np.uint8)
    images[3:, 8:20, 8:20] = 250  # label 1: a bright square
    labels = np.array([0, 0, 0, 1, 1, 1])
    model, log = cm.train_classifier("mobilenetv3_large_100", images, labels, iterations=2, batch_size=4, lr=1e-3,
                                     seed=0, device=torch.device("cpu"))
    assert log["n_train"] == 6 and log["n_positive"] == 3 and log["batch_size"] == 4
    pred = cm.predict(model, images, torch.device("cpu"), batch_size=4)
    assert pred.shape == (6,) and set(pred) <= {0, 1}
    s = cm.score(model, images, labels, torch.device("cpu"))
    assert s["n"] == 6 and s["tp"] + s["fn"] == 3
    with pytest.raises(Exception, match="both opacity and normal"):
        cm.train_classifier("resnet50", images, np.zeros(6), iterations=1, batch_size=2, lr=1e-3, seed=0,
                            device=torch.device("cpu"))


def test_augmentation_feeds_crops_and_flips_not_the_stored_images(monkeypatch):
    """crop_scale < 1: the network sees randomly cropped/flipped images (almost never the stored pixels) and the
    log records the setting; crop_scale = 1: it sees exactly the stored images."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (4, 32, 32)).astype(np.uint8)
    labels = np.array([0, 0, 1, 1])
    stored = cm.to_model_range(images)
    real_build = cm.build_classifier
    for scale in (1.0, 0.5):
        seen: list[torch.Tensor] = []

        def build(arch, _seen=seen):
            net = real_build(arch)
            net.register_forward_pre_hook(lambda _m, args: _seen.append(args[0].detach().clone()))
            return net

        monkeypatch.setattr(cm, "build_classifier", build)
        _, log = cm.train_classifier("resnet50", images, labels, iterations=3, batch_size=4, lr=1e-3, seed=0,
                                     device=torch.device("cpu"), crop_scale=scale)
        assert log["crop_scale"] == scale and len(seen) == 3
        verbatim = [any(torch.equal(x, s) for s in stored) for batch in seen for x in batch]
        # a crop can cover the whole image (side rounds to 32) and skip the flip: rare, never most of the batches
        assert all(verbatim) if scale == 1.0 else sum(verbatim) <= len(verbatim) // 4


def test_score_reports_the_auroc_of_the_opacity_logit_margin():
    """The classifier's competence is threshold-free: AUROC of logit(opacity) - logit(normal), counted by hand."""

    class Fixed(torch.nn.Module):  # logit margin = mean intensity of the image in [-1, 1]
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], dim=1)

    levels = np.array([10, 200, 60, 220, 120, 90], np.uint8)
    images = np.repeat(levels[:, None, None], 8, axis=1).repeat(8, axis=2)
    labels = np.array([0, 1, 0, 1, 1, 0])
    s = cm.score(Fixed(), images, labels, torch.device("cpu"))
    # positives 200, 220, 120 vs negatives 10, 60, 90: every pair ordered correctly -> 9 / 9
    assert s["auroc"] == pytest.approx(1.0) and s["acc"] == pytest.approx(5 / 6)  # 120 falls below the 0 margin
    s = cm.score(Fixed(), images, np.array([0, 1, 1, 0, 1, 0]), torch.device("cpu"))
    # positives 200, 60, 120 vs negatives 10, 220, 90: pairs won 2 + 1 + 2 = 5 of 9
    assert s["auroc"] == pytest.approx(5 / 9)
