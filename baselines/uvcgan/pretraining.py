"""An engine-compatible view of UVCGAN's BERT-like pre-training phase.

`Engine(uvcgan.pretraining_view(), settings, ckpt_dir, seed).fit(images_a, images_b)` runs the pre-training with the
engine's sampling, progress, checkpoints and exact resume: each iteration draws `pretrain_batch_size` images per
domain and calls `UVCGAN.pretrain_step((real_a, real_b), ...)`. The view owns no weights of its own: its only child
is the translator's G_ab, so its checkpoints hold exactly the pre-trained generator. Afterwards call
`uvcgan.load_pretrained(uvcgan.pretrained_state())` (or load a saved `pretrained_state()` into a fresh translator)
so that both generators start from it, as upstream's transfer does.

This class is deliberately not exported from the package: the registry sees only `UVCGAN`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pipeline.contract import Translation, Translator

if TYPE_CHECKING:  # pragma: no cover
    from .model import UVCGAN


class MaskedPretraining(Translator):
    name = "uvcgan_pretrain"
    has_mask = False

    def __init__(self, owner: "UVCGAN"):
        super().__init__(owner.cfg, owner.in_channels, owner.image_size)
        self.gen_ab = owner.gen_ab  # shared module: training the view trains the translator's generator
        self._owner = (owner,)  # a tuple keeps the owner out of this module's children and state_dict

    @property
    def batch_size(self) -> int:
        return int(self.cfg.pretrain_batch_size)

    def configure_optimizers(self, total_iterations: int):
        return self._owner[0].configure_pretraining(total_iterations)

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, ctx) -> dict[str, float]:
        return self._owner[0].pretrain_step((real_a, real_b), step, ctx)

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        """Reconstruction of x by the pre-trained generator (for inspection)."""
        return Translation(self.gen_ab((x + 1) * 0.5) * 2 - 1)
