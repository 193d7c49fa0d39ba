"""The translator contract: how a method plugs into cxrbench (the README's "Adding a baseline" says it in steps).

Domain A = opacity, domain B = normal. Images are single-channel tensors in [-1, 1], shape (B, 1, H, W).
A method is a package (`ours/` or `baselines/<name>/`) whose `__init__.py` exposes exactly one `Translator`
subclass with:

- `name`       the registry name (lower case, a valid Python identifier), equal to the package directory name;
- `Config`     a dataclass whose defaults are the method's official defaults; params.yaml overrides them under
               `methods.<name>` and the values are validated against it (unknown key, wrong type -> error);
- `has_mask`   True when `translate` returns an activation mask.

The engine owns everything generic (data, device, precision, checkpoint/resume, logging, NaN guard); the translator
owns its networks, losses and update order. `train_step(real_a, real_b, step, ctx)` does its own G/D updates and
sees only a `StepContext`: `ctx.backward(loss)` instead of `loss.backward()` (gradient averaging across processes
lives there), `ctx.autocast()` for forward passes of its own, `ctx.device`, `ctx.rank`, `ctx.world_size`.
Tests build one in one line: `StepContext()`.

Required: `configure_optimizers`, `train_step`, `translate` (A -> B) and `translate_b2a` (B -> A: Table 2 trains
classifiers on both directions). Optional, declared by `has_pretraining = True` and then implemented in full
(the registry checks): the `Pretraining` protocol below (UVCGAN's masked-autoencoder pre-training).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, ContextManager

import torch
from torch import nn

from pipeline.auroc import auroc, position_floor  # the one AUROC
from pipeline.schema import build_dataclass


@dataclass
class Translation:
    """What `translate` returns. image: (B, 1, H, W) in [-1, 1]; mask: (B, 1, H, W) in [0, 1] or None."""

    image: torch.Tensor
    mask: torch.Tensor | None = None


def _plain_backward(loss: torch.Tensor, **kwargs: Any) -> None:
    loss.backward(**kwargs)  # retain_graph=True where a method backpropagates twice through one graph (DRIT++)


@dataclass
class StepContext:
    """All a method's `train_step` may use from the engine. Defaults: one CPU process, fp32, plain backward."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    backward: Callable[..., None] = _plain_backward
    autocast: Callable[[], ContextManager] = contextlib.nullcontext


@dataclass
class Probe:
    """A fixed validation batch for the training diagnostics, logged every `log_every` steps beside the losses.

    a: (N, 1, H, W) opacity images in [-1, 1]; opacity: (N, 1, H, W) bool true opacity masks of those images, or None
    when the dataset has none; b: (M, 1, H, W) normal images in [-1, 1]; lungs: (N, 1, H, W) bool lung masks of the
    opacity images, or None. All on the training device.
    """

    a: torch.Tensor
    opacity: torch.Tensor | None
    b: torch.Tensor
    lungs: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Probe":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)
        return Probe(self.a.to(device), move(self.opacity), self.b.to(device), move(self.lungs))


def mask_diagnostics(translator: "Translator", probe: Probe) -> dict[str, float]:
    """What a translator's activation mask does on the probe (eval mode; the caller isolates the RNG):

    diag_mask_area_opacity / diag_mask_area_normal   mean mask value on the opacity / normal images;
    diag_mask_auroc  mean over opacity images (with some opacity) of the per-image AUROC of the mask against the true
                     opacity mask (does the mask rank opacity pixels above the rest? 0.5 = chance);
    diag_mask_iou    mean IoU of mask > 0.5 with the true opacity mask (0 when both are empty counts as 1);
    with lung masks, over the lung field (lung mask or opacity) of all opacity images pooled:
    diag_mask_auroc_lung   the mask's AUROC against the true opacity, and
    diag_mask_floor_lung   the best AUROC of a map that sees no image (pipeline/auroc.py position_floor): the mask
                           localises this image's opacity only where the first line runs above the second.
    """
    was_training = translator.training
    translator.eval()
    try:
        mask_a = translator.translate(probe.a).mask
        mask_b = translator.translate(probe.b).mask
    finally:
        translator.train(was_training)
    out = {"diag_mask_area_opacity": float(mask_a.float().mean()),
           "diag_mask_area_normal": float(mask_b.float().mean())}
    if probe.opacity is not None:
        scores = mask_a.float().flatten(1).cpu().numpy()
        truth = probe.opacity.flatten(1).cpu().numpy()
        per_image = [auroc(s, t) for s, t in zip(scores, truth)]
        per_image = [v for v in per_image if v is not None]
        if per_image:
            out["diag_mask_auroc"] = float(sum(per_image) / len(per_image))
        pred = scores > 0.5
        inter, union = (pred & truth).sum(1), (pred | truth).sum(1)
        out["diag_mask_iou"] = float(((inter + (union == 0)) / union.clip(min=1)).mean())
        if probe.lungs is not None:
            field = truth | probe.lungs.flatten(1).cpu().numpy()
            value, floor = auroc(scores[field], truth[field]), position_floor(truth, field)
            if value is not None and floor is not None:
                out["diag_mask_auroc_lung"], out["diag_mask_floor_lung"] = value, floor
    return out


class ContractError(TypeError):
    """A package under baselines/ (or ours/) does not implement the contract."""


class Translator(nn.Module):
    """Base class of every method. Subclasses set `name`, `Config`, `has_mask` and implement the methods below."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    has_mask: ClassVar[bool] = False
    # True when the method has an optional pre-training phase (UVCGAN's masked-autoencoder pre-training).
    has_pretraining: ClassVar[bool] = False

    def __init__(self, cfg: Any, in_channels: int = 1, image_size: int = 256):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.image_size = image_size

    # --- training -------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Images per domain per step. Methods take it from their Config (`batch_size`), official default."""
        return int(getattr(self.cfg, "batch_size", 1))

    def configure_optimizers(self, total_iterations: int) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
        """Create, keep (on self) and return (optimizers, schedulers), both keyed by name.

        Schedulers are stepped by the engine once per training iteration, after `train_step`, so every schedule is
        expressed in iterations (e.g. CycleGAN's "constant then linear decay" as fractions of `total_iterations`).
        """
        raise NotImplementedError

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int,
                   ctx: StepContext) -> dict[str, torch.Tensor]:
        """One training iteration on a batch of opacity (A) and normal (B) images; returns its losses by name as
        detached 0-dim tensors. Never read a value back to the host here (`.item()`, `float()`, `if t > 0`): on a
        GPU each is a sync that stalls the launch queue; the engine reads the losses once per `log_every` steps."""
        raise NotImplementedError

    # --- inference --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        """Opacity (A) -> normal (B)."""
        raise NotImplementedError

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        """Normal (B) -> opacity (A). Used by the Table 2 'Generated' classifiers (both directions)."""
        raise NotImplementedError

    # --- diagnostics ------------------------------------------------------------------------------------------
    def diagnostics(self, probe: Probe) -> dict[str, float]:
        """Curves logged every `log_every` steps on a fixed validation batch (the engine isolates the RNG, so
        diagnostics never change training). Default: `mask_diagnostics` for methods with a mask, else nothing."""
        return mask_diagnostics(self, probe) if self.has_mask else {}

    # --- state beyond parameters and buffers (image pools, EMA, counters) --------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Everything exact resume needs that is not in state_dict(): tensors, numbers, strings, lists, dicts."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name}: unexpected extra state keys {sorted(state)}")

    def inference_modules(self) -> list[str]:
        """Names of the submodules needed by translate(); the rest (discriminators) is dropped from final weights.

        Default: everything (safe). Methods override to keep exported weights small.
        """
        return [n for n, _ in self.named_children()]


# Every method of the optional pre-training protocol: a method with `has_pretraining = True` implements all of them.
PRETRAINING_METHODS = {
    "pretraining_view": "a Translator whose train_step runs one pre-training step (the engine trains it like any "
                        "translator: checkpoints, resume, logging)",
    "pretrained_state": "the pre-trained weights to carry into the main training, a state dict",
    "load_pretrained": "load such a state dict into this translator before its main training",
}


def config_from_dict(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Build a method's Config dataclass from a (validated) dict; see pipeline.config for validation."""
    return build_dataclass(cls, values or {}, where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
