"""UVCGAN objectives (LS4GAN/uvcgan `uvcgan/base/losses.py`, `uvcgan/cgan/cyclegan.py`), reimplemented.

All images here are in UVCGAN's own range [0, 1] (the translator converts at its boundary).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """lsgan: mean((D - t)^2), t = 1 real / 0 fake; vanilla: BCE with logits; wgan: -mean(D) real, +mean(D) fake."""
    if mode == "lsgan":
        return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if target_is_real else 0.0))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(prediction, torch.full_like(prediction, float(target_is_real)))
    if mode == "wgan":
        return -prediction.mean() if target_is_real else prediction.mean()
    raise ValueError(f"baselines/uvcgan: unknown gan_mode {mode!r}; use lsgan, vanilla or wgan")


def gradient_penalty(disc: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     lambda_gp: float, constant: float, kind: str = "mixed") -> torch.Tensor:
    """WGAN-GP style penalty (Gulrajani et al. 2017, Eq. 3), generalised to a target norm gamma (Karras et al. 2018):

        GP = lambda_gp * mean_i ( || d sum(D(x_hat)) / d x_hat_i ||_2 - gamma )^2

    x_hat = alpha_i real_i + (1 - alpha_i) fake_i with one alpha_i ~ U[0, 1) per sample (`mixed`), or real / fake
    alone. UVCGAN's "paper" preset: lambda_gp = 0.1 / 100^2, gamma = 100. alpha comes from the global CPU torch RNG
    (device independent, covered by the engine's RNG checkpoint). Returns a scalar that keeps the graph (create_graph)
    so the penalty trains D.
    """
    if lambda_gp == 0.0:
        return real.new_zeros(())
    if kind == "mixed":
        alpha = torch.rand(real.shape[0], 1, 1, 1).to(device=real.device, dtype=real.dtype)
        x_hat = alpha * real.detach() + (1 - alpha) * fake.detach()
    elif kind == "real":
        x_hat = real.detach()
    elif kind == "fake":
        x_hat = fake.detach()
    else:
        raise ValueError(f"baselines/uvcgan: unknown gradient penalty type {kind!r}; use mixed, real or fake")
    x_hat = x_hat.clone().requires_grad_(True)
    out = disc(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    norms = (grad.reshape(grad.shape[0], -1).float() + 1e-16).norm(2, dim=1)  # upstream adds 1e-16 before the norm
    return lambda_gp * ((norms - constant) ** 2).mean()


def linear_anneal_factor(iteration: int, total_iterations: int, warmup_fraction: float) -> float:
    """Upstream `linear` scheduler with epochs replaced by iterations:
    1 while iteration < n_warm, then 1 - (iteration - n_warm) / (n_anneal + 1)  (250 + 250 epochs upstream)."""
    n_warm = int(round(warmup_fraction * total_iterations))
    n_anneal = max(total_iterations - n_warm, 0)
    if iteration < n_warm:
        return 1.0
    return 1.0 - (iteration - n_warm) / float(n_anneal + 1)
