"""The training engine: everything generic around a translator's `train_step`.

- data: unpaired, infinite, *stateless* sampling: the batch of step s is a pure function of (seed, s), so a resumed
  run sees exactly the batches an uninterrupted run would, with or without loader workers;
- device, bf16 autocast and channels_last on CUDA (fp32 on CPU: same code path, same behaviour);
- progress bar with it/s and ETA; loss rows to a DVC plots CSV and to MLflow;
- atomic checkpoints every N steps and at the end (newest K kept); automatic exact resume (model, optimizers,
  schedulers, RNG states, step, the translator's extra state); a corrupt newest checkpoint falls back to the previous;
- no host sync per step: losses stay on the device (LossWindow) and are read once per `log_every` steps, where a
  non-finite-loss guard stops with the step and the loss name; CUDA OOM mapped to a message saying what to change;
- one run across several processes under torchrun (pipeline/distributed.py): rank r trains on its slice of the same
  global batch, gradients are averaged per backward call, rank 0 alone logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed
from pipeline.config import TrainParams
from pipeline.contract import Probe, StepContext, Translator
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_torch_save, atomic_write, write_json  # noqa: F401  (atomic_torch_save re-exported)
from pipeline.progress import bar

log = logging.getLogger("cxrbench.engine")

CHECKPOINT_PREFIX = "step_"


class TrainingError(CxrbenchError, RuntimeError):
    """A training failure with a one-line, user-facing message."""


class NonFiniteLossError(TrainingError):
    pass


# --------------------------------------------------------------------------------------------------------------------
# Seeding and devices
# --------------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def select_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is visible; set train.device: auto or cpu")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo). Without it torch
    emulates bf16 matmuls and convolutions: measured here (AMD EPYC Zen 3, 2 threads) CycleGAN's step at 64 px and
    official widths ran at 0.020 it/s under bf16 autocast against 0.64 in fp32, 32x slower."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (no loss scaling needed); None = full fp32 (the CPU default: the same numbers on every
    CPU, whatever its bf16 support). `bf16` on a CPU without native bf16 runs, with a warning saying what it costs."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        if device.type == "cpu" and not cpu_bf16_native():
            warnings.warn("train.precision: bf16 on a CPU without AVX512-BF16/AMX is emulated and about 30x slower "
                          "than fp32 (measured); set train.precision: fp32 or auto", stacklevel=2)
        return torch.bfloat16
    return None


# --------------------------------------------------------------------------------------------------------------------
# Data: stateless unpaired sampling
# --------------------------------------------------------------------------------------------------------------------
def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W) -> float in [-1, 1]."""
    return images_uint8.float().div(127.5).sub(1.0)


def random_crop_resize(img: torch.Tensor, out_size: int, crop_scale: float, hflip: bool,
                       gen: np.random.Generator) -> torch.Tensor:
    """img: (1, H, W) float. Crop a random square of side U[crop_scale, 1] * min(H, W), resize to out_size."""
    _, h, w = img.shape
    side = min(h, w)
    crop = int(round(side * gen.uniform(crop_scale, 1.0))) if crop_scale < 1.0 else side
    top = int(gen.integers(0, h - crop + 1))
    left = int(gen.integers(0, w - crop + 1))
    patch = img[:, top:top + crop, left:left + crop]
    if crop != out_size:
        patch = F.interpolate(patch[None], size=(out_size, out_size), mode="bilinear", align_corners=False,
                              antialias=crop > out_size)[0]
    if hflip and gen.random() < 0.5:
        patch = patch.flip(-1)
    return patch


class UnpairedBatches(torch.utils.data.Dataset):
    """Item s = the training batch of step s: (real_a, real_b), each (batch, 1, size, size) in [-1, 1].

    Indices and augmentation are drawn from a generator seeded by (seed, s): no sampler state exists, so resume and
    any number of loader workers reproduce the same batches.

    Distributed (world_size > 1): `batch_size` is the global batch (world_size x per-rank batch). Every rank draws
    the same global batch and returns only its slice [rank * b, (rank + 1) * b), b = batch_size / world_size, so the
    ranks together train on exactly the batch of a 1-process run. Images outside the slice are not cropped: only
    their random draws are consumed (_skip_crop_draws).
    """

    def __init__(self, images_a: np.ndarray, images_b: np.ndarray, batch_size: int, image_size: int,
                 crop_scale: float, hflip: bool, seed: int, rank: int = 0, world_size: int = 1):
        if len(images_a) == 0 or len(images_b) == 0:
            raise TrainingError("training set is empty for one domain (need opacity and normal training images)")
        if batch_size % world_size or not 0 <= rank < world_size:
            raise TrainingError(f"global batch {batch_size} cannot be split into {world_size} equal rank slices "
                                f"(rank {rank}); use a batch size that is a multiple of the number of processes")
        self.rank, self.world_size = rank, world_size
        self.a = torch.from_numpy(np.ascontiguousarray(images_a))  # (N, H, W) uint8: decoded once, kept in memory
        self.b = torch.from_numpy(np.ascontiguousarray(images_b))
        self.batch_size, self.image_size = batch_size, image_size
        self.crop_scale, self.hflip, self.seed = crop_scale, hflip, seed

    def __len__(self) -> int:
        return 2**62

    def _draw(self, pool: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
        idx = gen.integers(0, len(pool), size=self.batch_size)
        per_rank = self.batch_size // self.world_size
        mine = range(self.rank * per_rank, (self.rank + 1) * per_rank)
        out = []
        for j, i in enumerate(idx):  # in order: image j's crop draws follow image j-1's on the one generator
            if j in mine:
                out.append(random_crop_resize(to_model_range(pool[i][None]), self.image_size, self.crop_scale,
                                              self.hflip, gen))
            else:
                _skip_crop_draws(pool.shape[-2], pool.shape[-1], self.crop_scale, self.hflip, gen)
        return torch.stack(out)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = np.random.default_rng([self.seed, int(step)])
        # A and B are drawn independently (unpaired): two child generators
        gen_a, gen_b = gen.spawn(2)
        return self._draw(self.a, gen_a), self._draw(self.b, gen_b)


def _skip_crop_draws(h: int, w: int, crop_scale: float, hflip: bool, gen: np.random.Generator) -> None:
    """Consume exactly the draws random_crop_resize makes for an (h, w) image, without cropping (another rank's
    image). Must mirror random_crop_resize; tests/test_distributed.py checks rank slices against the full batch."""
    side = min(h, w)
    crop = int(round(side * gen.uniform(crop_scale, 1.0))) if crop_scale < 1.0 else side
    gen.integers(0, h - crop + 1)
    gen.integers(0, w - crop + 1)
    if hflip:
        gen.random()


class _Steps(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self):
        return max(0, self.stop - self.start)


def batch_loader(dataset: UnpairedBatches, start: int, stop: int, num_workers: int, pin: bool):
    # A private generator: creating the loader iterator draws a base seed, which must not consume the global RNG
    # (that would shift every random draw of a resumed run by one and break exact resume).
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=_Steps(start, stop),
                                       num_workers=num_workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(dataset.seed),
                                       persistent_workers=False, prefetch_factor=4 if num_workers else None)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------
def safe_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Every checkpoint and weights file is loaded with weights_only=True: a pickle payload is refused."""
    return torch.load(path, map_location=map_location, weights_only=True)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob(f"{CHECKPOINT_PREFIX}*.pt") if not p.name.startswith("."))


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


STALE_DIR = "stale"  # checkpoints of other configurations, kept (never deleted)


def _differences(then: Any, now: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (as far as both are known)."""
    if not isinstance(then, dict) or not isinstance(now, dict):
        return [prefix or "(unknown: the checkpoint predates recorded settings)"] if then != now else []
    out = []
    for k in sorted(set(then) | set(now), key=str):
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(then.get(k), dict) and isinstance(now.get(k), dict):
            out += _differences(then[k], now[k], key)
        elif then.get(k) != now.get(k):
            out.append(f"{key}: {then.get(k)!r} -> {now.get(k)!r}")
    return out


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# Loss log (a DVC plots CSV, rewritten atomically)
# --------------------------------------------------------------------------------------------------------------------
class LossLog:
    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.rows: list[dict[str, float]] = []

    def restore(self, up_to_step: int) -> None:
        """Keep the rows an interrupted run already wrote, up to the step it resumes from."""
        if not self.path or not self.path.exists():
            return

        with open(self.path) as fh:
            for row in csv.DictReader(fh):
                if int(row["step"]) <= up_to_step:
                    self.rows.append({k: (float(v) if v != "" else float("nan")) for k, v in row.items()})

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.flush()

    def flush(self) -> None:
        if not self.path:
            return
        keys = ["step"] + sorted({k for r in self.rows for k in r if k != "step"})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [",".join(keys)] + [",".join(_fmt(r.get(k)) for k in keys) for r in self.rows]
        atomic_write(self.path, "\n".join(lines) + "\n")


class LossWindow:
    """The losses of the steps since the last log row, kept on the device: a train_step returns 0-dim tensors and
    nothing here reads them back until `read()`, once per `log_every` steps (and before a checkpoint). Per step and
    term only asynchronous kernels run (sum, count, first non-finite step and value), so a GPU's launch queue never
    waits for the host; on the CPU it is the same code. Python floats are accepted too (then they are host values).
    """

    def __init__(self, device: torch.device, world_size: int = 1):
        self.device, self.world_size = device, world_size
        self.dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.terms: dict[str, list[torch.Tensor]] = {}  # name -> [sum, first bad step (-1 = none), its value]
        self.steps = 0

    def add(self, losses: dict[str, Any], step: int) -> None:
        self.steps += 1
        for name, value in losses.items():
            v = torch.as_tensor(value).detach().to(self.device, self.dtype).reshape(())
            if name not in self.terms:
                zero = torch.zeros((), dtype=self.dtype, device=self.device)
                self.terms[name] = [zero, torch.full((), -1, dtype=torch.int64, device=self.device), zero.clone()]
            acc = self.terms[name]
            acc[0] = acc[0] + v
            first = ~torch.isfinite(v) & (acc[1] < 0)
            acc[1] = torch.where(first, torch.full_like(acc[1], step), acc[1])
            acc[2] = torch.where(first, v, acc[2])

    def read(self, label: str, keep: bool = False) -> dict[str, float]:
        """Means over the window's steps (and over ranks under torchrun): one host sync. Raises NonFiniteLossError
        naming the first step and term that were not finite (on every rank alike). Empties the window unless
        `keep` (a check before a checkpoint that is not a log step)."""
        names = list(self.terms)
        if not names:
            return {}
        stacked = torch.stack([torch.stack([a[0], a[1].to(self.dtype), a[2]]) for a in self.terms.values()])
        stacked = distributed.reduce_loss_window(stacked)  # sums and values: sum over ranks; steps: min over ranks
        steps = self.steps * self.world_size
        if not keep:
            self.terms.clear()
            self.steps = 0
        rows = stacked.tolist()  # the one sync
        bad = [(int(r[1]), i) for i, r in enumerate(rows) if r[1] >= 0]
        if bad:
            step, i = min(bad)
            raise NonFiniteLossError(f"{label}: loss '{names[i]}' is {rows[i][2]} at step {step} "
                                     "(lower the learning rate or check the input data)")
        return {name: row[0] / steps for name, row in zip(names, rows)}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else f"{v:.6g}"
    return str(v)


# --------------------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class EngineSettings(TrainParams):
    """The engine's settings are params.yaml's `train` section (same fields, same defaults: tests and `cxrbench
    bench` train with the pipeline's crop), plus whether to draw a progress bar."""

    progress: bool = True


class Engine:
    """Runs a translator's training loop. Translators see only `self.ctx`, a StepContext: device, backward(loss),
    autocast(), rank, world_size.

    Under torchrun (WORLD_SIZE > 1) the engine joins the process group when it is created and then:
    - broadcasts rank 0's parameters and buffers at the start and after a resume (identical replicas);
    - seeds every rank with seed + rank after that broadcast, so the translator's own random draws (noise, style
      codes, subsets, image-pool choices) differ per rank; rank 0 draws exactly what a 1-process run draws;
    - gives rank r its slice of the global batch of step s (world_size x the method's batch_size; UnpairedBatches);
    - averages gradients over ranks inside backward() (distributed.GradientAverager: why not one DDP per network);
    - averages the step's losses over ranks, so logs show global-batch losses and the NaN guard stops every rank;
    - logs (loss CSV, MLflow, progress bar) and writes checkpoints on rank 0 only; other ranks wait at a barrier.
      A checkpoint has the keys of a 1-process one (rank 0's values) plus "ranks": the RNG states and extra state
      (image pools) of ranks 1..N-1, so resuming with the same world size is exact.
    """

    def __init__(self, translator: Translator, settings: EngineSettings, ckpt_dir: Path, seed: int,
                 curve_path: Path | None = None, tracker: Any = None, fingerprint_data: Any = None,
                 label: str = "", probe: Probe | None = None):
        self.translator = translator
        self.settings = settings
        self.ckpt_dir = Path(ckpt_dir)
        self.seed = seed
        if settings.device != "cpu":
            distributed.claim_gpu_slot()  # CXRBENCH_GPU_SLOTS: one GPU per parallel run (dvc queue)
        # single process: (0, 1, the selected device); under torchrun: this rank, the world size, cuda:LOCAL_RANK
        self.rank, self.world_size, self.device = distributed.setup(select_device(settings.device))
        self.dtype = autocast_dtype(settings.precision, self.device)
        self.tracker = tracker if self.rank == 0 else None
        self.label = label or translator.name
        self.loss_log = LossLog(curve_path if self.rank == 0 else None)
        self.step = 0
        self._fingerprint_inputs = {"fp": fingerprint_data, "seed": seed, "method": translator.name}
        self._fingerprint = fingerprint(self._fingerprint_inputs)
        self._grads: distributed.GradientAverager | None = None  # created by the first distributed backward()
        self.on_step: Callable[[int], None] | None = None  # test hook (fault injection)
        # all a translator's train_step sees of the engine
        self.ctx = StepContext(self.device, self.rank, self.world_size, backward=self.backward, autocast=self.autocast)
        self.probe = probe  # fixed validation batch: translator.diagnostics() is logged with the losses (rank 0)

    # --- API used by translators ---------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        if self.world_size == 1:
            loss.backward(**kwargs)
            return
        if self._grads is None:
            self._grads = distributed.GradientAverager(self.translator)
        self._grads.watch()
        loss.backward(**kwargs)
        self._grads.reduce()

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # --- checkpoints -----------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "step": self.step,
            "fingerprint": self._fingerprint,
            "fingerprint_inputs": json.loads(json.dumps(self._fingerprint_inputs, default=str)),  # plain, for diffs
            "model": self.translator.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": self.translator.extra_state(),
            "rng": rng_state(),
        }

    def save_checkpoint(self) -> Path:
        """Rank 0 writes; every rank must call this (it gathers the other ranks' RNG and extra state first)."""
        path = self.ckpt_dir / f"{CHECKPOINT_PREFIX}{self.step:09d}.pt"
        per_rank = None
        if self.world_size > 1:
            per_rank = distributed.gather_objects(
                {"rng": rng_state(), "extra": distributed.to_device(self.translator.extra_state(), "cpu")})
        if self.rank == 0:
            state = self._state()
            if per_rank is not None:
                state["ranks"] = {"world_size": self.world_size, "states": per_rank[1:]}
            atomic_torch_save(state, path)
            for old in list_checkpoints(self.ckpt_dir)[:-self.settings.keep_checkpoints]:
                old.unlink(missing_ok=True)
            for stale in self.ckpt_dir.glob(".tmp-*"):  # a write killed mid-way leaves only a temporary file
                stale.unlink(missing_ok=True)
        distributed.barrier()
        return path

    def _set_aside(self, checkpoints: list[Path], state: dict[str, Any]) -> Path:
        """Move checkpoints of another configuration to stale/<their fingerprint>/ with a note of what differs:
        training is never deleted; changing the settings back restores them (see _restore_set_aside)."""
        theirs = str(state.get("fingerprint") or "unknown")
        aside = self.ckpt_dir / STALE_DIR / theirs
        aside.mkdir(parents=True, exist_ok=True)
        for p in checkpoints:
            os.replace(p, aside / p.name)
        differs = _differences(state.get("fingerprint_inputs"), self._fingerprint_inputs)
        write_json(aside / "set_aside.json", {"fingerprint": theirs, "current_fingerprint": self._fingerprint,
                                              "step": int(state.get("step", 0)), "differs": differs,
                                              "how_to_go_back": "restore the settings listed in `differs`; the "
                                                                "next run moves these checkpoints back"})
        return aside

    def _restore_set_aside(self) -> None:
        """Checkpoints of this exact configuration set aside earlier come back (the settings were changed back)."""
        aside = self.ckpt_dir / STALE_DIR / self._fingerprint
        mine = list_checkpoints(aside)
        if mine and not list_checkpoints(self.ckpt_dir):
            for p in mine:
                os.replace(p, self.ckpt_dir / p.name)
            warnings.warn(f"resuming from checkpoints of this configuration that were set aside in {aside}",
                          stacklevel=4)

    def _read_newest(self) -> tuple[dict[str, Any] | None, Path | None]:
        """The newest readable checkpoint of this exact configuration (None = fresh start); rank 0 only."""
        for stale in self.ckpt_dir.glob(".tmp-*") if self.ckpt_dir.is_dir() else []:
            stale.unlink(missing_ok=True)
        self._restore_set_aside()
        checkpoints = list_checkpoints(self.ckpt_dir)
        # distributed: read on the CPU, then broadcast (a CUDA tensor pickled on rank 0 would land on cuda:0)
        where = self.device if self.world_size == 1 else "cpu"
        for path in reversed(checkpoints):
            try:
                state = safe_load(path, map_location=where)
            except Exception as exc:  # truncated or corrupt file: fall back to the previous one
                warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}); trying the previous one",
                              stacklevel=3)
                continue
            if state.get("fingerprint") != self._fingerprint:
                aside = self._set_aside(checkpoints, state)
                warnings.warn(f"checkpoints in {self.ckpt_dir} belong to another configuration (moved to {aside}, "
                              "with what differs in set_aside.json; set those values back to resume them); "
                              "starting afresh", stacklevel=3)
                return None, None
            return state, path
        return None, None

    def try_resume(self) -> int:
        """Load the newest readable checkpoint of this exact configuration; return its step (0 = fresh start).

        Distributed: rank 0 chooses and reads the file and broadcasts its content (no shared file system needed);
        each rank then restores its own RNG states and extra state from the checkpoint's "ranks" entry.
        """
        state, path = self._read_newest() if self.rank == 0 else (None, None)
        state = distributed.broadcast_object(state)
        if state is None:
            return 0
        self.translator.load_state_dict(state["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        self.step = int(state["step"])
        rng, extra = state["rng"], state.get("extra", {})
        ranks = state.get("ranks", {"world_size": 1, "states": []})
        if ranks["world_size"] != self.world_size:  # exact resume needs the same number of processes
            if self.rank == 0:
                warnings.warn(f"{path} was written by {ranks['world_size']} process(es), this run has "
                              f"{self.world_size}: ranks > 0 continue with rank 0's extra state and new random "
                              "streams (resume is not bit-exact)", stacklevel=2)
            if self.rank > 0:
                rng = None
        elif self.rank > 0:
            rng, extra = ranks["states"][self.rank - 1]["rng"], ranks["states"][self.rank - 1]["extra"]
        self.translator.load_extra_state(distributed.to_device(extra, self.device))
        if rng is not None:
            set_rng_state(distributed.to_device(rng, "cpu"))  # RNG states are CPU byte tensors
        else:
            seed_everything(int(np.random.SeedSequence([self.seed, self.rank, self.step]).generate_state(1)[0]))
        if self.world_size > 1:
            distributed.broadcast_module(self.translator)
        if self.rank == 0:
            log.warning("resuming %s from checkpoint %s at step %d", self.label, path.name, self.step)
            print(f"[cxrbench] resuming {self.label} from {path} at step {self.step}", file=sys.stderr, flush=True)
        return self.step

    def diagnostics(self) -> dict[str, float]:
        """translator.diagnostics() on the probe, on rank 0, with the RNG state saved and restored around it: the
        diagnostics draw random numbers (style codes, subsets) but never change what training draws next."""
        if self.probe is None or self.rank != 0:
            return {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return {k: float(v) for k, v in self.translator.diagnostics(self.probe.to(self.device)).items()}

    # --- the loop --------------------------------------------------------------------------------------------------
    def fit(self, images_a: np.ndarray, images_b: np.ndarray) -> dict[str, float]:
        s = self.settings
        t = self.translator
        if s.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        t.to(self.device)
        if self.device.type == "cuda" and s.channels_last:
            t.to(memory_format=torch.channels_last)
        if s.activation_checkpointing:
            checkpoint_activations(t)
        if s.activation_checkpointing and not any(getattr(m, "_checkpointed", False) for m in t.modules()):
            pattern = getattr(t, "checkpoint_block_names", CHECKPOINT_BLOCKS)
            warnings.warn(f"train.activation_checkpointing: no block of {t.name} matched {pattern!r}, so "
                          "nothing is recomputed and memory is as without it; set the translator's "
                          "checkpoint_block_names to a regex of its generator blocks' class names", stacklevel=2)
        if s.compile:
            compile_networks(t)
        distributed.broadcast_module(t)  # every rank starts from rank 0's weights (no-op in a single process)
        t.train()
        self.optimizers, self.schedulers = t.configure_optimizers(s.iterations)
        seed_everything(self.seed + self.rank, s.deterministic)  # per-rank streams; rank 0's = the 1-process one
        start = self.try_resume()
        set_optimizer_impl(self.optimizers, s.optimizer_impl)  # after the resume: a loaded state brings its own back
        self.loss_log.restore(start)
        if start == 0:
            self.loss_log.rows.clear()
            self.loss_log.flush()
        data = UnpairedBatches(images_a, images_b, t.batch_size * self.world_size, t.image_size, s.crop_scale,
                               s.hflip, self.seed, rank=self.rank, world_size=self.world_size)
        loader = batch_loader(data, start, s.iterations, s.num_workers, pin=self.device.type == "cuda")
        window = LossWindow(self.device, self.world_size)
        last: dict[str, float] = {}
        bar = _progress(total=s.iterations, initial=start, desc=self.label, enabled=s.progress and self.rank == 0)
        t0, done0 = time.perf_counter(), start
        try:
            for step, (real_a, real_b) in zip(range(start, s.iterations), loader):
                real_a = real_a.to(self.device, non_blocking=True)
                real_b = real_b.to(self.device, non_blocking=True)
                if self.device.type == "cuda" and s.channels_last:
                    real_a = real_a.contiguous(memory_format=torch.channels_last)
                    real_b = real_b.contiguous(memory_format=torch.channels_last)
                with self.autocast():
                    losses = t.train_step(real_a, real_b, step, self.ctx)
                with warnings.catch_warnings():
                    # schedules advance every iteration even when a method skips an optimizer on some
                    # iterations (DRIT's content-D-only steps): torch's order warning does not apply
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                    for sched in self.schedulers.values():
                        sched.step()
                self.step = step + 1
                window.add(losses, step)  # no host sync: the losses stay on the device until the log step
                bar.update(1)
                log_now = self.step % s.log_every == 0 or self.step == s.iterations
                if log_now or self.step % s.checkpoint_every == 0:
                    # one sync; a non-finite loss (on any rank) stops every rank here, naming its step and term,
                    # before a checkpoint could keep the weights it spoiled
                    means = window.read(self.label, keep=not log_now)
                if log_now:
                    if distributed.auto_threads_mode(s.threads):  # give back / take cores as other stages come, go
                        distributed.share_threads(0)
                    last = means
                    lr = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
                    rate = (self.step - done0) / max(time.perf_counter() - t0, 1e-9)
                    row = {"step": float(self.step), **last, **lr, "it_per_s": rate, **self.diagnostics()}
                    self.loss_log.append(row)
                    if self.tracker is not None:
                        self.tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=self.step)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in list(last.items())[:4]})
                if self.step % s.checkpoint_every == 0 and self.step < s.iterations:
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(self.step)
        except torch.cuda.OutOfMemoryError as exc:
            raise TrainingError(oom_message(self.label, t, exc)) from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise TrainingError(oom_message(self.label, t, exc)) from None
            raise
        finally:
            bar.close()
            if self._grads is not None:  # the translator outlives the engine: drop the gradient hooks
                self._grads.close()
                self._grads = None
        final = None
        if self.rank == 0:  # rank 0 owns the checkpoint folder (other hosts may not even see it)
            newest = list_checkpoints(self.ckpt_dir)
            final = self.step >= s.iterations and (not newest or not newest[-1].name.endswith(f"{self.step:09d}.pt"))
        if distributed.broadcast_object(final):
            self.save_checkpoint()
        return last


def set_optimizer_impl(optimizers: dict[str, torch.optim.Optimizer], impl: str) -> str:
    """train.optimizer_impl: how each optimizer's update runs, set on the optimizers a method built (the method keeps
    its choice of algorithm and hyper-parameters; this changes only the kernels). loop = one small op per parameter
    tensor (torch's CPU default), foreach = one multi-tensor op per update quantity (torch's CUDA default), fused = one
    pass over all tensors per step. The three compute the same update in another order: weights agree to float
    rounding (tests/test_contract.py states the tolerance). auto = fused: 2.3-4.2x faster than loop on a CPU at
    paper widths (`cxrbench bench`'s Adam column), and torch's fastest on CUDA by its documentation (unmeasured
    here). Optimizers without these switches (a method's own) are left as they are.
    The engine sets it after a resume, since a loaded optimizer state brings back the switches it was saved with."""
    impl = "fused" if impl == "auto" else impl
    for opt in optimizers.values():
        if "foreach" not in opt.defaults or "fused" not in opt.defaults:
            continue
        opt.defaults.update(foreach=impl == "foreach", fused=impl == "fused")
        if impl == "fused":
            opt._step_supports_amp_scaling = True  # what the optimizer's constructor sets for fused=True
        for group in opt.param_groups:
            group["foreach"], group["fused"] = impl == "foreach", impl == "fused"
            # Adam's step counters live beside the parameters when fused (or capturable), on the CPU otherwise
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    where = p.device if group["fused"] or group.get("capturable") else torch.device("cpu")
                    opt.state[p]["step"] = step.to(where)
    return impl


def compile_networks(translator: Translator) -> list[str]:
    """train.compile: torch.compile each trainable child network in place (`nn.Module.compile`), so state-dict keys,
    checkpoints and exported weights stay those of the eager run. Only `forward` calls go through the compiled
    graph: networks a method drives through other methods (ours' and MUNIT's encode/decode) run eagerly.
    Returns the names compiled (idempotent: a second call compiles nothing new)."""
    done = []
    for name, child in translator.named_children():
        if getattr(child, "_compiled_call_impl", None) is None and any(p.requires_grad for p in child.parameters()):
            child.compile()
            done.append(name)
    return done


# The generators' repeated blocks, by class name: residual blocks (CycleGAN, UNIT, MUNIT, DRIT, ours) and UVCGAN's
# U-Net levels. A method with other names lists its own in `checkpoint_block_names` (a regex on the class name).
CHECKPOINT_BLOCKS = r"(ResBlock|ResnetBlock|ResBlockIN|AdaINResBlock|EncoderLevel|DecoderLevel)$"


def checkpoint_activations(translator: Translator) -> list[str]:
    """train.activation_checkpointing: every trainable block (CHECKPOINT_BLOCKS, outermost match only) keeps only its
    input for the backward pass and recomputes its activations there (torch.utils.checkpoint, non-reentrant, RNG state
    preserved: the same numbers, less memory, about a third more compute in those blocks). No-grad calls (inference,
    detached passes) run the block as it is. Returns the names wrapped; idempotent."""
    import re

    from torch.utils.checkpoint import checkpoint

    pattern = re.compile(getattr(translator, "checkpoint_block_names", CHECKPOINT_BLOCKS))
    done: list[str] = []
    for name, module in translator.named_modules():
        if any(name.startswith(d + ".") for d in done) or getattr(module, "_checkpointed", False):
            continue
        if not pattern.search(type(module).__name__) or not any(p.requires_grad for p in module.parameters()):
            continue
        forward = module.forward

        def run(*args, _forward=forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)
        module.forward = run
        module._checkpointed = True
        done.append(name)
    return done


def oom_message(label: str, t: Translator, exc: BaseException) -> str:
    return (f"{label}: out of memory at {t.image_size}px with batch {t.batch_size} ({str(exc).splitlines()[0][:80]}); "
            "lower data.resolution or the method's batch_size in params.yaml, or set train.precision: bf16 and "
            "train.activation_checkpointing: true")


def _progress(total: int, initial: int, desc: str, enabled: bool):
    return bar(total=total, initial=initial, desc=desc, enabled=enabled)


def export_weights(translator: Translator, path: Path, meta: dict[str, Any]) -> None:
    """Final weights for inference: only the modules translate() needs, plus a JSON sidecar describing them."""
    keep = set(translator.inference_modules())
    state = {k: v for k, v in translator.state_dict().items() if k.split(".", 1)[0] in keep}
    atomic_torch_save(state, path)
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True, default=str))
