"""Segmentation: CE-Net block shapes, output size and README parameter count; mIoU / sensitivity against a hand
computation; train -> save -> load -> predict for every segmenter."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import segmentation as seg
from eval.cenet import CENet, DACBlock, RMPBlock

README = Path(__file__).resolve().parents[1] / "eval" / "README.md"


def test_dac_block_keeps_shape_and_is_residual():
    block = DACBlock(8)
    x = torch.randn(2, 8, 6, 6)
    assert block(x).shape == x.shape
    for conv in (block.rate1, block.rate3, block.rate5, block.project):  # all branches zero -> identity
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    assert torch.equal(block(x), x)
    assert [c.dilation[0] for c in (block.rate1, block.rate3, block.rate5)] == [1, 3, 5]


def test_rmp_block_adds_four_pooled_maps():
    block = RMPBlock(8)
    for side in (14, 2):  # 14: the paper's 448 px bottleneck; 2: kernels larger than the map are clamped
        x = torch.randn(2, 8, side, side)
        y = block(x)
        assert y.shape == (2, 12, side, side)
        assert torch.equal(y[:, 4:], x)  # the input passes through after the four maps
    x = torch.zeros(1, 8, 6, 6)
    x[0, :, 0, 0] = 1.0  # one hot pixel: the kernel-6 map is constant (one pooling window covers the map)
    assert torch.allclose(block(x)[0, 3], block(x)[0, 3, 0, 0].expand(6, 6))


@pytest.mark.parametrize("side", [64, 96])
def test_cenet_output_size(side):
    net = CENet(in_channels=1, classes=1).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, side, side)).shape == (1, 1, side, side)


def test_cenet_parameter_count_is_in_the_readme():
    count = sum(p.numel() for p in CENet(in_channels=1, classes=1).parameters())
    assert 25e6 < count < 35e6  # ResNet-34 encoder (21.3M) + DAC + decoder: the paper's ~29M
    assert f"{count:,}" in README.read_text(), f"eval/README.md must state the CE-Net parameter count {count:,}"


def test_miou_and_sensitivity_against_hand_computation():
    truth = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    truth[0, :2, :] = True   # 8 lung pixels
    pred[0, :3, :2] = True   # 6 predicted: 4 inside the lung, 2 outside
    # image 0: lung IoU = 4 / (8 + 6 - 4) = 0.4; background: truth 8, pred 10, inter 6 -> 6 / 12 = 0.5
    # image 1: no lung anywhere: lung IoU = 1 (both empty), background IoU = 1; sensitivity undefined
    miou, sens = seg.miou_sensitivity(pred, truth)
    assert miou == pytest.approx([0.45, 1.0])
    assert sens[0] == pytest.approx(4 / 8) and np.isnan(sens[1])
    summary = seg.summarise(pred, truth)
    assert summary["miou"] == pytest.approx(0.725) and summary["sensitivity"] == pytest.approx(0.5)
    assert summary["n"] == 2


def test_train_save_load_predict_every_segmenter(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 32, 32)).astype(np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:24, 4:14] = True
    for name in seg.SEGMENTERS:
        model, log = seg.train_segmenter(name, images, masks, iterations=1, batch_size=2, lr=1e-3, seed=0,
                                         device=torch.device("cpu"))
        assert log["iterations"] == 1 and np.isfinite(log["final_loss"]) and log["params"] > 1e6
        path = tmp_path / f"{name}.pt"
        seg.save_segmenter(model, name, 32, log, path)
        loaded, size = seg.load_segmenter(path)
        assert size == 32
        pred = seg.predict_lungs(loaded, images, size, torch.device("cpu"), batch_size=2)
        assert pred.shape == (3, 32, 32) and pred.dtype == bool
        loaded_state = loaded.state_dict()  # the round trip is exact
        assert all(torch.equal(v, loaded_state[k]) for k, v in model.state_dict().items())
    with pytest.raises(Exception, match="not divisible by 32"):
        seg.train_segmenter("unet", images[:, :30, :30], masks[:, :30, :30], 1, 2, 1e-3, 0, torch.device("cpu"))
    with pytest.raises(Exception, match="unknown segmenter"):
        seg.build_segmenter("segformer")
    assert re.search("dvc repro segmenters", str(pytest.raises(Exception, seg.load_segmenter,
                                                                 tmp_path / "none.pt").value))
