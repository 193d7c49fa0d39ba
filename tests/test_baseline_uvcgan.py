"""UVCGAN baseline: vit-unet-12 parameter count, gradient penalty, 40 % patch masking, pre-training, one step."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from baselines.uvcgan import UVCGAN
from baselines.uvcgan.config import UVCGANConfig
from baselines.uvcgan.losses import gradient_penalty, linear_anneal_factor
from baselines.uvcgan.masking import mask_patches
from baselines.uvcgan.networks import PatchDiscriminator, ViTUNetGenerator
from pipeline.engine import Engine, EngineSettings
from pipeline.schema import build_dataclass
from conftest import ready

torch.set_num_threads(1)
PROFILES = yaml.safe_load((Path(__file__).resolve().parents[1] / "baselines/uvcgan/profiles.yaml").read_text())


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ci_translator(seed: int = 0) -> UVCGAN:
    torch.manual_seed(seed)
    return UVCGAN(build_dataclass(UVCGANConfig, PROFILES["ci"], "ci"), in_channels=1, image_size=64)



def vit_unet_count_by_hand(c: int, feats: list[int], f: int, heads_unused: int, blocks: int, ffn: int, e: int) -> int:
    """Parameter count of upstream's ViTUNetGenerator from its layer definitions (conv k*k*in*out + out, etc.)."""
    conv = lambda k, i, o: k * k * i * o + o  # noqa: E731
    lin = lambda i, o: i * o + o  # noqa: E731
    total = conv(3, c, feats[0]) + conv(1, feats[0], c)  # input conv, output 1x1 conv; InstanceNorms have none
    inputs = [feats[0], *feats[:-1]]
    for cin, w in zip(inputs, feats):
        total += conv(3, cin, w) + conv(3, w, w) + conv(2, w, w)  # encoder block + 2x2 stride-2 downsample
        total += conv(3, w, w) + conv(3, 2 * w, w) + conv(3, w, cin)  # upsample conv + decoder block (mid = w)
    block = 2 * 2 * f + (3 * f * f + 3 * f) + lin(f, f) + lin(f, ffn) + lin(ffn, f) + 1  # 2 LN, MHA, FFN, ReZero
    vit = lin(2, e) + lin(e + feats[-1], f) + blocks * block + lin(f, feats[-1])
    return total + vit


def test_official_parameter_counts():
    c = UVCGANConfig()
    g = ViTUNetGenerator(3, c.unet_features, c.vit_features, c.vit_heads, c.vit_blocks, c.vit_ffn_features,
                         c.vit_embed_features, c.vit_rezero, c.unet_rezero)
    by_hand = vit_unet_count_by_hand(3, [48, 96, 192, 384], 384, 6, 12, 1536, 384)
    assert by_hand == 31_360_239
    assert n_params(g) == 31_360_239  # the reference's "~31.36M" (2.9 summary table), exact
    assert abs(n_params(g) - 31.36e6) / 31.36e6 < 0.005
    assert n_params(PatchDiscriminator(3, c.ndf, c.n_layers_d)) == 2_764_737
    # parameters do not depend on the image size: the Fourier embedding is a function of normalised coordinates
    small = UVCGAN(build_dataclass(UVCGANConfig, PROFILES["ci"], "ci"), in_channels=1, image_size=64)
    expected_ci = vit_unet_count_by_hand(1, [8, 16, 16, 32], 32, 2, 1, 64, 16)
    assert n_params(small.gen_ab) == expected_ci
    for size in (64, 128):  # 4x4 and 8x8 tokens
        assert small.gen_ab(torch.rand(1, 1, size, size)).shape == (1, 1, size, size)


class LinearCritic(nn.Module):
    """D(x) = <w, x> per sample: its input gradient is w everywhere, norm ||w||."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_on_known_inputs():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 4, 4)
    norm = float(np.linalg.norm(w.numpy()))
    real, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    lam, gamma = 0.1 / 100**2, 100.0  # UVCGAN preset "paper"
    gp = gradient_penalty(LinearCritic(w), real, fake, lam, gamma, "mixed")
    assert gp.item() == pytest.approx(lam * (norm - gamma) ** 2, rel=1e-6)
    # scaled so that ||w|| = 3: 1e-5 * 97^2 = 0.09409
    w3 = w * (3.0 / norm)
    assert gradient_penalty(LinearCritic(w3), real, fake, lam, gamma).item() == pytest.approx(0.09409, rel=1e-5)
    # it trains D: d GP / d w = lam * 2 (||w|| - gamma) w / ||w||
    critic = LinearCritic(w.clone())
    gradient_penalty(critic, real, fake, lam, gamma).backward()
    assert critic.w.grad.numpy() == pytest.approx((lam * 2 * (norm - gamma) * w / norm).numpy(), rel=1e-5)

    # quadratic critic D(x) = 0.5 |x|^2: gradient = the interpolate itself, so the per-sample alpha matters
    quad = lambda x: 0.5 * (x**2).flatten(1).sum(1)  # noqa: E731
    torch.manual_seed(42)
    got = gradient_penalty(quad, real, fake, 1.0, 1.0, "mixed").item()
    torch.manual_seed(42)
    alpha = torch.rand(3, 1).numpy()  # one U[0, 1) per sample, drawn first from the global CPU RNG
    x_hat = alpha * real.flatten(1).numpy() + (1 - alpha) * fake.flatten(1).numpy()
    assert got == pytest.approx(np.mean((np.linalg.norm(x_hat, axis=1) - 1.0) ** 2), rel=1e-5)
    assert gradient_penalty(quad, real, fake, 1.0, 1.0, "real").item() == pytest.approx(
        np.mean((np.linalg.norm(real.flatten(1).numpy(), axis=1) - 1.0) ** 2), rel=1e-5)
    assert gradient_penalty(quad, real, fake, 0.0, 1.0).item() == 0.0


def test_masked_patch_ratio_is_forty_percent():
    t = ci_translator()
    assert [t.mask_patch_size(s) for s in (64, 256, 512)] == [8, 32, 64]  # upstream 32 px at 256, scaled
    torch.manual_seed(3)
    images = torch.rand(300, 1, 64, 64) * 0.9 + 0.1  # strictly positive so 0 means "masked"
    masked = mask_patches(images, 8, 0.4)
    blocks = (masked == 0).float().reshape(300, 1, 8, 8, 8, 8)  # (N, 1, rows, 8 px, cols, 8 px)
    per_patch = blocks.mean(dim=(3, 5))
    assert set(per_patch.unique().tolist()) <= {0.0, 1.0}  # whole 8x8 squares, never partial
    ratio = per_patch.mean().item()  # 19,200 Bernoulli(0.4) patches: std 0.0035
    assert abs(ratio - 0.4) < 0.015
    kept = masked != 0
    assert masked[kept].equal(images[kept])  # unmasked pixels untouched
    with pytest.raises(ValueError, match="must divide"):
        mask_patches(torch.rand(1, 1, 60, 60), 8, 0.4)


def test_pretraining_step_loss_and_transfer(tmp_path):
    t = ci_translator()
    eng = Engine(t, EngineSettings(iterations=4, progress=False, device="cpu"), ckpt_dir=tmp_path, seed=0)
    opts, scheds = t.configure_pretraining(100)
    assert opts["pretrain"].param_groups[0]["lr"] == pytest.approx(2 * 5e-3 / 512)  # batch * 5e-3 / 512
    assert opts["pretrain"].param_groups[0]["weight_decay"] == 0.05
    assert scheds["pretrain"].T_0 == 20  # 500 / 2499 of the pre-training iterations
    torch.manual_seed(9)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    # expected losses by hand: same RNG draws (mask a, then mask b), G before the update, L1 in [0, 1] range
    state = torch.get_rng_state()
    with torch.no_grad():
        expected = []
        for x in (a, b):
            x01 = (x + 1) / 2
            keep = (torch.rand(2, 1, 8, 8) > 0.4).float().repeat_interleave(8, 2).repeat_interleave(8, 3)
            expected.append((t.gen_ab(x01 * keep) - x01).abs().mean().item())
    torch.set_rng_state(state)
    ba_before = [p.detach().clone() for p in t.gen_ba.parameters()]
    ab_before = [p.detach().clone() for p in t.gen_ab.parameters()]
    losses = t.pretrain_step((a, b), 0, eng)
    assert losses["pretrain_a"] == pytest.approx(expected[0], rel=1e-5)
    assert losses["pretrain_b"] == pytest.approx(expected[1], rel=1e-5)
    assert any(not p.equal(q) for p, q in zip(t.gen_ab.parameters(), ab_before))
    assert all(p.equal(q) for p, q in zip(t.gen_ba.parameters(), ba_before))  # only the pre-trained G moves
    assert torch.isfinite(t.pretrain_step(a, 1, eng)["pretrain_0"])  # a single tensor works too
    # transfer: both generators start from the pre-trained weights
    t2 = ci_translator(seed=1)
    t2.load_pretrained(t.pretrained_state())
    for g in (t2.gen_ab, t2.gen_ba):
        assert all(p.equal(q) for p, q in zip(g.parameters(), t.gen_ab.parameters()))


def test_schedule_constant_then_linear_anneal():
    # upstream: 1 for the first half, then 1 - (i - n_warm) / (n_anneal + 1)
    got = [linear_anneal_factor(i, 10, 0.5) for i in range(10)]
    assert got == pytest.approx([1, 1, 1, 1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6])


def test_train_step_translate_and_pool_state(tmp_path):
    t = ci_translator()
    eng = ready(t)
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    before = [p.detach().clone() for p in t.disc_a.parameters()]
    losses = t.train_step(a, b, 0, eng)
    assert {"g_ab", "g_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b", "gp_a", "gp_b"} == set(losses)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())  # contract: detached 0-dim tensors
    # gradients w.r.t. [0, 1] images are far below gamma = 100 at init: GP ~ 1e-5 * 100^2 = 0.1
    assert 0.05 < losses["gp_a"] <= 0.1
    assert any(not p.equal(q) for p, q in zip(t.disc_a.parameters(), before))
    t.eval()
    out = t.translate(a)
    assert out.image.shape == (2, 1, 64, 64) and out.mask is None
    assert out.image.min() >= -1 and out.image.max() <= 1
    back = t.translate_b2a(b).image
    assert back.shape == (2, 1, 64, 64) and back.min() >= -1 and back.max() <= 1
    # the pool stores UVCGAN-range fakes and round-trips through a weights_only checkpoint
    state = t.extra_state()
    assert state["pool_a"].shape == (2, 1, 64, 64) and 0 <= state["pool_a"].min() and state["pool_a"].max() <= 1
    torch.save(state, tmp_path / "extra.pt")
    t2 = ci_translator(seed=3)
    t2.load_extra_state(torch.load(tmp_path / "extra.pt", weights_only=True))
    for _ in range(2):
        for tr in (t, t2):
            tr.pool_a.query(a), tr.pool_b.query(b)
    random.seed(11)
    q1 = t.pool_b.query(a)
    random.seed(11)
    assert q1.equal(t2.pool_b.query(a))


def test_profiles_validate_and_bad_input():
    assert set(PROFILES) == {"cpu", "ci", "gpu-quick", "paper"}
    for name, values in PROFILES.items():
        build_dataclass(UVCGANConfig, values or {}, f"profiles.{name}")
    with pytest.raises(ValueError, match="divisible by 16"):
        UVCGAN(build_dataclass(UVCGANConfig, PROFILES["ci"], "ci"), in_channels=1, image_size=72)
    from pipeline.schema import ConfigError

    with pytest.raises(ConfigError, match="vit_heads"):
        build_dataclass(UVCGANConfig, {"vit_features": 30, "vit_heads": 4}, "params.yaml.methods.uvcgan")


def test_pretraining_view_runs_under_the_engine(tmp_path):
    t = ci_translator()
    view = t.pretraining_view()
    assert view.batch_size == 2 and [n for n, _ in view.named_children()] == ["gen_ab"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    ba_before = [p.detach().clone() for p in t.gen_ba.parameters()]
    ab_before = [p.detach().clone() for p in t.gen_ab.parameters()]
    eng = Engine(view, EngineSettings(iterations=2, progress=False, device="cpu"), ckpt_dir=tmp_path, seed=0)
    last = eng.fit(images, images)
    assert set(last) == {"pretrain_a", "pretrain_b"} and all(np.isfinite(v) for v in last.values())
    assert any(not p.equal(q) for p, q in zip(t.gen_ab.parameters(), ab_before))  # the translator's G was trained
    assert all(p.equal(q) for p, q in zip(t.gen_ba.parameters(), ba_before))
    ckpt = torch.load(sorted(tmp_path.glob("step_*.pt"))[-1], weights_only=True)
    assert all(k.startswith("gen_ab.") for k in ckpt["model"])  # the view checkpoints only the generator
