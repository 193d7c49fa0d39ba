"""The pixel-wise ViT bottleneck of UVCGAN (LS4GAN/uvcgan, `uvcgan/torch/layers/transformer.py`), reimplemented.

Every pixel of the innermost UNet feature map (C, h, w) is one token (L = h*w tokens; 16x16 = 256 at 256 px, 4x4 at
64 px). Tokens get a Fourier positional embedding (Tancik et al. 2020, arXiv:2011.13775): sin(Linear(2 -> E)) of the
token's (row, column) coordinates normalised to [-1, 1], concatenated to the C features and projected to `features`.
Then `n_blocks` pre-LN transformer blocks with ReZero residual scaling (Bachlechner et al. 2020) and a linear
projection back to C channels.
"""
from __future__ import annotations

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """(h, w) grid -> (1, h*w, E): sin(W [row, col] + b), coordinates normalised as 2 i / (n - 1) - 1."""

    def __init__(self, embed_features: int):
        super().__init__()
        self.projector = nn.Linear(2, embed_features)

    def forward(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        rows = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
        cols = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)  # (h, w, 2), token order = raster
        return torch.sin(self.projector(grid.reshape(1, h * w, 2)))


class TransformerBlock(nn.Module):
    """Pre-LN block with one ReZero scalar alpha (init 0) shared by both residual branches:
    y = x + alpha * MHSA(LN(x));  out = y + alpha * FFN(LN(y)),  FFN = Linear(F -> ffn), GELU, Linear(ffn -> F)."""

    def __init__(self, features: int, ffn_features: int, n_heads: int, rezero: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(features)
        self.attention = nn.MultiheadAttention(features, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(features)
        self.ffn = nn.Sequential(nn.Linear(features, ffn_features), nn.GELU(), nn.Linear(ffn_features, features))
        if rezero:
            self.re_alpha = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("re_alpha", torch.ones(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, L, F)
        y = self.norm1(x)
        y = x + self.re_alpha * self.attention(y, y, y, need_weights=False)[0]
        return y + self.re_alpha * self.ffn(self.norm2(y))


class PixelwiseViT(nn.Module):
    """(N, C, h, w) -> (N, C, h, w). Parameters do not depend on h, w (the embedding is computed per grid)."""

    def __init__(self, in_channels: int, features: int = 384, n_heads: int = 6, n_blocks: int = 12,
                 ffn_features: int = 1536, embed_features: int = 384, rezero: bool = True):
        super().__init__()
        if features % n_heads:
            raise ValueError(f"baselines/uvcgan: vit_features {features} must be divisible by vit_heads {n_heads}")
        self.embed = FourierEmbedding(embed_features)
        self.input = nn.Linear(embed_features + in_channels, features)
        self.blocks = nn.Sequential(*[TransformerBlock(features, ffn_features, n_heads, rezero)
                                      for _ in range(n_blocks)])
        self.output = nn.Linear(features, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, L, C), raster order; flatten copes with channels_last
        embed = self.embed(h, w, x.device, torch.float32).to(tokens.dtype).expand(n, -1, -1)  # (N, L, E)
        y = self.input(torch.cat([embed, tokens], dim=2))  # (N, L, F)
        y = self.output(self.blocks(y))  # (N, L, C)
        return y.transpose(1, 2).reshape(n, c, h, w)
