"""Peak memory of one training step, estimated without the memory: the method is built and stepped on fake tensors
(torch's FakeTensorMode: shapes, dtypes and autocast behave as on the real device; no storage is allocated and no
arithmetic runs), and every storage the step creates is counted while it is alive.

What is counted: parameters and buffers, the optimizers' states (Adam allocates them in the first step), the inputs,
every activation autograd keeps for backward, the gradients, and every temporary, each from the moment an operation
creates its storage to the moment the last tensor or view of it dies. What is not: the allocator's rounding and
fragmentation (CUDA's caching allocator adds 0-20 %), cuDNN/oneDNN workspaces, the CUDA context (~0.5 GB) and the
interpreter with torch's libraries (~0.6 GB resident on CPU). So the figure is a lower bound of `max_memory_allocated`
and of the step's share of a CPU process's peak resident set; `cxrbench check` adds a stated margin before it compares
with the device (MARGIN, calibrated against the measured table in reports/bench/memory-cpu.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import warnings
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# `cxrbench check` warns when estimate x MARGIN + BASE_GB exceeds the device's memory. Calibration (this CPU, fp32,
# 256 px, batch 2, paper widths): measured peak resident minus the interpreter's baseline is 1.0-1.4x the estimate
# across the six methods (the fake step does not see oneDNN's scratch buffers nor glibc's retained pages).
MARGIN = 1.4
BASE_GB = 0.7


class LiveStorageBytes(TorchDispatchMode):
    """Counts the bytes of every storage created by an operation while the mode is active, until the storage dies;
    `peak` is the largest sum seen. Views and in-place results share their input's storage and are not counted
    again. Works on real and fake tensors (the count needs only the storage's size)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[storage] = nbytes
        weakref.finalize(storage, self._free, nbytes)
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.track(t)
        return out


@dataclasses.dataclass
class StepMemory:
    method: str
    size: int
    batch: int
    precision: str
    checkpointing: bool
    parameters_m: float  # millions, trainable and frozen
    state_bytes: int  # parameters + buffers + optimizer states after the step
    peak_bytes: int  # the step's peak: state + inputs + activations + gradients + temporaries

    @property
    def state_gb(self) -> float:
        return self.state_bytes / 1024 ** 3

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1024 ** 3

    def needed_gb(self) -> float:
        """What `cxrbench check` compares with the device: the peak with the calibrated margin and base."""
        return self.peak_gb * MARGIN + BASE_GB


def estimate_step(name: str, cfg, size: int, batch: int, precision: str = "fp32", checkpointing: bool = False,
                  in_channels: int = 1, device_type: str = "cpu") -> StepMemory:
    """One training step of the registered method `name` with config `cfg` at `size` px with `batch` images per domain on fake tensors (see the module
    docstring). `precision` bf16 runs the step under bf16 autocast as the engine does; `checkpointing` wraps the
    generators' blocks as train.activation_checkpointing does. DRIT-like methods (d_iter > 1) are stepped at their
    full update (step d_iter - 1), the largest. A few seconds per method at 512 px, whatever the size."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from pipeline import registry
    from pipeline.contract import StepContext
    from pipeline.engine import checkpoint_activations

    cfg = dataclasses.replace(cfg, batch_size=batch)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def autocast():
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    cls = registry.get(name)
    counter = LiveStorageBytes()
    with warnings.catch_warnings(), FakeTensorMode(allow_non_fake_inputs=True), counter:
        warnings.simplefilter("ignore")
        t = cls(cfg, in_channels=in_channels, image_size=size)
        if checkpointing:
            checkpoint_activations(t)
        t.configure_optimizers(10)
        ctx = StepContext(torch.device(device_type), 0, 1, backward=lambda loss, **kw: loss.backward(**kw),
                          autocast=autocast)
        a = torch.empty(batch, in_channels, size, size)
        b = torch.empty(batch, in_channels, size, size)
        t.train()
        with autocast():
            t.train_step(a, b, max(0, int(getattr(cfg, "d_iter", 1)) - 1), ctx)
        a = b = ctx = None
        gc.collect()  # graphs with reference cycles: what is left is what the next step starts from
        state = counter.live
        params = sum(p.numel() for p in t.parameters())
    return StepMemory(name, size, batch, precision, checkpointing, round(params / 1e6, 3), state, counter.peak)


def device_memory_gb(device: torch.device) -> tuple[float, str]:
    """Memory the step may use on `device`: CUDA total memory of device 0, or this machine's MemAvailable."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device.index or 0)
        return props.total_memory / 1024 ** 3, f"CUDA {props.name}"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 ** 2, "available RAM"
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, "RAM"


def check_memory(params) -> tuple[list[str], list[str]]:
    """`cxrbench check`: each model's estimated training-step memory at the selected profile's settings
    (data.resolution, the model's batch_size, train.precision, train.activation_checkpointing) against the device
    train.device selects. Returns (lines to print, warnings naming the model and the fix)."""
    from pipeline.engine import autocast_dtype, select_device

    device = select_device(params.train.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision = "bf16" if autocast_dtype(params.train.precision, device) is not None else "fp32"
    have, what = device_memory_gb(device)
    ckpt = bool(params.train.activation_checkpointing)
    res = params.data.resolution
    lines, warns = [], []
    for model, entry in params.models.items():
        cfg = params.method_config(model)
        if hasattr(cfg, "prior_weights"):  # the prior stage's output: not there before it runs; same network
            cfg = dataclasses.replace(cfg, prior_weights="")
        est = estimate_step(entry.method, cfg, res, cfg.batch_size, precision, ckpt, device_type=device.type)
        need = est.needed_gb()
        lines.append(f"{model}: {est.peak_gb:.2f} GB estimated step peak ({need:.1f} GB with margin) at {res} px, "
                     f"batch {cfg.batch_size}, {precision}, checkpointing {'on' if ckpt else 'off'}; "
                     f"{have:.1f} GB {what}")
        if need <= have:
            continue
        fixes = []
        if not ckpt:
            alt = estimate_step(entry.method, cfg, res, cfg.batch_size, precision, True, device_type=device.type)
            fixes.append(f"train.activation_checkpointing: true ({alt.needed_gb():.1f} GB)")
        if precision == "fp32" and device.type == "cuda":
            fixes.append("train.precision: bf16")
        fixes.append(f"a smaller models.{model} batch_size or data.resolution")
        warns.append(f"train@{model} needs about {need:.1f} GB ({est.peak_gb:.1f} GB estimated x {MARGIN} + "
                     f"{BASE_GB} GB) but {what} is {have:.1f} GB: it may be killed for memory; set "
                     + " or ".join(fixes))
    return lines, warns
