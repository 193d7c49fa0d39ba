"""UVCGAN v1 networks (LS4GAN/uvcgan), reimplemented.

- `ViTUNetGenerator` ("vit-unet-12": `uvcgan/models/generator/vitunet.py`, `uvcgan/torch/layers/unet.py`): a
  UNet whose innermost feature map goes through the pixel-wise ViT of transformer.py; Sigmoid output, images in [0, 1].
- `PatchDiscriminator`: the 70x70 PatchGAN with InstanceNorm that uvcgan vendors from pytorch-CycleGAN-and-pix2pix
  (`uvcgan/base/networks.py`, `basic`).
- `init_weights`: N(0, gain) on Conv*/Linear* weights, zero bias (`uvcgan/base/weight_init.py`).

Activations: upstream's `leakyrelu` preset builds `nn.LeakyReLU()` with PyTorch's default slope 0.01 (not 0.2).
Norm: `instance` = nn.InstanceNorm2d(features) with PyTorch defaults (affine=False, no running statistics).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import init

from .transformer import PixelwiseViT


def conv_block(in_ch: int, out_ch: int, mid_ch: int | None = None) -> nn.Sequential:
    """Upstream `UnetBasicBlock`: IN, conv3x3, LReLU, IN, conv3x3, LReLU (norm *before* each conv)."""
    mid_ch = out_ch if mid_ch is None else mid_ch
    return nn.Sequential(
        nn.InstanceNorm2d(in_ch), nn.Conv2d(in_ch, mid_ch, 3, padding=1), nn.LeakyReLU(),
        nn.InstanceNorm2d(mid_ch), nn.Conv2d(mid_ch, out_ch, 3, padding=1), nn.LeakyReLU(),
    )


class EncoderLevel(nn.Module):
    """(N, c_in, H, W) -> skip (N, f, H, W) and down (N, f, H/2, W/2) via a 2x2 stride-2 conv (`conv` downsample)."""

    def __init__(self, in_ch: int, features: int):
        super().__init__()
        self.block = conv_block(in_ch, features)
        self.down = nn.Conv2d(features, features, 2, stride=2)

    def forward(self, x):
        skip = self.block(x)
        return self.down(skip), skip


class DecoderLevel(nn.Module):
    """(N, f, H/2, W/2) + skip (N, f, H, W) -> (N, c_out, H, W).

    up = conv3x3(nearest-upsample x2 (x)) (`upsample-conv`), optionally times a ReZero scalar (upstream
    `unet_rezero`, False in the vit-unet presets); then conv_block(cat[up, skip]: 2f -> c_out, mid f).
    """

    def __init__(self, features: int, out_ch: int, rezero: bool = False):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(features, features, 3, padding=1))
        self.block = conv_block(2 * features, out_ch, mid_ch=features)
        if rezero:
            self.re_alpha = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("re_alpha", torch.ones(1), persistent=False)

    def forward(self, x, skip):
        return self.block(torch.cat([self.re_alpha * self.up(x), skip], dim=1))


class ViTUNetGenerator(nn.Module):
    """(N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1]; H, W divisible by 2^len(unet_features).

    input conv3x3 C -> f0, LReLU                                         (f0, H, W)
    encoder levels f0 -> f0, f0 -> f1, f1 -> f2, f2 -> f3 (each halves)   (f3, H/16, W/16) = (384, 16, 16) at 256 px
    pixel-wise ViT bottleneck on f3 channels (transformer.py)
    decoder levels back up, each to the channel count its encoder level received (f2, f1, f0, f0)
    output conv1x1 f0 -> C, Sigmoid
    Official vit-unet-12 (features [48, 96, 192, 384], ViT 384/6 heads/12 blocks/FFN 1536/embed 384), C = 3:
    31,360,239 parameters (derivation in README.md).
    """

    def __init__(self, channels: int, unet_features: list[int], vit_features: int = 384, vit_heads: int = 6,
                 vit_blocks: int = 12, vit_ffn_features: int = 1536, vit_embed_features: int = 384,
                 vit_rezero: bool = True, unet_rezero: bool = False):
        super().__init__()
        self.depth = len(unet_features)
        self.layer_input = nn.Sequential(nn.Conv2d(channels, unet_features[0], 3, padding=1), nn.LeakyReLU())
        level_inputs = [unet_features[0], *unet_features[:-1]]  # channels entering each encoder level
        self.encoder = nn.ModuleList(EncoderLevel(c, f) for c, f in zip(level_inputs, unet_features))
        self.bottleneck = PixelwiseViT(unet_features[-1], vit_features, vit_heads, vit_blocks, vit_ffn_features,
                                       vit_embed_features, vit_rezero)
        self.decoder = nn.ModuleList(DecoderLevel(f, c, unet_rezero) for c, f in zip(level_inputs, unet_features))
        self.layer_output = nn.Conv2d(unet_features[0], channels, 1)

    def forward(self, x):
        y = self.layer_input(x)
        skips = []
        for level in self.encoder:
            y, skip = level(y)
            skips.append(skip)
        y = self.bottleneck(y)
        for level, skip in zip(reversed(self.decoder), reversed(skips)):
            y = level(y, skip)
        return torch.sigmoid(self.layer_output(y))


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN with InstanceNorm (same as baselines/cyclegan; vendored upstream too):
    conv4x4 s2 -> ndf, LReLU(0.2); conv4x4 s2 -> 2ndf, 4ndf (IN, LReLU(0.2)); conv4x4 s1 -> 8ndf, IN, LReLU(0.2);
    conv4x4 s1 -> 1. ndf = 64, 3 channels: 2,764,737 parameters."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, gain) weights and zero biases for modules whose class name contains Conv or Linear (this includes the
    attention output projection; the fused q/k/v `in_proj_weight` of nn.MultiheadAttention is not such a module and
    keeps PyTorch's xavier-uniform init, as upstream)."""

    def init_one(m: nn.Module) -> None:
        name = type(m).__name__
        if getattr(m, "weight", None) is not None and ("Conv" in name or "Linear" in name):
            init.normal_(m.weight, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                init.zeros_(m.bias)

    net.apply(init_one)
    return net
