"""CycleGAN baseline: official parameter counts, LSGAN targets, image-pool sampling, schedule, one training step."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from baselines.cyclegan import CycleGAN
from baselines.cyclegan.config import CycleGANConfig
from baselines.cyclegan.image_pool import ImagePool
from baselines.cyclegan.losses import discriminator_loss, gan_loss
from pipeline.schema import build_dataclass
from conftest import ready

torch.set_num_threads(1)
PROFILES = yaml.safe_load((Path(__file__).resolve().parents[1] / "baselines/cyclegan/profiles.yaml").read_text())


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ci_translator(seed: int = 0) -> CycleGAN:
    torch.manual_seed(seed)
    return CycleGAN(build_dataclass(CycleGANConfig, PROFILES["ci"], "ci"), in_channels=1, image_size=64)



def test_official_parameter_counts():
    """Official defaults, 3 channels: resnet_9blocks G = 11,378,179 and 70x70 PatchGAN = 2,764,737 (published)."""
    t = CycleGAN(CycleGANConfig(), in_channels=3, image_size=256)
    assert n_params(t.gen_ab) == 11_378_179
    assert n_params(t.disc_b) == 2_764_737
    # 1 channel: only the first and last convs shrink. G: the 7x7 input conv loses 2 input channels (2 * 64 * 49),
    # the 7x7 output conv 2 output filters (2 * 64 * 49 weights + 2 biases); D: the first conv 2 * 64 * 16
    t1 = CycleGAN(CycleGANConfig(), in_channels=1, image_size=256)
    g1, d1 = t1.gen_ab, t1.disc_a
    assert n_params(g1) == 11_378_179 - 4 * 64 * 49 - 2 == 11_365_633
    assert n_params(d1) == 2_764_737 - 2 * 64 * 16


def test_lsgan_targets_against_hand_computation():
    pred = torch.tensor([[[[0.2, 0.7], [1.5, -0.3]]]])  # a known PatchGAN output (1, 1, 2, 2)
    p = pred.numpy().ravel()
    assert gan_loss(pred, True).item() == pytest.approx(np.mean((p - 1.0) ** 2))
    assert gan_loss(pred, False).item() == pytest.approx(np.mean(p**2))
    # by hand: (0.64 + 0.09 + 0.25 + 1.69) / 4 and (0.04 + 0.49 + 2.25 + 0.09) / 4
    assert gan_loss(pred, True).item() == pytest.approx(0.6675)
    assert gan_loss(pred, False).item() == pytest.approx(0.7175)
    fake = torch.tensor([[[[0.1, -0.2], [0.4, 0.9]]]])
    expected_d = 0.5 * (np.mean((p - 1) ** 2) + np.mean(fake.numpy() ** 2))
    assert discriminator_loss(pred, fake).item() == pytest.approx(expected_d)
    # the selectable modes: vanilla = BCE with logits, wgangp = -/+ mean
    assert gan_loss(pred, True, "vanilla").item() == pytest.approx(np.mean(np.log1p(np.exp(-p))), rel=1e-6)
    assert gan_loss(pred, False, "vanilla").item() == pytest.approx(np.mean(np.log1p(np.exp(p))), rel=1e-6)
    assert gan_loss(pred, True, "wgangp").item() == pytest.approx(-p.mean())
    assert gan_loss(pred, False, "wgangp").item() == pytest.approx(p.mean())


def simulate_pool(batches: list[list[int]], size: int, seed: int) -> list[list[int]]:
    """The official algorithm by hand on integer ids, with its own seeded random.Random (same stream as `random`)."""
    rng, stored, returned = random.Random(seed), [], []
    for batch in batches:
        out = []
        for img in batch:
            if len(stored) < size:
                stored.append(img)
                out.append(img)
            elif rng.uniform(0, 1) > 0.5:
                i = rng.randint(0, size - 1)
                out.append(stored[i])
                stored[i] = img
            else:
                out.append(img)
        returned.append(out)
    return returned


def test_image_pool_matches_hand_simulation():
    size, seed = 4, 1234
    batches = [[2 * k, 2 * k + 1] for k in range(20)]  # batch size 2: the pool works image by image
    expected = simulate_pool(batches, size, seed)
    random.seed(seed)
    pool = ImagePool(size)
    got = []
    for batch in batches:
        images = torch.tensor(batch, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 3, 3)
        out = pool.query(images)
        assert out.shape == images.shape and not out.requires_grad
        got.append([int(v) for v in out[:, 0, 0, 0]])
    assert got == expected
    # the pool really returned old images sometimes (the 50 % branch), and filled itself first
    assert got[0] == [0, 1] and got[1] == [2, 3]
    assert any(g != b for g, b in zip(got, batches))
    assert ImagePool(0).query(images).equal(images)


def test_schedule_constant_then_linear_to_zero(tmp_path):
    t = ci_translator()
    total = 10
    opts, scheds = t.configure_optimizers(total)
    lrs = []
    for _ in range(total):
        lrs.append(opts["gen"].param_groups[0]["lr"])
        for o in opts.values():
            o.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
        for s in scheds.values():
            s.step()
    # official lambda rule with n_epochs = n_decay = 5: 1 - max(0, i + 1 - 5) / 6
    expected = [2e-4 * (1 - max(0, i + 1 - 5) / 6) for i in range(total)]
    assert lrs == pytest.approx(expected)
    assert lrs[:4] == [2e-4] * 4 and lrs[-1] == pytest.approx(2e-4 / 6)


def test_train_step_translate_and_pool_state(tmp_path):
    t = ci_translator()
    eng = ready(t)
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    before_g = [p.detach().clone() for p in t.gen_ab.parameters()]
    before_d = [p.detach().clone() for p in t.disc_b.parameters()]
    losses = t.train_step(a, b, 0, eng)
    assert set(losses) == {"g_ab", "g_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b"}
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())  # contract: detached 0-dim tensors
    assert any(not p.equal(q) for p, q in zip(t.gen_ab.parameters(), before_g))  # G and D both updated
    assert any(not p.equal(q) for p, q in zip(t.disc_b.parameters(), before_d))
    assert all(p.requires_grad for p in t.disc_a.parameters())  # requires_grad restored after the G step
    t.eval()
    out, back = t.translate(a), t.translate_b2a(b)
    assert out.image.shape == (2, 1, 64, 64) and out.mask is None and back.image.shape == (2, 1, 64, 64)
    assert out.image.min() >= -1 and out.image.max() <= 1
    assert not torch.allclose(out.image, t.translate_b2a(a).image)  # two different generators

    # extra_state carries the pool exactly (weights_only-safe tensors)
    state = t.extra_state()
    assert state["pool_a"].shape == (2, 1, 64, 64) and state["pool_b"].shape == (2, 1, 64, 64)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    t2 = ci_translator(seed=5)
    t2.load_extra_state(torch.load(path, weights_only=True))
    assert all(x.equal(y) for x, y in zip(t2.pool_b.images, t.pool_b.images))
    # the restored pool answers the next queries exactly as the original one
    for _ in range(3):
        t.pool_a.query(a), t.pool_b.query(b)
        t2.pool_a.query(a), t2.pool_b.query(b)
    random.seed(7)
    q1 = t.pool_a.query(b)
    random.seed(7)
    q2 = t2.pool_a.query(b)
    assert q1.equal(q2)
    with pytest.raises(ValueError, match="unexpected extra state"):
        t2.load_extra_state({"ema": torch.zeros(1)})


def test_profiles_validate_and_bad_size():
    assert set(PROFILES) == {"cpu", "ci", "gpu-quick", "paper"}
    for name, values in PROFILES.items():
        build_dataclass(CycleGANConfig, values or {}, f"profiles.{name}")
    with pytest.raises(ValueError, match="divisible by 4"):
        CycleGAN(CycleGANConfig(), in_channels=1, image_size=66)
