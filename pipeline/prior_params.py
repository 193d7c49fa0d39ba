"""The `prior` section of params.yaml: the frozen CheXNet-style classifier used by CDAM and the cxr-densenet FID.

Defaults are the `paper` profile. cpu/ci profiles set input_size to the data resolution (64 px: 1024x2x2 features)
and a few hundred / a few iterations so the stage runs in about a minute / a second on 2 CPU cores.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.schema import param


@dataclass
class PriorParams:
    weights: str = param("", doc="local CheXNet or torchxrayvision DenseNet-121 checkpoint; empty = train our own")
    input_size: int = param(256, min=64, max=1024, source="assumed",
                            doc="prior input side; 256 gives the paper's 1024x8x8 feature map (224 -> 7x7, "
                                "64 -> 2x2); below 64 the map is 1x1 and Eq. 5's instance norm is identically 0")
    dataset: str = param("drr", doc="dataset under data/ whose train split trains the prior and test split scores it")
    iterations: int = param(20_000, min=1, source="assumed",
                            doc="training iterations of our own prior (CheXNet: ~16 epochs of 78k images at batch "
                                "16 = 78k it from ImageNet weights; we train from scratch on a smaller set)")
    batch_size: int = param(16, min=1, source="assumed", doc="images per iteration (CheXNet: 16)")
    lr: float = param(1e-3, min=0.0, source="assumed", doc="Adam learning rate, betas (0.9, 0.999) (CheXNet: 1e-3)")
    weight_decay: float = param(0.0, min=0.0, source="assumed", doc="Adam weight decay")
    crop_scale: float = param(0.9, min=0.1, max=1.0, source="assumed",
                              doc="random crop side as a fraction of the image side before the resize")
    seed: int = param(0, min=0, doc="seed of the prior's initialisation and batches")
