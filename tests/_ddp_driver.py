"""torchrun driver for tests/test_distributed.py: every distributed scenario in one launch (a launch costs seconds).

usage: python -m torch.distributed.run --nproc_per_node 2 ... tests/_ddp_driver.py OUT_DIR [SCENARIO ...]
For each scenario, each rank writes OUT_DIR/<scenario>_rank<r>.pt (its final state_dict) and
OUT_DIR/<scenario>_rank<r>.json (facts the tests check). Scenarios: equivalence, resume, nan, or the name of any
registered method (default: the first three plus ours and cyclegan).

Every rank seeds differently *before* building its translator (seed + 100 * rank), so the replicas start from
different weights: only the engine's broadcast from rank 0 can make them agree.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import pipeline  # noqa: E402,F401
from pipeline import distributed  # noqa: E402
from pipeline.engine import Engine, EngineSettings, NonFiniteLossError, seed_everything  # noqa: E402
from toy_translator import ToyConfig, ToyTranslator  # noqa: E402

RANK = int(os.environ["RANK"])
SEED = 3


def toy_data(n: int = 6, size: int = 16):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            rng.integers(0, 256, (n, size, size), dtype=np.uint8))


def toy_settings(iterations: int, every: int) -> EngineSettings:
    # crop_scale < 1 and hflip: the rank slices must reproduce the 1-process augmentation draws too
    return EngineSettings(iterations=iterations, checkpoint_every=every, log_every=1, progress=False, device="cpu",
                          crop_scale=0.75, hflip=True)


def ci_translator(method: str, size: int):
    """A registered method built from its Config defaults plus its `ci` profile (prior_weights "" for ours)."""
    from pipeline import registry
    from pipeline.config import read_yaml
    from pipeline.schema import build_dataclass

    cls = registry.get(method)
    values = read_yaml(registry.package_dir(method) / "profiles.yaml").get("ci") or {}
    if "prior_weights" in cls.Config.__dataclass_fields__:
        values = {**values, "prior_weights": ""}
    return cls(build_dataclass(cls.Config, values, method), in_channels=1, image_size=size)


class Recorder:
    """Stands in for an MLflow run: counts what reaches it."""

    def __init__(self):
        self.calls = 0

    def log_metrics(self, metrics, step=None):
        self.calls += 1


def save(out: Path, name: str, module: torch.nn.Module, **facts) -> None:
    torch.save(module.state_dict(), out / f"{name}_rank{RANK}.pt")
    facts.update(rank=RANK, world_size=distributed.world_size())
    (out / f"{name}_rank{RANK}.json").write_text(json.dumps(facts, default=str))


def equivalence(out: Path) -> None:
    """Deterministic toy (no noise, no pool), per-rank batch 2: compared with a 1-process run at batch 4."""
    seed_everything(SEED + 100 * RANK)
    t = ToyTranslator(ToyConfig(batch_size=2, stochastic=False))
    recorder = Recorder()
    eng = Engine(t, toy_settings(6, 3), out / "eq_ckpt", seed=SEED, curve_path=out / f"eq_curve_rank{RANK}.csv",
                 tracker=recorder, fingerprint_data={"scenario": "eq"})
    eng.fit(*toy_data())
    # this toy's steps draw no random numbers: the next draw shows which stream the engine seeded on this rank
    save(out, "equivalence", t, step=eng.step, rank_attr=eng.rank, tracker_calls=recorder.calls,
         device=str(eng.device), next_draw=torch.rand(3).tolist())


def resume(out: Path) -> None:
    """Stochastic toy (noise + image pool, per-rank randomness): interrupted at step 7, resumed from the step-6
    checkpoint by a fresh engine, it must end bit-identical to an uninterrupted 2-process run."""
    def run(ckpt: Path, stop_after: int | None = None):
        seed_everything(SEED + 100 * RANK)
        t = ToyTranslator(ToyConfig(batch_size=2))
        eng = Engine(t, toy_settings(10, 3), ckpt, seed=SEED, fingerprint_data={"scenario": "resume"})
        if stop_after is not None:
            def crash(step):
                if step == stop_after:
                    raise KeyboardInterrupt("simulated crash")
            eng.on_step = crash
        try:
            eng.fit(*toy_data())
        except KeyboardInterrupt:
            pass
        return t, eng

    full, _ = run(out / "resume_full")
    save(out, "resume_full", full, pool=len(full.pool))
    run(out / "resume_cut", stop_after=7)
    resumed, eng = run(out / "resume_cut")
    save(out, "resume_cut", resumed, step=eng.step, pool=len(resumed.pool))
    torch.save([p.clone() for p in resumed.pool], out / f"resume_cut_pool_rank{RANK}.pt")
    torch.save([p.clone() for p in full.pool], out / f"resume_full_pool_rank{RANK}.pt")


def nan(out: Path) -> None:
    """A NaN loss on rank 1 only, at step 2: both ranks must stop there (none left waiting in a collective)."""
    seed_everything(SEED)
    t = ToyTranslator(ToyConfig(batch_size=2, nan_at_step=2 if RANK == 1 else -1))
    eng = Engine(t, toy_settings(8, 100), out / "nan_ckpt", seed=SEED)
    try:
        eng.fit(*toy_data())
        message = ""
    except NonFiniteLossError as exc:
        message = str(exc)
    save(out, "nan", t, error=message, step=eng.step)


def method(out: Path, name: str) -> None:
    """A real method with its ci profile: 2 steps at 64 px, per-rank batch = its own batch_size."""
    seed_everything(SEED + 100 * RANK)
    t = ci_translator(name, 64)
    eng = Engine(t, EngineSettings(iterations=2, checkpoint_every=100, log_every=1, progress=False, device="cpu"),
                 out / f"{name}_ckpt", seed=SEED, fingerprint_data={"scenario": name})
    last = eng.fit(*toy_data(n=4, size=64))
    save(out, name, t, losses=last, step=eng.step)


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    chosen = sys.argv[2:] or ["equivalence", "resume", "nan", "ours", "cyclegan"]
    for scenario in chosen:
        if scenario not in ("equivalence", "resume", "nan"):  # a registered method
            method(out, scenario)
        else:
            globals()[scenario](out)
        distributed.barrier()
    distributed.teardown()


if __name__ == "__main__":
    main()
