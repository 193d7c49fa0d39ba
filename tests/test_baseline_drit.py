"""DRIT++ baseline: official parameter counts, signature behaviours against hand computations, a CI-sized step."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from baselines.drit import DRIT, DRITConfig
from baselines.drit.model import (content_adversarial_loss_g, is_content_only_step, kl_attribute, lr_factor,
                                  mode_seeking_loss, split_halves)
from pipeline.schema import build_dataclass
from conftest import ready

torch.set_num_threads(1)
PROFILES = Path(__file__).resolve().parent.parent / "baselines" / "drit" / "profiles.yaml"


def ci_model(image_size: int = 64) -> DRIT:
    cfg = build_dataclass(DRITConfig, yaml.safe_load(PROFILES.read_text())["ci"], "profiles.yaml.ci")
    return DRIT(cfg, in_channels=1, image_size=image_size)



def images(seed: int = 0, b: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, size, size, generator=g) * 2 - 1, torch.rand(b, 1, size, size, generator=g) * 2 - 1


# --------------------------------------------------------------------------------------------------------------------
# Parameter counts at official settings (3 channels), derived by hand from the layer list of src/networks.py
# --------------------------------------------------------------------------------------------------------------------
def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out  # weight + bias (ConvTranspose the same)


def res(ch: int) -> int:
    return 2 * conv(ch, ch, 3)  # INSResBlock, instance norms without affine


def test_official_parameter_counts():
    t = DRIT(DRITConfig(), in_channels=3, image_size=256)
    counts = t.parameter_counts()
    # E_content: per domain c7s1-64, 3x3 s2 128, 3x3 s2 256, 3 res blocks; one shared res block
    enc_c = 2 * (conv(3, 64, 7) + conv(64, 128, 3) + conv(128, 256, 3) + 3 * res(256)) + res(256)
    # E_attr_concat: per domain 4x4 s2 conv 64, BasicBlocks 64->128->192->256 (conv3x3 in->in, conv3x3 in->out,
    # 1x1 shortcut), two Linear(256, 8)
    block = lambda i, o: conv(i, i, 3) + conv(i, o, 3) + conv(i, o, 1)  # noqa: E731
    enc_a = 2 * (conv(3, 64, 4) + block(64, 128) + block(128, 192) + block(192, 256) + 2 * (256 * 8 + 8))
    # G_concat: shared res block 256; per domain 3 res blocks at 264, ConvT 272->136 + LN(136), ConvT 144->72 + LN(72),
    # 1x1 ConvT 80->3 (layer norms: per-channel weight and bias)
    dec = 3 * res(264) + conv(272, 136, 3) + 2 * 136 + conv(144, 72, 3) + 2 * 72 + conv(80, 3, 1)
    gen = res(256) + 2 * dec
    assert (counts["enc_c"], counts["enc_a"], counts["gen"]) == (enc_c, enc_a, gen)
    assert counts["encoders+generator"] == enc_c + enc_a + gen == 21_270_982
    assert abs(counts["encoders+generator"] - 21.27e6) / 21.27e6 < 0.005  # the reference's "~21.27M"
    scale = conv(3, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4) + conv(256, 512, 4) + conv(512, 1, 1)
    assert counts["dis_a"] == counts["dis_b2"] == 3 * scale
    assert counts["dis_content"] == 3 * conv(256, 256, 7) + conv(256, 256, 4) + conv(256, 1, 1)


# --------------------------------------------------------------------------------------------------------------------
# Signature behaviours
# --------------------------------------------------------------------------------------------------------------------
def test_mode_seeking_ratio_by_hand():
    fake1 = torch.zeros(1, 1, 2, 2)
    fake2 = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # mean |diff| = 10 / 4 = 2.5
    z1 = torch.zeros(1, 8)
    z2 = torch.full((1, 8), -0.5)  # mean |diff| = 0.5
    expected = 1.0 / (2.5 / 0.5 + 1e-5)
    assert mode_seeking_loss(fake1, fake2, z1, z2).item() == pytest.approx(expected, rel=1e-6)
    # identical outputs for different z: ratio 0, the loss is 1 / eps
    assert mode_seeking_loss(fake1, fake1, z1, z2).item() == pytest.approx(1e5, rel=1e-4)


def test_half_batch_split():
    x = torch.arange(4.0).view(4, 1, 1, 1)
    enc, rnd = split_halves(x)
    assert enc.flatten().tolist() == [0.0, 1.0] and rnd.flatten().tolist() == [2.0, 3.0]
    enc, rnd = split_halves(x[:2])  # official batch 2: half_size 1
    assert enc.flatten().tolist() == [0.0] and rnd.flatten().tolist() == [1.0]
    enc, rnd = split_halves(x[:1])  # batch 1: the single image serves both branches
    assert enc.flatten().tolist() == [0.0] and rnd.flatten().tolist() == [0.0]
    # in the model: encoded branch = first image, random branch = second, fakes have the half batch
    t = ci_model()
    a, b = images()
    out = t.forward_train(a, b)
    assert torch.equal(out["a_enc"], a[:1]) and torch.equal(out["a_rand"], a[1:])
    assert torch.equal(out["b_enc"], b[:1]) and torch.equal(out["b_rand"], b[1:])
    assert out["fake_b"].shape == out["rec_a"].shape == (1, 1, 64, 64)
    assert len(out["rand_a"]) == 2  # mode seeking: two random z per encoded image


def test_d_iter_schedule(tmp_path):
    # train.py: (it + 1) % 3 != 0 -> content D only; full updates at it = 2, 5, 8
    assert [is_content_only_step(s, 3) for s in range(9)] == [True, True, False] * 3
    assert not any(is_content_only_step(s, 1) for s in range(4))
    t = ci_model()
    eng = ready(t)
    a, b = images()
    nets = ["enc_c", "enc_a", "gen", "dis_content", "dis_a", "dis_b", "dis_a2", "dis_b2"]

    def snapshot():
        return {n: torch.cat([p.detach().flatten().clone() for p in getattr(t, n).parameters()]) for n in nets}

    before = snapshot()
    losses = t.train_step(a, b, 0, eng)
    after = snapshot()
    changed = {n for n in nets if not torch.equal(before[n], after[n])}
    assert changed == {"dis_content"} and set(losses) == {"d_content"}
    before = after
    t.train_step(a, b, 2, eng)
    after = snapshot()
    assert {n for n in nets if not torch.equal(before[n], after[n])} == set(nets)


def test_content_adversarial_target_is_one_half():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    s = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    expected = np.mean(-0.5 * np.log(s) - 0.5 * np.log(1 - s))  # BCE against 0.5
    assert content_adversarial_loss_g(logits).item() == pytest.approx(expected, rel=1e-6)
    x = torch.zeros(3, requires_grad=True)  # optimum at D output 0.5: loss log 2, zero gradient
    loss = content_adversarial_loss_g(x)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6) and torch.allclose(x.grad, torch.zeros(3))
    # in the model: a content D that outputs logit 0 everywhere gives g_content = 2 log 2 (both domains)
    t = ci_model()
    last = t.dis_content.net[-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
    eg, _ = t.generator_losses(t.forward_train(*images()))
    assert eg["g_content"].item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_kl_and_lr_schedule_by_hand():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * sum(mu^2 + var - 1 - logvar) = 0.5 * ((1 + 1 - 1 - 0) + (0 + 4 - 1 - log 4))
    assert kl_attribute(mu, logvar).item() == pytest.approx(0.5 * (1 + 3 - math.log(4)), rel=1e-6)
    # official LambdaLR with n_ep 1200, n_ep_decay 600, epochs read as iterations
    for ep in (0, 599, 600, 601, 900, 1199):
        assert lr_factor(ep, 1200, 0.5) == pytest.approx(1 - max(0, ep - 600) / 601)


def test_too_small_for_content_discriminator():
    with pytest.raises(ValueError, match="content_dis_down"):
        DRIT(DRITConfig(), in_channels=1, image_size=64)


# --------------------------------------------------------------------------------------------------------------------
# A CI-sized training step and translation
# --------------------------------------------------------------------------------------------------------------------
def test_train_step_and_translate_ci(tmp_path):
    t = ci_model()
    eng = ready(t)
    assert t.optimizers["dis_content"].param_groups[0]["lr"] == pytest.approx(1e-4 / 2.5)
    a, b = images()
    content_only = t.train_step(a, b, 0, eng)
    full = t.train_step(a, b, 2, eng)
    assert set(content_only) == {"d_content"}
    expected = {"d_a", "d_b", "d_a2", "d_b2", "d_content", "g_content", "g_gan", "g_gan2", "kl_attr", "l2_content",
                "cycle_l1", "self_l1", "latent_l1", "mode_seeking", "g_eg", "g_alone"}
    assert set(full) == expected
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in {**content_only, **full}.values())
    t.eval()
    for fn in (t.translate, t.translate_b2a):
        out = fn(a)
        assert out.mask is None and out.image.shape == (2, 1, 64, 64)
        assert out.image.min() >= -1 and out.image.max() <= 1 and torch.isfinite(out.image).all()
    # translation draws a fresh attribute z from the global RNG: a different z gives a different image
    torch.manual_seed(1)
    x1 = t.translate(a).image
    torch.manual_seed(2)
    assert not torch.equal(x1, t.translate(a).image)
