"""Image buffer of past fakes for the discriminators (uvcgan vendors pytorch-CycleGAN-and-pix2pix's `ImagePool`).

Per incoming image: while fewer than `size` are stored, store and return it; afterwards, if random.uniform(0, 1) > 0.5
return stored image random.randint(0, size - 1) and put the new one in its place, else return the new one.
Python's global `random` is used as upstream (the engine checkpoints it); stored images go into extra_state.
"""
from __future__ import annotations

import random

import torch


# Copied from baselines.cyclegan.image_pool.ImagePool
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
