"""The frozen CXR classifier prior (phi, psi) of the paper's CDAM (section 3.3), also the `cxr-densenet` FID space.

A CheXNet-architecture DenseNet-121 (torchvision, weights=None: offline) with a Linear(1024, 14) head in the NIH-14
order. Inputs are the project's single-channel images in [-1, 1]; the wrapper resizes them to `input_size`,
replicates them to 3 channels and applies the ImageNet mean/std (what CheXNet saw: PIL grayscale -> RGB). At 256 px
the feature map after norm5 is 1024x8x8, the shape the paper quotes for phi (224 -> 7x7, 512 -> 16x16).

Where the weights come from (the `prior` stage, pipeline/app/prior.py):
- `prior.weights` empty: train the DenseNet on the training split's 14 label vectors (BCE), report per-label AUROC
  on the test split;
- `prior.weights` set: convert a local checkpoint, auto-detected:
  * arnoweng/CheXNet (`module.densenet121.features...`, torchvision<0.4 names `norm.1`/`conv.1`, head
    `densenet121.classifier.0`), optionally wrapped in {"state_dict": ...};
  * a plain torchvision DenseNet-121 state dict with a 14-output head (`features.*`, `classifier.*`);
  * torchxrayvision DenseNet-121 (`features.*`, 1-channel conv0, `classifier` with 18 outputs in xrv's
    default_pathologies order; inputs scaled to [-1024, 1024]): rows are mapped to NIH-14 by name.
Every file is read with torch.load(weights_only=True); a pickled whole model is refused with how to fix it.
"""
from __future__ import annotations

import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline.data.canonical import NIH14  # the head's output order: CheXNet / ChestX-ray14
from pipeline.engine import random_crop_resize, to_model_range
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_torch_save

# torchxrayvision's `default_pathologies` (the 18 outputs of its DenseNet-121 models), in its order.
XRV_PATHOLOGIES = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
                   "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
                   "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
PRIOR_FORMAT = "cxrbench-prior-v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A head row for a label the source checkpoint does not have: weight 0, this bias -> p = 4.5e-5 ("never positive").
MISSING_LABEL_BIAS = -10.0


class PriorError(CxrbenchError, ValueError):
    """A bad prior weights file or setting (one line, names the file and the fix)."""


class PriorNet(nn.Module):
    """DenseNet-121 prior. Input (B, 1, H, W) in [-1, 1]; any H, W (resized to input_size x input_size).

    normalisation="imagenet": replicate to 3 channels, (x01 - mean) / std (CheXNet and our own prior);
    normalisation="xrv": 1 channel scaled to [-1024, 1024] (torchxrayvision checkpoints, conv0 has 1 input channel).
    """

    def __init__(self, input_size: int = 256, num_classes: int = len(NIH14),
                 normalisation: Literal["imagenet", "xrv"] = "imagenet"):
        super().__init__()
        if normalisation not in ("imagenet", "xrv"):
            raise PriorError(f"PriorNet: normalisation must be 'imagenet' or 'xrv', got {normalisation!r}")
        self.input_size = int(input_size)
        self.normalisation = normalisation
        self.in_channels = 3 if normalisation == "imagenet" else 1
        import torchvision  # lazy: ~2 s to import, and most stages that import this module never build a prior

        self.densenet = torchvision.models.densenet121(weights=None)
        if self.in_channels != 3:
            self.densenet.features.conv0 = nn.Conv2d(self.in_channels, 64, kernel_size=7, stride=2, padding=3,
                                                     bias=False)
        self.densenet.classifier = nn.Linear(1024, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "num_classes": self.densenet.classifier.out_features,
                "normalisation": self.normalisation}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> (B, C, s, s) network input."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise PriorError(f"PriorNet expects (B, 1, H, W) images in [-1, 1], got shape {tuple(x.shape)}")
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        if self.normalisation == "xrv":
            return x * 1024.0
        x01 = (x + 1.0) * 0.5
        return (x01.expand(-1, 3, -1, -1) - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi: the feature map after norm5, (B, 1024, s/32, s/32); 1024x8x8 at input_size 256."""
        return self.densenet.features(self.preprocess(x))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """psi: ReLU + global average pool + linear -> logits (B, 14)."""
        return self.densenet.classifier(self.pool(feats))

    @staticmethod
    def pool(feats: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(feats), 1), 1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1024): ReLU + global average pool of phi (the cxr-densenet FID feature)."""
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


def freeze(net: PriorNet) -> PriorNet:
    """Frozen prior: no parameter gradients, eval mode (BatchNorm uses its running statistics)."""
    net.requires_grad_(False)
    return net.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Our own file format
# ---------------------------------------------------------------------------------------------------------------------
def save_prior(net: PriorNet, path: Path, info: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_torch_save({"format": PRIOR_FORMAT, "config": net.config(), "labels": list(NIH14),
                       "info": json.loads(json.dumps(info or {}, default=str)), "state_dict": state}, Path(path))


def _torch_load(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PriorError(f"{path}: prior weights file not found (run the `prior` stage, or set prior.weights to a "
                         "local CheXNet / torchxrayvision checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickled nn.Module, a corrupt file, a non-torch file
        raise PriorError(f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}); save a "
                         "plain state dict instead: torch.save(model.state_dict(), path)") from None


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> PriorNet:
    """Load a prior written by `save_prior` (the prior stage): frozen, eval mode, on `device`."""
    obj = _torch_load(Path(path))
    if not isinstance(obj, dict) or obj.get("format") != PRIOR_FORMAT:
        raise PriorError(f"{path}: not a cxrbench prior file; to use a CheXNet or torchxrayvision checkpoint set "
                         "prior.weights to it and run the `prior` stage, which converts it")
    cfg = obj["config"]
    net = PriorNet(input_size=cfg["input_size"], num_classes=cfg["num_classes"], normalisation=cfg["normalisation"])
    net.load_state_dict(obj["state_dict"])
    return freeze(net.to(device))


# ---------------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (CheXNet, torchvision, torchxrayvision)
# ---------------------------------------------------------------------------------------------------------------------
def _legacy_name(key: str) -> str:
    """torchvision<0.4 DenseNet names: 'denselayer1.norm.1.weight' -> 'denselayer1.norm1.weight'."""
    return re.sub(r"\.(norm|relu|conv)\.(\d+)\.", r".\1\2.", key)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # arnoweng/CheXNet model.pth.tar: {"epoch", "state_dict", "optimizer", ...}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PriorError(f"{path}: expected a DenseNet-121 state dict (or {{'state_dict': ...}}); got "
                         f"{type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """'chexnet' | 'torchvision' | 'torchxrayvision' (keys already stripped of 'module.')."""
    if any(k.startswith("densenet121.") for k in state):
        return "chexnet"
    head = state.get("classifier.weight")
    if "features.conv0.weight" in state and head is not None:
        if head.shape[0] == len(XRV_PATHOLOGIES) or state["features.conv0.weight"].shape[1] == 1:
            return "torchxrayvision"
        return "torchvision"
    raise PriorError("unrecognised checkpoint layout: expected CheXNet keys 'module.densenet121.features...' or "
                     "DenseNet keys 'features.conv0.weight' + 'classifier.weight'")


def _fill_untracked_counters(net: PriorNet, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints from torch<0.4.1 have no BatchNorm `num_batches_tracked`; take them from the fresh model."""
    own = net.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v.clone()
    return state


def _load_strict(net: PriorNet, state: dict[str, torch.Tensor], path: Path) -> None:
    state = _fill_untracked_counters(net, state)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # the DenseNet-121 names with other shapes
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "")[:160]
        raise PriorError(f"{path}: does not match DenseNet-121 ({detail or type(exc).__name__}); is it a "
                         "DenseNet-121 checkpoint?") from None
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise PriorError(f"{path}: does not match DenseNet-121 ({what}); is it a DenseNet-121 checkpoint?")


def _norm_label(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def _head_to_nih14(weight: torch.Tensor, bias: torch.Tensor, names: tuple[str, ...]) -> tuple[torch.Tensor,
                                                                                               torch.Tensor, list]:
    """Reorder a classifier head with outputs `names` to NIH-14; labels it lacks get a 'never positive' row."""
    index = {_norm_label(n): i for i, n in enumerate(names)}
    w = torch.zeros(len(NIH14), weight.shape[1], dtype=weight.dtype)
    b = torch.full((len(NIH14),), MISSING_LABEL_BIAS, dtype=bias.dtype)
    missing = []
    for i, name in enumerate(NIH14):
        j = index.get(_norm_label(name))
        if j is None:
            missing.append(name)
            continue
        w[i], b[i] = weight[j], bias[j]
    return w, b, missing


def convert_checkpoint(path: str | Path, input_size: int = 256,
                       xrv_pathologies: tuple[str, ...] = XRV_PATHOLOGIES) -> tuple[PriorNet, dict[str, Any]]:
    """A user's CheXNet / torchvision / torchxrayvision DenseNet-121 file -> (frozen PriorNet, info)."""
    path = Path(path)
    state = _unwrap(_torch_load(path), path)
    layout = detect_layout(state)
    info: dict[str, Any] = {"source": str(path), "layout": layout, "missing_labels": []}
    if layout == "chexnet":
        state = {_legacy_name(k[len("densenet121."):]): v for k, v in state.items() if k.startswith("densenet121.")}
        state = {("classifier." + k.split(".")[-1] if k.startswith("classifier.") else k): v for k, v in state.items()}
    else:
        state = {_legacy_name(k): v for k, v in state.items()}
    ignored = sorted(k for k in state if not k.startswith(("features.", "classifier.")))
    state = {k: v for k, v in state.items() if k.startswith(("features.", "classifier."))}
    if "classifier.weight" not in state:
        raise PriorError(f"{path}: no classifier weights found (expected a 14- or 18-output DenseNet-121 head)")
    normalisation = "imagenet"
    if layout == "torchxrayvision":
        if state["classifier.weight"].shape[0] != len(xrv_pathologies):
            raise PriorError(f"{path}: torchxrayvision head has {state['classifier.weight'].shape[0]} outputs but "
                             f"{len(xrv_pathologies)} pathology names were given")
        w, b, missing = _head_to_nih14(state["classifier.weight"], state["classifier.bias"], tuple(xrv_pathologies))
        state["classifier.weight"], state["classifier.bias"] = w, b
        info["missing_labels"] = missing
        info["note"] = ("torchxrayvision op_threshs are not applied: Eq. 7 thresholds the raw sigmoid at p; inputs "
                        "are scaled to [-1024, 1024] as torchxrayvision expects")
        if missing:
            warnings.warn(f"{path}: labels {missing} are not in the checkpoint; their outputs are fixed at "
                          f"sigmoid({MISSING_LABEL_BIAS}) (never positive)", stacklevel=2)
        normalisation = "xrv" if state["features.conv0.weight"].shape[1] == 1 else "imagenet"
    elif state["classifier.weight"].shape[0] != len(NIH14):
        raise PriorError(f"{path}: classifier has {state['classifier.weight'].shape[0]} outputs, expected 14 "
                         "(NIH ChestX-ray14 order) or 18 (torchxrayvision)")
    info["ignored_keys"] = ignored
    net = PriorNet(input_size=input_size, normalisation=normalisation)
    _load_strict(net, {f"densenet.{k}": v for k, v in state.items()}, path)
    return freeze(net), info


@torch.no_grad()
def predict_images(net: PriorNet, images_uint8: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """uint8 (N, H, W) -> probabilities (N, 14)."""
    net.eval()
    out = []
    for i in range(0, len(images_uint8), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images_uint8[i:i + batch_size])).to(device)
        x = x.float().div(127.5).sub(1.0)[:, None]
        out.append(net.predict(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(NIH14)), np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Training our own prior (the `prior` stage in pipeline/app/prior.py calls it)
# ---------------------------------------------------------------------------------------------------------------------
def train_prior(images_uint8: np.ndarray, labels: np.ndarray, pp: Any, device: torch.device,
                progress: bool = True) -> tuple[PriorNet, dict[str, Any]]:
    """Train PriorNet from scratch (offline: no ImageNet weights) with BCE on the 14 label vectors.

    images_uint8 (N, H, W); labels (N, 14) in {0, 1}. Batches are random crops (side U[crop_scale, 1] of the image
    side) resized to pp.input_size. Returns the frozen net and a short training summary.
    """
    if len(images_uint8) == 0:
        raise PriorError("prior: the training split is empty; the prior needs labelled training images")
    gen = np.random.default_rng(pp.seed)
    torch.manual_seed(pp.seed)
    net = PriorNet(input_size=pp.input_size).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=pp.lr, betas=(0.9, 0.999), weight_decay=pp.weight_decay)
    pool = torch.from_numpy(np.ascontiguousarray(images_uint8))
    targets = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    use_bf16 = device.type == "cuda"
    losses, t0 = [], time.perf_counter()
    bar = tqdm(range(pp.iterations), desc="prior", unit="it", disable=not progress, mininterval=5.0)
    for _ in bar:
        idx = gen.integers(0, len(pool), size=pp.batch_size)
        x = torch.stack([random_crop_resize(to_model_range(pool[i][None]), pp.input_size, pp.crop_scale, False,
                                            gen)
                         for i in idx]).to(device)
        y = targets[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise PriorError(f"prior: loss is {losses[-1]} at iteration {len(losses)}; lower prior.lr")
    bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    return freeze(net), {"iterations": pp.iterations, "final_loss": float(np.mean(tail)),
                         "seconds": round(time.perf_counter() - t0, 2)}
