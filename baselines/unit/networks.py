"""UNIT networks as in the maintained code (mingyuliutw/UNIT master = the MUNIT code structure, `networks.py`).

Per domain one VAEGen: a content encoder (c7s1-64, two 4x4 stride-2 convs, residual blocks; InstanceNorm + ReLU)
and a decoder (residual blocks, [nearest x2 upsample + 5x5 conv + LayerNorm + ReLU] per upsampling, 7x7 conv + Tanh).
Per domain one MsImageDis: the same PatchGAN-like stack applied at three scales of the input.
All padding is reflection padding (`pad_type: reflect` in every official config).

Shapes at the official widths (dim 64, 2 downsamplings, 4 residual blocks) and a 256 px input:
    x (B, C, 256, 256) -> content h (B, 256, 64, 64) -> x (B, C, 256, 256)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """The MUNIT/UNIT-code layer norm (not torch's): per sample, over (C, H, W), *unbiased* std, eps added to the std,
    then a per-channel affine with gamma ~ U(0, 1) and beta = 0 at construction (as in the official code)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(channels).uniform_())
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # statistics in fp32 also under bf16 autocast
        mean = x32.mean(dim=(1, 2, 3), keepdim=True)
        std = x32.std(dim=(1, 2, 3), keepdim=True)  # unbiased, as torch.Tensor.std in the official code
        y = (x32 - mean) / (std + self.eps)
        return (y * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)).to(x.dtype)


def conv_block(cin: int, cout: int, kernel: int, stride: int = 1, norm: str = "none",
               act: str = "relu") -> nn.Sequential:
    """Reflection pad ((kernel - 1) // 2) -> conv (with bias) -> norm -> activation (the official Conv2dBlock)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d((kernel - 1) // 2), nn.Conv2d(cin, cout, kernel, stride)]
    if norm == "in":
        layers.append(nn.InstanceNorm2d(cout))  # affine=False, no running statistics
    elif norm == "ln":
        layers.append(LayerNorm(cout))
    elif norm != "none":
        raise ValueError(f"unknown norm {norm!r}")
    if act == "relu":
        layers.append(nn.ReLU())
    elif act == "lrelu":
        layers.append(nn.LeakyReLU(0.2))
    elif act == "tanh":
        layers.append(nn.Tanh())
    elif act != "none":
        raise ValueError(f"unknown activation {act!r}")
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """x + [conv3x3 -> IN -> ReLU -> conv3x3 -> IN](x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(conv_block(dim, dim, 3, norm="in", act="relu"),
                                   conv_block(dim, dim, 3, norm="in", act="none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


# ----------------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------------
class ContentEncoder(nn.Module):
    """c7s1-dim, n_down x [4x4 s2 conv doubling the width], n_res residual blocks; all IN + ReLU."""

    def __init__(self, in_channels: int, dim: int, n_down: int, n_res: int):
        super().__init__()
        layers = [conv_block(in_channels, dim, 7, norm="in")]
        for _ in range(n_down):
            layers.append(conv_block(dim, 2 * dim, 4, stride=2, norm="in"))
            dim *= 2
        self.stem = nn.Sequential(*layers)
        # kept apart so the paper's shared-layer variant can share the last block between domains
        self.res = nn.Sequential(*[ResBlock(dim) for _ in range(n_res)])
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.stem(x))


class Decoder(nn.Module):
    """n_res residual blocks (IN), n_up x [nearest x2 + 5x5 conv halving the width + LayerNorm + ReLU], c7s1 + Tanh."""

    def __init__(self, dim: int, out_channels: int, n_up: int, n_res: int):
        super().__init__()
        self.res = nn.Sequential(*[ResBlock(dim) for _ in range(n_res)])
        layers: list[nn.Module] = []
        for _ in range(n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv_block(dim, dim // 2, 5, norm="ln")]
            dim //= 2
        layers.append(conv_block(dim, out_channels, 7, norm="none", act="tanh"))
        self.up = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.res(h))


class VAEGen(nn.Module):
    """One domain's auto-encoder. The official "VAE" is reduced: the encoder output h is the mean of a unit-variance
    Gaussian, so sampling is h + N(0, I) (done by the caller, training only) and KL reduces to mean(h^2)."""

    def __init__(self, in_channels: int, dim: int = 64, n_down: int = 2, n_res: int = 4):
        super().__init__()
        self.enc = ContentEncoder(in_channels, dim, n_down, n_res)
        self.dec = Decoder(self.enc.out_dim, in_channels, n_down, n_res)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.dec(h)


# ----------------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------------
class MsImageDis(nn.Module):
    """Multi-scale discriminator: `num_scales` copies of [4x4 s2 conv + LReLU(0.2)] x n_layer (dim -> dim*2^(n-1),
    no norm in the official configs) + 1x1 conv -> 1 channel. Scale k sees the input average-pooled k times with a
    3x3 window, stride 2, padding 1, count_include_pad=False (border windows average only the pixels inside)."""

    def __init__(self, in_channels: int, dim: int = 64, n_layer: int = 4, num_scales: int = 3):
        super().__init__()
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.cnns = nn.ModuleList([self._make_net(in_channels, dim, n_layer) for _ in range(num_scales)])

    @staticmethod
    def _make_net(in_channels: int, dim: int, n_layer: int) -> nn.Sequential:
        layers = [conv_block(in_channels, dim, 4, stride=2, norm="none", act="lrelu")]
        for _ in range(n_layer - 1):
            layers.append(conv_block(dim, 2 * dim, 4, stride=2, norm="none", act="lrelu"))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for cnn in self.cnns:
            outputs.append(cnn(x))
            x = self.downsample(x)
        return outputs


def discriminator_loss(outs_real: list[torch.Tensor], outs_fake: list[torch.Tensor], gan_type: str) -> torch.Tensor:
    """Sum over scales. lsgan: mean((D(real) - 1)^2) + mean(D(fake)^2); nsgan: BCE(real -> 1) + BCE(fake -> 0)."""
    loss = 0.0
    for real, fake in zip(outs_real, outs_fake):
        real, fake = real.float(), fake.float()
        if gan_type == "lsgan":
            loss = loss + torch.mean((real - 1) ** 2) + torch.mean(fake ** 2)
        else:
            loss = loss + F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) \
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    return loss


def generator_loss(outs_fake: list[torch.Tensor], gan_type: str) -> torch.Tensor:
    """Sum over scales. lsgan: mean((D(fake) - 1)^2); nsgan: BCE(fake -> 1)."""
    loss = 0.0
    for fake in outs_fake:
        fake = fake.float()
        if gan_type == "lsgan":
            loss = loss + torch.mean((fake - 1) ** 2)
        else:
            loss = loss + F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return loss


# ----------------------------------------------------------------------------------------------------------------
# Initialisation (official utils.weights_init: conv and linear weights only, biases to 0; norms keep their own init)
# ----------------------------------------------------------------------------------------------------------------
def init_weights(module: nn.Module, kind: str) -> None:
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if kind == "gaussian":
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif kind == "kaiming":
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif kind == "xavier":
            nn.init.xavier_normal_(m.weight, gain=math.sqrt(2))
        elif kind == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
        else:
            raise ValueError(f"unknown init {kind!r}")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
