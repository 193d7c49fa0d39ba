"""MUNIT baseline: parameter counts at official settings, AdaIN against a hand computation, style sampling, one step."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import baselines.munit.networks as munit_networks
from baselines.munit import MUNIT
from baselines.munit.networks import AdaINGen, MsImageDis, adain, discriminator_loss, generator_loss
from pipeline.schema import build_dataclass
from conftest import ready

PROFILES = Path(__file__).resolve().parents[1] / "baselines" / "munit" / "profiles.yaml"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def adaingen_count(c: int) -> int:
    """Hand derivation of one AdaINGen at the official widths (dim 64, style 8, MLP 256, 2 downsamplings, 4 blocks)."""
    style = conv(c, 64, 7) + conv(64, 128, 4) + conv(128, 256, 4) + 2 * conv(256, 256, 4) + conv(256, 8, 1)
    content = conv(c, 64, 7) + conv(64, 128, 4) + conv(128, 256, 4) + 8 * conv(256, 256, 3)
    decoder = 8 * conv(256, 256, 3) + conv(256, 128, 5) + 2 * 128 + conv(128, 64, 5) + 2 * 64 + conv(64, c, 7)
    mlp = linear(8, 256) + linear(256, 256) + linear(256, 4 * 2 * 2 * 256)  # AdaIN: 4 blocks x 2 norms x (b, g) x 256
    return style + content + decoder + mlp


def msdis_count(c: int) -> int:
    return 3 * (conv(c, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4) + conv(256, 512, 4) + conv(512, 1, 1))


@pytest.fixture(scope="module")
def ci_config():
    values = yaml.safe_load(PROFILES.read_text())
    assert set(values) == {"cpu", "ci", "gpu-quick", "paper"}
    for name, overrides in values.items():
        build_dataclass(MUNIT.Config, overrides, f"munit/profiles.yaml.{name}")
    return build_dataclass(MUNIT.Config, values["ci"], "munit/profiles.yaml.ci")



# ---------------------------------------------------------------------------------------------------------------
def test_parameter_counts_official_settings():
    t = MUNIT(MUNIT.Config(), in_channels=3, image_size=256)
    assert adaingen_count(3) == 15_026_187 and msdis_count(3) == 8_271_171  # reference = hand derivation
    assert n_params(t.gen_a) == n_params(t.gen_b) == 15_026_187
    assert n_params(t.dis_a) == n_params(t.dis_b) == 8_271_171
    assert t.gen_a.dec.num_adain_params == 4096
    t1 = MUNIT(MUNIT.Config(), in_channels=1, image_size=256)
    assert n_params(t1.gen_a) == adaingen_count(1) == 15_007_369
    assert n_params(t1.dis_a) == msdis_count(1) == 8_265_027


# ---------------------------------------------------------------------------------------------------------------
def test_adain_output_statistics_equal_beta_and_gamma():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    gamma = torch.tensor([[2.0, 0.5, 1.0], [3.0, 1.5, 0.25]])
    beta = torch.tensor([[-1.0, 0.0, 4.0], [0.5, -2.0, 1.0]])
    y = adain(x, gamma, beta).numpy().astype(np.float64)
    xs = x.numpy().astype(np.float64)
    var = xs.var(axis=(2, 3))  # biased, per sample and channel
    assert y.mean(axis=(2, 3)) == pytest.approx(beta.numpy(), abs=1e-5)
    # std of gamma * (x - mu) / sqrt(var + eps) is gamma * sqrt(var / (var + eps))
    assert y.std(axis=(2, 3)) == pytest.approx(gamma.numpy() * np.sqrt(var / (var + 1e-5)), rel=1e-5)


def test_decoder_feeds_mlp_output_to_adain_in_official_order(monkeypatch):
    """The first AdaIN layer of the first block takes beta = p[:, :C], gamma = p[:, C:2C] of the MLP output p, which
    we compute by hand (numpy) from the MLP weights; its output must carry exactly those statistics."""
    torch.manual_seed(0)
    gen = AdaINGen(1, dim=4, style_dim=3, n_down=1, n_res=2, mlp_dim=5)  # C = 8 channels after one downsampling
    seen = []

    def recording_adain(x, gamma, beta, eps=1e-5):
        out = adain(x, gamma, beta, eps)
        seen.append((x.detach().numpy().astype(np.float64), out.detach().numpy().astype(np.float64)))
        return out

    monkeypatch.setattr(munit_networks, "adain", recording_adain)
    content, style = torch.randn(2, 8, 6, 6), torch.randn(2, 3)
    gen.decode(content, style)
    assert len(seen) == 4  # 2 blocks x 2 AdaIN layers

    w = [m for m in gen.mlp.modules() if isinstance(m, torch.nn.Linear)]
    h = style.numpy().astype(np.float64)
    for i, lin in enumerate(w):
        h = h @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        if i < len(w) - 1:
            h = np.maximum(h, 0)
    assert h.shape == (2, 2 * 2 * 2 * 8)  # 2 blocks x 2 AdaIN layers x (beta, gamma) x 8 channels
    beta, gamma = h[:, :8], h[:, 8:16]
    x_in, out = seen[0]
    var = x_in.var(axis=(2, 3))
    assert out.mean(axis=(2, 3)) == pytest.approx(beta, abs=1e-4)
    assert out.std(axis=(2, 3)) == pytest.approx(np.abs(gamma) * np.sqrt(var / (var + 1e-5)), rel=1e-4, abs=1e-5)
    # the second block's second layer takes the last 2C numbers
    x_in, out = seen[3]
    assert out.mean(axis=(2, 3)) == pytest.approx(h[:, -16:-8], abs=1e-4)


def test_lsgan_targets_and_multiscale_downsampling():
    real, fake = [torch.tensor([[0.5, 1.5]])], [torch.tensor([[0.2, -0.4]])]
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx(0.25 + 0.1)  # by hand
    assert generator_loss(fake, "lsgan").item() == pytest.approx((0.64 + 1.96) / 2)
    d = MsImageDis(1, dim=4, n_layer=1, num_scales=2)
    d.cnns = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
    outs = d(torch.arange(16.0).reshape(1, 1, 4, 4))
    # 3x3 s2 windows with padding excluded: {0,1,4,5}, {1,2,3,5,6,7}, {4,5,8,9,12,13}, {5,6,7,9,10,11,13,14,15}
    assert outs[1][0, 0].numpy() == pytest.approx(np.array([[2.5, 4.0], [8.5, 10.0]]))


# ---------------------------------------------------------------------------------------------------------------
def test_translate_samples_a_random_style_from_the_global_rng(ci_config):
    torch.manual_seed(0)
    t = MUNIT(ci_config, in_channels=1, image_size=64).eval()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    torch.manual_seed(1)
    y1 = t.translate(x).image
    torch.manual_seed(1)
    y2 = t.translate(x).image
    y3 = t.translate(x).image  # RNG moved on: another style
    assert torch.equal(y1, y2) and not torch.allclose(y1, y3)
    ref = t.translate_with_reference(x, x[:1]).image
    assert ref.shape == (2, 1, 64, 64) and torch.equal(ref, t.translate_with_reference(x, x[:1]).image)


def test_one_train_step_and_translation(ci_config, tmp_path):
    torch.manual_seed(0)
    t = MUNIT(ci_config, in_channels=1, image_size=64)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    before = t.gen_a.mlp.model[0].weight.detach().clone()
    losses = t.train_step(a, b, 0, ready(t))
    assert {"dis", "gen_adv", "gen_recon_x", "gen_recon_s", "gen_recon_c", "gen_cyc_x", "gen_total"} <= set(losses)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())
    assert not torch.equal(before, t.gen_a.mlp.model[0].weight)
    t.eval()
    for out in (t.translate(a), t.translate_b2a(b)):
        assert out.image.shape == (2, 1, 64, 64) and out.mask is None
        assert out.image.min() >= -1 and out.image.max() <= 1
    assert t.inference_modules() == ["gen_a", "gen_b"]


def test_cycle_term_can_be_switched_off(ci_config, tmp_path):
    torch.manual_seed(0)
    t = MUNIT(dataclasses.replace(ci_config, recon_x_cyc_w=0.0), in_channels=1, image_size=64)
    losses = {k: float(v) for k, v in t.train_step(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), 0, ready(t)).items()}
    assert "gen_cyc_x" not in losses
    # total = 10 x + 1 s + 1 c + 1 adv, from the reported parts
    expected = losses["gen_adv"] + 10 * losses["gen_recon_x"] + losses["gen_recon_s"] + losses["gen_recon_c"]
    assert losses["gen_total"] == pytest.approx(expected, rel=1e-5)


def test_too_small_image_is_refused_with_one_line():
    with pytest.raises(ValueError, match="image_size 32 needs to be >= 64"):
        MUNIT(MUNIT.Config(dim=4, dis_dim=4), in_channels=1, image_size=32)
