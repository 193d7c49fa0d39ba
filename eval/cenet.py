"""CE-Net: context encoder network for 2D medical image segmentation (Gu et al., IEEE TMI 38, 2019).

Not in segmentation-models-pytorch, so written here from the paper (Fig. 1-4):
encoder = ResNet-34 (torchvision, weights=None, 1-channel stem), context extractor = DAC block + RMP block, decoder =
four decoder blocks with skip additions, then a transposed convolution back to the input size.

Shapes for a (B, 1, 256, 256) input: stem -> 64 x 64 x 64, layer1 64 x 64^2, layer2 128 x 32^2, layer3 256 x 16^2,
layer4 512 x 8^2; DAC keeps 512 x 8^2; RMP -> 516 x 8^2; decoders 256 x 16^2, 128 x 32^2, 64 x 64^2, 64 x 128^2;
head -> classes x 256^2. Any input side divisible by 32 works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DACBlock(nn.Module):
    """Dense atrous convolution (paper Fig. 3): four cascade branches of 3x3 atrous convolutions, rates 1, 3, 5.

    Branch receptive fields 3, 7, 9, 19: [r1], [r3 -> 1x1], [r1 -> r3 -> 1x1], [r1 -> r3 -> r5 -> 1x1]. The atrous
    convolutions of one rate (and the 1x1 convolution) are shared between branches, so the block stays light; every
    branch is ReLU'd and the four are summed with the input (a residual connection). Shape-preserving: (B, C, h, w).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.rate1 = nn.Conv2d(channels, channels, 3, padding=1, dilation=1)
        self.rate3 = nn.Conv2d(channels, channels, 3, padding=3, dilation=3)
        self.rate5 = nn.Conv2d(channels, channels, 3, padding=5, dilation=5)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r1 = self.rate1(x)
        branch1 = F.relu(r1)
        branch2 = F.relu(self.project(self.rate3(x)))
        r13 = self.rate3(r1)
        branch3 = F.relu(self.project(r13))
        branch4 = F.relu(self.project(self.rate5(r13)))
        return x + branch1 + branch2 + branch3 + branch4


class RMPBlock(nn.Module):
    """Residual multi-kernel pooling (paper Fig. 4): max-pools with kernels 2, 3, 5, 6 (stride = kernel), each reduced
    to one channel by a shared 1x1 convolution, upsampled (bilinear) to the input size and concatenated in front of the
    input: (B, C, h, w) -> (B, C + 4, h, w).

    A kernel larger than the feature map (small inputs, e.g. 64 px -> 2x2 at the bottleneck) is clamped to the map
    size, which pools the whole map (the paper's 448 px input never reaches that case).
    """

    kernels = (2, 3, 5, 6)

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        maps = []
        for k in self.kernels:
            kh, kw = min(k, h), min(k, w)
            pooled = F.max_pool2d(x, kernel_size=(kh, kw), stride=(kh, kw))
            maps.append(F.interpolate(self.reduce(pooled), size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(maps + [x], dim=1)


class DecoderBlock(nn.Module):
    """1x1 conv (C -> C/4), 3x3 transposed conv stride 2 (x2 upsampling), 1x1 conv (C/4 -> out); BN + ReLU
    after each."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = in_channels // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CENet(nn.Module):
    """(B, in_channels, H, W) -> logits (B, classes, H, W); H, W divisible by 32."""

    def __init__(self, in_channels: int = 1, classes: int = 1):
        super().__init__()
        from torchvision.models import resnet34  # lazy: ~2 s to import

        backbone = resnet34(weights=None)  # offline: no ImageNet weights
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), backbone.bn1,
                                  backbone.relu, backbone.maxpool)  # /4
        self.layer1, self.layer2 = backbone.layer1, backbone.layer2  # 64 /4, 128 /8
        self.layer3, self.layer4 = backbone.layer3, backbone.layer4  # 256 /16, 512 /32
        self.dac = DACBlock(512)
        self.rmp = RMPBlock(512)
        self.decoder4 = DecoderBlock(512 + 4, 256)
        self.decoder3 = DecoderBlock(256, 128)
        self.decoder2 = DecoderBlock(128, 64)
        self.decoder1 = DecoderBlock(64, 64)
        self.head = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(32, classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.layer1(self.stem(x))
        e2 = self.layer2(e1)
        e3 = self.layer3(e2)
        e4 = self.rmp(self.dac(self.layer4(e3)))
        d4 = self.decoder4(e4) + e3  # skip connections are additions (paper Fig. 1)
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)  # /2
        return self.head(d1)  # /1
