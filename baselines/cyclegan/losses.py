"""CycleGAN objectives (official `GANLoss` and `cycle_gan_model.py`), reimplemented.

GAN modes (official `--gan_mode`):
  lsgan   (default) least squares, Mao et al. 2017: mean((D(x) - t)^2), t = 1 for real, 0 for fake
  vanilla BCE with logits:                        mean(-t log s(D) - (1-t) log(1 - s(D)))
  wgangp  Wasserstein critic terms:                -mean(D(x)) for real, +mean(D(x)) for fake
          (the official CycleGAN model never calls `cal_gradient_penalty`, so `wgangp` there is plain WGAN
          without clipping or penalty; kept as such.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """prediction: raw discriminator output of any shape (PatchGAN: (B, 1, h, w)); returns a scalar."""
    if mode == "lsgan":
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.mse_loss(prediction, target)
    if mode == "vanilla":
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if mode == "wgangp":
        return -prediction.mean() if target_is_real else prediction.mean()
    raise ValueError(f"baselines/cyclegan: unknown gan_mode {mode!r}; use lsgan, vanilla or wgangp")


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor, mode: str = "lsgan") -> torch.Tensor:
    """Official `backward_D_basic`: 0.5 * (loss(D(real), real) + loss(D(fake), fake)); halves D's rate vs. G."""
    return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


def linear_decay_factor(iteration: int, total_iterations: int, decay_start_fraction: float) -> float:
    """The official `linear` lr policy with epochs replaced by iterations.

    Official: factor(e) = 1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1), epoch_count = 1, i.e.
    constant for n_epochs, then a straight line towards 0 over n_epochs_decay (100 + 100 epochs). Here
    n_const = round(decay_start_fraction * total_iterations) and n_decay = total - n_const; `iteration` is the
    number of scheduler steps already taken (LambdaLR's counter).
    """
    n_const = int(round(decay_start_fraction * total_iterations))
    n_decay = max(total_iterations - n_const, 0)
    return 1.0 - max(0, iteration + 1 - n_const) / float(n_decay + 1)
