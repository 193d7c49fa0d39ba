"""CycleGAN networks (junyanz/pytorch-CycleGAN-and-pix2pix, `models/networks.py`), described and reimplemented.

- `ResnetGenerator`: the default `resnet_9blocks` generator (Johnson et al. 2016 style): c7s1-ngf, two stride-2
  downsamplings, `n_blocks` residual blocks at 4*ngf channels, two stride-2 transposed convolutions, c7s1-out, Tanh.
- `PatchDiscriminator`: the 70x70 PatchGAN (`basic`, n_layers=3) from pix2pix.
- `init_weights`: N(0, gain) on every Conv/Linear weight, zero bias; BatchNorm weight N(1, gain).

Normalisation follows the official `get_norm_layer`: InstanceNorm2d(affine=False, track_running_stats=False) for
`instance` (then convs keep their bias, as the norm has no shift), BatchNorm2d(affine=True) for `batch` (convs
before it drop their bias).
"""
from __future__ import annotations

from torch import nn
from torch.nn import init


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"baselines/cyclegan: unknown norm {kind!r}; use instance, batch or none")


def _padding(kind: str) -> tuple[list[nn.Module], int]:
    """(padding layers, conv padding) for a 3x3 conv that keeps the size."""
    if kind == "reflect":
        return [nn.ReflectionPad2d(1)], 0
    if kind == "replicate":
        return [nn.ReplicationPad2d(1)], 0
    if kind == "zero":
        return [], 1
    raise ValueError(f"baselines/cyclegan: unknown padding {kind!r}; use reflect, replicate or zero")


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout 0.5), pad, conv3x3, norm](x); channels unchanged."""

    def __init__(self, dim: int, norm: str, use_dropout: bool, padding: str):
        super().__init__()
        bias = norm != "batch"
        pad, p = _padding(padding)
        layers = [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=bias), norm_layer(norm, dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        pad, p = _padding(padding)
        layers += [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=bias), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """(B, in_ch, H, W) -> (B, out_ch, H, W) in [-1, 1]; H and W divisible by 4.

    Layers (ngf=64, 9 blocks, 3 channels: 11,378,179 parameters, the published count):
      reflect-pad 3, conv7x7 in->ngf, norm, ReLU                                  (H, W)
      conv3x3 s2 ngf->2ngf, norm, ReLU; conv3x3 s2 2ngf->4ngf, norm, ReLU         (H/4, W/4)
      n_blocks x ResnetBlock(4ngf)
      convT3x3 s2 4ngf->2ngf, norm, ReLU; convT3x3 s2 2ngf->ngf, norm, ReLU       (H, W)
      reflect-pad 3, conv7x7 ngf->out (with bias), Tanh
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
                 use_dropout: bool = False, padding: str = "reflect"):
        super().__init__()
        bias = norm != "batch"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf),
                  nn.ReLU(True)]
        for i in range(2):  # downsampling
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, norm, use_dropout, padding) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       norm_layer(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, in_ch, H, W) -> (B, 1, H/8 - 2, W/8 - 2) real/fake logits, each seeing a 70x70 patch (n_layers=3).

    conv4x4 s2 in->ndf, LReLU(0.2) (no norm on the first layer)
    for n in 1..n_layers-1: conv4x4 s2 -> ndf*min(2^n, 8), norm, LReLU
    conv4x4 s1 -> ndf*min(2^n_layers, 8), norm, LReLU
    conv4x4 s1 -> 1 (with bias)
    ndf=64, n_layers=3, 3 channels: 2,764,737 parameters (the published count).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        bias = norm != "batch"
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """The official `init_weights`: applied to modules whose class name contains Conv or Linear, and BatchNorm2d."""

    def init_one(m: nn.Module) -> None:
        name = type(m).__name__
        if getattr(m, "weight", None) is not None and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                init.orthogonal_(m.weight, gain=gain)
            else:
                raise ValueError(f"baselines/cyclegan: unknown init_type {init_type!r}")
            if getattr(m, "bias", None) is not None:
                init.zeros_(m.bias)
        elif "BatchNorm2d" in name:
            init.normal_(m.weight, 1.0, gain)
            init.zeros_(m.bias)

    net.apply(init_one)
    return net
