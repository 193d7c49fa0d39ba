"""The training engine: stateless sampling, exact resume (in-process and after SIGKILL), guards, checkpoints."""
from __future__ import annotations

import json

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.engine import (Engine, EngineSettings, NonFiniteLossError, UnpairedBatches, list_checkpoints,
                             random_crop_resize, safe_load, seed_everything)
from toy_translator import ToyConfig, ToyTranslator

DRIVER = Path(__file__).with_name("_train_driver.py")


def _data(n=6, size=16):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.integers(0, 256, (n, size, size),
                                                                               dtype=np.uint8))


def _settings(iterations, every=3, **kw):
    return EngineSettings(iterations=iterations, checkpoint_every=every, log_every=1, progress=False, device="cpu",
                          **kw)


def _train(ckpt_dir, iterations=10, stop_after=None, cfg=ToyConfig(), fp=None):
    seed_everything(3)
    t = ToyTranslator(cfg)
    eng = Engine(t, _settings(iterations), ckpt_dir, seed=3, curve_path=Path(ckpt_dir) / "curve.csv",
                 fingerprint_data=fp)
    if stop_after is not None:
        def crash(step):
            if step == stop_after:
                raise KeyboardInterrupt("simulated crash")
        eng.on_step = crash
    a, b = _data()
    try:
        eng.fit(a, b)
    except KeyboardInterrupt:
        pass
    return t, eng


def _equal_states(s1, s2):
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = _data(size=20)
    d1 = UnpairedBatches(a, b, batch_size=2, image_size=16, crop_scale=0.8, hflip=True, seed=5)
    d2 = UnpairedBatches(a, b, batch_size=2, image_size=16, crop_scale=0.8, hflip=True, seed=5)
    for step in (0, 7, 123):
        xa, xb = d1[step]
        ya, yb = d2[step]
        assert xa.shape == (2, 1, 16, 16) and xb.shape == (2, 1, 16, 16)
        assert torch.equal(xa, ya) and torch.equal(xb, yb)
        assert xa.min() >= -1 and xa.max() <= 1
    assert not torch.equal(d1[0][0], d1[1][0])
    other = UnpairedBatches(a, b, batch_size=2, image_size=16, crop_scale=0.8, hflip=True, seed=6)
    assert not torch.equal(d1[0][0], other[0][0])


def test_loader_workers_give_the_same_batches():
    from pipeline.engine import batch_loader

    a, b = _data()
    ds = UnpairedBatches(a, b, 2, 16, 0.9, False, seed=1)
    serial = [x[0] for x in batch_loader(ds, 3, 7, num_workers=0, pin=False)]
    parallel = [x[0] for x in batch_loader(ds, 3, 7, num_workers=2, pin=False)]
    assert len(serial) == 4
    for s, p in zip(serial, parallel):
        assert torch.equal(s, p)


def test_random_crop_resize_full_crop_is_identity():
    img = torch.linspace(-1, 1, 64).reshape(1, 8, 8)
    out = random_crop_resize(img, 8, 1.0, False, np.random.default_rng(0))
    assert torch.equal(out, img)


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full, _ = _train(tmp_path / "full", 10)
    _train(tmp_path / "cut", 10, stop_after=7)  # checkpoints at 3 and 6, crash after step 7
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_000000003.pt", "step_000000006.pt"]
    resumed, eng = _train(tmp_path / "cut", 10)
    assert eng.step == 10
    _equal_states(full.state_dict(), resumed.state_dict())
    # the loss curve has exactly one row per step, none duplicated by the resume
    steps = [int(r["step"]) for r in eng.loss_log.rows]
    assert steps == list(range(1, 11))


def test_corrupt_newest_checkpoint_falls_back_with_warning(tmp_path):
    _train(tmp_path, 10, stop_after=7)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(b"not a checkpoint")
    seed_everything(3)
    t = ToyTranslator()
    eng = Engine(t, _settings(10), tmp_path, seed=3)
    eng.optimizers, eng.schedulers = t.configure_optimizers(10)
    with pytest.warns(UserWarning, match="unreadable"):
        assert eng.try_resume() == 3


def _engine_for_resume(ckpt_dir, fp) -> Engine:
    """A fresh toy engine (seed 3, 10 iterations) over `ckpt_dir` with fingerprint data `fp`, ready to try_resume."""
    seed_everything(3)
    t = ToyTranslator()
    eng = Engine(t, _settings(10), ckpt_dir, seed=3, fingerprint_data=fp)
    eng.optimizers, eng.schedulers = t.configure_optimizers(10)
    return eng


def test_checkpoints_of_another_configuration_are_not_resumed(tmp_path):
    _train(tmp_path, 10, stop_after=7, fp={"lr": 1})
    eng = _engine_for_resume(tmp_path, {"lr": 2})
    with pytest.warns(UserWarning, match="another configuration"):
        assert eng.try_resume() == 0
    assert list_checkpoints(tmp_path) == []  # not resumed, and not deleted either: set aside


def test_changed_then_changed_back_settings_resume_the_set_aside_checkpoints(tmp_path):
    """Training is never deleted: checkpoints of another configuration move to stale/<fingerprint>/ with what
    differs; changing the value back brings them back and training resumes from them."""
    _train(tmp_path, 10, stop_after=7, fp={"lr": 1})
    kept = [p.name for p in list_checkpoints(tmp_path)]
    eng = _engine_for_resume(tmp_path, {"lr": 2})
    with pytest.warns(UserWarning, match="moved to"):
        assert eng.try_resume() == 0
    (aside,) = (tmp_path / "stale").iterdir()
    assert [p.name for p in list_checkpoints(aside)] == kept
    note = json.loads((aside / "set_aside.json").read_text())
    assert note["differs"] == ["fp.lr: 1 -> 2"] and note["step"] == 6
    eng = _engine_for_resume(tmp_path, {"lr": 1})  # changed back
    with pytest.warns(UserWarning, match="set aside"):
        assert eng.try_resume() == 6
    assert [p.name for p in list_checkpoints(tmp_path)] == kept


def test_keeps_only_the_newest_checkpoints(tmp_path):
    _train(tmp_path, 10)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_000000009.pt", "step_000000010.pt"]


def test_non_finite_loss_names_step_and_term(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss 'g' is nan at step 4"):
        seed_everything(0)
        t = ToyTranslator(ToyConfig(nan_at_step=4))
        Engine(t, _settings(10), tmp_path, seed=0).fit(*_data())


def test_non_finite_loss_is_caught_at_the_log_cadence_naming_its_step_and_no_checkpoint_keeps_it(tmp_path):
    """The guard reads the device-side flags once per log_every steps (no host sync per step), still names the
    exact step and term, and checks before any checkpoint: the NaN of step 4 stops the run at step 5 (checkpoint
    step), before step 5's checkpoint is written."""
    seed_everything(0)
    t = ToyTranslator(ToyConfig(nan_at_step=4))
    settings = EngineSettings(iterations=20, checkpoint_every=5, log_every=8, progress=False, device="cpu")
    with pytest.raises(NonFiniteLossError, match=r"loss 'g' is nan at step 4"):
        Engine(t, settings, tmp_path, seed=0).fit(*_data())
    assert list_checkpoints(tmp_path) == []


def test_losses_as_device_tensors_give_the_weights_and_logs_of_host_floats(tmp_path):
    """Host-sync removal changes no result: a translator that returns its losses as tensors (read by the engine
    once per log_every steps) and one that returns Python floats every step (the old way) end with identical
    weights (bitwise, fp32 CPU) and logged means equal within 1e-12 relative (float64 sums in both)."""
    runs = []
    for host_floats in (False, True):
        seed_everything(3)
        t = ToyTranslator(ToyConfig(host_floats=host_floats))
        eng = Engine(t, EngineSettings(iterations=12, checkpoint_every=100, log_every=4, progress=False,
                                       device="cpu"), tmp_path / str(host_floats), seed=3,
                     curve_path=tmp_path / f"{host_floats}.csv")
        last = eng.fit(*_data())
        runs.append((last, t.state_dict(), (tmp_path / f"{host_floats}.csv").read_text().splitlines()))
    (l1, w1, c1), (l2, w2, c2) = runs
    _equal_states(w1, w2)
    assert set(l1) == set(l2) == {"g", "d"}
    for k in l1:
        assert l1[k] == pytest.approx(l2[k], rel=1e-12), k
    assert len(c1) == len(c2) == 4  # header + steps 4, 8, 12


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        safe_load(path)


def _run_driver(method, ckpt, out, iters, every, sleep=0.0, kill_at=None):
    cmd = [sys.executable, str(DRIVER), method, str(ckpt), str(out), str(iters), str(every), str(sleep)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_at is None:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        return stdout, stderr
    for line in proc.stdout:
        if line.strip() == f"step {kill_at}":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return None, None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["toy"])
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, method):
    iters, every = (16, 5)
    _run_driver(method, tmp_path / "full", tmp_path / "full.pt", iters, every)
    _run_driver(method, tmp_path / "cut", tmp_path / "cut.pt", iters, every, sleep=0.2, kill_at=12)
    assert not (tmp_path / "cut.pt").exists()
    _, stderr = _run_driver(method, tmp_path / "cut", tmp_path / "cut.pt", iters, every)
    assert "at step 10" in stderr  # the log names the step it resumed from
    _equal_states(torch.load(tmp_path / "full.pt", weights_only=True),
                  torch.load(tmp_path / "cut.pt", weights_only=True))


def _compile_vs_eager(workdir: str) -> None:
    """The body of the compile test; it runs in its own interpreter (see the test)."""
    from pipeline.engine import compile_networks

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (6, 16, 16), dtype=np.uint8) for _ in range(2))
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        t = ToyTranslator(ToyConfig(stochastic=False))
        eng = Engine(t, EngineSettings(iterations=3, log_every=1, progress=False, device="cpu", compile=compiled,
                                       crop_scale=1.0), Path(workdir) / f"c{compiled}", seed=0)
        last = eng.fit(a, b)
        results.append((last, {k: v.clone() for k, v in t.state_dict().items()}))
        if compiled:
            assert compile_networks(t) == [], "compiling twice must find everything compiled in place"
            assert all(getattr(m, "_compiled_call_impl", None) is not None for m in t.children()
                       if any(p.requires_grad for p in m.parameters())), "a trainable network was not compiled"
    (eager_loss, eager_w), (comp_loss, comp_w) = results
    assert eager_w.keys() == comp_w.keys(), (sorted(eager_w), sorted(comp_w))
    assert set(eager_loss) == set(comp_loss), (sorted(eager_loss), sorted(comp_loss))
    for k in eager_loss:
        assert abs(comp_loss[k] - eager_loss[k]) <= 1e-5 + 1e-4 * abs(eager_loss[k]), (k, comp_loss[k], eager_loss[k])
    for k in eager_w:
        assert torch.allclose(eager_w[k].float(), comp_w[k].float(), rtol=1e-4, atol=1e-5), k
    print("compile matches eager")


def test_train_compile_runs_and_matches_eager(tmp_path):
    """train.compile on CPU: the networks are compiled in place (same state-dict keys, same checkpoints) and three
    steps give the losses and weights of the eager run within 1e-4.

    In its own interpreter: after a compiled backward, autograd has started its worker threads and a process forked
    from this one can no longer run a backward ("Unable to handle autograd's threading in combination with
    fork-based multiprocessing"), which would break the fork-based kill tests scheduled after this one on the same
    pytest worker."""
    here = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", "import sys, test_engine; test_engine._compile_vs_eager(sys.argv[1])",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=here.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compile matches eager" in proc.stdout


def test_a_comment_or_docstring_is_not_new_code_but_a_changed_constant_is(tmp_path):
    """The training fingerprint hashes the code (its AST without docstrings): a comment added to the engine by a
    `git pull` keeps every checkpoint; a changed number in the code starts a new model."""
    from pipeline.layout import code_of, source_hash

    base = 'def f(x):\n    """Add one."""\n    return x + 1  # the offset\n'
    assert code_of(base) == code_of('def f(x):\n    # reworded\n    return (x +\n            1)\n')
    assert code_of(base) != code_of('def f(x):\n    """Add one."""\n    return x + 2\n')
    pkg = tmp_path / "method"
    pkg.mkdir()
    (pkg / "model.py").write_text(base)
    before = source_hash(pkg)
    (pkg / "model.py").write_text("# a new header comment\n" + base.replace('"""Add one."""', '"""Add 1."""'))
    assert source_hash(pkg) == before
    (pkg / "model.py").write_text(base.replace("x + 1", "x + 1.5"))
    assert source_hash(pkg) != before


def test_activation_checkpointing_that_wraps_nothing_says_so_and_how_to_fix(tmp_path):
    """The toy's generator is a plain Sequential: nothing matches, so the run warns (naming the method and the
    translator attribute to set) instead of silently using the memory of a run without it; a matching regex wraps
    its Sequential and the warning goes away."""
    a, b = _data()
    t = ToyTranslator(ToyConfig())
    with pytest.warns(UserWarning, match=r"no block of toy matched .*set the translator's checkpoint_block_names"):
        Engine(t, _settings(2, activation_checkpointing=True), tmp_path / "a", seed=3).fit(a, b)
    t = ToyTranslator(ToyConfig())
    t.checkpoint_block_names = r"^Sequential$"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Engine(t, _settings(2, activation_checkpointing=True), tmp_path / "b", seed=3).fit(a, b)
    assert all(getattr(m, "_checkpointed", False) for m in (t.g, t.d))


def test_optimizer_impl_is_the_settings_one_after_a_resume(tmp_path):
    """A checkpoint written under one optimizer_impl resumes under another (the same update, to rounding: not a
    result setting), and the loaded optimizer state, which carries the switches it was saved with, runs the new one."""
    a, b = _data()
    seed_everything(3)
    Engine(ToyTranslator(ToyConfig()), _settings(4, every=2, optimizer_impl="loop"), tmp_path, seed=3).fit(a, b)
    seed_everything(3)
    eng = Engine(ToyTranslator(ToyConfig()), _settings(6, every=2, optimizer_impl="fused"), tmp_path, seed=3)
    steps: list[int] = []
    eng.on_step = steps.append
    eng.fit(a, b)
    assert steps and steps[0] >= 4  # resumed, not restarted
    groups = [g for o in eng.optimizers.values() for g in o.param_groups]
    assert groups and all(g["fused"] and not g["foreach"] for g in groups)
