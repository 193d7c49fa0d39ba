"""Faults: SIGKILL at any point, a corrupt checkpoint, a NaN loss, a broken MLflow store, CUDA out of memory.

Kills are real SIGKILLs of a forked child process (fork: the child starts with the test's imports, so a kill test
costs seconds, not a fresh interpreter's import time). A hook in the child says where it is through a pipe and then
blocks, so the kill lands at a known point: inside a training step, inside a checkpoint write, inside a dataset, a
translation folder or a metric file being written. The rerun happens in this process, from what is on disk.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import load_params, write_profile
from pipeline.engine import Engine, EngineSettings, TrainingError, list_checkpoints, safe_load, seed_everything

ITERATIONS, EVERY = 6, 2  # checkpoints at steps 2 and 4, the final one at 6


# --------------------------------------------------------------------------------------------------------------------
# Fork, wait for a marker, SIGKILL.
# --------------------------------------------------------------------------------------------------------------------
def forked_backward_works() -> bool:
    """Whether a child forked from this process can run a backward. It cannot once autograd has started its worker
    threads here (a compiled backward does that on CPU); such a child dies with "Unable to handle autograd's threading
    in combination with fork-based multiprocessing" before it reaches any marker."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)
            x = torch.ones(2, requires_grad=True)
            (x * x).sum().backward()
            code = 0
        except BaseException:  # noqa: BLE001
            pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def fork_child(body) -> tuple[int, int]:
    """Run body(say) in a forked child; `say(marker)` writes one line to the parent. Returns (pid, pipe fd)."""
    if not forked_backward_works():
        pytest.fail("this pytest process started autograd's worker threads (a torch.compile backward run in it "
                    "earlier?), so forked children cannot train: run such a test in its own interpreter, as "
                    "tests/test_engine.py::test_train_compile_runs_and_matches_eager does")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(read_fd)
        code = 0
        try:
            torch.set_num_threads(1)  # no OpenMP pool in a forked child

            def say(marker: str) -> None:
                os.write(write_fd, f"{marker}\n".encode())

            body(say)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd



@pytest.fixture
def fork_safe(request) -> bool:
    """True when this process can fork children that train. Otherwise (something earlier on this pytest worker
    started autograd's worker threads, e.g. a compiled backward) the test is run, whole, in a fresh pytest
    interpreter, its result asserted here, and False is returned: the test body then returns at once."""
    if forked_backward_works():
        return True
    if os.environ.get("CXRBENCH_FRESH_KILL_TEST"):
        pytest.fail("a fresh interpreter cannot fork children that train either (autograd threads at start-up?)")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CXRBENCH_FRESH_KILL_TEST": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        request.node.nodeid], cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"rerun in a fresh interpreter failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert " passed" in r.stdout, r.stdout[-2000:]
    return False


def kill_at(pid: int, fd: int, marker: str, timeout: float = 300.0) -> None:
    """SIGKILL the child as soon as it says `marker` (it then blocks, so the kill lands right there)."""
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while marker.encode() + b"\n" not in received:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"child did not reach {marker!r} in {timeout} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                _, status = os.waitpid(pid, 0)
                pytest.fail(f"child ended (status {status}) before {marker!r}; it said {received.decode()!r}")
            received += chunk
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def block(say, marker: str) -> None:
    say(marker)
    time.sleep(600)  # the parent kills us here


def stale_files(root: Path) -> list[Path]:
    """Leftovers of an interrupted write: .tmp-* files or folders, .<name>.partial-* / .old-* folders."""
    return [p for p in Path(root).rglob("*")
            if p.name.startswith(".tmp-") or ".partial" in p.name or p.name.startswith(".") and ".old-" in p.name]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture
def deterministic_mode():
    """The resume tests run in torch's deterministic mode; give the rest of the suite its previous setting back."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


# --------------------------------------------------------------------------------------------------------------------
# Training: SIGKILL at three points, then resume == uninterrupted.
# --------------------------------------------------------------------------------------------------------------------
def build_method(method: str):
    """The method with its `ci` profile values (ours: prior_weights "", a random frozen prior), 64 px."""
    from _train_driver import build

    seed_everything(7, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ours: "prior_weights is empty" (intended here)
        return build(method, 64)


def training_images():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, size=(6, 64, 64), dtype=np.uint8),
            rng.integers(0, 256, size=(6, 64, 64), dtype=np.uint8))


def make_engine(translator, ckpt: Path, method: str) -> Engine:
    settings = EngineSettings(iterations=ITERATIONS, checkpoint_every=EVERY, log_every=1, deterministic=True,
                              progress=False, device="cpu")
    return Engine(translator, settings, ckpt, seed=7, curve_path=ckpt / "curve.csv",
                  fingerprint_data={"method": method})


def killed_training(initial, ckpt: Path, method: str, marker: str, *, mid_step: int | None = None,
                    in_save: int | None = None) -> None:
    """Train a fresh copy of `initial` in a child (resuming from `ckpt`), SIGKILL it at the given point."""

    def body(say):
        engine = make_engine(initial, ckpt, method)  # the child's own copy of the untrained translator
        if mid_step is not None:  # after the first backward of step `mid_step`, before its optimizer step
            real_backward = engine.ctx.backward

            def backward(loss, **kw):
                real_backward(loss, **kw)
                if engine.step == mid_step:
                    block(say, marker)
            engine.ctx.backward = backward  # what train_step calls
        if in_save is not None:  # half of the checkpoint's bytes are on disk when the kill lands
            real_save = torch.save

            def save(obj, f, *a, **kw):
                if getattr(f, "name", "").endswith(f"step_{in_save:09d}.pt"):
                    buf = io.BytesIO()
                    real_save(obj, buf, *a, **kw)
                    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
                    f.flush()
                    block(say, marker)
                return real_save(obj, f, *a, **kw)
            torch.save = save
        engine.fit(*training_images())

    kill_at(*fork_child(body), marker)


def steps_of(ckpt: Path) -> list[int]:
    return [int(p.stem.split("_")[1]) for p in list_checkpoints(ckpt)]


def assert_same(a, b, where: str = "") -> None:
    """Recursive exact equality of checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN == NaN here


def loss_rows(curve: Path) -> list[dict[str, str]]:
    with open(curve) as fh:
        return [{k: v for k, v in row.items() if k != "it_per_s"} for row in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ours", "cyclegan"])
def test_sigkill_at_three_points_then_resume_equals_uninterrupted(tmp_path, method, deterministic_mode, capfd,
                                                                  fork_safe):
    if not fork_safe:
        return  # run and asserted in a fresh interpreter
    initial = build_method(method)
    full = copy.deepcopy(initial)
    make_engine(full, tmp_path / "full", method).fit(*training_images())

    cut = tmp_path / "cut"
    # 1. inside step 3's train_step: gradients computed, the generator not yet updated
    killed_training(initial, cut, method, "mid-step", mid_step=3)
    assert steps_of(cut) == [2] and not stale_files(cut)
    # 2. inside the write of checkpoint 4: a half-written temporary file, never a half-written checkpoint
    killed_training(initial, cut, method, "writing checkpoint 4", in_save=4)
    partial = cut / ".tmp-step_000000004.pt"
    assert steps_of(cut) == [2] and partial.is_file()
    assert 0 < partial.stat().st_size < (tmp_path / "full" / "step_000000004.pt").stat().st_size
    with pytest.raises(Exception):
        safe_load(partial)
    # 3. inside the write of the final checkpoint (resumed from 2, checkpoint 4 written on the way)
    killed_training(initial, cut, method, "writing checkpoint 6", in_save=6)
    assert steps_of(cut) == [2, 4] and (cut / ".tmp-step_000000006.pt").is_file()
    assert not (cut / ".tmp-step_000000004.pt").exists()  # the resume removed the stale temporary file

    capfd.readouterr()
    resumed = copy.deepcopy(initial)
    make_engine(resumed, cut, method).fit(*training_images())
    err = capfd.readouterr().err
    assert "step_000000004.pt" in err and "at step 4" in err  # the log names where it resumed from

    assert steps_of(cut) == [4, 6] and not stale_files(cut)
    assert_same(full.state_dict(), resumed.state_dict(), "model")
    a, b = safe_load(tmp_path / "full" / "step_000000006.pt"), safe_load(cut / "step_000000006.pt")
    for key in ("step", "model", "optimizers", "schedulers", "extra", "rng"):
        assert_same(a[key], b[key], key)  # optimizer moments, LR schedule position, image pools, RNG streams
    assert loss_rows(tmp_path / "full" / "curve.csv") == loss_rows(cut / "curve.csv")  # one row per step, equal


def test_corrupt_newest_checkpoint_of_a_real_method_falls_back_and_still_resumes_exactly(tmp_path,
                                                                                          deterministic_mode,
                                                                                          capfd):
    initial = build_method("cyclegan")
    full = copy.deepcopy(initial)
    make_engine(full, tmp_path / "full", "cyclegan").fit(*training_images())

    cut = tmp_path / "cut"
    engine = make_engine(copy.deepcopy(initial), cut, "cyclegan")

    def crash(step):
        if step == 5:
            raise KeyboardInterrupt("simulated crash")
    engine.on_step = crash
    with pytest.raises(KeyboardInterrupt):
        engine.fit(*training_images())
    newest = cut / "step_000000004.pt"
    assert steps_of(cut) == [2, 4]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a full disk

    capfd.readouterr()
    resumed = copy.deepcopy(initial)
    with pytest.warns(UserWarning, match=r"step_000000004\.pt is unreadable .*trying the previous one"):
        make_engine(resumed, cut, "cyclegan").fit(*training_images())
    assert "at step 2" in capfd.readouterr().err
    assert_same(full.state_dict(), resumed.state_dict(), "model")


# --------------------------------------------------------------------------------------------------------------------
# Stages: SIGKILL during data generation, translation and evaluation, then rerun.
# --------------------------------------------------------------------------------------------------------------------
def tiny_params(root: Path):
    params = load_params(write_profile("ci", root / "params.yaml"))
    params.tracking.enabled = False
    return params


@pytest.mark.slow
def test_sigkill_during_data_generation_then_rerun(tmp_path, fork_safe):
    if not fork_safe:
        return  # run and asserted in a fresh interpreter
    import pipeline.app.data as stage
    from pipeline.data.canonical import read_manifest

    params = tiny_params(tmp_path)
    for key, value in dict(train_opacity=3, train_normal=3, val_opacity=0, val_normal=0, test_opacity=3,
                           test_normal=3, ards=2, jsrt=2, resolution=32, sheet_resolution=32,
                           depth_samples=32).items():
        setattr(params.data, key, value)
    out = tmp_path / "data"

    def body(say):
        real_write_case = stage.write_case

        def write_case(writer, case):
            row = real_write_case(writer, case)
            if writer.target.name == "ards-like":  # drr is complete; ards-like is half written
                block(say, "writing ards-like")
            return row
        stage.write_case = write_case
        stage.run_data_stage(params, out, log=None)

    kill_at(*fork_child(body), "writing ards-like")
    # all or nothing: the finished drr waits in data/.next/ with the half-written ards-like; nothing is visible
    assert not any((out / n).exists() for n in ("drr", "ards-like", "jsrt-like", "seg-train", "summary.json"))
    assert len(read_manifest(out / ".next" / "drr")) == 12
    assert list((out / ".next").glob(".ards-like.partial-*"))  # the killed write left only its hidden folder

    stage.run_data_stage(params, out, log=None)
    assert not stale_files(tmp_path), stale_files(tmp_path)
    counts = {name: read_manifest(out / name).groupby(["split", "domain"]).size().to_dict()
              for name in ("drr", "ards-like", "jsrt-like")}
    assert counts == {"drr": {("test", "normal"): 3, ("test", "opacity"): 3, ("train", "normal"): 3,
                              ("train", "opacity"): 3},
                      "ards-like": {("test", "opacity"): 2}, "jsrt-like": {("test", "normal"): 2}}
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["images"] for k, v in summary["datasets"].items()} == {"drr": 12, "ards-like": 2, "jsrt-like": 2,
                                                                        "seg-train": 3, "det-train": 6}
    assert (tmp_path / "reports" / "figures" / "data_samples.png").is_file()


@pytest.fixture(scope="module")
def translated_project(tmp_path_factory):
    """Three tiny evaluation sets, an (untrained) exported cyclegan and one complete translate + paired run."""
    from test_eval_support import write_eval_datasets

    from pipeline.app.evaluate import run_paired
    from pipeline.engine import export_weights
    from pipeline.layout import Layout, build_translator
    from pipeline.app.translate import run_translate

    root = write_eval_datasets(tmp_path_factory.mktemp("proj"), size=32, n=3)
    params = tiny_params(root)
    params.data.resolution = 32
    seed_everything(0)
    export_weights(build_translator(params, "cyclegan"), Layout(root).weights("cyclegan", 0), {"model": "cyclegan"})
    run_translate(params, "cyclegan", root=root)
    run_paired(params, "cyclegan", root=root)
    return root, params


@pytest.mark.slow
def test_sigkill_during_translation_then_rerun(translated_project, tmp_path, fork_safe):
    if not fork_safe:
        return  # run and asserted in a fresh interpreter
    import pipeline.app.translate as translate

    src, params = translated_project
    root = Path(shutil.copytree(src, tmp_path / "proj"))
    final = root / "outputs" / "cyclegan" / "seed0"
    before = tree_bytes(final)
    assert "index.csv" in before and len(before) > 20

    def body(say):
        real_rows, calls = translate.translate_rows, []

        def translate_rows(*args, **kwargs):
            records = real_rows(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:  # some PNGs of the new translation are on disk, no index yet
                block(say, "translating")
            return records
        translate.translate_rows = translate_rows
        translate.run_translate(params, "cyclegan", root=root)

    kill_at(*fork_child(body), "translating")
    tmp = final.with_name(".tmp-seed0")
    assert list(tmp.rglob("*.png")) and not (tmp / "index.csv").exists()
    assert tree_bytes(final) == before  # the previous complete output is untouched

    translate.run_translate(params, "cyclegan", root=root)
    assert tree_bytes(final) == before  # complete again (translation is deterministic)
    assert not stale_files(root), stale_files(root)


@pytest.mark.slow
def test_sigkill_while_an_evaluation_writes_its_metrics_then_rerun(translated_project, tmp_path, fork_safe):
    if not fork_safe:
        return  # run and asserted in a fresh interpreter
    from pipeline.app.evaluate import run_paired

    src, params = translated_project
    root = Path(shutil.copytree(src, tmp_path / "proj"))
    metrics = root / "metrics" / "paired" / "cyclegan.json"
    before = metrics.read_bytes()
    assert json.loads(before)["sets"]

    def body(say):
        import pipeline.io as io

        real_atomic_write = io.atomic_write

        def atomic_write(path, data):  # the one writer: killed after half of the temporary file is written
            path = Path(path)
            if path.parent.name == "paired" and isinstance(data, str):
                path.with_name(f".tmp-{path.name}").write_text(data[: len(data) // 2])
                block(say, "writing metrics")
            return real_atomic_write(path, data)
        io.atomic_write = atomic_write
        run_paired(params, "cyclegan", root=root)

    kill_at(*fork_child(body), "writing metrics")
    partial = metrics.with_name(".tmp-cyclegan.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial.read_text())
    assert metrics.read_bytes() == before  # DVC's metric file is never half written

    run_paired(params, "cyclegan", root=root)
    assert metrics.read_bytes() == before and not stale_files(root), stale_files(root)


# --------------------------------------------------------------------------------------------------------------------
# The non-finite-loss guard and CUDA out-of-memory, through the train stage and the CLI.
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def train_project(tmp_path, monkeypatch):
    """A tiny project (ci params, 64 px dataset, tracking off, ours with a random prior); `cxrbench train` in this
    process runs the real stage on it."""
    from helpers_data import write_tiny_dataset

    import pipeline.app.train as train

    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    data["tracking"]["enabled"] = False
    data["methods"]["ours"]["prior_weights"] = ""
    data["train"].update(iterations=4, checkpoint_every=2, log_every=1)
    data["data"]["resolution"] = 64  # the dataset below is 64 px
    data["methods"]["cyclegan"]["batch_size"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    write_tiny_dataset(tmp_path)
    real_run_train = train.run_train
    monkeypatch.setattr(train, "run_train", lambda params, model: real_run_train(params, model, root=tmp_path))
    return tmp_path, path


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """`cxrbench ARGV` in this process: (exit code, the error lines of stderr). Training's progress bar also writes
    to stderr; the error itself must be one line, after it, with no traceback."""
    from pipeline.app.cli import main

    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert not errors or lines[-1] == errors[-1], lines[-3:]
    return code, errors


def assert_nothing_published(root: Path, model: str) -> None:
    assert not (root / "models" / model).exists(), "weights exported by a failed run"
    assert not (root / "metrics" / "train" / f"{model}.json").exists(), "metrics written by a failed run"


def test_nan_in_a_real_methods_loss_names_step_and_term(train_project, monkeypatch, capsys):
    import ours.model

    root, params_file = train_project
    real_style, calls = ours.model.l_style, []

    def l_style(*args, **kwargs):  # Eq. 6's style term turns NaN at the third training step (step index 2)
        calls.append(1)
        value = real_style(*args, **kwargs)
        return value * float("nan") if len(calls) == 3 else value
    monkeypatch.setattr(ours.model, "l_style", l_style)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random prior's warning
        code, err = cli(["--params", str(params_file), "train", "--model", "ours"], capsys)
    assert code == 2
    assert err == ["cxrbench: error: ours/seed0: loss 'style' is nan at step 2 (lower the learning rate or check the "
                   "input data)"]
    assert_nothing_published(root, "ours")
    ckpt = root / "checkpoints" / "ours" / "seed0"
    assert steps_of(ckpt) == [2]  # the NaN-updated weights of step 3 were never checkpointed
    assert all(torch.isfinite(v).all() for v in safe_load(ckpt / "step_000000002.pt")["model"].values()
               if v.is_floating_point())


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total capacity)"
                                "\nIf reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
], ids=["OutOfMemoryError", "RuntimeError"])
def test_cuda_out_of_memory_is_one_line_saying_what_to_change(train_project, monkeypatch, capsys, error):
    from pipeline import registry

    root, params_file = train_project

    def train_step(self, real_a, real_b, step, engine):
        raise error
    monkeypatch.setattr(registry.get("cyclegan"), "train_step", train_step)
    code, err = cli(["--params", str(params_file), "train", "--model", "cyclegan"], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("cxrbench: error: cyclegan/seed0: out of memory at 64px with batch 1 (")
    assert err[0].endswith("; lower data.resolution or the method's batch_size in params.yaml, or set "
                           "train.precision: bf16 and train.activation_checkpointing: true")
    assert_nothing_published(root, "cyclegan")


def test_out_of_memory_is_a_training_error_in_process(train_project, monkeypatch):
    from pipeline import registry
    from pipeline.app.train import run_train

    root, params_file = train_project

    def train_step(self, real_a, real_b, step, engine):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(registry.get("cyclegan"), "train_step", train_step)
    with pytest.raises(TrainingError, match=r"out of memory at 64px with batch 1 .*lower data\.resolution"):
        run_train(load_params(params_file), "cyclegan")
    assert_nothing_published(root, "cyclegan")


# --------------------------------------------------------------------------------------------------------------------
# MLflow store unreachable, locked, or not a database: the stage completes, warns, DVC files intact.
# --------------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def untracked_train(tmp_path_factory):
    """The train stage's outputs with tracking off: what every tracking failure must leave unchanged."""
    from helpers_data import write_tiny_dataset

    from pipeline.app.train import run_train

    root = tmp_path_factory.mktemp("untracked")
    write_tiny_dataset(root)
    params = tiny_params(root)
    run_train(params, "cyclegan", root=root)
    return json.loads((root / "metrics" / "train" / "cyclegan.json").read_text()), \
        safe_load(root / "models" / "cyclegan" / "seed0.pt")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["unreachable server", "locked sqlite", "not a database"])
def test_a_broken_mlflow_store_never_fails_a_stage(tmp_path, untracked_train, monkeypatch, capfd, store):
    from helpers_data import write_tiny_dataset

    from pipeline import tracking
    from pipeline.app.train import run_train

    write_tiny_dataset(tmp_path)
    params = tiny_params(tmp_path)
    params.tracking.enabled = True
    db = tmp_path / "mlflow.db"
    lock = None
    if store == "unreachable server":
        params.tracking.uri, expected = f"http://127.0.0.1:{free_port()}", "MLflow tracking unavailable"
    elif store == "not a database":
        db.write_bytes(b"this is not an sqlite file" * 100)
        params.tracking.uri, expected = f"sqlite:///{db}", "MLflow tracking unavailable"
    else:
        params.tracking.uri, expected = f"sqlite:///{db}", "database is locked"
        with tracking.stage_run("setup", uri=params.tracking.uri):  # a store with its tables and one run
            pass
        monkeypatch.setattr(tracking, "RETRIES", 1)  # each attempt already waits mlflow's 20 s busy timeout
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holding the write lock for the whole stage
    store_bytes = db.read_bytes() if db.exists() else None
    capfd.readouterr()
    try:
        with pytest.warns(UserWarning, match=expected):
            run_train(params, "cyclegan", root=tmp_path)
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]  # a warning line, not a wall of SQLAlchemy tracebacks

    metrics, weights = copy.deepcopy(untracked_train)
    got = json.loads((tmp_path / "metrics" / "train" / "cyclegan.json").read_text())
    for summary in (got, metrics):
        summary["seeds"]["0"].pop("wall_s")
    assert got == metrics  # DVC's metric file is complete and equal to an untracked run's
    assert_same(safe_load(tmp_path / "models" / "cyclegan" / "seed0.pt"), weights, "weights")
    if store == "not a database":
        assert db.read_bytes() == store_bytes  # a foreign file is never overwritten
    if store == "locked sqlite":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(params.tracking.uri)
        runs = client.search_runs([client.get_experiment_by_name("cxrbench").experiment_id])
        # no half-logged run was left behind: only the setup run and the pipeline run it created before the lock
        assert sorted(r.data.tags["stage"] for r in runs) == ["pipeline", "setup"]
