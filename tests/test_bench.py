"""`cxrbench bench` writes its JSON + markdown with the measured fields (no timing assertions: machines are noisy)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import cli_env


def test_bench_writes_results_for_the_requested_translators(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench", "--models", "cyclegan,uvcgan",
                        "--size", "64", "--steps", "1", "--out", str(tmp_path)], capture_output=True, text=True, env=cli_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "bench-cpu-64px.json").read_text())
    assert [t["method"] for t in results["translators"]] == ["cyclegan", "uvcgan"]
    for t in results["translators"]:
        assert "error" not in t, t
        assert t["iterations_per_s"] > 0 and t["peak_memory_mb"] > 0 and t["parameters_m"] > 0
    cyclegan = results["translators"][0]
    assert cyclegan["gflops_per_step"] > 0 and cyclegan["mfu"] is None  # no MFU without a GPU peak
    assert set(results["evaluation"]) >= {"segmenter cenet", "YOLOv5n detection", "cxr-densenet features (FID)"}
    assert all(isinstance(v, float) for v in results["evaluation"].values()), results["evaluation"]
    md = (tmp_path / "bench-cpu-64px.md").read_text()
    assert "| cyclegan | 1 |" in md and "| uvcgan | 1 |" in md
    assert "bench --models cyclegan,uvcgan --size 64 --steps 1" in results["command"]


def test_bench_parallel_runs_the_three_scenarios_with_their_thread_counts(tmp_path):
    """`cxrbench bench-parallel`: alone (every core), shared (train.threads: 0: cores // jobs each) and
    oversubscribed (every core each); the figures are the benchmark's, only the structure is tested here."""
    import os

    cores = len(os.sched_getaffinity(0))
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench-parallel", "--size", "32", "--seconds", "0.2",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "parallel-cyclegan-2jobs.json").read_text())
    threads = {name: [p["threads"] for p in runs] for name, runs in result["scenarios"].items()}
    assert threads == {"alone": [cores], "shared": [max(1, cores // 2)] * 2, "oversubscribed": [cores] * 2}
    assert all(p["steps"] > 0 and p["slowdown"] > 0 for runs in result["scenarios"].values() for p in runs)
    assert "target <= 3x" in (tmp_path / "parallel-cyclegan-2jobs.md").read_text()
