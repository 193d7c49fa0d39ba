"""UVCGAN v1 defaults = the official values (LS4GAN/uvcgan, `scripts/train/*/cyclegan_*-256.py` with the presets
gen=vit-unet-12, cycle=cycle_high, gp=paper, loss=lsgan, and `scripts/train/*/bert_*-256.py` for pre-training).
Every modification for this suite is listed in README.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.schema import ConfigError, param


@dataclass
class UVCGANConfig:
    batch_size: int = param(1, min=1, source="official", doc="images per domain per translation step")
    # generator: vit-unet-12
    unet_features: list[int] = param(default_factory=lambda: [48, 96, 192, 384], min=1, source="official",
                                     doc="UNet widths per level; the image side must be divisible by 2^levels")
    unet_rezero: bool = param(False, source="official", doc="ReZero scalar on the decoder's upsampled branch "
                                                            "(upstream unet_rezero, not set by the vit-unet presets)")
    vit_features: int = param(384, min=1, source="official", doc="transformer width")
    vit_heads: int = param(6, min=1, source="official", doc="attention heads")
    vit_blocks: int = param(12, min=0, source="official", doc="pre-LN transformer blocks (vit-unet-12)")
    vit_ffn_features: int = param(1536, min=1, source="official", doc="feed-forward hidden width")
    vit_embed_features: int = param(384, min=1, source="official", doc="Fourier positional embedding width")
    vit_rezero: bool = param(True, source="official", doc="ReZero residual scaling in the transformer blocks")
    init_gain: float = param(0.02, min=0.0, source="official", doc="std of the N(0, gain) init of G and D")
    # discriminator: PatchGAN basic with InstanceNorm
    ndf: int = param(64, min=1, source="official", doc="PatchGAN width of the first layer")
    n_layers_d: int = param(3, min=1, source="official", doc="PatchGAN conv layers (basic = 3: 70x70 field)")
    # losses (preset cycle_high, gp paper, loss lsgan)
    gan_mode: Literal["lsgan", "vanilla", "wgan"] = param("lsgan", source="official", doc="GAN objective")
    lambda_a: float = param(10.0, min=0.0, source="official", doc="cycle L1 weight A->B->A")
    lambda_b: float = param(10.0, min=0.0, source="official", doc="cycle L1 weight B->A->B")
    lambda_identity: float = param(0.5, min=0.0, source="official", doc="identity L1 weight relative to lambda_a/b")
    pool_size: int = param(50, min=0, source="official", doc="image buffer of past fakes for D")
    gp_lambda: float = param(0.1 / 100**2, min=0.0, source="official", doc="gradient penalty weight (preset paper)")
    gp_constant: float = param(100.0, min=0.0, source="official", doc="target gradient norm gamma (preset paper)")
    gp_type: Literal["mixed", "real", "fake"] = param("mixed", source="official",
                                                     doc="where the penalty is evaluated: real/fake interpolates")
    # translation optimiser and schedule
    lr_gen: float = param(1e-4, min=0.0, source="official", doc="Adam lr of the generators")
    lr_disc: float = param(1e-4, min=0.0, source="official", doc="Adam lr of the discriminators")
    beta1: float = param(0.5, min=0.0, max=1.0, source="official", doc="Adam beta1")
    beta2: float = param(0.99, min=0.0, max=1.0, source="official", doc="Adam beta2")
    warmup_fraction: float = param(0.5, min=0.0, max=1.0, source="official",
                                   doc="fraction of iterations at constant lr before the linear anneal "
                                       "(upstream: 250 warm-up + 250 anneal epochs)")
    # BERT-like masked pre-training of the generator (joint over both domains)
    pretrain_batch_size: int = param(64, min=1, source="official", doc="images per domain per pre-training step")
    pretrain_base_lr: float = param(5e-3, min=0.0, source="official",
                                    doc="AdamW lr = pretrain_batch_size * pretrain_base_lr / 512")
    pretrain_base_eta_min: float = param(5e-8, min=0.0, source="official",
                                         doc="cosine floor = pretrain_batch_size * pretrain_base_eta_min / 512")
    pretrain_beta1: float = param(0.9, min=0.0, max=1.0, source="official", doc="AdamW beta1")
    pretrain_beta2: float = param(0.99, min=0.0, max=1.0, source="official", doc="AdamW beta2")
    pretrain_weight_decay: float = param(0.05, min=0.0, source="official", doc="AdamW weight decay")
    pretrain_restart_fraction: float = param(500 / 2499, min=0.0, max=1.0, source="official",
                                             doc="CosineAnnealingWarmRestarts period T_0 as a fraction of the "
                                                 "pre-training iterations (upstream T_0 = 500 of 2499 epochs)")
    pretrain_mask_fraction: float = param(0.4, min=0.0, max=1.0, source="official",
                                          doc="probability that a patch is masked")
    pretrain_patch_size: int = param(32, min=1, source="official", doc="masked patch side at 256 px")
    pretrain_patch_scales: bool = param(True, source="assumed",
                                        doc="scale the patch side with the image (32 px at 256 -> 8 at 64, 64 at "
                                            "512), keeping upstream's 8x8 patch grid")

    def validate(self, where: str) -> None:
        if not self.unet_features:
            raise ConfigError(f"{where}.unet_features: give at least one level, e.g. [48, 96, 192, 384]")
        if self.vit_features % self.vit_heads:
            raise ConfigError(f"{where}.vit_features: {self.vit_features} is not divisible by vit_heads "
                              f"{self.vit_heads}")
