"""Networks of the proposed method: a mask-emitting generator and the multi-scale LSGAN discriminator.

The paper gives no layers. We follow ACL-GAN (whose adversarial loss and tanh-mask "focus" blending the paper
adopts), i.e. the MUNIT AdaIN generator with one extra output channel for the activation mask, and MUNIT's
multi-scale discriminator. `adain=False` turns the generator into a deterministic ResNet encoder-decoder (same
layers, instance norm instead of AdaIN, no style). Shapes below are for dim=64, n_downsample=2 and a 512x512 input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """MUNIT's layer norm for the upsampling path: per sample over (C, H, W), then a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(channels))  # MUNIT initialises gamma ~ U[0, 1)
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[1:], eps=self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def conv_block(c_in: int, c_out: int, kernel: int, stride: int, norm: str = "in", act: str = "relu") -> nn.Sequential:
    """Reflect-padded conv -> norm ('in' | 'ln' | 'none') -> activation ('relu' | 'lrelu' | 'tanh' | 'none')."""
    # (kernel - 1) // 2 reflect padding: 7 -> 3, 5 -> 2, 3 -> 1 and 4 -> 1 (MUNIT's 4x4 stride-2 convs)
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2,
                                         padding_mode="reflect")]
    if norm == "in":
        layers.append(nn.InstanceNorm2d(c_out))
    elif norm == "ln":
        layers.append(LayerNorm2d(c_out))
    layers.append({"relu": nn.ReLU(inplace=True), "lrelu": nn.LeakyReLU(0.2, inplace=True), "tanh": nn.Tanh(),
                   "none": nn.Identity()}[act])
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """x + [conv3 -> IN (+ AdaIN affine) -> ReLU -> conv3 -> IN (+ AdaIN affine)]."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1, padding_mode="reflect")

    def forward(self, x: torch.Tensor, adain: torch.Tensor | None = None) -> torch.Tensor:
        """adain: (B, 4 * dim) = (gamma1, beta1, gamma2, beta2) from the style MLP, or None (plain IN)."""
        h = F.instance_norm(self.conv1(x))
        if adain is not None:
            g1, b1, g2, b2 = (t[:, :, None, None] for t in adain.chunk(4, dim=1))
            h = h * g1 + b1
        h = F.instance_norm(self.conv2(F.relu(h)))
        if adain is not None:
            h = h * g2 + b2
        return x + h


class StyleEncoder(nn.Module):
    """Image -> style code (B, style_dim): c7s1-dim, two stride-2 convs doubling, two more at that width, GAP, 1x1."""

    def __init__(self, in_channels: int, dim: int, style_dim: int, n_downsample: int = 4):
        super().__init__()
        layers = [conv_block(in_channels, dim, 7, 1, norm="none")]
        for i in range(n_downsample):
            c_out = dim * 2 if i < 2 else dim
            layers.append(conv_block(dim, c_out, 4, 2, norm="none"))
            dim = c_out
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class MaskGenerator(nn.Module):
    """G_A or G_B. x (B, C, H, W) in [-1, 1] -> (image (B, C, H, W), mask (B, 1, H, W)), both tanh in [-1, 1].

    content encoder: c7s1-dim (512^2) -> n_downsample x [4x4 s2, doubling] (256^2x128, 128^2x256) -> n_res ResBlocks
    decoder: n_res ResBlocks (AdaIN from style MLP, or IN) -> n_downsample x [nearest x2, 5x5 conv halving, LN]
             -> 7x7 conv to C + 1 channels (image, mask), tanh. The mask is min-max normalised by the caller (Eq. 1).
    """

    def __init__(self, in_channels: int = 1, dim: int = 64, n_downsample: int = 2, n_res: int = 4,
                 style_dim: int = 8, mlp_dim: int = 256, adain: bool = True):
        super().__init__()
        self.in_channels, self.style_dim, self.adain = in_channels, style_dim, adain
        base_dim = dim
        enc = [conv_block(in_channels, dim, 7, 1)]
        for _ in range(n_downsample):
            enc.append(conv_block(dim, dim * 2, 4, 2))
            dim *= 2
        self.encoder = nn.Sequential(*enc)
        self.encoder_res = nn.ModuleList(ResBlock(dim) for _ in range(n_res))
        self.decoder_res = nn.ModuleList(ResBlock(dim) for _ in range(n_res))
        self.res_dim = dim
        up = []
        for _ in range(n_downsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), conv_block(dim, dim // 2, 5, 1, norm="ln")]
            dim //= 2
        self.upsample = nn.Sequential(*up)
        self.to_output = conv_block(dim, in_channels + 1, 7, 1, norm="none", act="tanh")
        if adain:
            self.style_encoder = StyleEncoder(in_channels, base_dim, style_dim)
            n_adain = 4 * self.res_dim * n_res  # gamma, beta for both convs of every decoder ResBlock
            self.mlp = nn.Sequential(nn.Linear(style_dim, mlp_dim), nn.ReLU(inplace=True),
                                     nn.Linear(mlp_dim, mlp_dim), nn.ReLU(inplace=True), nn.Linear(mlp_dim, n_adain))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Content code (B, res_dim, H / 2^n, W / 2^n)."""
        h = self.encoder(x)
        for block in self.encoder_res:
            h = block(h)
        return h

    def style_of(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.style_encoder(x) if self.adain else None

    def random_style(self, x: torch.Tensor) -> torch.Tensor | None:
        """z ~ N(0, I) (B, style_dim) from the global RNG (ACL-GAN's per-translation noise); None without AdaIN."""
        if not self.adain:
            return None
        return torch.randn(x.shape[0], self.style_dim, device=x.device)

    def decode(self, content: torch.Tensor, style: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.mlp(style).chunk(len(self.decoder_res), dim=1) if self.adain else [None] * len(self.decoder_res)
        h = content
        for block, p in zip(self.decoder_res, params):
            h = block(h, p)
        out = self.to_output(self.upsample(h))
        return out[:, :self.in_channels], out[:, self.in_channels:]

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.adain and style is None:
            style = self.random_style(x)
        return self.decode(self.encode(x), style)


class MultiScaleDiscriminator(nn.Module):
    """LSGAN patch discriminator at num_scales scales (input, /2, /4 by 3x3 average pooling), as MUNIT/ACL-GAN.

    Each scale: 4x4 s2 conv dim + LReLU, (n_layer - 1) x [4x4 s2 conv doubling + LReLU], 1x1 conv -> 1 channel.
    forward returns one score map per scale.
    """

    def __init__(self, in_channels: int, dim: int = 64, n_layer: int = 4, num_scales: int = 3):
        super().__init__()
        self.scales = nn.ModuleList(self._one_scale(in_channels, dim, n_layer) for _ in range(num_scales))

    @staticmethod
    def _one_scale(in_channels: int, dim: int, n_layer: int) -> nn.Sequential:
        layers = [conv_block(in_channels, dim, 4, 2, norm="none", act="lrelu")]
        for _ in range(n_layer - 1):
            layers.append(conv_block(dim, dim * 2, 4, 2, norm="none", act="lrelu"))
            dim *= 2
        return nn.Sequential(*layers, nn.Conv2d(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, net in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs


def init_weights(module: nn.Module, kind: str) -> None:
    """ACL-GAN/MUNIT init: 'kaiming' (generators: kaiming-normal fan-in) or 'gaussian' (discriminators: N(0, 0.02));
    biases 0. Norm layers keep their own init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
