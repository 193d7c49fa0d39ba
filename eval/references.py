"""Floor and ceiling rows of every table: translators that need no training.

- `identity`: returns the input. The floor: a method that does not beat it has removed nothing.
- `blur`: a fixed Gaussian (sigma = eval.blur_sigma pixels at 64 px, scaled with the resolution). Removes detail,
  not opacity; a metric that ranks it above identity rewards smoothing, not opacity removal.
- `oracle`: the clean twin of each opacity image (the same rendering without findings), the input for normal images,
  and the true opacity mask as its activation mask. The ceiling; it exists only where the truth is known (the DRR
  sets), so it is written only for sets whose opacity images all have a twin.

They are written by the `references` stage in the translate stage's format (outputs/<name>/seed0/index.csv + PNGs)
and scored by the same evaluators as every method (`cxrbench evaluate --model identity`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

REFERENCES = ("identity", "blur", "oracle")
REFERENCE_SEED = 0  # deterministic: one output folder, outputs/<name>/seed0


def gaussian_blur(images_uint8: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (N, H, W) -> uint8, separable Gaussian with reflect padding (radius 3 sigma)."""
    if sigma <= 0:
        return np.asarray(images_uint8, np.uint8).copy()
    radius = max(1, int(np.ceil(3 * sigma)))
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = (k / k.sum()).float()
    x = torch.from_numpy(np.asarray(images_uint8, np.float32))[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return torch.round(x[:, 0]).clamp(0, 255).to(torch.uint8).numpy()


def blur_sigma_at(resolution: int, sigma_at_64: float) -> float:
    return float(sigma_at_64) * resolution / 64.0
