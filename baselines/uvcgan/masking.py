"""BERT-like masking for UVCGAN's generator pre-training (`uvcgan/torch/image_masking.py`, `image-patch-random`).

The image is cut into a grid of patch x patch squares; each square is independently hidden with probability
`fraction` (40 %, so 40 % of the patches in expectation) by setting its pixels to 0 (black in UVCGAN's [0, 1] range).
The generator reconstructs the full image; the loss is L1 over all pixels (upstream `autoencoder` model).
"""
from __future__ import annotations

import torch


def patch_keep_mask(batch: int, height: int, width: int, patch: int, fraction: float) -> torch.Tensor:
    """(batch, 1, height, width) float mask: 1 = kept, 0 = masked. Draws from the global CPU torch RNG."""
    if height % patch or width % patch:
        raise ValueError(f"baselines/uvcgan: mask patch size {patch} must divide the image size {height}x{width}; "
                         "change pretrain_patch_size or data.resolution")
    keep = (torch.rand(batch, 1, height // patch, width // patch) > fraction).float()
    return keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def mask_patches(images: torch.Tensor, patch: int, fraction: float) -> torch.Tensor:
    """images: (N, C, H, W) in [0, 1] -> the same with ~fraction of its patch x patch squares set to 0."""
    n, _, h, w = images.shape
    return images * patch_keep_mask(n, h, w, patch, fraction).to(device=images.device, dtype=images.dtype)
