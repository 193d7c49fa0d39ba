"""Binary opacity classifiers trained on original images, translated images and activation masks (Table 2;
eval/README.md).

Four timm architectures (resnet50, mobilenetv3_large_100, efficientnet_b0, densenet121; pretrained=False, in_chans=1,
num_classes=2). Label 1 = opacity, 0 = normal. Training data, all from the training split of data/drr:
- Original: the real images, labelled by their domain;
- Generated: a model's translations in both directions, labelled by the *target* domain (A->B of opacity images = 0,
  B->A of normal images = 1);
- Mask: the model's activation masks of the A->B translation of every training image, labelled by the source domain
  (n/a for a model without masks, never zeros).
Test sets (real images for Original and Generated, the masks of the same images for Mask):
- rsna_like: the drr test split, both domains;
- ards: the ards_like images (all opacity) as positives against the normal images of `eval.ards_negatives`
  (default: the rsna_like test normals, which come from the training detector; `jsrt_like` = normals from another
  detector). Either way positives and negatives differ in more than opacity (AP geometry and ICU devices vs PA, or
  the detector), which the reader of the ARDS column must keep in mind; the real MIMIC-ARDS set has the same issue.
Batches are class-balanced (half of each label), each image a random square crop of side U[crop_scale, 1] resized
back, flipped left-right half of the time (the evaluator's augmentation); AdamW (weight decay 1e-2) with cosine decay;
the prediction is the arg-max class. Why augment: without it every architecture memorises the few hundred training
images (training AUROC 0.93-0.98, test 0.62-0.73 on the DRR benchmark at 64 px); with it ResNet-50 and DenseNet-121
reach 0.85-0.86 on the test split in 300 iterations (cpu-rank, measured).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eval.sets import EvalError, to_model_range
from eval.stats import auroc, binary_scores
from pipeline.engine import random_crop_resize
from pipeline.progress import bar

ARCHITECTURES = ("resnet50", "mobilenetv3_large_100", "efficientnet_b0", "densenet121")
DISPLAY = {"resnet50": "ResNet-50", "mobilenetv3_large_100": "MobileNet", "efficientnet_b0": "EfficientNet-B0",
           "densenet121": "DenseNet-121"}


def build_classifier(arch: str) -> nn.Module:
    try:
        import timm  # lazy: with torchvision ~4 s to import; most stages never build one

        return timm.create_model(arch, pretrained=False, in_chans=1, num_classes=2)  # offline: never pretrained
    except RuntimeError as exc:
        raise EvalError(f"params.yaml eval.classifiers: unknown timm architecture {arch!r} ({exc})") from None


def train_classifier(arch: str, images: np.ndarray, labels: np.ndarray, *, iterations: int, batch_size: int,
                     lr: float, seed: int, device: torch.device,
                     crop_scale: float = 1.0) -> tuple[nn.Module, dict[str, Any]]:
    """Train on uint8 (N, H, W) inputs (images, or masks * 255) and 0/1 labels; returns (model in eval mode, log).
    crop_scale < 1 turns on the augmentation (random crop of side U[crop_scale, 1] resized back + left-right flip)."""
    labels = np.asarray(labels).astype(np.int64)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    if any(len(c) == 0 for c in classes):
        raise EvalError(f"classifier training data has only label {int(labels[0]) if len(labels) else '-'}; "
                        "both opacity and normal examples are needed")
    torch.manual_seed(seed)
    model = build_classifier(arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
    x_all, y_all = to_model_range(images), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    aug = np.random.default_rng(seed)
    size = x_all.shape[-1]
    half = max(1, batch_size // 2)
    model.train()
    t0, losses = time.time(), []
    for _ in bar(range(iterations), desc=f"classifier {arch}"):
        idx = np.concatenate([c[torch.randint(len(c), (half,), generator=gen).numpy()] for c in classes])
        idx_t = torch.from_numpy(idx)
        x = x_all[idx_t]
        if crop_scale < 1.0:
            x = torch.stack([random_crop_resize(img, size, crop_scale, True, aug) for img in x])
        loss = F.cross_entropy(model(x.to(device)), y_all[idx_t].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return model, {"arch": arch, "iterations": iterations, "batch_size": 2 * half, "lr": lr, "seed": seed,
                   "crop_scale": crop_scale,
                   "n_train": int(len(labels)), "n_positive": int(labels.sum()), "final_loss": float(np.mean(tail)),
                   "seconds": round(time.time() - t0, 2)}


@torch.no_grad()
def predict_scores(model: nn.Module, images: np.ndarray, device: torch.device,
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W) -> (predicted labels (N,) = arg-max of the two logits, opacity score (N,) = logit difference)."""
    logits = []
    for start in range(0, len(images), batch_size):
        logits.append(model(to_model_range(images[start:start + batch_size]).to(device)).float().detach().cpu().numpy())
    if not logits:
        return np.zeros(0, np.int64), np.zeros(0)
    z = np.concatenate(logits)
    return z.argmax(1), z[:, 1] - z[:, 0]


def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """uint8 (N, H, W) -> predicted labels (N,) (arg-max of the two logits)."""
    return predict_scores(model, images, device, batch_size)[0]


def score(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device,
          batch_size: int = 32) -> dict[str, Any]:
    """Acc, F1, recall, precision (+ confusion counts) on a labelled test set, and the AUROC of the opacity score
    (the classifier's competence: threshold-free)."""
    pred, opacity_score = predict_scores(model, images, device, batch_size)
    return {**binary_scores(np.asarray(labels), pred), "auroc": auroc(opacity_score, np.asarray(labels))}
