"""MUNIT networks as in NVlabs/MUNIT (`networks.py`: AdaINGen, MsImageDis and their blocks).

Per domain one AdaINGen:
    style encoder   c7s1-64, 4x4 s2 convs to 128 and 256, two more 4x4 s2 convs at 256 (4 downsamplings in all),
                    global average pool, 1x1 conv -> style code (B, 8); ReLU, no normalisation (IN would erase style)
    content encoder c7s1-64, two 4x4 s2 convs (128, 256), 4 residual blocks; all InstanceNorm + ReLU
    decoder         4 residual blocks with AdaIN, 2 x [nearest x2 + 5x5 conv + LayerNorm + ReLU], 7x7 conv + Tanh
    MLP             style (B, 8) -> 256 -> 256 -> AdaIN parameters (B, 4096) = 4 blocks x 2 norms x (beta, gamma) x 256
Per domain one MsImageDis (the PatchGAN-like stack at three scales). All padding is reflection padding.
Shapes at the official widths and a 256 px input: content (B, 256, 64, 64), style (B, 8).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
# Copied from baselines.unit.networks.LayerNorm
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


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation, MUNIT paper Sec. 4: AdaIN(z, gamma, beta) = gamma (z - mu(z)) / sigma(z) + beta.

    x: (B, C, H, W); gamma, beta: (B, C), one pair per sample. mu, sigma are per sample and channel over (H, W),
    sigma = sqrt(biased variance + eps), exactly what the official F.batch_norm over a (1, B*C, H, W) view computes.
    """
    normalized = F.instance_norm(x.float(), eps=eps)
    return (normalized * gamma.float()[:, :, None, None] + beta.float()[:, :, None, None]).to(x.dtype)


# Copied from baselines.unit.networks.conv_block
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
    """x + [conv3x3 -> IN -> ReLU -> conv3x3 -> IN](x) (content encoder)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(conv_block(dim, dim, 3, norm="in", act="relu"),
                                   conv_block(dim, dim, 3, norm="in", act="none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class AdaINResBlock(nn.Module):
    """x + [conv3x3 -> AdaIN -> ReLU -> conv3x3 -> AdaIN](x) (decoder).

    `params` (B, 4 * dim) holds, in the official order, [beta_1, gamma_1, beta_2, gamma_2]: each AdaIN layer takes
    the next 2*dim numbers, the first dim as its bias (the official `mean`) and the next dim as its weight (`std`).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.conv1 = conv_block(dim, dim, 3, norm="none", act="none")
        self.conv2 = conv_block(dim, dim, 3, norm="none", act="none")

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        beta1, gamma1, beta2, gamma2 = params.split(self.dim, dim=1)
        y = F.relu(adain(self.conv1(x), gamma1, beta1))
        y = adain(self.conv2(y), gamma2, beta2)
        return x + y


# ----------------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------------
class StyleEncoder(nn.Module):
    """c7s1-dim, 2 x [4x4 s2 conv doubling], (n_down - 2) x [4x4 s2 conv], global average pool, 1x1 conv -> style_dim.
    No normalisation. Output (B, style_dim)."""

    def __init__(self, in_channels: int, dim: int, style_dim: int, n_down: int = 4):
        super().__init__()
        layers = [conv_block(in_channels, dim, 7)]
        for _ in range(2):
            layers.append(conv_block(dim, 2 * dim, 4, stride=2))
            dim *= 2
        for _ in range(n_down - 2):
            layers.append(conv_block(dim, dim, 4, stride=2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).flatten(1)


class ContentEncoder(nn.Module):
    """c7s1-dim, n_down x [4x4 s2 conv doubling the width], n_res residual blocks; all IN + ReLU."""

    def __init__(self, in_channels: int, dim: int, n_down: int, n_res: int):
        super().__init__()
        layers = [conv_block(in_channels, dim, 7, norm="in")]
        for _ in range(n_down):
            layers.append(conv_block(dim, 2 * dim, 4, stride=2, norm="in"))
            dim *= 2
        layers += [ResBlock(dim) for _ in range(n_res)]
        self.model = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class AdaINDecoder(nn.Module):
    """n_res AdaIN residual blocks, n_up x [nearest x2 + 5x5 conv halving the width + LayerNorm + ReLU], c7s1 + Tanh."""

    def __init__(self, dim: int, out_channels: int, n_up: int, n_res: int):
        super().__init__()
        self.res = nn.ModuleList([AdaINResBlock(dim) for _ in range(n_res)])
        self.params_per_block = 4 * dim  # (beta, gamma) for each of the block's two AdaIN layers
        self.num_adain_params = n_res * self.params_per_block
        layers: list[nn.Module] = []
        for _ in range(n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv_block(dim, dim // 2, 5, norm="ln")]
            dim //= 2
        layers.append(conv_block(dim, out_channels, 7, norm="none", act="tanh"))
        self.up = nn.Sequential(*layers)

    def forward(self, content: torch.Tensor, adain_params: torch.Tensor) -> torch.Tensor:
        x = content
        for block, params in zip(self.res, adain_params.split(self.params_per_block, dim=1)):
            x = block(x, params)
        return self.up(x)


class MLP(nn.Module):
    """style (B, style_dim) -> Linear + ReLU -> (n_layers - 2) x [Linear + ReLU] -> Linear (no activation)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
        for _ in range(n_layers - 2):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        layers.append(nn.Linear(hidden, out_dim))
        self.model = nn.Sequential(*layers)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        return self.model(style)


class AdaINGen(nn.Module):
    """One domain's auto-encoder: image -> (content, style) -> image."""

    def __init__(self, in_channels: int, dim: int = 64, style_dim: int = 8, n_down: int = 2, n_res: int = 4,
                 mlp_dim: int = 256):
        super().__init__()
        self.enc_style = StyleEncoder(in_channels, dim, style_dim, n_down=4)  # 4 is fixed in the official code
        self.enc_content = ContentEncoder(in_channels, dim, n_down, n_res)
        self.dec = AdaINDecoder(self.enc_content.out_dim, in_channels, n_down, n_res)
        self.mlp = MLP(style_dim, self.dec.num_adain_params, mlp_dim, n_layers=3)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.enc_content(x), self.enc_style(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.dec(content, self.mlp(style))


# ----------------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------------
# Copied from baselines.unit.networks.MsImageDis
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


# Copied from baselines.unit.networks.discriminator_loss
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


# Copied from baselines.unit.networks.generator_loss
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
# Copied from baselines.unit.networks.init_weights
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
