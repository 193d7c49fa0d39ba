"""CycleGAN defaults = the official values (junyanz/pytorch-CycleGAN-and-pix2pix, `options/*.py`,
`models/cycle_gan_model.py`). Every modification for this suite is listed in README.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.schema import param


@dataclass
class CycleGANConfig:
    batch_size: int = param(1, min=1, source="official", doc="images per domain per step (--batch_size 1)")
    # networks
    ngf: int = param(64, min=1, source="official", doc="generator width of the last conv layer (--ngf)")
    ndf: int = param(64, min=1, source="official", doc="discriminator width of the first conv layer (--ndf)")
    n_blocks: int = param(9, min=0, source="official", doc="residual blocks (--netG resnet_9blocks)")
    n_layers_d: int = param(3, min=1, source="official", doc="PatchGAN conv layers (--netD basic = 3: 70x70 field)")
    norm: Literal["instance", "batch", "none"] = param("instance", source="official", doc="--norm")
    use_dropout: bool = param(False, source="official", doc="dropout in residual blocks (--no_dropout for CycleGAN)")
    padding: Literal["reflect", "replicate", "zero"] = param("reflect", source="official",
                                                              doc="residual-block padding")
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = param("normal", source="official",
                                                                            doc="--init_type")
    init_gain: float = param(0.02, min=0.0, source="official", doc="--init_gain: std of N(0, gain)")
    # losses
    gan_mode: Literal["lsgan", "vanilla", "wgangp"] = param("lsgan", source="official", doc="--gan_mode")
    lambda_a: float = param(10.0, min=0.0, source="official", doc="cycle L1 weight A->B->A (--lambda_A)")
    lambda_b: float = param(10.0, min=0.0, source="official", doc="cycle L1 weight B->A->B (--lambda_B)")
    lambda_identity: float = param(0.5, min=0.0, source="official",
                                   doc="identity L1 weight relative to lambda_a/b (--lambda_identity)")
    pool_size: int = param(50, min=0, source="official", doc="image buffer of past fakes for D (--pool_size)")
    # optimisation
    lr: float = param(2e-4, min=0.0, source="official", doc="Adam learning rate for G and D (--lr)")
    beta1: float = param(0.5, min=0.0, max=1.0, source="official", doc="Adam beta1 (--beta1)")
    beta2: float = param(0.999, min=0.0, max=1.0, source="official", doc="Adam beta2 (hard-coded upstream)")
    decay_start_fraction: float = param(0.5, min=0.0, max=1.0, source="official",
                                        doc="fraction of iterations at constant lr before the linear decay to 0 "
                                            "(upstream: --n_epochs 100 + --n_epochs_decay 100)")

