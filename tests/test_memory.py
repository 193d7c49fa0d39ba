"""The training-memory estimate (pipeline/memory.py) and `cxrbench check`'s warning: the storage counter against
hand-computed byte counts, the fake-tensor step against a real step's counted storages and against the measured peak
resident sets committed in reports/bench/memory-cpu.json, and the warning naming the model and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.memory import BASE_GB, MARGIN, LiveStorageBytes, check_memory, estimate_step

ROOT = Path(__file__).resolve().parents[1]


def test_the_counter_follows_each_storage_from_creation_to_death():
    with LiveStorageBytes() as m:
        x = torch.empty(1000)  # 4,000 B
        y = x * 2  # + 4,000
        v = y.view(10, 100)  # a view: no new storage
        del y  # still alive through v
        z = torch.empty(500)  # + 2,000 -> 10,000 (the peak so far)
        del v  # y's storage dies: 6,000
        x.mul_(3)  # in place: nothing new
        w = torch.empty(2000)  # + 8,000 -> 14,000
        del w, z  # 4,000
    assert (m.peak, m.live) == (14_000, 4_000)


def test_the_counter_sees_an_adam_step_exactly():
    """Linear(256, 128) + Adam, one step, counted from the layer's creation: weights + grads + Adam's two moments
    (each 4 x (256 x 128 + 128) bytes) + two 4-byte `step` tensors, by hand."""
    with LiveStorageBytes() as m:
        layer = torch.nn.Linear(256, 128)
        opt = torch.optim.Adam(layer.parameters(), foreach=False)
        layer(torch.ones(4, 256)).square().mean().backward()
        opt.step()
    per_copy = 4 * (256 * 128 + 128)
    assert m.live == 4 * per_copy + 2 * 4
    assert m.peak >= m.live


def test_the_fake_step_counts_what_a_real_step_allocates():
    """The same CycleGAN step (ci widths, 32 px) run on real tensors under the counter and estimated on fake tensors:
    the same peak (the fake step differs only in not computing)."""
    from pipeline import registry
    from pipeline.contract import StepContext

    cfg = registry.profile_config("cyclegan", "ci")
    est = estimate_step("cyclegan", cfg, 32, 2)
    torch.manual_seed(0)
    with LiveStorageBytes() as m:
        t = registry.get("cyclegan")(cfg, in_channels=1, image_size=32)
        t.configure_optimizers(10)
        ctx = StepContext(torch.device("cpu"), 0, 1, backward=lambda loss, **kw: loss.backward(**kw))
        t.train()
        t.train_step(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), 0, ctx)
    assert est.peak_bytes == pytest.approx(m.peak, rel=0.02)


def test_activations_scale_with_pixels_and_shrink_with_checkpointing_and_bf16():
    from pipeline import registry

    cfg = registry.profile_config("cyclegan", "ci")
    small, big = (estimate_step("cyclegan", cfg, s, 2) for s in (64, 128))
    ratio = (big.peak_bytes - big.state_bytes) / (small.peak_bytes - small.state_bytes)
    assert 3.5 < ratio < 4.5, ratio  # 4x the pixels (the state holds CycleGAN's image pools: also image-sized)
    assert estimate_step("cyclegan", cfg, 128, 2, checkpointing=True).peak_bytes < big.peak_bytes
    assert estimate_step("cyclegan", cfg, 128, 2, precision="bf16").peak_bytes < big.peak_bytes


def test_the_estimate_bounds_the_measured_peak_within_the_margin():
    """Calibration: the committed `cxrbench bench-memory` rows for CycleGAN (paper widths, peak resident set of a
    process running only that step, less the interpreter's baseline) lie between 1x and MARGIN x the estimate."""
    from pipeline import registry

    rows = json.loads((ROOT / "reports/bench/memory-cpu.json").read_text())["rows"]
    rows = [r for r in rows if r["method"] == "cyclegan" and r["size"] == 256]
    assert rows, "reports/bench/memory-cpu.json has no CycleGAN 256 px row"
    cfg = registry.profile_config("cyclegan", "paper")
    for r in rows:
        est = estimate_step("cyclegan", cfg, r["size"], r["batch"], r["precision"], r["checkpointing"])
        measured = (r["peak_mb"] - r["baseline_mb"]) / 1024
        assert est.peak_gb <= measured <= est.peak_gb * MARGIN, (r, est)


def test_check_warns_naming_the_model_and_the_fix(tmp_path, monkeypatch, capsys):
    from pipeline import memory
    from pipeline.app.cli import main
    from pipeline.config import load_params

    path = tmp_path / "params.yaml"
    assert main(["--params", str(path), "profile", "ci"]) == 0
    params = yaml.safe_load(path.read_text())
    params["models"] = {"ours": params["models"]["ours"]}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    capsys.readouterr()

    monkeypatch.setattr(memory, "device_memory_gb", lambda device: (64.0, "test RAM"))
    lines, warns = check_memory(load_params(path))
    assert warns == [] and lines[0].startswith("ours: ") and "64.0 GB test RAM" in lines[0]

    monkeypatch.setattr(memory, "device_memory_gb", lambda device: (0.5, "test RAM"))
    assert main(["--params", str(path), "check"]) == 0  # a warning, not an error: the user may know better
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if line.startswith("warning: train@ours")]
    assert len(warning) == 1, out
    assert "train.activation_checkpointing: true" in warning[0] and "models.ours batch_size" in warning[0]
    assert f"x {MARGIN} + {BASE_GB} GB" in warning[0] and "0.5 GB" in warning[0]
