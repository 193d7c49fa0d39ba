"""Suite-wide fixtures. The network guard is active for every test, in-process and in stage subprocesses."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["CXRBENCH_NO_NETWORK"] = "1"  # inherited by every subprocess the tests start (cxrbench, dvc)
# One thread per process, here and in every subprocess (stages that do not set train.threads use torch's default):
# `make test` runs two pytest workers on 2 cores, and two processes of 2 OpenMP threads each spin-wait on each other
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pipeline  # noqa: E402,F401  (offline switches)
from pipeline.offline import PROJECT_ROOT, install_network_guard  # noqa: E402

install_network_guard()

import torch  # noqa: E402

torch.set_num_threads(1)  # 2-core machines: one thread per test process keeps timings sane


@pytest.fixture(autouse=True)
def _no_network():
    """Every test runs with non-loopback connections refused (asserted by tests/test_offline.py)."""
    import socket

    assert getattr(socket, "_cxrbench_guard", False), "network guard is not installed"
    yield


def project_files() -> list[str]:
    """Files a fresh clone would have: tracked plus untracked-not-ignored."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (PROJECT_ROOT / f).is_file()]


# The ci profile's DRR sizes are small but not tiny; tests where only training and translation matter use these
TINY_DATA = {"train_opacity": 6, "train_normal": 6, "val_opacity": 0, "val_normal": 0, "test_opacity": 2,
             "test_normal": 2, "ards": 1, "jsrt": 1, "depth_samples": 32, "sheet_resolution": 64}


def copy_project(dest: Path) -> Path:
    """A clean copy of the project (no data/, models/, mlflow.db): what a new user's clone looks like."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra or {})
    return env


def run_checked(args, cwd, env, check=True, timeout=1500) -> subprocess.CompletedProcess:
    """A command in a copied project; a failure shows the tail of both streams."""
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def ready(translator, iterations: int = 10):
    """A translator ready for `train_step` outside the engine: its optimizers made (kept on it, as the contract
    says) and the one-process CPU step context that the engine would hand it."""
    from pipeline.contract import StepContext

    translator.configure_optimizers(iterations)
    return StepContext()


# `make test` runs two workers (pytest-xdist, one module per worker at a time). The long modules start first, in
# this order, so the two workers share them (first and third to one, second and fourth to the other) and the short
# modules fill the gaps; the order inside each module is kept. Seconds per module, measured on 2 cores with two
# workers: dvc_pipeline ~410, real_data_pipeline ~280, ours_sanity ~140, user_commands ~90, dvc_queue ~70 (longest
# first: each goes to the worker that frees first).
LONG_MODULES = ("test_dvc_pipeline.py", "test_real_data_pipeline.py", "test_ours_sanity.py", "test_user_commands.py",
                "test_dvc_queue.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: every module keeps its own order
