"""`cxrbench bench-official --official DIR`: our training step against the official implementation's, side by side.

The official code is not part of this project and is never imported by anything else: DIR holds the user's own
checkouts, read for this measurement only:

    DIR/cyclegan/   junyanz/pytorch-CycleGAN-and-pix2pix (its models/ and util/ folders)
    DIR/unit/       mingyuliutw/UNIT (trainer.py, networks.py, utils.py, data.py)

Both sides get the same settings: the official widths and losses (our `paper` profile = the official defaults),
1 channel, `--size` px, batch 1, the same random input tensors, the same torch threads; the official side in fp32
(its only mode on a CPU), ours in fp32 and, with `--precision fp32,bf16`, under bf16 autocast as well. Each round times `--steps`
iterations of ours, then of the official step (the order alternates between rounds so drift in machine speed
cancels), after 2 warm-up iterations each; the figure is the median it/s over `--rounds`. ratio = ours / official.

What counts as one official iteration is what its train.py runs per batch: CycleGAN `set_input` +
`optimize_parameters()`; UNIT `dis_update` + `gen_update` + `update_learning_rate`. Ours: `train_step` + the
schedulers' step (what the engine runs). Shims needed to run 2018-2021 code on torch 2.x on a CPU, applied only
while the official side is built and timed: UNIT's utils imports `torch.utils.serialization.load_lua` (removed from
torch; only used for VGG weights, which vgg_w = 0 never loads), and its VAE noise calls `.cuda()` (made a no-op on a
CPU-only machine).
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline import registry
from pipeline.contract import StepContext
from pipeline.engine import set_optimizer_impl
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_write

UNIT_HYPER = {  # the official configs/unit_*_folder.yaml training and model options, 1 channel
    "batch_size": 1, "weight_decay": 0.0001, "beta1": 0.5, "beta2": 0.999, "init": "kaiming", "lr": 0.0001,
    "lr_policy": "step", "step_size": 100000, "gamma": 0.5, "gan_w": 1, "recon_x_w": 10, "recon_h_w": 0,
    "recon_kl_w": 0.01, "recon_x_cyc_w": 10, "recon_kl_cyc_w": 0.01, "vgg_w": 0,
    "gen": {"dim": 64, "mlp_dim": 256, "style_dim": 8, "activ": "relu", "n_downsample": 2, "n_res": 4,
            "pad_type": "reflect"},
    "dis": {"dim": 64, "norm": "none", "activ": "lrelu", "n_layer": 4, "gan_type": "lsgan", "num_scales": 3,
            "pad_type": "reflect"},
    "input_dim_a": 1, "input_dim_b": 1}

CYCLEGAN_OPT = dict(  # the official train options (options/{base,train}_options.py defaults + cycle_gan), 1 channel
    gpu_ids=[], isTrain=True, checkpoints_dir="/tmp/cxrbench-bench-official", name="bench", preprocess="resize_and_crop",
    input_nc=1, output_nc=1, ngf=64, ndf=64, netG="resnet_9blocks", netD="basic", n_layers_D=3, norm="instance",
    no_dropout=True, init_type="normal", init_gain=0.02, gan_mode="lsgan", pool_size=50, lr=0.0002, beta1=0.5,
    lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5, direction="AtoB", lr_policy="linear", epoch_count=1,
    n_epochs=100, n_epochs_decay=100, continue_train=False, verbose=False)


@contextlib.contextmanager
def _official_imports(folder: Path, shims: bool):
    """sys.path at `folder` (the official modules import each other by top-level name), and the shims."""
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    saved_cuda = torch.Tensor.cuda
    sys.path.insert(0, str(folder))
    if shims:
        sys.modules.setdefault("torch.utils.serialization", types.SimpleNamespace(load_lua=None))
        if not torch.cuda.is_available():
            torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        sys.path[:] = saved_path
        torch.Tensor.cuda = saved_cuda
        for name in set(sys.modules) - saved_modules:  # official `models`, `utils`, ... leave no trace
            if name != "torch.utils.serialization":
                sys.modules.pop(name, None)


def _need(folder: Path, files: tuple[str, ...], repo: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise CxrbenchError(f"{folder / missing[0]}: not found; --official DIR needs {folder.name}/ = a checkout of "
                            f"{repo}")


def official_cyclegan(folder: Path, size: int) -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    _need(folder, ("models/cycle_gan_model.py", "models/networks.py", "util/image_pool.py"),
          "github.com/junyanz/pytorch-CycleGAN-and-pix2pix")
    with _official_imports(folder, shims=False), contextlib.redirect_stdout(sys.stderr):
        from models.cycle_gan_model import CycleGANModel  # noqa: official code, measurement only

        model = CycleGANModel(types.SimpleNamespace(**CYCLEGAN_OPT))

    def step(a: torch.Tensor, b: torch.Tensor, it: int) -> None:
        model.set_input({"A": a, "B": b, "A_paths": [], "B_paths": []})
        model.optimize_parameters()
    return step


def official_unit(folder: Path, size: int) -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    _need(folder, ("trainer.py", "networks.py", "utils.py"), "github.com/mingyuliutw/UNIT")
    with _official_imports(folder, shims=True):
        from trainer import UNIT_Trainer  # noqa: official code, measurement only

        hyper = copy.deepcopy(UNIT_HYPER)
        trainer = UNIT_Trainer(hyper)

    def step(a: torch.Tensor, b: torch.Tensor, it: int) -> None:
        with _official_imports(folder, shims=True):
            trainer.dis_update(a, b, hyper)
            trainer.gen_update(a, b, hyper)
            trainer.update_learning_rate()
    return step


OFFICIAL = {"cyclegan": ("cyclegan", official_cyclegan), "unit": ("unit", official_unit)}


def ours_step(method: str, size: int, precision: str = "fp32") -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    """Our step as the engine runs it: train_step (under bf16 autocast when asked) + the schedulers' step."""
    cfg = registry.profile_config(method, "paper", prior_weights="")
    cfg.batch_size = 1
    t = registry.get(method)(cfg, in_channels=1, image_size=size)
    optimizers, schedulers = t.configure_optimizers(10**6)
    set_optimizer_impl(optimizers, "auto")  # the engine's optimizer kernels

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    ctx = StepContext(torch.device("cpu"), 0, 1, backward=lambda loss, **kw: loss.backward(**kw), autocast=autocast)
    t.train()

    def step(a: torch.Tensor, b: torch.Tensor, it: int) -> None:
        with autocast():
            t.train_step(a, b, it, ctx)
        for s in schedulers.values():
            s.step()
    return step


def _timed(step, a, b, start: int, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        step(a, b, start + i)
    return n / (time.perf_counter() - t0)


def side_by_side(method: str, official_dir: Path, size: int, rounds: int, steps: int,
                 precision: str = "fp32") -> dict[str, Any]:
    sub, build = OFFICIAL[method]
    torch.manual_seed(0)
    ours = ours_step(method, size, precision)
    torch.manual_seed(0)
    theirs = build(official_dir / sub, size)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 1, size, size, generator=g) * 2 - 1
    b = torch.rand(1, 1, size, size, generator=g) * 2 - 1
    _timed(ours, a, b, 0, 2)  # warm-up
    _timed(theirs, a, b, 0, 2)
    rates: dict[str, list[float]] = {"cxrbench": [], "official": []}
    it = 2
    for r in range(rounds):
        order = (("cxrbench", ours), ("official", theirs)) if r % 2 == 0 else (("official", theirs), ("cxrbench", ours))
        for name, fn in order:
            rates[name].append(_timed(fn, a, b, it, steps))
        it += steps
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"method": method, "precision_cxrbench": precision, "precision_official": "fp32", "size": size,
            "batch": 1, "channels": 1, "rounds": rounds, "steps_per_round": steps,
            "it_per_s": {k: [round(x, 4) for x in v] for k, v in rates.items()},
            "median_it_per_s": {k: round(v, 4) for k, v in med.items()},
            "ratio": round(med["cxrbench"] / med["official"], 3)}


def run_official_bench(args) -> dict[str, Any]:
    official = Path(args.official).expanduser()
    if not official.is_dir():
        raise CxrbenchError(f"--official {official}: not a folder; give the folder holding cyclegan/ and unit/ "
                            "(checkouts of the official repositories)")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in OFFICIAL]
    if unknown:
        raise CxrbenchError(f"--methods: no official side-by-side for {unknown[0]!r}; available: {', '.join(OFFICIAL)}")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if any(p not in ("fp32", "bf16") for p in precisions):
        raise CxrbenchError(f"--precision {args.precision!r}: use fp32, bf16 or fp32,bf16")
    from pipeline.engine import cpu_bf16_native

    skipped = []
    if "bf16" in precisions and not cpu_bf16_native():
        precisions.remove("bf16")  # emulated: ~30x slower than fp32, not a configuration anyone should run
        skipped.append("bf16: this CPU has no AVX512-BF16/AMX (bf16 is emulated, ~30x slower than fp32)")
    rows = []
    for m in methods:
        for p in precisions:
            print(f"side by side: {m} at {args.size} px, cxrbench {p} ...", flush=True)
            rows.append(side_by_side(m, official, args.size, args.rounds, args.steps, p))
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": "cxrbench " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("cxrbench") else
              " ".join(sys.argv), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device": "cpu", "cpu": _cpu_name(), "skipped": skipped, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"official-side-by-side-{args.size}px.json"
    atomic_write(path, json.dumps(result, indent=2) + "\n")
    lines = [f"# cxrbench vs the official implementations, side by side ({args.size} px, batch 1, 1 channel, CPU, "
             f"{result['threads']} threads)", "", f"Command: `{result['command']}` (official checkouts read for this "
             "measurement only; see pipeline/app/bench_official.py for the settings and shims)", "",
             "| method | cxrbench precision | cxrbench it/s (median) | official it/s (median, fp32) | ratio | "
             "rounds x steps |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['precision_cxrbench']} | {r['median_it_per_s']['cxrbench']} | "
                     f"{r['median_it_per_s']['official']} | {r['ratio']} | {r['rounds']} x {r['steps_per_round']} |")
    lines += [f"\nCPU: {result['cpu']}. Skipped: {s}." for s in skipped]
    atomic_write(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
