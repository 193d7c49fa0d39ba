"""The official image buffer (`util/image_pool.py`, Shrivastava et al. 2017): D sees a history of generated images.

Per image of the incoming batch:
  - while fewer than `size` images are stored: store it and return it;
  - otherwise draw p = random.uniform(0, 1); if p > 0.5: pick i = random.randint(0, size - 1) (inclusive), return the
    stored image i and store the new one in its place; else return the new image (pool unchanged).
The draws use Python's global `random` module, exactly as upstream, so the engine's saved RNG state covers them;
the stored images go into the translator's extra_state for exact resume.
"""
from __future__ import annotations

import random

import torch


class ImagePool:
    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []  # each (1, C, H, W), detached

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) fresh fakes -> (B, C, H, W) detached mix of fresh and stored fakes."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0).clone()
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    # --- exact resume --------------------------------------------------------------------------------------------
    def state(self) -> torch.Tensor:
        """(n_stored, C, H, W) in storage order; (0,) when empty."""
        return torch.cat(self.images, 0) if self.images else torch.zeros(0)

    def load_state(self, stored: torch.Tensor, device: torch.device | None = None) -> None:
        stored = stored if device is None else stored.to(device)
        self.images = [img.unsqueeze(0) for img in stored] if stored.numel() else []
