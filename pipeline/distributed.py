"""One training run across several processes (GPUs of one host, or several hosts), launched with torchrun:

    torchrun --nproc_per_node 4 -m pipeline.app.cli train --model ours                     # one host, 4 GPUs
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --master_addr HOST --master_port 29500 \\
             -m pipeline.app.cli train --model ours                                        # two hosts

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process; `setup` turns them into a
process group (NCCL on CUDA, gloo on CPU) and a device per local rank (cuda:LOCAL_RANK). Without torchrun
(WORLD_SIZE unset or 1) nothing is initialised and every helper below is a no-op, so the single-process path is
the same code. The engine (pipeline/engine.py) uses these helpers for: the initial parameter broadcast, gradient
averaging, loss averaging (the NaN guard stops every rank at the same step), rank-0 checkpoints and resume.

Every collective here must be called by all ranks in the same order; the engine only calls them from places every
rank reaches (never inside `if rank == 0`).
"""
from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist

from pipeline.errors import CxrbenchError

BUCKET_BYTES = 32 * 2**20  # gradients are averaged in flat buckets of at most this many bytes (DDP uses 25 MiB)


# --------------------------------------------------------------------------------------------------------------------
# Who am I
# --------------------------------------------------------------------------------------------------------------------
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise CxrbenchError(f"environment variable {name}={value!r} is not an integer; unset it or launch with "
                            "torchrun") from None


def rank() -> int:
    """Global rank: the process group's once initialised, else torchrun's RANK (0 without torchrun)."""
    return dist.get_rank() if is_initialized() else _env_int("RANK", 0)


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """True on rank 0 (and in every single-process run): the one process that logs and writes files."""
    return rank() == 0


# --------------------------------------------------------------------------------------------------------------------
# Job-level parallelism: one GPU per independent run (dvc queue start -j N)
# --------------------------------------------------------------------------------------------------------------------
_SLOT_LOCK: Any = None  # the open, flock-ed file of the GPU slot this process holds (released when it exits)


def claim_gpu_slot(poll_s: float = 2.0) -> str | None:
    """With CXRBENCH_GPU_SLOTS="0,1,2,3": take the first free slot and set CUDA_VISIBLE_DEVICES to it; return it.

    `dvc queue start -j N` gives every worker the same environment, so a queued run cannot be told which GPU is
    its own. Each training process therefore takes an exclusive lock on one slot file (in $CXRBENCH_GPU_LOCK_DIR,
    default <tmp>/cxrbench-gpu-slots-<uid>; the OS releases it when the process ends, even on SIGKILL) and waits
    while all slots are taken. Must run before CUDA is initialised (the engine calls it first thing). A no-op
    without CXRBENCH_GPU_SLOTS, under torchrun (devices follow LOCAL_RANK) and when CUDA_VISIBLE_DEVICES is set.
    """
    global _SLOT_LOCK
    if _SLOT_LOCK is not None:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    slots = [s.strip() for s in os.environ.get("CXRBENCH_GPU_SLOTS", "").split(",") if s.strip()]
    if not slots or _env_int("WORLD_SIZE", 1) > 1 or os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None

    if torch.cuda.is_initialized():
        warnings.warn("CXRBENCH_GPU_SLOTS ignored: CUDA was initialised before the engine started", stacklevel=2)
        return None
    default = Path(tempfile.gettempdir()) / f"cxrbench-gpu-slots-{os.getuid()}"
    lock_dir = Path(os.environ.get("CXRBENCH_GPU_LOCK_DIR") or default)
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in slots:
            fh = open(lock_dir / f"slot-{slot}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _SLOT_LOCK = fh
            os.environ["CUDA_VISIBLE_DEVICES"] = slot
            return slot
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------------------------------
# CPU threads: share the cores among the stage processes running at once (dvc queue start -j N, a user's other runs)
# --------------------------------------------------------------------------------------------------------------------
_CPU_LOCK: Any = None  # the open, flock-ed presence file of this process (released by the OS when it exits)
CPU_JOIN_GRACE_S = 10.0  # a presence file younger than this is never taken for a stale one (its owner may be locking)


def _cpu_lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"cxrbench-cpu-jobs-{os.getuid()}"
    path = Path(os.environ.get("CXRBENCH_CPU_LOCK_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cgroups cpusets, a queue's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def join_cpu_jobs() -> None:
    """Announce this process as a running stage: an exclusively flock-ed file <pid>.lock in $CXRBENCH_CPU_LOCK_DIR
    (default <tmp>/cxrbench-cpu-jobs-<uid>). Idempotent."""
    global _CPU_LOCK
    if _CPU_LOCK is not None:
        return
    fh = open(_cpu_lock_dir() / f"{os.getpid()}.lock", "a+")
    fcntl.flock(fh, fcntl.LOCK_EX)
    _CPU_LOCK = fh


def running_cpu_jobs() -> int:
    """How many stage processes hold a presence file now (this one included once it joined); stale files of
    processes that ended are removed."""
    n = 0
    for path in _cpu_lock_dir().glob("*.lock"):
        if _CPU_LOCK is not None and path.name == f"{os.getpid()}.lock":
            n += 1
            continue
        try:
            fh = open(path, "a+")
        except OSError:
            continue
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            n += 1  # held: its process is running
        else:
            try:
                if time.time() - path.stat().st_mtime > CPU_JOIN_GRACE_S:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            fh.close()
    return max(n, 1)


def auto_threads_mode(requested: int) -> bool:
    """Whether this process chooses its own thread count: `threads: 0` in params.yaml and no OMP_NUM_THREADS /
    MKL_NUM_THREADS in the environment (a user who sets those has chosen)."""
    return not requested and not os.environ.get("OMP_NUM_THREADS") and not os.environ.get("MKL_NUM_THREADS")


def share_threads(requested: int = 0) -> int:
    """Set torch's CPU threads and return them: `requested` when > 0; the environment's choice when
    OMP_NUM_THREADS/MKL_NUM_THREADS is set; else usable cores // stage processes running now (at least 1), so two
    stages on 2 cores take one core each instead of spin-waiting on each other. The engine calls it again at every
    log step, so a run that started alone gives cores back when another starts, and takes them when it ends."""
    if requested:
        n = requested
    elif not auto_threads_mode(requested):
        return torch.get_num_threads()
    else:
        join_cpu_jobs()
        n = max(1, usable_cores() // running_cpu_jobs())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------------------------------------------------
# Set up and tear down
# --------------------------------------------------------------------------------------------------------------------
def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device of this process). Initialises the process group from torchrun's environment
    the first time it is called with WORLD_SIZE > 1 (idempotent; torn down at exit).

    `device` is the single-process choice (select_device); under torchrun a CUDA device becomes cuda:LOCAL_RANK.
    """
    if not is_initialized():
        if _env_int("WORLD_SIZE", 1) <= 1:
            return 0, 1, device
        if device.type == "cuda":
            if local_rank() >= torch.cuda.device_count():
                raise CxrbenchError(f"LOCAL_RANK={local_rank()} but only {torch.cuda.device_count()} CUDA devices are "
                                    "visible; lower torchrun --nproc_per_node or fix CUDA_VISIBLE_DEVICES")
            device = torch.device("cuda", local_rank())
            torch.cuda.set_device(device)  # object collectives and barriers use the current device under NCCL
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(teardown)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def teardown() -> None:
    """Destroy the process group (at exit, or by a caller that wants it gone earlier)."""
    if is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where small tensors for collectives live: NCCL only moves CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_initialized():
        dist.barrier()


# --------------------------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------------------------
def _buckets(tensors: list[torch.Tensor], limit: int = BUCKET_BYTES) -> Iterable[list[torch.Tensor]]:
    """Consecutive groups of same device and dtype, each at most `limit` bytes (a larger tensor alone)."""
    group: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if group and (t.dtype != group[0].dtype or t.device != group[0].device or size + nbytes > limit):
            yield group
            group, size = [], 0
        group.append(t)
        size += nbytes
    if group:
        yield group


def _coalesced(tensors: list[torch.Tensor], collective) -> None:
    """Run `collective(flat)` on flat copies of the tensors, bucket by bucket, and write the results back.

    Flattening copies, so channels_last (non-contiguous) tensors are fine: copy_ honours their strides.
    """
    for group in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite the tensors in place with rank `src`'s values."""
    if is_initialized() and world_size() > 1 and tensors:
        with torch.no_grad():
            _coalesced(tensors, lambda flat: dist.broadcast(flat, src))


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of `module` takes rank `src`'s value (identical start, identical resume)."""
    broadcast_tensors([t.data for t in module.parameters()] + [b for b in module.buffers()], src)


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """In place: each tensor becomes its mean over the ranks (sum, then divide by the world size)."""
    n = world_size()
    if not is_initialized() or n == 1 or not tensors:
        return

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(n)

    with torch.no_grad():
        _coalesced(tensors, mean)


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Elementwise OR over ranks of a 0/1 vector (float32, any device); returns a bool vector on flags.device."""
    if not is_initialized() or world_size() == 1:
        return flags.bool()
    buf = flags.to(_comm_device(), torch.float32)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return buf.to(flags.device).bool()


def reduce_loss_window(stacked: torch.Tensor) -> torch.Tensor:
    """The engine's loss window (rows: terms; columns: sum, first non-finite step or -1, its value) over every rank:
    sums and values summed, steps the smallest non-negative one. Every rank calls it at the same steps (the log
    cadence), so a NaN on any rank stops every rank at once. The identity in a single process."""
    if not is_initialized() or world_size() == 1:
        return stacked
    device = stacked.device
    buf = stacked.to(_comm_device(), torch.float64)
    sums = buf[:, [0, 2]].contiguous()
    steps = torch.where(buf[:, 1] < 0, torch.full_like(buf[:, 1], float("inf")), buf[:, 1]).contiguous()
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    steps = torch.where(torch.isinf(steps), torch.full_like(steps, -1.0), steps)
    return torch.stack([sums[:, 0], steps, sums[:, 1]], dim=1).to(device, stacked.dtype)


def mean_of_floats(values: dict[str, float]) -> dict[str, float]:
    """{name: mean over ranks}. Every rank must pass the same names (they may not depend on the data).

    A NaN or inf on any rank makes the mean non-finite on every rank, so a finiteness check after this call stops
    all ranks at the same step (a rank that stopped alone would leave the others waiting in a collective).
    """
    if not is_initialized() or world_size() == 1 or not values:
        return values
    names = sorted(values)
    buf = torch.tensor([float(values[k]) for k in names], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf /= world_size()
    means = dict(zip(names, buf.tolist()))
    return {k: means[k] for k in values}  # the caller's order (log columns, progress bar)


# --------------------------------------------------------------------------------------------------------------------
# Python objects (checkpoint state)
# --------------------------------------------------------------------------------------------------------------------
def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank (pickled; tensors in it should be on the CPU)."""
    if not is_initialized() or world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """[object of rank 0, rank 1, ...] on rank `dst`, None elsewhere (tensors in it should be on the CPU)."""
    if not is_initialized() or world_size() == 1:
        return [obj]
    out = [None] * world_size() if rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def to_device(obj: Any, device: torch.device | str = "cpu") -> Any:
    """A copy of a nested dict/list/tuple with every tensor moved to `device` (CPU: safe to pickle across ranks)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj



# --------------------------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------------------------
class GradientAverager:
    """Averages over ranks the gradient that each parameter received in one `engine.backward(loss)` call.

    Why this and not DistributedDataParallel (one DDP wrapper per generator / discriminator, as StudioGAN and
    MMEngine do)? The arithmetic is the same (DDP also averages gradients with all_reduce), but this keeps the
    translator contract and the checkpoints untouched:
    - translators call their networks through methods other than forward (ours: gen.encode / gen.decode /
      gen.style_of; MUNIT, DRIT: encoders and decoders separately). A DDP wrapper hooks forward() only, so the
      gradients of those calls would silently not be reduced;
    - wrapping replaces children: state_dict keys gain a `module.` prefix and `self.gen_a.encode` would have to
      become `self.gen_a.module.encode` in every method. Here checkpoints and exported weights keep the
      single-process keys, and a checkpoint moves freely between 1-process and torchrun runs;
    - GAN steps forward D with requires_grad off inside the G step and may call backward several times per step;
      DDP then needs find_unused_parameters and exactly one backward per forward of each wrapper (two known
      pitfalls of DDP with GANs). Here the parameters to average are simply those that received a gradient in this
      backward call (post-accumulate-grad hooks), agreed between ranks by one small all_reduce of flags: a
      parameter used on any rank is averaged on all (a rank that did not use it contributes zero, as its samples
      would in a 1-process run over the global batch).
    Several backward calls before one optimizer step stay exact because averaging is linear: after the first call
    every rank holds the same mean g1; the second adds its local g2_r, and mean_r(g1 + g2_r) = g1 + mean_r(g2_r).
    The price: communication starts after each backward instead of overlapping with it (DDP's bucket hooks), which
    matters at many GPUs per run; for 2-8 GPUs per GAN run, averaging a few tens of MB per step is small against
    the step itself. Buffers (BatchNorm running statistics) are not synchronised while training, as with DDP's
    broadcast_buffers=False: G and D of every method here use instance/layer norm, the frozen prior is in eval mode.
    """

    def __init__(self, module: torch.nn.Module):
        self.params = list(module.parameters())  # the same order on every rank (the same module tree)
        self.handles: dict[int, Any] = {}
        self.fresh: set[int] = set()  # indices of parameters that accumulated a gradient since the last reduce

    def watch(self) -> None:
        """Hook every parameter that can receive a gradient now (D is frozen during G steps: hooked later)."""
        for i, p in enumerate(self.params):
            if p.requires_grad and i not in self.handles:
                self.handles[i] = p.register_post_accumulate_grad_hook(lambda _p, i=i: self.fresh.add(i))

    def reduce(self) -> None:
        flags = torch.zeros(len(self.params))
        if self.fresh:
            flags[sorted(self.fresh)] = 1.0
        self.fresh.clear()
        grads = []
        for i in any_rank(flags).nonzero().flatten().tolist():
            p = self.params[i]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        all_reduce_mean_(grads)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.remove()
        self.handles.clear()
        self.fresh.clear()
