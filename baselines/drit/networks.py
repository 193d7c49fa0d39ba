"""DRIT++ networks (concat variant, `--concat 1`), described from HsinYingLee/DRIT `src/networks.py`.

Read top to bottom: building blocks, the content encoder E_c, the attribute encoder E_a, the generator G, the two
kinds of discriminators. Every width is a constructor argument; the official values are the defaults and are what
`DRIT.Config` holds. Shapes are given for the official 3-channel 216 px training crop, (B, C, H, W).

Two details of the official code that the layer names hide, both kept here:
- its `LeakyReLUConv2d` compares the string literal 'norm' with 'Instance', so instance norm is never applied there
  (content discriminator included, although it asks for it) and its LeakyReLU has PyTorch's default slope 0.01;
- the up-sampling blocks named `ReLUINSConvTranspose2d` use a *layer* norm (per sample over C, H, W, per-channel
  affine), not instance norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONV_SLOPE = 0.01  # LeakyReLU slope of the official LeakyReLUConv2d (nn.LeakyReLU() default)
ATTR_SLOPE = 0.2  # LeakyReLU slope of the attribute encoder (get_non_linearity('lrelu'))


def init_official(module: nn.Module, std: float = 0.02) -> None:
    """gaussian_weights_init: weights of Conv2d / ConvTranspose2d ~ N(0, std); biases, Linear and norms keep the
    PyTorch default (the official test `classname.find('Conv') == 0` does not match Linear). Spectrally normalised
    convs keep the default too: officially the init writes into the derived `weight` buffer, not `weight_orig`."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not hasattr(m, "parametrizations"):
            nn.init.normal_(m.weight, 0.0, std)


def tile(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, nz) -> (B, nz, H, W) with the spatial size of `like`."""
    return z[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------
def conv_lrelu(c_in: int, c_out: int, kernel: int, stride: int, pad: int, norm: bool = False,
               spectral: bool = False) -> nn.Sequential:
    """Official LeakyReLUConv2d: reflection pad, conv, [IN], LeakyReLU(0.01)."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, 0)
    layers = [nn.ReflectionPad2d(pad), nn.utils.parametrizations.spectral_norm(conv) if spectral else conv]
    if norm:
        layers.append(nn.InstanceNorm2d(c_out))
    layers.append(nn.LeakyReLU(CONV_SLOPE))
    return nn.Sequential(*layers)


def conv_in_relu(c_in: int, c_out: int, kernel: int, stride: int, pad: int) -> nn.Sequential:
    """Official ReLUINSConv2d: reflection pad, conv, IN (no affine), ReLU."""
    return nn.Sequential(nn.ReflectionPad2d(pad), nn.Conv2d(c_in, c_out, kernel, stride, 0),
                         nn.InstanceNorm2d(c_out), nn.ReLU())


class ResBlockIN(nn.Module):
    """Official INSResBlock: x + IN(conv3x3(ReLU(IN(conv3x3(x))))), reflection padding, no affine."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LayerNorm(nn.Module):
    """Layer norm over (C, H, W) of each sample with a per-channel scale and shift (official, from MUNIT)."""

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1:]
        return F.layer_norm(x, shape, self.weight.expand(shape), self.bias.expand(shape), self.eps)


class GaussianNoise(nn.Module):
    """Adds N(0, 1) noise to the content code while training (identity in eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) if self.training else x


# --------------------------------------------------------------------------------------------------------------------
# Content encoder E_c: per domain c7s1-64, two 3x3 s2 down-samplings, residual blocks; then one shared block + noise
# --------------------------------------------------------------------------------------------------------------------
class ContentEncoder(nn.Module):
    """(B, in_ch, H, W) -> content code (B, 4*dim, H/4, W/4); 256 x 54 x 54 for the official 216 px crop."""

    def __init__(self, in_ch: int, dim: int = 64, n_res: int = 3):
        super().__init__()

        def domain() -> nn.Sequential:
            return nn.Sequential(conv_lrelu(in_ch, dim, 7, 1, 3),
                                 conv_in_relu(dim, 2 * dim, 3, 2, 1),
                                 conv_in_relu(2 * dim, 4 * dim, 3, 2, 1),
                                 *[ResBlockIN(4 * dim) for _ in range(n_res)])

        self.a, self.b = domain(), domain()
        self.shared = nn.Sequential(ResBlockIN(4 * dim), GaussianNoise())
        self.out_ch = 4 * dim

    def forward_a(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.a(x))

    def forward_b(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.b(x))


# --------------------------------------------------------------------------------------------------------------------
# Attribute encoder E_a (E_attr_concat): 4x4 s2 conv, residual down-sampling blocks, global pool, mu / logvar heads
# --------------------------------------------------------------------------------------------------------------------
class DownBlock(nn.Module):
    """Official BasicBlock (norm None): LReLU, conv3x3 c_in->c_in, LReLU, conv3x3 c_in->c_out, avg-pool 2;
    shortcut: avg-pool 2, conv1x1 c_in->c_out."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(ATTR_SLOPE), nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_in, 3),
            nn.LeakyReLU(ATTR_SLOPE), nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class AttributeTower(nn.Module):
    """One domain's attribute encoder: (B, in_ch, H, W) -> mu, logvar, each (B, nz).

    Widths dim * min(max_mult, n) for n = 1..n_blocks+1: 64, 128, 192, 256 officially (216 px: 108, 54, 27, 13 px).
    """

    def __init__(self, in_ch: int, dim: int = 64, n_blocks: int = 3, max_mult: int = 4, nz: int = 8):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, dim, 4, 2, 0)]
        for n in range(1, n_blocks + 1):
            layers.append(DownBlock(dim * min(max_mult, n), dim * min(max_mult, n + 1)))
        layers += [nn.LeakyReLU(ATTR_SLOPE), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        width = dim * min(max_mult, n_blocks + 1)
        self.fc_mu = nn.Linear(width, nz)
        self.fc_logvar = nn.Linear(width, nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.fc_mu(h), self.fc_logvar(h)


class AttributeEncoder(nn.Module):
    def __init__(self, in_ch: int, dim: int = 64, n_blocks: int = 3, max_mult: int = 4, nz: int = 8):
        super().__init__()
        self.a = AttributeTower(in_ch, dim, n_blocks, max_mult, nz)
        self.b = AttributeTower(in_ch, dim, n_blocks, max_mult, nz)

    def forward_a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x)

    def forward_b(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.b(x)


# --------------------------------------------------------------------------------------------------------------------
# Generator G (G_concat): shared residual block, then per domain z concatenated before every stage
# --------------------------------------------------------------------------------------------------------------------
def up_ln_relu(c_in: int, c_out: int) -> nn.Sequential:
    """Official ReLUINSConvTranspose2d: ConvTranspose 3x3 s2 (x2 size), layer norm, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=1), LayerNorm(c_out), nn.ReLU())


class ConcatDecoder(nn.Module):
    """One domain's decoder. Official channels: [256 | z 8] -> 3 res blocks at 264 -> [264 | 8] -> up 136 ->
    [136 | 8] -> up 72 -> [72 | 8] -> 1x1 ConvTranspose -> out_ch, Tanh."""

    def __init__(self, content_ch: int, nz: int, n_res: int, out_ch: int):
        super().__init__()
        ch = content_ch + nz
        self.res = nn.Sequential(*[ResBlockIN(ch) for _ in range(n_res)])
        self.up1 = up_ln_relu(ch + nz, (ch + nz) // 2)
        ch = (ch + nz) // 2
        self.up2 = up_ln_relu(ch + nz, (ch + nz) // 2)
        ch = (ch + nz) // 2
        self.out = nn.Sequential(nn.ConvTranspose2d(ch + nz, out_ch, 1, 1, 0), nn.Tanh())

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.res(torch.cat([x, tile(z, x)], 1))
        x = self.up1(torch.cat([x, tile(z, x)], 1))
        x = self.up2(torch.cat([x, tile(z, x)], 1))
        return self.out(torch.cat([x, tile(z, x)], 1))


class Generator(nn.Module):
    """(content (B, content_ch, h, w), attribute z (B, nz)) -> image (B, out_ch, 4h, 4w) in [-1, 1]."""

    def __init__(self, out_ch: int, content_ch: int = 256, nz: int = 8, n_res: int = 3):
        super().__init__()
        self.shared = ResBlockIN(content_ch)
        self.a = ConcatDecoder(content_ch, nz, n_res, out_ch)
        self.b = ConcatDecoder(content_ch, nz, n_res, out_ch)

    def forward_a(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(self.shared(content), z)

    def forward_b(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.b(self.shared(content), z)


# --------------------------------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------------------------------
class MultiScaleDiscriminator(nn.Module):
    """Official MultiScaleDis: n_scales PatchGANs of n_layers 4x4 s2 conv + LReLU(0.01) (64, 128, 256, 512), no
    norm, 1x1 conv to one logit map; the input is average-pooled (3x3 s2) between scales. Returns a list of logits."""

    def __init__(self, in_ch: int, dim: int = 64, n_layers: int = 4, n_scales: int = 3, spectral: bool = False):
        super().__init__()

        def patch() -> nn.Sequential:
            layers, ch = [conv_lrelu(in_ch, dim, 4, 2, 1, spectral=spectral)], dim
            for _ in range(1, n_layers):
                layers.append(conv_lrelu(ch, 2 * ch, 4, 2, 1, spectral=spectral))
                ch *= 2
            last = nn.Conv2d(ch, 1, 1)
            layers.append(nn.utils.parametrizations.spectral_norm(last) if spectral else last)
            return nn.Sequential(*layers)

        self.scales = nn.ModuleList([patch() for _ in range(n_scales)])
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.down(x)
            out.append(d(x))
        return out


def content_dis_out_size(content_size: int, n_down: int) -> int:
    """Spatial side of the content discriminator's output for a content code of side `content_size` (0 = too
    small: a reflection pad needs a side >= 2 and the final 4x4 valid conv a side >= 4)."""
    s = content_size
    for _ in range(n_down):
        if s < 2:
            return 0
        s = (s + 2 - 7) // 2 + 1
    return s - 3 if s >= 4 else 0


class ContentDiscriminator(nn.Module):
    """Official Dis_content on the content code: n_down x (7x7 s2 conv, LReLU 0.01), 4x4 valid conv + LReLU, 1x1 conv
    -> logits, flattened to (B * h * w,). Official: 3 down-samplings, 256 channels (54 -> 25 -> 11 -> 4 -> 1 at 216 px).
    `norm` adds the instance norm the official call site asks for but its LeakyReLUConv2d never applies."""

    def __init__(self, ch: int = 256, n_down: int = 3, norm: bool = False):
        super().__init__()
        layers = [conv_lrelu(ch, ch, 7, 2, 1, norm=norm) for _ in range(n_down)]
        layers += [conv_lrelu(ch, ch, 4, 1, 0), nn.Conv2d(ch, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
