"""UNIT baseline: parameter counts at official settings, signature behaviours against hand computations, one step."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from baselines.unit import UNIT
from baselines.unit.networks import LayerNorm, MsImageDis, discriminator_loss, generator_loss
from baselines.unit.model import kl_unit_gaussian
from pipeline.schema import build_dataclass
from conftest import ready

PROFILES = Path(__file__).resolve().parents[1] / "baselines" / "unit" / "profiles.yaml"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    """Weights + bias of a k x k conv."""
    return cin * cout * k * k + cout


def vaegen_count(c: int) -> int:
    """Hand derivation of one VAEGen (dim 64, 2 downsamplings, 4 residual blocks of two 3x3 convs, 2 LayerNorms)."""
    encoder = conv(c, 64, 7) + conv(64, 128, 4) + conv(128, 256, 4) + 8 * conv(256, 256, 3)
    decoder = 8 * conv(256, 256, 3) + conv(256, 128, 5) + 2 * 128 + conv(128, 64, 5) + 2 * 64 + conv(64, c, 7)
    return encoder + decoder


def msdis_count(c: int) -> int:
    one_scale = conv(c, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4) + conv(256, 512, 4) + conv(512, 1, 1)
    return 3 * one_scale


@pytest.fixture(scope="module")
def ci_config():
    values = yaml.safe_load(PROFILES.read_text())
    assert set(values) == {"cpu", "ci", "gpu-quick", "paper"}
    for name, overrides in values.items():  # every profile validates against the Config
        build_dataclass(UNIT.Config, overrides, f"unit/profiles.yaml.{name}")
    return build_dataclass(UNIT.Config, values["ci"], "unit/profiles.yaml.ci")



# ---------------------------------------------------------------------------------------------------------------
def test_parameter_counts_official_settings():
    t = UNIT(UNIT.Config(), in_channels=3, image_size=256)
    # the independent architecture summary = the hand derivation from the official layer definitions
    assert vaegen_count(3) == 11_140_483 and msdis_count(3) == 8_271_171
    assert n_params(t.gen_a) == n_params(t.gen_b) == 11_140_483
    assert n_params(t.dis_a) == n_params(t.dis_b) == 8_271_171
    # grayscale (what the benchmark trains): only the first and last convs change
    t1 = UNIT(UNIT.Config(), in_channels=1, image_size=256)
    assert n_params(t1.gen_a) == vaegen_count(1) == 11_127_937
    assert n_params(t1.dis_a) == msdis_count(1) == 8_265_027


def test_shared_layer_variant_shares_two_residual_blocks(ci_config, tmp_path):
    t = UNIT(UNIT.Config(share_layers=True), in_channels=3, image_size=256)
    assert t.gen_a.enc.res[-1] is t.gen_b.enc.res[-1] and t.gen_a.dec.res[0] is t.gen_b.dec.res[0]
    assert t.gen_a.enc.res[0] is not t.gen_b.enc.res[0]
    shared = 2 * 2 * conv(256, 256, 3)  # one encoder + one decoder block, two 3x3 convs each
    assert sum(p.numel() for p in t.generator_parameters()) == 2 * 11_140_483 - shared
    # training keeps them tied and the optimiser sees each parameter once
    torch.manual_seed(0)
    small = UNIT(dataclasses.replace(ci_config, share_layers=True), in_channels=1, image_size=64)
    eng = ready(small)
    small.train_step(torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1, 0, eng)
    ids = [id(p) for g in small.opt_g.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert small.gen_b.dec.res[0].block[0][1].weight is small.gen_a.dec.res[0].block[0][1].weight


# ---------------------------------------------------------------------------------------------------------------
def test_kl_term_is_mean_of_squared_latent():
    h = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])
    # by hand: (1 + 4 + 0.25 + 0) / 4 = 1.3125
    assert kl_unit_gaussian(h).item() == pytest.approx(1.3125)


def test_train_step_reports_kl_of_the_encoder_output(ci_config, tmp_path):
    torch.manual_seed(0)
    t = UNIT(ci_config, in_channels=1, image_size=64)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():  # the encoders are deterministic; the noise is added after h
        h_a, h_b = t.gen_a.encode(a).numpy(), t.gen_b.encode(b).numpy()
    expected = np.mean(h_a.astype(np.float64) ** 2) + np.mean(h_b.astype(np.float64) ** 2)
    losses = t.train_step(a, b, 0, ready(t))
    assert losses["gen_kl"] == pytest.approx(expected, rel=1e-5)


def test_lsgan_targets_on_known_discriminator_outputs():
    real = [torch.tensor([[0.5, 1.5]]), torch.tensor([[1.0]])]
    fake = [torch.tensor([[0.2, -0.4]]), torch.tensor([[0.0]])]
    # by hand, D: scale 1: mean(0.25, 0.25) + mean(0.04, 0.16) = 0.35; scale 2: (1-1)^2 + 0^2 = 0  -> 0.35
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx(0.35)
    # G wants D(fake) = 1: scale 1: mean(0.64, 1.96) = 1.3; scale 2: 1  -> 2.3
    assert generator_loss(fake, "lsgan").item() == pytest.approx(2.3)
    # nsgan alternative: BCE with logits; D(real)=D(fake)=0 logits -> 2 * log 2 per scale
    zeros = [torch.zeros(1, 3)]
    assert discriminator_loss(zeros, zeros, "nsgan").item() == pytest.approx(2 * np.log(2))


def avg_pool_by_hand(x: np.ndarray) -> np.ndarray:
    """3x3 window, stride 2, padding 1, padded pixels excluded from the average."""
    h, w = x.shape
    out = np.zeros(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            r0, c0 = 2 * i - 1, 2 * j - 1
            window = x[max(r0, 0):r0 + 3, max(c0, 0):c0 + 3]
            out[i, j] = window.mean()
    return out


def test_multiscale_discriminator_downsampling():
    d = MsImageDis(1, dim=4, n_layer=1, num_scales=3)
    d.cnns = torch.nn.ModuleList([torch.nn.Identity() for _ in range(3)])  # see what each scale receives
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    outs = d(torch.tensor(x, dtype=torch.float32)[None, None])
    # by hand: top-left window holds 0, 1, 4, 5 only (padding excluded) -> 2.5; bottom-right: 5,6,7,9,...,15 -> 10
    assert outs[1][0, 0].numpy() == pytest.approx(np.array([[2.5, 4.0], [8.5, 10.0]]))
    assert outs[1][0, 0].numpy() == pytest.approx(avg_pool_by_hand(x))
    assert outs[2][0, 0].numpy() == pytest.approx(avg_pool_by_hand(avg_pool_by_hand(x)))  # = mean of all four: 6.25
    assert outs[2].item() == pytest.approx(6.25)


def test_layer_norm_uses_per_sample_unbiased_std():
    ln = LayerNorm(2)
    x = torch.randn(3, 2, 4, 4)
    y = ln(x).detach().numpy()
    xs = x.numpy().reshape(3, -1).astype(np.float64)
    z = (xs - xs.mean(1, keepdims=True)) / (xs.std(1, ddof=1, keepdims=True) + 1e-5)
    z = z.reshape(3, 2, 4, 4) * ln.gamma.detach().numpy()[None, :, None, None]
    assert y == pytest.approx(z, abs=1e-5)


def test_step_lr_halves_every_tenth_of_the_iterations(ci_config):
    t = UNIT(ci_config, in_channels=1, image_size=64)
    opts, scheds = t.configure_optimizers(100)
    lrs = []
    for _ in range(25):
        lrs.append(opts["gen"].param_groups[0]["lr"])
        opts["gen"].step()  # no gradients: a no-op, keeps the optimiser-before-scheduler order
        scheds["gen"].step()
    assert lrs[9] == pytest.approx(1e-4) and lrs[10] == pytest.approx(5e-5) and lrs[20] == pytest.approx(2.5e-5)


# ---------------------------------------------------------------------------------------------------------------
def test_one_train_step_and_translation(ci_config, tmp_path):
    torch.manual_seed(0)
    t = UNIT(ci_config, in_channels=1, image_size=64)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    before = t.gen_a.enc.stem[0][1].weight.detach().clone()
    losses = t.train_step(a, b, 0, ready(t))
    assert {"dis", "gen_adv", "gen_recon_x", "gen_kl", "gen_cyc_x", "gen_kl_cyc", "gen_total"} <= set(losses)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())
    assert not torch.equal(before, t.gen_a.enc.stem[0][1].weight)  # the G update happened
    t.eval()
    for out in (t.translate(a), t.translate_b2a(b)):
        assert out.image.shape == (2, 1, 64, 64) and out.mask is None
        assert out.image.min() >= -1 and out.image.max() <= 1
    assert torch.equal(t.translate(a).image, t.translate(a).image)  # posterior mean: deterministic at inference
    assert t.inference_modules() == ["gen_a", "gen_b"]


def test_too_small_image_is_refused_with_one_line():
    with pytest.raises(ValueError, match="image_size 32 needs to be >= 64"):
        UNIT(UNIT.Config(dim=4, dis_dim=4), in_channels=1, image_size=32)
