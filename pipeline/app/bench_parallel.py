"""`cxrbench bench-parallel`: do concurrent stages collapse on a small machine? (reports/bench/parallel-*.json, .md)

Two torch processes that each take every core of a 2-core machine spin-wait on each other's threads and slow down
100x or more (what `dvc queue start -j 2` did with `train.threads: 2`). With `train.threads: 0` every stage takes a
fair share (pipeline.distributed.share_threads: usable cores // stages running now). This benchmark measures the
same training workload (one method's train_step, fixed inputs, `--seconds` of wall time per process) in three
scenarios:

    alone           one process, threads: 0 (every core)
    shared          N processes at once, threads: 0 (cores // N each)
    oversubscribed  N processes at once, each with every core (threads = cores, the old behaviour)

and reports it/s per process and the slowdown against `alone`. The target (issue: no collapse under parallel jobs)
is a slowdown of at most 3x per process in `shared` with N = 2; a benchmark figure, never a timed test.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.errors import CxrbenchError
from pipeline.io import atomic_write

WORKER = """
import json, sys, time
from pathlib import Path
from pipeline import distributed
distributed.join_cpu_jobs()  # present before the barrier, so every process sees the others when it shares
barrier, n, mode, cores = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
(barrier / f"{__import__('os').getpid()}").touch()
while len(list(barrier.iterdir())) < n:
    time.sleep(0.01)
threads = distributed.share_threads(cores if mode == "oversubscribed" else 0)
from pipeline.app.bench_parallel import workload
print("RESULT " + json.dumps({"threads": threads, **workload(sys.argv[5], int(sys.argv[6]), float(sys.argv[7]))}),
      flush=True)
"""


def workload(method: str, size: int, seconds: float) -> dict[str, Any]:
    """Train steps of `method` (cpu-profile widths, its own batch) for `seconds` after one warm-up step."""
    import torch

    from pipeline import registry
    from pipeline.contract import StepContext
    from pipeline.engine import set_optimizer_impl

    torch.manual_seed(0)
    cfg = registry.profile_config(method, "cpu", prior_weights="")
    t = registry.get(method)(cfg, in_channels=1, image_size=size)
    set_optimizer_impl(t.configure_optimizers(10**6)[0], "auto")  # the engine's optimizer kernels
    ctx = StepContext(torch.device("cpu"), 0, 1, backward=lambda loss, **kw: loss.backward(**kw),
                      autocast=lambda: torch.autocast("cpu", enabled=False))
    a = torch.rand(t.batch_size, 1, size, size) * 2 - 1
    b = torch.rand(t.batch_size, 1, size, size) * 2 - 1
    t.train()
    t.train_step(a, b, 0, ctx)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t.train_step(a, b, steps + 1, ctx)
        steps += 1
    wall = time.perf_counter() - t0
    return {"steps": steps, "wall_s": round(wall, 3), "it_per_s": round(steps / wall, 4)}


def _scenario(mode: str, n: int, method: str, size: int, seconds: float, cores: int, lock_dir: Path) -> list[dict]:
    import os

    with tempfile.TemporaryDirectory() as barrier:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env["CXRBENCH_CPU_LOCK_DIR"] = str(lock_dir)
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, barrier, str(n), mode, str(cores), method, str(size),
                                   str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(n)]
        out = []
        for proc in procs:
            stdout, stderr = proc.communicate()
            line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise CxrbenchError(f"bench-parallel worker failed: {(stderr.strip().splitlines() or ['?'])[-1]}")
            out.append(json.loads(line[7:]))
        return out


def run_parallel_bench(args) -> dict[str, Any]:
    from pipeline import distributed

    cores = distributed.usable_cores()
    with tempfile.TemporaryDirectory() as lock_dir:
        scenarios = {"alone": _scenario("shared", 1, args.model, args.size, args.seconds, cores, Path(lock_dir))}
        for mode in ("shared", "oversubscribed"):
            scenarios[mode] = _scenario(mode, args.jobs, args.model, args.size, args.seconds, cores, Path(lock_dir))
    alone = scenarios["alone"][0]["it_per_s"]
    for runs in scenarios.values():
        for r in runs:
            r["slowdown"] = round(alone / r["it_per_s"], 2) if r["it_per_s"] else None
    worst = max(r["slowdown"] or float("inf") for r in scenarios["shared"])
    result = {"command": "cxrbench " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("cxrbench") else
              " ".join(sys.argv), "method": args.model, "size": args.size, "jobs": args.jobs,
              "seconds_per_process": args.seconds, "usable_cores": cores, "scenarios": scenarios,
              "shared_worst_slowdown": worst, "target": "shared slowdown <= 3x per process",
              "target_met": worst <= 3.0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"parallel-{args.model}-{args.jobs}jobs.json"
    atomic_write(path, json.dumps(result, indent=2) + "\n")
    lines = [f"# Concurrent stages on {cores} cores: {args.jobs} x {args.model} at {args.size} px", "",
             f"Command: `{result['command']}`; each process trains for {args.seconds} s after one warm-up step.", "",
             "| scenario | process | threads | it/s | slowdown vs alone |", "|---|---|---|---|---|"]
    for name, runs in scenarios.items():
        for i, r in enumerate(runs):
            lines.append(f"| {name} | {i} | {r['threads']} | {r['it_per_s']} | {r['slowdown']}x |")
    lines += ["", f"Worst slowdown with shared threads (`train.threads: 0`): {worst}x; target <= 3x: "
              f"{'met' if result['target_met'] else 'NOT met'}."]
    atomic_write(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result
