"""The independent CXR evaluator: the headline FID/KID feature space where Inception is unavailable.

Why it exists. The prior (phi/psi of Eq. 5-7) is the network ours trains against; FID in its feature space rewards a
method for matching the prior, not for removing opacity (the first version ranked a method that removed nothing
first that way). The evaluator is a network that no method ever sees:
- another architecture (a timm ResNet, default resnet18, 512-d pooled features; the prior is a DenseNet-121),
- another training split (`eval.evaluator_split`, default `val`: held-out patients that neither the translators
  nor the prior train on),
- another seed (`eval.evaluator_seed`).
It is trained from scratch (offline) on the 14 label vectors plus one "opacity domain" output with BCE, and reports
its competence before anything uses it: per-label AUROC on the test split, and the mean over the labels with both
classes present. The FID/KID evaluator space is ranked only when that mean reaches `eval.floor_evaluator_auroc`.

    EvaluatorNet(arch, input_size)          (B, 1, H, W) in [-1, 1] -> logits (B, 15); .pooled(x) -> (B, D) features
    train_evaluator(images, labels, ...)    the trained net and a short log
    save_evaluator / load_evaluator         a state dict + its config (torch.load(weights_only=True))
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline.data.canonical import NIH14
from pipeline.engine import random_crop_resize, to_model_range
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_torch_save

EVALUATOR_FORMAT = "cxrbench-evaluator-v1"
OUTPUTS = (*NIH14, "opacity_domain")  # the 14 findings + "is this an opacity-domain image"


class EvaluatorError(CxrbenchError):
    """A bad evaluator file or training set (one line: the file and the fix)."""


class EvaluatorNet(nn.Module):
    """A timm classifier on one-channel images in [-1, 1], resized to `input_size` (bilinear, antialiased)."""

    def __init__(self, arch: str = "resnet18", input_size: int = 128, num_outputs: int = len(OUTPUTS)):
        super().__init__()
        self.arch, self.input_size, self.num_outputs = arch, int(input_size), int(num_outputs)
        import timm  # lazy: with torchvision ~4 s to import; most stages never build one

        self.net = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=num_outputs)

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "input_size": self.input_size, "num_outputs": self.num_outputs}

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.input_size and x.shape[-2] == self.input_size:
            return x
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                             antialias=True)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, D) globally pooled features (the FID/KID space)."""
        return self.net.forward_head(self.net.forward_features(self._resize(x)), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._resize(x))


def label_targets(labels14: np.ndarray, domains: np.ndarray) -> np.ndarray:
    """(N, 14) label vectors + (N,) domain strings -> (N, 15) float targets in OUTPUTS order."""
    dom = (np.asarray(domains) == "opacity").astype(np.float32)[:, None]
    return np.concatenate([np.asarray(labels14, np.float32), dom], axis=1)


def train_evaluator(images_uint8: np.ndarray, targets: np.ndarray, *, arch: str, input_size: int, iterations: int,
                    batch_size: int, lr: float, seed: int, device: torch.device,
                    progress: bool = True) -> tuple[EvaluatorNet, dict[str, Any]]:
    """Train from scratch with BCE on random crops (side U[0.9, 1] of the image); AdamW, cosine decay to 0."""
    if len(images_uint8) < 2:
        raise EvaluatorError("evaluator: its training split has fewer than 2 images; raise data.val_opacity / "
                             "data.val_normal or set eval.evaluator_split")
    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = EvaluatorNet(arch, input_size).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, iterations))
    pool = torch.from_numpy(np.ascontiguousarray(images_uint8))
    y_all = torch.from_numpy(np.asarray(targets, np.float32))
    losses, t0 = [], time.perf_counter()
    bar = tqdm(range(iterations), desc="evaluator", unit="it", disable=not progress, mininterval=5.0)
    for _ in bar:
        idx = gen.integers(0, len(pool), size=min(batch_size, len(pool)))
        x = torch.stack([random_crop_resize(to_model_range(pool[i][None]), input_size, 0.9, True, gen)
                         for i in idx]).to(device)
        loss = F.binary_cross_entropy_with_logits(net(x).float(), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise EvaluatorError(f"evaluator: loss is {losses[-1]} at iteration {len(losses)}; lower "
                                 "eval.evaluator_lr in params.yaml")
    bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    net.eval().requires_grad_(False)
    return net, {"iterations": iterations, "final_loss": float(np.mean(tail)),
                 "seconds": round(time.perf_counter() - t0, 2)}


@torch.no_grad()
def predict(net: EvaluatorNet, images_uint8: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """uint8 (N, H, W) -> sigmoid probabilities (N, 15)."""
    net.eval()
    out = []
    for i in range(0, len(images_uint8), batch_size):
        x = to_model_range(torch.from_numpy(np.ascontiguousarray(images_uint8[i:i + batch_size])))[:, None]
        out.append(torch.sigmoid(net(x.to(device)).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(OUTPUTS)), np.float32)


def save_evaluator(net: EvaluatorNet, path: Path, info: dict[str, Any]) -> None:
    atomic_torch_save({"format": EVALUATOR_FORMAT, "config": net.config(), "outputs": list(OUTPUTS),
                       "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                       "mean_auroc": info.get("mean_auroc")}, Path(path))


def load_evaluator(path: str | Path, device: str | torch.device = "cpu") -> EvaluatorNet:
    path = Path(path)
    if not path.is_file():
        raise EvaluatorError(f"{path}: evaluator checkpoint not found; run `dvc repro evaluator` first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file gets the same one-line answer)
        raise EvaluatorError(f"{path}: not a readable evaluator checkpoint ({type(exc).__name__}); rerun "
                             "`dvc repro -f evaluator`") from None
    if not isinstance(obj, dict) or obj.get("format") != EVALUATOR_FORMAT:
        raise EvaluatorError(f"{path}: not a cxrbench evaluator checkpoint; rerun `dvc repro -f evaluator`")
    net = EvaluatorNet(**obj["config"])
    net.load_state_dict(obj["state_dict"])
    return net.to(device).eval().requires_grad_(False)
