"""The CheXNet-style prior (pipeline/prior.py): shapes, preprocessing, checkpoint layouts, AUROC, the prior stage."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from scipy.stats import mannwhitneyu
from torch import nn

from pipeline.app.prior import run_prior_stage
from pipeline.auroc import auroc, per_label_auroc
from pipeline.prior import NIH14, XRV_PATHOLOGIES, PriorError, PriorNet, convert_checkpoint, load_prior, save_prior
from pipeline.prior_params import PriorParams

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _reference_densenet(num_classes: int, in_channels: int = 3, seed: int = 0) -> nn.Module:
    """A torchvision DenseNet-121 with non-trivial BatchNorm statistics and head, in eval mode."""
    torch.manual_seed(seed)
    net = torchvision.models.densenet121(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.features.conv0 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    nn.init.normal_(net.classifier.bias, 0, 1.0)
    return net.eval()


def _imagenet_input(x: torch.Tensor) -> torch.Tensor:
    """Independent CheXNet preprocessing: [-1, 1] gray -> [0, 1] -> RGB replicate -> ImageNet normalisation."""
    x01 = (x + 1) / 2
    rgb = torch.cat([x01, x01, x01], 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def _to_legacy(key: str) -> str:
    """torchvision>=0.4 name -> torchvision<0.4 name (what arnoweng/CheXNet's model.pth.tar contains)."""
    return re.sub(r"\.(norm|relu|conv)(\d)\.", r".\1.\2.", key)


# --- the network ---------------------------------------------------------------------------------------------------
def test_features_are_1024x8x8_at_256_and_heads_have_14_outputs():
    net = PriorNet(input_size=256).eval()
    with torch.no_grad():
        x = torch.rand(1, 1, 256, 256) * 2 - 1
        assert net.features(x).shape == (1, 1024, 8, 8)
        assert net.pooled(x).shape == (1, 1024)
        logits = net(x)
        assert logits.shape == (1, 14)
        p = net.predict(x)
        assert torch.allclose(p, torch.sigmoid(logits)) and p.min() >= 0 and p.max() <= 1
        # any input size is resized to input_size first: 512 px still gives the 8x8 map of a 256 px prior
        assert net.features(torch.zeros(1, 1, 512, 512)).shape == (1, 1024, 8, 8)


def test_preprocess_replicates_and_normalises_by_hand():
    net = PriorNet(input_size=64)
    y = net.preprocess(torch.zeros(2, 1, 128, 128))  # gray 0 = 0.5 in [0, 1]; resized 128 -> 64
    assert y.shape == (2, 3, 64, 64)
    for c in range(3):
        assert y[0, c, 10, 10].item() == pytest.approx((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)
    with pytest.raises(PriorError, match="B, 1, H, W"):
        net.preprocess(torch.zeros(1, 3, 64, 64))


def test_save_and_load_prior_round_trip_frozen(tmp_path):
    net = PriorNet(input_size=64).eval()
    save_prior(net, tmp_path / "prior.pt", {"source": "test"})
    loaded = load_prior(tmp_path / "prior.pt")
    assert loaded.input_size == 64 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    with pytest.raises(PriorError, match="not found"):
        load_prior(tmp_path / "missing.pt")
    torch.save({"features.conv0.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(PriorError, match="prior.weights"):
        load_prior(tmp_path / "foreign.pt")


# --- foreign checkpoints -------------------------------------------------------------------------------------------
def test_chexnet_layout_with_legacy_names_loads_exactly(tmp_path):
    ref = _reference_densenet(14)
    state = {}
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # torch<0.4.1 checkpoints have none
        k = "classifier.0." + k.split(".")[-1] if k.startswith("classifier.") else _to_legacy(k)
        state[f"module.densenet121.{k}"] = v.clone()
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in state
    assert "module.densenet121.classifier.0.weight" in state
    torch.save({"epoch": 7, "state_dict": state, "best_loss": torch.tensor(0.1)}, tmp_path / "model.pth.tar")

    net, info = convert_checkpoint(tmp_path / "model.pth.tar", input_size=64)
    assert info["layout"] == "chexnet" and info["missing_labels"] == []
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x), ref(_imagenet_input(x)), atol=1e-4)


def test_torchxrayvision_layout_maps_labels_by_name(tmp_path):
    ref = _reference_densenet(18, in_channels=1, seed=1)
    state = dict(ref.state_dict())
    state["op_threshs"] = torch.rand(18)
    torch.save(state, tmp_path / "xrv.pt")
    net, info = convert_checkpoint(tmp_path / "xrv.pt", input_size=64)
    assert info["layout"] == "torchxrayvision" and info["missing_labels"] == []
    assert net.normalisation == "xrv" and "op_threshs" in info["ignored_keys"]
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        ours, theirs = net(x), ref(x * 1024.0)  # xrv inputs live in [-1024, 1024]
    for i, name in enumerate(NIH14):
        j = XRV_PATHOLOGIES.index(name)
        assert torch.allclose(ours[:, i], theirs[:, j], atol=1e-3), name


def test_torchxrayvision_missing_label_is_documented_and_never_positive(tmp_path):
    ref = _reference_densenet(18, in_channels=1, seed=2)
    torch.save(ref.state_dict(), tmp_path / "xrv.pt")
    names = tuple("Something Else" if n == "Hernia" else n for n in XRV_PATHOLOGIES)
    with pytest.warns(UserWarning, match="Hernia"):
        net, info = convert_checkpoint(tmp_path / "xrv.pt", input_size=64, xrv_pathologies=names)
    assert info["missing_labels"] == ["Hernia"]
    with torch.no_grad():
        p = net.predict(torch.rand(2, 1, 64, 64) * 2 - 1)
    assert (p[:, NIH14.index("Hernia")] < 1e-4).all()


def test_bad_checkpoints_fail_with_one_line(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole pickled module, not a state dict
    with pytest.raises(PriorError, match="weights_only") as exc:
        convert_checkpoint(tmp_path / "pickled.pt")
    assert "\n" not in str(exc.value)
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(PriorError, match="layout"):
        convert_checkpoint(tmp_path / "other.pt")
    ref = _reference_densenet(5)
    torch.save(ref.state_dict(), tmp_path / "five.pt")
    with pytest.raises(PriorError, match="5 outputs"):
        convert_checkpoint(tmp_path / "five.pt")


# --- AUROC ---------------------------------------------------------------------------------------------------------
def test_auroc_matches_mann_whitney_u_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.random(40) < 0.3
        scores = np.round(rng.random(40) + 0.5 * labels, 1)  # rounding creates ties
        u = mannwhitneyu(scores[labels], scores[~labels], alternative="two-sided").statistic
        assert auroc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()), rel=1e-12)
    assert auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


def test_auroc_single_class_is_not_a_number():
    assert auroc(np.array([0.1, 0.7, 0.3]), np.array([1, 1, 1])) is None
    labels = np.zeros((6, 14))
    labels[:3, 2] = 1
    out = per_label_auroc(np.random.default_rng(1).random((6, 14)), labels)
    assert isinstance(out["Effusion"], float)
    assert all(out[n] == "n/a" for n in NIH14 if n != "Effusion")


# --- the stage -----------------------------------------------------------------------------------------------------
def _params(**prior) -> SimpleNamespace:
    values = dict(iterations=2, batch_size=4, input_size=64)
    values.update(prior)
    return SimpleNamespace(prior=PriorParams(**values), train=SimpleNamespace(device="cpu", threads=1))


def test_prior_stage_trains_and_reports_auroc(tmp_path):
    from helpers_data import write_tiny_dataset

    write_tiny_dataset(tmp_path, "drr", n=3, size=64)
    summary = run_prior_stage(_params(), tmp_path / "data", tmp_path / "models" / "prior", progress=False)
    report = json.loads((tmp_path / "models" / "prior" / "prior.json").read_text())
    assert report == summary
    assert report["source"] == "trained" and report["input_size"] == 64 and report["n_test"] == 6
    # only Pneumonia has both classes in the tiny test split; every other label is reported "n/a"
    assert isinstance(report["auroc"]["Pneumonia"], float) and 0.0 <= report["auroc"]["Pneumonia"] <= 1.0
    assert all(report["auroc"][n] == "n/a" for n in NIH14 if n != "Pneumonia")
    assert report["mean_auroc"] == report["auroc"]["Pneumonia"]
    loc = report["localisation"]  # the three test opacity images have true opacity masks
    assert loc["n_images"] == 3 and all(0.0 <= loc[k]["lo"] <= loc[k]["mean"] <= loc[k]["hi"] <= 1.0
                                        for k in ("cam", "saliency", "intensity")), loc
    net = load_prior(tmp_path / "models" / "prior" / "prior.pt")
    assert net.input_size == 64 and net.features(torch.zeros(1, 1, 64, 64)).shape == (1, 1024, 2, 2)


def test_prior_stage_converts_user_weights(tmp_path):
    from helpers_data import write_tiny_dataset

    write_tiny_dataset(tmp_path, "drr", n=2, size=64)
    ref = _reference_densenet(14)
    torch.save(ref.state_dict(), tmp_path / "tv.pt")  # plain torchvision layout with a 14-output head
    summary = run_prior_stage(_params(weights=str(tmp_path / "tv.pt")), tmp_path / "data", tmp_path / "out",
                              progress=False)
    assert summary["source"] == "converted" and summary["layout"] == "torchvision"
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(load_prior(tmp_path / "out" / "prior.pt")(x), ref(_imagenet_input(x)), atol=1e-4)
