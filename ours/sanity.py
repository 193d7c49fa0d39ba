"""A synthetic task that any working activation-mask mechanism must solve (`python -m ours.sanity`).

Domain A: smooth random backgrounds with one bright Gaussian blob; domain B: other backgrounds of the same law,
without a blob. Removing the blob is the whole A -> B translation, so a mask that "selects the regions to change"
(paper section 3.2) must cover the blob on A images and stay low on B images. Measured on 64 held-out images per
domain after training ours (cpu `ci` widths, no prior: FA/LCA need a trained classifier and are not the mechanism):

    auroc          mean per-image AUROC of G_A's mask against the true blob mask (0.5 = chance, 1 = perfect);
    in_blob        mean mask value inside the blob; out_blob outside it;
    area_a/area_b  mean mask value on A / B images (Eq. 4 should make area_b small);
    residual       |translated - background| / |input - background| inside the blob (1 = blob untouched).

Sizes: 32 x 32 images, blob sigma 2.6-4.5 px (about 5-15 % of the image above the mask threshold), amplitude 0.9
on a [-1, 1] scale over backgrounds around -0.4.
"""
from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ours.model import Ours
from pipeline.auroc import auroc
from pipeline.offline import PROJECT_ROOT
from pipeline.schema import build_dataclass

SIZE = 32
# The recipe that passes (measured, see ours/README.md "What we found"): the paper's values except lambda_bam.
WORKING = {"lambda_bam": 10.0}


@dataclass
class BlobSet:
    a: torch.Tensor          # (N, 1, S, S) images with a blob, in [-1, 1]
    b: torch.Tensor          # (N, 1, S, S) images without, in [-1, 1]
    blob: torch.Tensor       # (N, 1, S, S) bool: where the blob adds more than 0.27 (0.3 of its peak)
    background: torch.Tensor  # (N, 1, S, S) the A images without their blob (the ideal translation)


def blob_set(n: int, seed: int, size: int = SIZE) -> BlobSet:
    g = torch.Generator().manual_seed(seed)

    def backgrounds() -> torch.Tensor:  # bicubic upsampling of 4x4 noise: smooth, varied, no blob-like peaks
        low = torch.randn(n, 1, 4, 4, generator=g)
        return (F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False) * 0.25 - 0.4).clamp(-1, 1)

    bg_a, bg_b = backgrounds(), backgrounds()
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    cy, cx = (torch.rand(2, n, generator=g) * size * 0.6 + size * 0.2)
    sigma = torch.rand(n, generator=g) * size * 0.06 + size * 0.08
    d2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
    blob = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))[:, None]
    return BlobSet((bg_a + 0.9 * blob).clamp(-1, 1), bg_b, blob > 0.3, bg_a)


def build(overrides: dict[str, Any] | None = None, seed: int = 0) -> Ours:
    """ours at the `ci` widths without prior (FA and LCA off), the paper's values unless overridden."""
    values = dict(yaml.safe_load((PROJECT_ROOT / "ours" / "profiles.yaml").read_text())["ci"])
    values.update(prior_weights="", fa=False, lca=False, batch_size=4)
    values.update(overrides or {})
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = Ours(build_dataclass(Ours.Config, values, "ours.sanity"), in_channels=1, image_size=SIZE)
    return model.train()


class _Backward:
    """The step context ours uses: backward only."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()


def measure(model: Ours, test: BlobSet) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        ta, tb = model.translate(test.a), model.translate(test.b)
    model.train()
    mask_a = ta.mask
    per_image = [auroc(m.flatten().numpy(), t.flatten().numpy()) for m, t in zip(mask_a, test.blob)]
    inside = (test.a - test.background).abs()[test.blob].mean()
    return {"auroc": float(np.mean(per_image)), "in_blob": float(mask_a[test.blob].mean()),
            "out_blob": float(mask_a[~test.blob].mean()), "area_a": float(mask_a.mean()),
            "area_b": float(tb.mask.mean()),
            "residual": float((ta.image - test.background).abs()[test.blob].mean() / inside)}


def train(model: Ours, steps: int, seed: int = 0, log_every: int = 0) -> list[dict[str, float]]:
    """Plain loop (no engine: nothing to checkpoint); returns the measurements every log_every steps and at the end."""
    data, test = blob_set(2000, seed=1), blob_set(64, seed=99)
    model.configure_optimizers(steps)
    g = torch.Generator().manual_seed(seed)
    bs, history, t0 = model.batch_size, [], time.perf_counter()
    for step in range(1, steps + 1):
        ia, ib = torch.randint(0, 2000, (bs,), generator=g), torch.randint(0, 2000, (bs,), generator=g)
        model.train_step(data.a[ia], data.b[ib], step, _Backward)
        if step == steps or (log_every and step % log_every == 0):
            history.append({"step": step, **measure(model, test), "wall_s": time.perf_counter() - t0})
    return history


def passes(m: dict[str, float]) -> bool:
    """The mask finds the blob (AUROC >= 0.9), is clearly higher inside it than outside (3x), and is lower on
    images without a blob than on images with one."""
    return m["auroc"] >= 0.9 and m["in_blob"] >= 3 * m["out_blob"] and m["area_b"] < m["area_a"]


def disconnect_mask_head(model: Ours) -> None:
    """Replace each generator's mask by one learnable constant (mask channel independent of the input)."""
    for gen in (model.gen_a, model.gen_b):
        gen.mask_logit = torch.nn.Parameter(torch.zeros(()))
        decode = gen.decode

        def constant_mask(content, style, _decode=decode, _gen=gen):
            image, mask = _decode(content, style)
            return image, torch.tanh(_gen.mask_logit).expand_as(mask)

        gen.decode = constant_mask


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name, overrides in (("paper values", {}), ("lambda_bam 10", WORKING)):
        for seed in args.seeds:
            m = train(build(overrides, seed), args.steps, seed)[-1]
            print(f"{name:14s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "step")
                  + f" -> {'passes' if passes(m) else 'fails'}", flush=True)


if __name__ == "__main__":
    main()
