"""Lung segmentation before and after translation (eval/README.md; paper Table 1 and the per-segmenter table).

Four segmenters: PSPNet and U-Net (ResNet-34 encoder), a VGG16-BN U-Net (segmentation-models-pytorch, no pretrained
weights, 1 input channel) and CE-Net (eval/cenet.py). Each is trained once on the lung masks of data/seg-train
(data.segmenter_sources; by default the *normal* training images of data/drr: a segmenter that has seen clean lungs,
opacities are what makes it fail; with real data e.g. Montgomery + Shenzhen), then applied to the
original and the translated images of each evaluation set.

Which images: the opacity images of an evaluation set when it has any (rsna_like, ards_like), else all of them
(jsrt_like, where a translator should change nothing). Scores per image, then the mean over images:
- mIoU over {background, lung}: (IoU_background + IoU_lung) / 2, a class absent from both prediction and truth
  counts IoU 1 (perfect agreement);
- sensitivity = lung-pixel recall TP / (TP + FN), images without lung pixels in the truth are left out;
- delta = translated - original, per seed; the table reports mean (std) over seeds and the four-segmenter mean.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eval.cenet import CENet
from eval.sets import EvalError, load_mask, load_original, read_pngs, to_model_range
from pipeline.progress import bar

SEGMENTERS = ("pspnet", "unet", "cenet", "vgg16bn_unet")


def build_segmenter(name: str) -> nn.Module:
    """(B, 1, H, W) in [-1, 1] -> lung logits (B, 1, H, W)."""
    if name == "cenet":  # ours: needs no segmentation-models-pytorch (the gpu-check runs where it is missing)
        return CENet(in_channels=1, classes=1)
    import segmentation_models_pytorch as smp  # lazy: after pipeline's offline switches (it imports huggingface_hub)

    common = dict(encoder_weights=None, in_channels=1, classes=1)  # offline: never download encoder weights
    if name == "pspnet":
        return smp.PSPNet(encoder_name="resnet34", **common)
    if name == "unet":
        return smp.Unet(encoder_name="resnet34", **common)
    if name == "vgg16bn_unet":
        return smp.Unet(encoder_name="vgg16_bn", **common)
    raise EvalError(f"params.yaml eval.segmenters: unknown segmenter {name!r}; known: {', '.join(SEGMENTERS)}")


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------
def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (1 - 2|P.T| / (|P| + |T|)), the usual pair for binary medical segmentation."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


def check_side(size: int, what: str) -> None:
    if size % 32:
        raise EvalError(f"{what}: image side {size} is not divisible by 32 (the segmenters' encoders downsample 32x); "
                        "set data.resolution to a multiple of 32")


def train_segmenter(name: str, images: np.ndarray, masks: np.ndarray, iterations: int, batch_size: int, lr: float,
                    seed: int, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Train one segmenter on uint8 images (N, H, W) and bool lung masks (N, H, W); returns (model, log)."""
    check_side(images.shape[-1], "segmenter training")
    torch.manual_seed(seed)
    model = build_segmenter(name).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
    x_all = to_model_range(images)
    y_all = torch.from_numpy(masks[:, None].astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, len(x_all))
    if bs < 2 and name == "pspnet":
        raise EvalError("segmenter training needs at least 2 normal training images with lung masks (BatchNorm)")
    model.train()
    t0, losses = time.time(), []
    for _ in bar(range(iterations), desc=f"segmenter {name}"):
        idx = torch.randperm(len(x_all), generator=gen)[:bs]
        loss = dice_bce_loss(model(x_all[idx].to(device)), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return model, {"iterations": iterations, "batch_size": bs, "lr": lr, "seed": seed, "n_train": int(len(x_all)),
                   "final_loss": float(np.mean(tail)), "seconds": round(time.time() - t0, 2),
                   "params": int(sum(p.numel() for p in model.parameters()))}


def save_segmenter(model: nn.Module, name: str, image_size: int, log: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save({"name": name, "image_size": int(image_size), "log": log,
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    tmp.replace(path)


def load_segmenter(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, int]:
    """(model in eval mode, training image side) from models/segmenters/<name>.pt."""
    if not Path(path).is_file():
        raise EvalError(f"{path}: segmenter not found; run `dvc repro segmenters` first")
    try:  # weights_only=True: a pickle payload or a corrupt file is refused, in one line
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EvalError(f"{path}: not a segmenter file torch.load(weights_only=True) can read ({type(exc).__name__});"
                        " rebuild it with `dvc repro segmenters`") from None
    with torch.device("meta"):  # no random init of ~25M parameters that are overwritten at once
        model = build_segmenter(ckpt["name"])
    model.load_state_dict(ckpt["state_dict"], assign=True)
    return model.to(device).eval(), int(ckpt["image_size"])


# --------------------------------------------------------------------------------------------------------------------
# Inference and scores
# --------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_lungs(model: nn.Module, images: np.ndarray, image_size: int, device: torch.device, batch_size: int = 32,
                  threshold: float = 0.5) -> np.ndarray:
    """uint8 (N, H, W) -> bool lung masks (N, H, W). Inputs are resized to the training side and back (bilinear)."""
    out = []
    model = model.to(memory_format=torch.channels_last)  # measured faster for these convnets in inference on CPU
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start:start + batch_size]).to(device)
        h, w = x.shape[-2:]
        if (h, w) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        prob = torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).float())
        if prob.shape[-2:] != (h, w):
            prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        out.append((prob[:, 0] > threshold).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], bool)


def miou_sensitivity(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mIoU over {background, lung} and lung sensitivity (NaN where the truth has no lung) of bool
    (N, H, W) masks."""
    p, t = pred.reshape(len(pred), -1).astype(bool), truth.reshape(len(truth), -1).astype(bool)
    ious = []
    for pc, tc in ((~p, ~t), (p, t)):  # background, lung
        inter, union = (pc & tc).sum(1), (pc | tc).sum(1)
        ious.append(np.where(union > 0, inter / np.maximum(union, 1), 1.0))
    tp, lung = (p & t).sum(1), t.sum(1)
    sens = np.where(lung > 0, tp / np.maximum(lung, 1), np.nan)
    return (ious[0] + ious[1]) / 2, sens


def summarise(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    miou, sens = miou_sensitivity(pred, truth)
    return {"miou": float(miou.mean()) if len(miou) else None,
            "sensitivity": float(np.nanmean(sens)) if np.isfinite(sens).any() else None, "n": int(len(miou)),
            # per image, for the intervals and paired tests (NaN sensitivity: no lung pixels in the truth)
            "per_image": {"miou": [float(v) for v in miou],
                          "sensitivity": [None if not np.isfinite(v) else float(v) for v in sens]}}


def evaluate_set(segmenters: dict[str, tuple[nn.Module, int]], dataset_dir: Path, rows,
                 translated: dict[int, list[Path]], device: torch.device, batch_size: int,
                 threshold: float, known_original: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Scores of every segmenter on the original images of `rows` and on each seed's translated images.

    `known_original` = {segmenter: scores of the original images} already computed on the same rows with the same
    weights (metrics/segment/original.json): those segmenters skip the originals.
    """
    known_original = known_original or {}
    truth = load_mask(dataset_dir, rows, "lung_mask")
    originals = load_original(dataset_dir, rows)
    translated_images = {seed: read_pngs(paths) for seed, paths in translated.items()}
    for seed, imgs in translated_images.items():
        if imgs.shape != originals.shape:
            raise EvalError(f"translated images of seed {seed} have shape {imgs.shape[1:]}, originals "
                            f"{originals.shape[1:]}; rerun the translate stage at the data resolution")
    out: dict[str, Any] = {}
    for name, (model, size) in segmenters.items():
        original = known_original.get(name) or summarise(
            predict_lungs(model, originals, size, device, batch_size, threshold), truth)
        res: dict[str, Any] = {"original": original}
        if translated_images:
            per_seed = {}
            for seed, imgs in translated_images.items():
                s = summarise(predict_lungs(model, imgs, size, device, batch_size, threshold), truth)
                s["delta_miou"] = s["miou"] - res["original"]["miou"]
                if s["sensitivity"] is not None and res["original"]["sensitivity"] is not None:
                    s["delta_sensitivity"] = s["sensitivity"] - res["original"]["sensitivity"]
                per_seed[str(seed)] = s
            res["translated"] = per_seed
        out[name] = res
    return out
