"""Train several `ours_mil_res` settings side by side on one GPU, within a wall-clock deadline (the lent GPU gives a
session a few minutes). How this record's weights were made; their evaluation ran on CPU afterwards (README.md).

Run from the repository root on the GPU machine (bare image: torch, pandas, scipy, pyyaml; no MLflow needed):
    PYTHONPATH=. python3 reports/published/cpu-rank-variant-ours_mil/gpu_sweep/train_variants.py \
        --ws WORKSPACE --params PARAMS --deadline 330 --out OUT.tgz
WORKSPACE holds data/drr (the cpu-rank DRR training set) and models/prior (the cpu-rank prior); PARAMS is the
cpu-rank profile as `cxrbench profile cpu-rank` writes it. Each variant is one process (2 CPU threads) running the
train stage itself (`python -m pipeline.app.cli train --model NAME`, tracking off) in its own root, runs/NAME/
(CXRBENCH_ROOT: its params.yaml, with the variant as a named model; data and prior linked). A run that
has not finished at the deadline is stopped and its newest checkpoint exported, marked `truncated_at` in the
weights' JSON: a checkpoint of a longer schedule, not a shorter run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

BASE = {"lambda_mil": 200.0, "gen_init": "pytorch", "gen_output": "residual"}  # the named model ours_mil_res
# name: (extra overrides, iterations, seed)
VARIANTS = {
    "res_i2400": ({}, 2400, 0),                       # the CPU record's setting: the GPU against CPU
    "res_i9600": ({}, 9600, 0),                       # 4x longer
    "res_i9600_s1": ({}, 9600, 1),
    "res_i9600_adv6": ({"lambda_adv": 6.0}, 9600, 0),  # 3x the adversarial pull (Eq. 8's 2)
    "res_i9600_lca2": ({"lambda_classifier": 2.0}, 9600, 0),  # 4x L_LCA, the prior's "no opacity" pull
    "res_i9600_dis64": ({"dis_dim": 64}, 9600, 0),    # the official discriminator width
    # second lease call (the machine kept no checkpoints to resume): the same settings at other seeds
    "res_i9600_s2": ({}, 9600, 2),
    "res_i9600_s3": ({}, 9600, 3),
    "res_i9600_adv6_s1": ({"lambda_adv": 6.0}, 9600, 1),
    "res_i9600_lca2_s1": ({"lambda_classifier": 2.0}, 9600, 1),
    "res_i9600_dis64_s1": ({"dis_dim": 64}, 9600, 1),
}


def variant_params(base_path: Path, name: str, out: Path, checkpoint_every: int = 400) -> Path:
    plain = yaml.safe_load(base_path.read_text())
    extra, iterations, _ = VARIANTS[name]
    plain["models"] = {name: {"method": "ours", "package": "ours", "overrides": {**BASE, **extra},
                              "description": f"ours_mil_res {extra or ''} {iterations} its"}}
    plain["train"].update(iterations=iterations, device="auto", precision="fp32", checkpoint_every=checkpoint_every,
                          keep_checkpoints=1, threads=2, log_every=100)
    plain["tracking"]["enabled"] = False
    plain["seeds"] = [VARIANTS[name][2]]
    plain["methods"] = {"ours": plain["methods"]["ours"]}  # the root has no baselines/ (the registry scans it)
    # absolute, so the parent (another root) finds it too when it exports a stopped run
    plain["methods"]["ours"]["prior_weights"] = str(out.parent / "models" / "prior" / "prior.pt")
    out.write_text(yaml.safe_dump(plain, sort_keys=False))
    return out


def variant_root(ws: Path, name: str) -> Path:
    """runs/<name>/: the variant's own checkout root (CXRBENCH_ROOT) with its params.yaml, sharing the workspace's
    data and prior through links, so runs in parallel write their own models/, checkpoints/, curves/, metrics/."""
    root = ws / "runs" / name
    (root / "models").mkdir(parents=True, exist_ok=True)
    for link, target in ((root / "data", ws / "data"), (root / "models" / "prior", ws / "models" / "prior")):
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return root


def export_truncated(root: Path, name: str) -> dict:
    """The newest checkpoint of an unfinished run, as inference weights with its step."""
    from pipeline.config import load_params
    from pipeline.engine import export_weights, list_checkpoints, safe_load
    from pipeline.layout import Layout, build_translator

    params = load_params(root / "params.yaml")
    seed = VARIANTS[name][2]
    layout = Layout(root)
    ckpts = list_checkpoints(layout.checkpoints(name, seed))
    if not ckpts:
        return {"status": "no checkpoint"}
    state = safe_load(ckpts[-1], map_location="cpu")  # the engine's own checkpoint reader (weights_only)
    t = build_translator(params, name)
    t.load_state_dict(state["model"])
    export_weights(t, layout.weights(name, seed),
                   {"model": name, "method": "ours", "seed": seed, "step": state["step"],
                    "truncated_at": state["step"], "planned_iterations": VARIANTS[name][1],
                    "image_size": params.data.resolution, "has_mask": True,
                    "config": VARIANTS[name][0]})
    return {"status": "truncated", "step": state["step"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ws", type=Path, required=True)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--deadline", type=float, default=330.0, help="seconds until unfinished runs are stopped")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    p.add_argument("--checkpoint-every", type=int, default=400)
    a = p.parse_args()
    ws, params = a.ws.resolve(), a.params.resolve()
    names = a.only.split(",") if a.only else list(VARIANTS)
    (ws / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    procs, t0 = {}, time.time()
    for name in names:
        root = variant_root(ws, name)
        variant_params(params, name, root / "params.yaml", a.checkpoint_every)
        log = open(ws / "logs" / f"{name}.log", "w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "train", "--model", name],
                                       cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                       env={**env, "CXRBENCH_ROOT": str(root)})
    while any(pr.poll() is None for pr in procs.values()) and time.time() - t0 < a.deadline:
        time.sleep(5)
    result = {}
    for name, pr in procs.items():
        if pr.poll() is None:
            pr.terminate()
            try:
                pr.wait(20)
            except subprocess.TimeoutExpired:
                pr.kill()
            result[name] = export_truncated(ws / "runs" / name, name)
        else:
            result[name] = {"status": "finished" if pr.returncode == 0 else f"failed rc={pr.returncode}"}
        result[name]["wall_s"] = round(time.time() - t0, 1)
    (ws / "sweep.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    with tarfile.open(a.out, "w:gz") as tar:
        for name in names:
            root = ws / "runs" / name
            for sub in ("models", "curves", "metrics"):
                for path in sorted((root / sub).rglob("*")) if (root / sub).is_dir() else []:
                    if path.is_file() and "prior" not in path.parts:
                        tar.add(path, arcname=str(path.relative_to(root)))
            tar.add(root / "params.yaml", arcname=f"params-{name}.yaml")
        for path in [*sorted((ws / "logs").glob("*.log")), ws / "sweep.json"]:
            tar.add(path, arcname=str(path.relative_to(ws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
