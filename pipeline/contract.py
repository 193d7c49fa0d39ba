"""The translator contract: how a method plugs into cxrbench (DESIGN section 3).

Domain A = opacity, domain B = normal. Images are single-channel tensors in [-1, 1], shape (B, 1, H, W).
A method is a package (`ours/` or `baselines/<name>/`) whose `__init__.py` exposes exactly one `Translator`
subclass with:

- `name`       the registry name (lower case, a valid Python identifier), equal to the package directory name;
- `Config`     a dataclass whose defaults are the method's official defaults; params.yaml overrides them under
               `methods.<name>` and the values are validated against it (unknown key, wrong type -> error);
- `has_mask`   True when `translate` returns an activation mask.

The engine owns everything generic (data, device, precision, checkpoint/resume, logging, NaN guard); the translator
owns its networks, losses and update order. `train_step` does its own G/D updates, calling `engine.backward(loss)`
instead of `loss.backward()` so the engine can add mixed precision or DDP handling later without touching methods.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.engine import Engine


@dataclass
class Translation:
    """What `translate` returns. image: (B, 1, H, W) in [-1, 1]; mask: (B, 1, H, W) in [0, 1] or None."""

    image: torch.Tensor
    mask: torch.Tensor | None = None


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

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, engine: "Engine") -> dict[str, float]:
        """One training iteration on a batch of opacity (A) and normal (B) images; returns scalar losses by name."""
        raise NotImplementedError

    def pretrain_step(self, images: torch.Tensor, step: int, engine: "Engine") -> dict[str, float]:
        """Optional pre-training step (only when `has_pretraining`)."""
        raise NotImplementedError(f"{self.name} has no pre-training phase")

    # --- inference --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        """Opacity (A) -> normal (B)."""
        raise NotImplementedError

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        """Normal (B) -> opacity (A). Used by the Table 2 'Generated' classifiers (both directions)."""
        raise NotImplementedError(f"{self.name} does not translate B -> A")

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


def config_from_dict(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Build a method's Config dataclass from a (validated) dict; see pipeline.config for validation."""
    from pipeline.schema import build_dataclass

    return build_dataclass(cls, values or {}, where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
