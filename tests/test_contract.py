"""Contract tests, parametrised over the registry: a new baseline directory is tested the moment it exists."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import registry
from pipeline.contract import Translation, Translator
from pipeline.engine import Engine, EngineSettings, export_weights, safe_load, seed_everything
from conftest import ready

SIZE = 64


def ci_config(name: str):
    return registry.profile_config(name, "ci", prior_weights="")  # contract tests run without a trained prior


def build(name: str, seed: int = 0) -> Translator:
    seed_everything(seed)
    cls = registry.get(name)
    return cls(ci_config(name), in_channels=1, image_size=SIZE)


def batch(seed: int = 0, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1, torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1)



METHODS = registry.names()


def test_registry_finds_ours_and_the_five_baselines():
    assert {"ours", "cyclegan", "unit", "munit", "drit", "uvcgan"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_class_attributes(name):
    cls = registry.get(name)
    assert cls.name == name
    assert (registry.package_dir(name) / "README.md").exists(), "every method documents its source"
    assert isinstance(cls.has_mask, bool)


@pytest.mark.parametrize("name", METHODS)
def test_one_train_step_and_translate(name, tmp_path):
    t = build(name)
    eng = ready(t)
    a, b = batch()
    t.train()
    losses = t.train_step(a, b, 0, eng)
    assert losses and all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
                          and math.isfinite(v) for v in losses.values()), losses
    t.eval()
    for fn in (t.translate, t.translate_b2a):
        out = fn(a)
        assert isinstance(out, Translation)
        assert out.image.shape == (2, 1, SIZE, SIZE)
        assert out.image.min() >= -1 and out.image.max() <= 1
        if t.has_mask:
            assert out.mask is not None and out.mask.shape == (2, 1, SIZE, SIZE)
            assert out.mask.min() >= 0 and out.mask.max() <= 1
        else:
            assert out.mask is None


HOST_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


@pytest.mark.parametrize("name", METHODS)
def test_train_step_reads_nothing_back_to_the_host(name, monkeypatch):
    """No host sync inside train_step (on a GPU each one stalls the launch queue): every way a tensor's value
    reaches Python raises while four steps run (DRIT: content-D-only steps and full steps). A method that reads a
    value back fails here, naming the call."""
    t = build(name)
    eng = ready(t)
    a, b = batch()
    t.train()

    torch_dir = str(Path(torch.__file__).parent)

    def trap(what):
        original = getattr(torch.Tensor, what)

        def read(self, *args, **kwargs):
            # torch's own reads are its business (the optimizers' CPU step counter: no device sync)
            if sys._getframe(1).f_code.co_filename.startswith(torch_dir):
                return original(self, *args, **kwargs)
            raise AssertionError(f"{name}.train_step reads a tensor back to the host (Tensor.{what})")
        return read

    for what in HOST_READS:
        monkeypatch.setattr(torch.Tensor, what, trap(what))
    for step in range(4):
        t.train_step(a, b, step, eng)
    monkeypatch.undo()
    with pytest.raises(AssertionError, match="Tensor.item"):  # the trap itself works
        for what in HOST_READS:
            monkeypatch.setattr(torch.Tensor, what, trap(what))
        torch.zeros(()).item()


@pytest.mark.parametrize("name", METHODS)
def test_determinism_under_a_seed(name, tmp_path):
    t1, t2 = build(name, seed=3), build(name, seed=3)
    for (k, v1), v2 in zip(t1.state_dict().items(), t2.state_dict().values()):
        assert torch.equal(v1, v2), k
    a, b = batch()
    torch.manual_seed(5)
    l1 = t1.train_step(a, b, 0, ready(t1))
    torch.manual_seed(5)
    l2 = t2.train_step(a, b, 0, ready(t2))
    assert l1 == l2
    assert build(name, seed=4).state_dict().keys() == t1.state_dict().keys()


def _fit(name, ckpt, iterations, crash_after=None):
    t = build(name, seed=1)
    eng = Engine(t, EngineSettings(iterations=iterations, checkpoint_every=1, log_every=1, progress=False,
                                   device="cpu", deterministic=True), ckpt, seed=1)
    if crash_after is not None:
        def crash(step):
            if step == crash_after:
                raise KeyboardInterrupt
        eng.on_step = crash
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8), rng.integers(0, 256, (4, SIZE, SIZE),
                                                                               dtype=np.uint8)
    try:
        eng.fit(*data)
    except KeyboardInterrupt:
        pass
    return t


@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_round_trip_with_exact_resume(name, tmp_path):
    full = _fit(name, tmp_path / "full", 3)
    _fit(name, tmp_path / "cut", 3, crash_after=2)
    resumed = _fit(name, tmp_path / "cut", 3)
    for (k, v1), v2 in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v1, v2), f"{name}: {k} differs after resume"
    # exported inference weights load back into a fresh model and translate identically
    export_weights(full, tmp_path / "w.pt", {"model": name})
    fresh = build(name, seed=9)
    missing, unexpected = fresh.load_state_dict(safe_load(tmp_path / "w.pt"), strict=False)
    keep = set(fresh.inference_modules())
    assert not unexpected and not [m for m in missing if m.split(".", 1)[0] in keep]
    full.eval(), fresh.eval()
    x = batch(7)[0]
    torch.manual_seed(0)
    y1 = full.translate(x).image
    torch.manual_seed(0)
    y2 = fresh.translate(x).image
    assert torch.allclose(y1, y2, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_activation_checkpointing_gives_the_same_weights(name):
    """train.activation_checkpointing recomputes the generators' block activations in backward: three steps with
    and without it end with the same weights (fp32, CPU; the recomputation is the same arithmetic with the same RNG
    state, so the tolerance is float rounding: 1e-6 relative, 1e-7 absolute) and at least one block was wrapped."""
    from pipeline.engine import checkpoint_activations

    states = []
    for wrapped in (False, True):
        t = build(name, seed=0)
        if wrapped:
            assert checkpoint_activations(t), (f"{name}: no block matched CHECKPOINT_BLOCKS; name the generator's "
                                               "repeated blocks so, or set the translator's checkpoint_block_names")
            assert checkpoint_activations(t) == []  # idempotent
        eng = ready(t)
        t.train()
        torch.manual_seed(1)
        for step in range(3):
            a, b = batch(seed=step)
            t.train_step(a, b, step, eng)
        states.append({k: v.detach().clone() for k, v in t.state_dict().items()})
    plain, ckpt = states
    assert plain.keys() == ckpt.keys()
    for k in plain:
        assert torch.allclose(plain[k].float(), ckpt[k].float(), rtol=1e-6, atol=1e-7), (name, k)


@pytest.mark.parametrize("name", METHODS)
def test_optimizer_implementations_give_the_same_weights(name, monkeypatch):
    """train.optimizer_impl changes only the kernels of a method's optimizer update, never its algorithm, and each
    switch really runs its kernel (the Adam implementation called is counted).

    1. The method's own optimizers (its betas, weight decay, learning rates), fed the same random gradients for three
       steps under loop, foreach and fused, give the same weights to float rounding (rtol 1e-6, atol 1e-8).
    2. Three real training steps: the translations agree within 1e-3 on the [-1, 1] scale, an eighth of one 8-bit
       level (observed 2e-7 to 4e-5 on most machines, 4e-4 for CycleGAN's fused kernel on one 2-core machine).
       Weights are not compared here: fused's one-ulp differences meet parameters whose gradient is rounding noise
       (conv biases feeding an InstanceNorm, which subtracts them: their true gradient is 0), and Adam's
       normalisation turns that noise into steps of about lr under any kernel, without changing what the network
       computes."""
    import torch.optim.adam as adam

    from pipeline.contract import StepContext
    from pipeline.engine import set_optimizer_impl

    called: list[str] = []

    def counted(kernel: str):
        real = getattr(adam, kernel)

        def run(*args, **kwargs):
            called.append(kernel)
            return real(*args, **kwargs)
        return run
    for kernel in ("_single_tensor_adam", "_multi_tensor_adam", "_fused_adam"):
        monkeypatch.setattr(adam, kernel, counted(kernel))
    kernels = {"loop": "_single_tensor_adam", "foreach": "_multi_tensor_adam", "fused": "_fused_adam"}
    weights, outputs = {}, {}
    for impl, kernel in kernels.items():
        t = build(name, seed=0)
        optimizers, _ = t.configure_optimizers(10)
        assert set_optimizer_impl(optimizers, impl) == impl
        called.clear()
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            for opt in optimizers.values():
                for group in opt.param_groups:
                    for p in group["params"]:
                        p.grad = torch.randn(p.shape, generator=g) * 1e-3
                opt.step()
        assert called and set(called) == {kernel}, (impl, set(called))
        weights[impl] = {k: v.detach().clone() for k, v in t.state_dict().items()}

        t = build(name, seed=0)
        optimizers, _ = t.configure_optimizers(10)
        set_optimizer_impl(optimizers, impl)
        t.train()
        torch.manual_seed(1)
        for step in range(3):
            a, b = batch(seed=step)
            t.train_step(a, b, step, StepContext())
        t.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            outputs[impl] = t.translate(batch(seed=9)[0]).image
    for impl in ("foreach", "fused"):
        for k, v in weights["loop"].items():
            assert torch.allclose(v.float(), weights[impl][k].float(), rtol=1e-6, atol=1e-8), (impl, k)
        diff = (outputs["loop"] - outputs[impl]).abs().max()
        assert diff <= 1e-3, (impl, diff)
