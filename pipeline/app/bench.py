"""`cxrbench bench`: speed and memory of every translator's training step and of the evaluation models.

Results go to reports/bench/bench-<device>-<size>px.json and .md, with device, versions and the command, so speed
and memory targets are checked in benchmark results, never in timed tests. Per translator: training iterations/s,
peak memory, FLOPs per training step (torch.utils.flop_counter on one step) and, on a GPU, model FLOP utilisation
against the device's bf16 dense peak. Evaluation: images/s of translation, prior (cxr-densenet) feature extraction,
the four segmenters and YOLO inference.
"""
from __future__ import annotations

import contextlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy
import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from eval.detection import switch_off_integrations
from eval.segmentation import build_segmenter, predict_lungs
from pipeline import registry
from pipeline.engine import (Engine, EngineSettings, compile_networks, seed_everything, select_device,
                             set_optimizer_impl)
from pipeline.io import atomic_write
from pipeline.prior import PriorNet

# dense bf16 peak (no sparsity), FLOP/s, by device-name substring
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


def device_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def method_config(name: str, profile: str):
    prior = Path("models/prior/prior.pt")
    return registry.profile_config(name, profile, prior_weights=str(prior) if prior.exists() else "")


def bench_translator(name: str, size: int, batch: int, steps: int, device: torch.device, precision: str,
                     profile: str, compile_model: bool = False, optimizer_impl: str = "auto") -> dict[str, Any]:
    seed_everything(0)
    cls = registry.get(name)
    cfg = method_config(name, profile)
    if batch:
        cfg.batch_size = batch
    t = cls(cfg, in_channels=1, image_size=size).to(device)
    if device.type == "cuda":
        t.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    if compile_model:
        compile_networks(t)
    eng = Engine(t, EngineSettings(iterations=steps + 2, progress=False, device=device.type, precision=precision),
                 Path("/tmp/cxrbench-bench"), seed=0)
    eng.optimizers, eng.schedulers = t.configure_optimizers(steps + 2)
    set_optimizer_impl(eng.optimizers, optimizer_impl)  # as the engine trains
    b = t.batch_size
    a_img = torch.rand(b, 1, size, size, device=device) * 2 - 1
    b_img = torch.rand(b, 1, size, size, device=device) * 2 - 1
    t.train()
    # FLOPs of one step (counted once, outside the timed loop)

    flops, flops_note = None, ""
    try:
        with FlopCounterMode(display=False) as counter, eng.autocast():
            t.train_step(a_img, b_img, 0, eng)
        flops = counter.get_total_flops()
    except RuntimeError as exc:  # e.g. double backward (UVCGAN's gradient penalty) is not countable in torch 2.14
        flops_note = f"not countable: {str(exc).splitlines()[0][:80]}"
        with eng.autocast():
            t.train_step(a_img, b_img, 0, eng)
    for i in range(2):  # warm-up (cudnn autotune, allocator)
        with eng.autocast():
            t.train_step(a_img, b_img, i + 1, eng)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        with eng.autocast():
            t.train_step(a_img, b_img, i + 3, eng)
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    peak = device_peak(device)
    # inference throughput of translate()
    t.eval()
    x = torch.rand(max(b, 8), 1, size, size, device=device) * 2 - 1
    with torch.no_grad(), eng.autocast():
        t.translate(x)
        _sync(device)
        t1 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            t.translate(x)
        _sync(device)
    translate_ips = reps * len(x) / (time.perf_counter() - t1)
    adam_ms = optimizer_step_ms(eng.optimizers, device)  # last: it moves the weights
    return {
        "method": name, "size": size, "batch": b, "steps_timed": steps,
        "iterations_per_s": round(1 / dt, 4), "s_per_iteration": round(dt, 4),
        "gflops_per_step": round(flops / 1e9, 2) if flops is not None else None,
        "flops_note": flops_note,
        "mfu": round(flops / dt / peak, 4) if peak and flops is not None else None,
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
        "parameters_m": round(sum(p.numel() for p in t.parameters()) / 1e6, 3),
        "translate_images_per_s": round(translate_ips, 2),
        "optimizer_step_ms": adam_ms,
    }


def optimizer_step_ms(optimizers: dict[str, torch.optim.Optimizer], device: torch.device,
                      reps: int = 5) -> dict[str, float]:
    """Milliseconds of one update of all of a method's optimizers under each train.optimizer_impl kernel (random
    gradients on every parameter, after one warm-up update). The optimizers keep the fused setting afterwards."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for impl in ("loop", "foreach", "fused"):
        set_optimizer_impl(optimizers, impl)
        for opt in optimizers.values():
            opt.step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            for opt in optimizers.values():
                opt.step()
        _sync(device)
        out[impl] = round((time.perf_counter() - t0) / reps * 1000, 2)
    set_optimizer_impl(optimizers, "fused")
    return out


def environment(device: torch.device) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["bf16_peak_tflops"] = (device_peak(device) or 0) / 1e12
    return env


def write_results(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{results['environment']['device'].split(':')[0]}-{results['size']}px"
    if results.get("profile_widths") == "paper" and "cuda" not in results["environment"]["device"]:
        tag += "-official"  # the cpu default is the cpu profile's widths: official-width runs get their own file
    if results.get("precision") not in (None, "auto", "fp32"):
        tag += f"-{results['precision']}"
    if results.get("optimizer_impl") not in (None, "auto", "fused"):
        tag += f"-{results['optimizer_impl']}"  # the engine's default is fused: other kernels get their own file
    path = out_dir / f"bench-{tag}.json"
    atomic_write(path, json.dumps(results, indent=2) + "\n")
    optimizer = results.get("optimizer_impl", "loop (measured before train.optimizer_impl existed)")
    lines = [f"# Benchmark: {tag}", "", f"Command: `{results['command']}`", "",
             f"Widths: {'official (the paper profile)' if results.get('profile_widths') == 'paper' else 'the cpu profile (reduced)'}"
             f"; precision {results.get('precision', 'auto')}; optimizer {optimizer}", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in results["environment"].items()), "",
             "| method | batch | it/s | s/it | GFLOP/step | MFU | peak MB | params (M) | translate img/s "
             "| Adam ms loop / foreach / fused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["translators"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} |||||||| ")
            continue
        gflops = r["gflops_per_step"] if r["gflops_per_step"] is not None else f"n/a ({r['flops_note']})"
        mfu = r["mfu"] if r["mfu"] is not None else ("n/a (CPU)" if "cuda" not in results["environment"]["device"]
                                                     else "n/a")
        lines.append(f"| {r['method']} | {r['batch']} | {r['iterations_per_s']} | {r['s_per_iteration']} | "
                     f"{gflops} | {mfu} | "
                     f"{r['peak_memory_mb']} | {r['parameters_m']} | {r['translate_images_per_s']} | "
                     f"{' / '.join(str(v) for v in r['optimizer_step_ms'].values()) if 'optimizer_step_ms' in r else 'n/a'} |")
    if results.get("evaluation"):
        lines += ["", "| evaluation model | images/s |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in results["evaluation"].items()]
    atomic_write(path.with_suffix(".md"), "\n".join(lines) + "\n")
    return path


def run_bench(args) -> dict[str, Any]:
    device = select_device(args.device)
    if device.type == "cpu" and torch.get_num_threads() > 2:
        torch.set_num_threads(2)
    names = [n.strip() for n in args.models.split(",") if n.strip()] or registry.names()
    profile = widths_profile(getattr(args, "widths", "device"), device)
    results = {"command": " ".join(["cxrbench"] + sys.argv[1:]) if sys.argv[0].endswith("cxrbench")
               else " ".join(sys.argv), "size": args.size, "profile_widths": profile,
               "precision": args.precision, "optimizer_impl": getattr(args, "optimizer_impl", "auto"),
               "environment": environment(device), "translators": []}
    for name in names:
        print(f"bench {name} at {args.size}px on {device} ...", flush=True)
        r = _in_subprocess(name, args, device, profile)  # a fresh process each: peak memory is this method's alone
        results["translators"].append(r)
        print(json.dumps(r), flush=True)
    results["evaluation"] = bench_evaluation(device, args.size)
    path = write_results(results, Path(args.out))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return results


def widths_profile(widths: str, device: torch.device) -> str:
    """`--widths`: official = the paper's (official code's) widths (the `paper` profile), cpu = the cpu profile's
    reduced widths, device = official on CUDA and cpu on a CPU."""
    if widths not in ("device", "official", "cpu"):
        raise ValueError(f"--widths {widths!r}: expected device, official or cpu")
    return "paper" if widths == "official" or (widths == "device" and device.type == "cuda") else "cpu"


def _in_subprocess(name: str, args, device: torch.device, profile: str) -> dict[str, Any]:
    code = ("import json, sys, torch; from pipeline.app.bench import bench_translator; "
            f"torch.set_num_threads({torch.get_num_threads()}); "
            f"r = bench_translator({name!r}, {args.size}, {args.batch}, {args.steps}, torch.device({str(device)!r}), "
            f"{args.precision!r}, {profile!r}, optimizer_impl={getattr(args, 'optimizer_impl', 'auto')!r}); "
            "print('RESULT ' + json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"method": name, "error": err[:160]}


def _rate(fn, n_images: int, device: torch.device, reps: int = 3) -> float:
    fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return round(reps * n_images / (time.perf_counter() - t0), 2)


@torch.no_grad()
def bench_evaluation(device: torch.device, size: int, n: int = 32) -> dict[str, Any]:
    """Images/s of the evaluation models (randomly initialised: speed does not depend on the weights)."""
    out: dict[str, Any] = {}
    images = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    try:
        prior = PriorNet(input_size=max(64, size)).to(device).eval()
        x = torch.rand(n, 1, size, size, device=device) * 2 - 1
        out["cxr-densenet features (FID)"] = _rate(lambda: prior.pooled(x), n, device)
    except Exception as exc:  # noqa: BLE001
        out["cxr-densenet features (FID)"] = f"error: {str(exc).splitlines()[0][:80]}"
    for name in ("pspnet", "unet", "cenet", "vgg16bn_unet"):
        try:
            model = build_segmenter(name).to(device).eval()
            out[f"segmenter {name}"] = _rate(lambda: predict_lungs(model, images, size, device, batch_size=32),
                                             n, device)
        except ImportError as exc:  # a bare GPU machine (gpu-check) may lack segmentation-models-pytorch
            out[f"segmenter {name}"] = f"skipped: {exc.name or exc} not installed"
        except Exception as exc:  # noqa: BLE001
            out[f"segmenter {name}"] = f"error: {str(exc).splitlines()[0][:80]}"
    try:
        switch_off_integrations()
        from ultralytics import YOLO  # lazy: only after switch_off_integrations()

        model = YOLO("yolov5n.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i in range(n):
                paths.append(f"{tmp}/{i}.png")
                Image.fromarray(images[i], "L").save(paths[-1])
            dev = "0" if device.type == "cuda" else "cpu"
            out["YOLOv5n detection"] = _rate(lambda: model.predict(paths, imgsz=max(64, size // 32 * 32),
                                                                    device=dev, verbose=False, save=False), n, device)
    except ImportError as exc:
        out["YOLOv5n detection"] = f"skipped: {exc.name or exc} not installed"
    except Exception as exc:  # noqa: BLE001
        out["YOLOv5n detection"] = f"error: {str(exc).splitlines()[0][:80]}"
    return out


# --------------------------------------------------------------------------------------------------------------------
# Memory: peak of a process that runs one method's training step and nothing else (`cxrbench bench-memory`)
# --------------------------------------------------------------------------------------------------------------------
def memory_step(name: str, size: int, batch: int, precision: str, checkpointing: bool,
                device: torch.device) -> dict[str, Any]:
    """Peak memory of one training step (optimizer states included: Adam allocates them in the first step) of
    `name` at the paper's (official) widths. CPU: peak resident set of this process (an upper bound of what the
    same step allocates on a GPU: it includes torch's libraries, ~0.5 GB, reported as `baseline`); CUDA: max
    allocated."""
    from pipeline.contract import StepContext
    from pipeline.engine import autocast_dtype, checkpoint_activations

    baseline = _peak_memory_mb(device)
    seed_everything(0)
    cfg = method_config(name, "paper")
    cfg.batch_size = batch
    t = registry.get(name)(cfg, in_channels=1, image_size=size).to(device)
    if checkpointing:
        checkpoint_activations(t)
    set_optimizer_impl(t.configure_optimizers(10)[0], "auto")  # as the engine trains
    dtype = autocast_dtype(precision, device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    ctx = StepContext(device, 0, 1, backward=lambda loss, **kw: loss.backward(**kw), autocast=autocast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    a = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    b = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    t.train()
    step = max(0, int(getattr(cfg, "d_iter", 1)) - 1)  # DRIT: steps before d_iter - 1 update the content D only
    t0 = time.perf_counter()
    with autocast():
        t.train_step(a, b, step, ctx)
    _sync(device)
    return {"method": name, "size": size, "batch": batch, "precision": precision, "checkpointing": checkpointing,
            "device": device.type, "peak_mb": round(_peak_memory_mb(device), 1), "baseline_mb": round(baseline, 1),
            "step_s": round(time.perf_counter() - t0, 2),
            "parameters_m": round(sum(p.numel() for p in t.parameters()) / 1e6, 3)}


def run_memory_bench(args) -> dict[str, Any]:
    device = select_device(args.device)
    names = [n.strip() for n in args.models.split(",") if n.strip()] or registry.names()
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    out = Path(args.out)
    path = out / f"memory-{device.type}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() and args.append else []
    for size in sizes:
        for name in names:
            for ckpt in modes:
                code = ("import json, torch; from pipeline.app.bench import memory_step; "
                        f"torch.set_num_threads({torch.get_num_threads()}); "
                        f"r = memory_step({name!r}, {size}, {args.batch}, {args.precision!r}, {ckpt}, "
                        f"torch.device({str(device)!r})); print('RESULT ' + json.dumps(r))")
                print(f"memory: {name} at {size} px, batch {args.batch}, {args.precision}, checkpointing {ckpt}",
                      flush=True)
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                r = json.loads(line[7:]) if line else {
                    "method": name, "size": size, "batch": args.batch, "precision": args.precision,
                    "checkpointing": ckpt, "device": device.type,
                    "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:160]
                    if proc.returncode > 0 else f"killed (signal {-proc.returncode}: out of memory?)"}
                rows = [x for x in rows if (x["method"], x["size"], x["batch"], x["precision"], x["checkpointing"])
                        != (name, size, args.batch, args.precision, ckpt)] + [r]
                print(json.dumps(r), flush=True)
    result = {"command": " ".join(["cxrbench"] + sys.argv[1:]) if sys.argv[0].endswith("cxrbench")
              else " ".join(sys.argv), "environment": environment(device), "budget_gb": 24.0, "rows": rows}
    return write_memory_table(path, result)


def write_memory_table(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """memory-<device>.json and .md from measured rows, each beside `cxrbench check`'s fake-tensor estimate of the
    same step (pipeline.memory), so the estimate's calibration is visible: measured step / estimate."""
    from pipeline.memory import MARGIN, estimate_step

    for r in result["rows"]:
        if "error" not in r:
            est = estimate_step(r["method"], method_config(r["method"], "paper"), r["size"], r["batch"],
                                r["precision"], r["checkpointing"], device_type=r["device"])
            r["estimate_mb"] = round(est.peak_bytes / 2**20, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(result, indent=2) + "\n")
    device = path.stem.split("-", 1)[1]
    lines = [f"# Peak memory of one training step ({device}), paper (official) widths", "",
             f"Command (last): `{result['command']}`", "",
             "CPU: peak resident set of a process that runs only that method's step (torch's libraries included: "
             "`baseline`); an upper bound of the same step's CUDA allocation. Budget: 24 GB (the paper's RTX 3090). "
             "`estimate`: the same step counted on fake tensors by `cxrbench check` (pipeline/memory.py: every "
             "storage alive, no allocator overhead); `ratio` = (peak - baseline) / estimate; check warns when "
             f"estimate x {MARGIN} + 0.7 GB exceeds the device's memory.",
             "", "| method | size | batch | precision | checkpointing | peak GB | baseline GB | within 24 GB | step s "
             "| estimate GB | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda x: (x["size"], x["method"], x["precision"], x["checkpointing"])):
        if "error" in r:
            lines.append(f"| {r['method']} | {r['size']} | {r['batch']} | {r['precision']} | {r['checkpointing']} | "
                         f"{r['error']} | | no | | | |")
            continue
        gb = r["peak_mb"] / 1024
        ratio = (r["peak_mb"] - r["baseline_mb"]) / r["estimate_mb"]
        lines.append(f"| {r['method']} | {r['size']} | {r['batch']} | {r['precision']} | {r['checkpointing']} | "
                     f"{gb:.2f} | {r['baseline_mb'] / 1024:.2f} | {'yes' if gb <= 24 else 'no'} | {r['step_s']} | "
                     f"{r['estimate_mb'] / 1024:.2f} | {ratio:.2f} |")
    atomic_write(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result
