"""One run across several processes: torchrun with 2 CPU processes (gloo, loopback) against 1-process runs.

One torchrun launch of tests/_ddp_driver.py runs every distributed scenario (a launch costs seconds of startup);
the tests below compare its outputs with 1-process runs computed here, in the test process.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli_env, copy_project
from pipeline import distributed
from pipeline.engine import Engine, EngineSettings, UnpairedBatches, list_checkpoints, safe_load, seed_everything
from toy_translator import ToyConfig, ToyTranslator

DRIVER = Path(__file__).with_name("_ddp_driver.py")
PROJECT = Path(__file__).resolve().parents[1]
SEED = 3  # tests/_ddp_driver.py SEED
# Final weights of the 2-process run vs the 1-process run over the same global batch. The two compute the same
# gradients with float32 sums grouped differently (two per-rank means averaged vs one mean over 4 images), so
# they differ by rounding only: a few float32 ulps of |w| <= 1 (ulp(1) = 1.2e-7), observed ~3e-8 after 6 Adam
# steps. 1e-6 leaves room for other BLAS/CPU kernels while staying 10^4 below one Adam step (lr 1e-2): a rank
# training on the wrong slice or unsynchronised gradients misses by ~1e-2 (the control test checks this).
ATOL, RTOL = 1e-6, 1e-5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, env: dict, nproc: int = 2, timeout: int = 240) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    env = {**env, "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo would otherwise pick the interface of the host name
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout + r.stderr


def toy_data(n: int = 6, size: int = 16):  # = tests/_ddp_driver.py toy_data
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            rng.integers(0, 256, (n, size, size), dtype=np.uint8))


def one_process_toy(tmp: Path, batch_size: int):
    """The 1-process reference of the driver's `equivalence` scenario with a global batch of `batch_size`."""
    seed_everything(SEED)
    t = ToyTranslator(ToyConfig(batch_size=batch_size, stochastic=False))
    settings = EngineSettings(iterations=6, checkpoint_every=3, log_every=1, progress=False, device="cpu",
                              crop_scale=0.75, hflip=True)
    eng = Engine(t, settings, tmp / "ckpt", seed=SEED, curve_path=tmp / "curve.csv",
                 fingerprint_data={"scenario": "eq"})
    eng.fit(*toy_data())
    return t, eng


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    log = torchrun([str(DRIVER), str(out)], PROJECT, cli_env({"PYTHONPATH": str(PROJECT)}))

    def load(name: str, rank: int):
        facts = json.loads((out / f"{name}_rank{rank}.json").read_text())
        return torch.load(out / f"{name}_rank{rank}.pt", weights_only=True), facts

    return out, load, log


def assert_identical(s1: dict, s2: dict) -> None:
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


# --- in-process: no process group ------------------------------------------------------------------------------------
def test_rank_slices_are_the_1_process_batch():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (5, 20, 24), dtype=np.uint8)  # non-square: crop offsets differ in h and w
    b = rng.integers(0, 256, (7, 20, 24), dtype=np.uint8)
    full = UnpairedBatches(a, b, 6, 16, crop_scale=0.7, hflip=True, seed=9)
    for step in (0, 5, 77):
        whole_a, whole_b = full[step]
        for rank in range(3):
            part_a, part_b = UnpairedBatches(a, b, 6, 16, 0.7, True, seed=9, rank=rank, world_size=3)[step]
            assert part_a.shape == (2, 1, 16, 16)
            assert torch.equal(part_a, whole_a[2 * rank:2 * rank + 2])
            assert torch.equal(part_b, whole_b[2 * rank:2 * rank + 2])


def test_batch_that_does_not_split_into_ranks_is_refused():
    a = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(Exception, match="multiple of the number of processes"):
        UnpairedBatches(a, a, 3, 8, 1.0, False, seed=0, rank=0, world_size=2)


def test_without_torchrun_everything_is_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.setup(torch.device("cpu")) == (0, 1, torch.device("cpu"))
    assert not distributed.is_initialized()
    assert distributed.is_main_process() and distributed.world_size() == 1
    assert distributed.mean_of_floats({"g": 1.5}) == {"g": 1.5}
    assert distributed.broadcast_object({"x": 1}) == {"x": 1}
    assert distributed.gather_objects(4) == [4]
    monkeypatch.setenv("RANK", "3")  # before the group exists, torchrun's environment decides who logs
    assert not distributed.is_main_process()


# --- torchrun, 2 processes, gloo --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(ddp, tmp_path):
    out, load, _ = ddp
    rank0, facts0 = load("equivalence", 0)
    rank1, facts1 = load("equivalence", 1)
    assert facts0["world_size"] == 2 and facts0["step"] == facts1["step"] == 6
    assert_identical(rank0, rank1)  # identical averaged gradients -> bit-identical replicas
    ref, _ = one_process_toy(tmp_path / "global", batch_size=4)  # 2 ranks x batch 2
    for k, v in ref.state_dict().items():
        assert torch.allclose(rank0[k], v, atol=ATOL, rtol=RTOL), (k, (rank0[k] - v).abs().max().item())
    # control: the batch of one rank alone trains measurably different weights
    half, _ = one_process_toy(tmp_path / "half", batch_size=2)
    gap = max((rank0[k] - v).abs().max().item() for k, v in half.state_dict().items())
    assert gap > 1000 * ATOL


@pytest.mark.slow
def test_logged_losses_are_global_batch_means_and_only_rank_0_logs(ddp, tmp_path):
    out, load, _ = ddp
    _, facts0 = load("equivalence", 0)
    _, facts1 = load("equivalence", 1)
    assert facts0["tracker_calls"] == 6 and facts1["tracker_calls"] == 0  # log_every 1, 6 steps
    assert (out / "eq_curve_rank0.csv").exists() and not (out / "eq_curve_rank1.csv").exists()
    _, ref = one_process_toy(tmp_path, batch_size=4)
    import pandas as pd

    ddp_curve, ref_curve = pd.read_csv(out / "eq_curve_rank0.csv"), pd.read_csv(tmp_path / "curve.csv")
    assert list(ddp_curve["step"]) == list(range(1, 7))
    for col in ("g", "d"):  # toy losses are batch means: the mean of the two rank means is the global mean
        np.testing.assert_allclose(ddp_curve[col], ref_curve[col], rtol=1e-5)


@pytest.mark.slow
def test_checkpoint_has_the_single_process_keys_plus_other_ranks_state(ddp, tmp_path):
    out, load, _ = ddp
    rank0, _ = load("equivalence", 0)
    one_process_toy(tmp_path, batch_size=4)
    ddp_ckpt = safe_load(list_checkpoints(out / "eq_ckpt")[-1])
    ref_ckpt = safe_load(list_checkpoints(tmp_path / "ckpt")[-1])
    assert [p.name for p in list_checkpoints(out / "eq_ckpt")] == ["step_000000003.pt", "step_000000006.pt"]
    assert set(ddp_ckpt) == set(ref_ckpt) | {"ranks"}
    assert ddp_ckpt["model"].keys() == ref_ckpt["model"].keys()  # no `module.` prefixes
    assert ddp_ckpt["ranks"]["world_size"] == 2 and len(ddp_ckpt["ranks"]["states"]) == 1
    assert_identical(ddp_ckpt["model"], rank0)


@pytest.mark.slow
def test_per_rank_random_streams(ddp):
    """seed + rank: rank 0 continues the stream of a 1-process run (seed), rank 1 its own (seed + 1)."""
    _, load, _ = ddp
    for rank in (0, 1):
        _, facts = load("equivalence", rank)
        expected = torch.rand(3, generator=torch.Generator().manual_seed(SEED + rank))
        assert torch.equal(torch.tensor(facts["next_draw"]), expected)


@pytest.mark.slow
def test_resume_under_ddp_equals_uninterrupted(ddp):
    """Stochastic toy (noise and image pool differ per rank): crash at step 7, resume from the step-6 checkpoint."""
    out, load, log = ddp
    assert "resuming" in log and "at step 6" in log
    for rank in (0, 1):
        full, _ = load("resume_full", rank)
        cut, facts = load("resume_cut", rank)
        assert facts["step"] == 10
        assert_identical(full, cut)
        pools = [torch.load(out / f"resume_{k}_pool_rank{rank}.pt", weights_only=True) for k in ("full", "cut")]
        assert all(torch.equal(x, y) for x, y in zip(*pools))


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(ddp):
    _, load, _ = ddp
    for rank in (0, 1):  # the NaN was injected on rank 1 only
        _, facts = load("nan", rank)
        assert "loss 'g' is nan at step 2" in facts["error"]
        assert facts["step"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ours", "cyclegan"])
def test_real_methods_train_under_two_processes(ddp, method):
    """ci profile, 2 steps. The ranks started from different weights (seeded apart): only the broadcast and the
    gradient averaging make them end identical. Their keys are those of a 1-process model."""
    _, load, _ = ddp
    rank0, facts0 = load(method, 0)
    rank1, facts1 = load(method, 1)
    assert facts0["step"] == facts1["step"] == 2
    assert facts0["losses"] == facts1["losses"] and all(np.isfinite(v) for v in facts0["losses"].values())
    assert_identical(rank0, rank1)
    assert not any(k.startswith("module.") or ".module." in k for k in rank0)


@pytest.mark.slow
def test_train_stage_under_torchrun(tmp_path):
    """`torchrun -m pipeline.app.cli train` in a clean copy of the project: rank 0 alone writes weights, metrics and
    one MLflow run (tagged with the world size); the checkpoints resume in a 1-process run."""
    from helpers_data import write_tiny_dataset
    from pipeline.config import write_profile

    dest = copy_project(tmp_path / "project")
    write_tiny_dataset(dest, n=2)
    write_profile("ci", dest / "params.yaml")  # = `cxrbench profile ci` in the copy, without a process start
    env = cli_env({"PYTHONPATH": str(dest)})
    torchrun(["-m", "pipeline.app.cli", "train", "--model", "cyclegan"], dest, env)
    summary = json.loads((dest / "metrics" / "train" / "cyclegan.json").read_text())
    assert summary["world_size"] == 2 and summary["seeds"]["0"]["steps"] == 4
    assert (dest / "models" / "cyclegan" / "seed0.pt").exists()
    with sqlite3.connect(dest / "mlflow.db") as db:
        runs = db.execute("SELECT run_uuid FROM tags WHERE key = 'stage' AND value = 'train'").fetchall()
        tag = db.execute("SELECT value FROM tags WHERE key = 'world_size'").fetchall()
    assert len(runs) == 1 and tag == [("2",)]
    # the same command in one process finds the finished checkpoint and has nothing left to train
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "train", "--model", "cyclegan"], cwd=dest, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at step 4" in r.stderr and "written by 2 process(es)" in r.stderr


HOLD_SLOT = """
import os, sys
from pipeline import distributed
print("trying", flush=True)
print(distributed.claim_gpu_slot(poll_s=0.1), os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.readline()  # hold the slot until the test says so
"""


def test_parallel_runs_take_different_gpu_slots(tmp_path, monkeypatch):
    """CXRBENCH_GPU_SLOTS: each process gets its own CUDA_VISIBLE_DEVICES; one more waits until a slot frees."""
    import queue
    import threading

    for var in ("CUDA_VISIBLE_DEVICES", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CXRBENCH_GPU_SLOTS", "3,5")
    monkeypatch.setenv("CXRBENCH_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(distributed, "_SLOT_LOCK", None)
    env = cli_env({"PYTHONPATH": str(PROJECT)})
    lines: queue.Queue = queue.Queue()

    def start(name: str):
        proc = subprocess.Popen([sys.executable, "-c", HOLD_SLOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)
        threading.Thread(target=lambda: [lines.put((name, line.split())) for line in proc.stdout],
                         daemon=True).start()
        return proc

    procs = {}
    try:
        assert distributed.claim_gpu_slot() == "3"  # this process: the first free slot
        assert distributed.claim_gpu_slot() == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"  # once per process
        procs = {"p": start("p"), "q": start("q")}  # one gets the other slot, one has to wait (which: not fixed)
        events = [lines.get(timeout=60) for _ in range(3)]  # two "trying", one slot
        assert sorted(e[1] for e in events) == [["5", "5"], ["trying"], ["trying"]]
        holder = next(name for name, words in events if words == ["5", "5"])
        time.sleep(1.0)
        assert lines.empty()  # the other one tried (a claim takes microseconds) and is still waiting
        distributed._SLOT_LOCK.close()  # this process lets its slot go: the waiting one takes it
        monkeypatch.setattr(distributed, "_SLOT_LOCK", None)
        name, words = lines.get(timeout=30)
        assert name != holder and words == ["3", "3"]
    finally:
        if distributed._SLOT_LOCK is not None:
            distributed._SLOT_LOCK.close()
        for proc in procs.values():
            proc.kill()
            proc.wait()


SHARE = """
import sys, torch
from pipeline import distributed
print(distributed.share_threads(0), flush=True)      # alone or not, when it starts
for line in sys.stdin:                                 # on request: rebalance (the engine does it per log step)
    print(distributed.share_threads(0), flush=True)
"""


def test_concurrent_stages_share_the_cores_and_rebalance(tmp_path, monkeypatch):
    """train.threads: 0 under `dvc queue start -j N`: each stage takes usable cores // stages running now, and
    gives cores back / takes them as others start and end. The children see 4 usable cores (patched, so the test
    means the same on any machine): the shares are 4 alone, 2 each with two, 4 again when one ends."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    env = {k: v for k, v in cli_env({"PYTHONPATH": str(PROJECT), "CXRBENCH_CPU_LOCK_DIR": str(tmp_path)}).items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    code = "from pipeline import distributed; distributed.usable_cores = lambda: 4\n" + SHARE

    def start():
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)

    def ask(proc) -> int:
        proc.stdin.write("\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())

    first = start()
    second = None
    try:
        assert int(first.stdout.readline()) == 4  # alone: every core
        second = start()
        assert int(second.stdout.readline()) == 2  # two stages: half each
        assert ask(first) == 2  # the first gives half back at its next log step
        second.stdin.close()
        second.wait(timeout=30)  # the second ends: its presence file is released by the OS
        assert ask(first) == 4
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    # an explicit choice wins: train.threads > 0, or OMP_NUM_THREADS in the environment
    assert distributed.share_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert not distributed.auto_threads_mode(0)
