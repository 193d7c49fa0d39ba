"""Subprocess driver for the kill/resume tests: trains one translator on synthetic data through the Engine.

usage: python tests/_train_driver.py METHOD CKPT_DIR WEIGHTS_OUT ITERATIONS CHECKPOINT_EVERY [SLEEP_S]
METHOD is `toy` (tests/toy_translator.py) or a registered method name (its `ci` profile values are used).
Prints "step N" after every step so a test can kill it at a known point.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import pipeline  # noqa: E402,F401
from pipeline.engine import Engine, EngineSettings, atomic_torch_save, seed_everything  # noqa: E402


def build(method: str, size: int):
    if method == "toy":
        from toy_translator import ToyTranslator

        return ToyTranslator(image_size=size)
    from pipeline import registry

    cls = registry.get(method)
    return cls(registry.profile_config(method, "ci", prior_weights=""), in_channels=1, image_size=size)


def main() -> None:
    method, ckpt, out, iters, every = sys.argv[1:6]
    sleep = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    torch.set_num_threads(1)
    size = 16 if method == "toy" else 64
    seed_everything(7, deterministic=True)
    t = build(method, size)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(6, size, size), dtype=np.uint8)
    b = rng.integers(0, 256, size=(6, size, size), dtype=np.uint8)
    settings = EngineSettings(iterations=int(iters), checkpoint_every=int(every), log_every=1, deterministic=True,
                              progress=False, device="cpu")
    engine = Engine(t, settings, Path(ckpt), seed=7, curve_path=Path(ckpt) / "curve.csv",
                    fingerprint_data={"method": method})

    def on_step(step: int) -> None:
        print(f"step {step}", flush=True)
        if sleep:
            time.sleep(sleep)

    engine.on_step = on_step
    engine.fit(a, b)
    atomic_torch_save(t.state_dict(), Path(out))
    print("done", flush=True)


if __name__ == "__main__":
    main()
