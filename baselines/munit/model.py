"""MUNIT (Huang, Liu, Belongie, Kautz, "Multimodal Unsupervised Image-to-Image Translation", ECCV 2018) as trained
by the official code, NVlabs/MUNIT (`trainer.py: MUNIT_Trainer`, `configs/summer2winter_yosemite256_folder.yaml`).

Objective (paper Sec. 3.2: image reconstruction, latent reconstruction, adversarial; the explicit style-augmented
cycle term is the official `recon_x_cyc_w`, 10 in summer2winter and 0 in edges2shoes):
    (c_a, s_a') = E_a(x_a), s_b ~ N(0, I), x_ab = G_b(c_a, s_b), (c_ab, s_ab) = E_b(x_ab), x_aba = G_a(c_ab, s_a')
    G: gan_w * [LSGAN(D_b(x_ab)) + LSGAN(D_a(x_ba))]
       + recon_x_w * (|G_a(c_a, s_a') - x_a|_1 + ...b)            image reconstruction
       + recon_c_w * (|c_ab - c_a|_1 + ...b)                       content reconstruction (c_a not detached)
       + recon_s_w * (|s_ab - s_b|_1 + ...a)                       style reconstruction
       + recon_x_cyc_w * (|x_aba - x_a|_1 + ...b)                  style-augmented cycle
    D: gan_w * sum over 3 scales of mean((D(real) - 1)^2) + mean(D(fake)^2)
Each iteration updates D first, then G (official order). No VGG loss (vgg_w 0). Domain A = opacity, B = normal.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import torch
from torch import nn

from pipeline.contract import Translation, Translator
from pipeline.schema import param

from .networks import AdaINGen, MsImageDis, discriminator_loss, generator_loss, init_weights


@dataclass
class MUNITConfig:
    """Defaults = NVlabs/MUNIT configs/summer2winter_yosemite256_folder.yaml (recon_x_cyc_w 10)."""

    batch_size: int = param(1, min=1, source="official", doc="images per domain per step (config batch_size)")
    # generator (config `gen:`)
    dim: int = param(64, min=1, source="official", doc="width of the first generator conv (gen.dim)")
    style_dim: int = param(8, min=1, source="official", doc="length of the style code (gen.style_dim)")
    mlp_dim: int = param(256, min=1, source="official", doc="hidden width of the AdaIN-parameter MLP (gen.mlp_dim)")
    n_downsample: int = param(2, min=1, max=4, source="official",
                              doc="stride-2 convs in the content encoder (gen.n_downsample)")
    n_res: int = param(4, min=1, source="official", doc="residual blocks in content encoder and decoder (gen.n_res)")
    # discriminator (config `dis:`)
    dis_dim: int = param(64, min=1, source="official", doc="width of the first D conv (dis.dim)")
    dis_n_layer: int = param(4, min=1, source="official", doc="stride-2 convs per scale (dis.n_layer)")
    dis_num_scales: int = param(3, min=1, source="official", doc="scales of the multi-scale D (dis.num_scales)")
    gan_type: Literal["lsgan", "nsgan"] = param("lsgan", source="official", doc="dis.gan_type")
    # loss weights
    gan_w: float = param(1.0, min=0, source="official", doc="adversarial loss weight")
    recon_x_w: float = param(10.0, min=0, source="official", doc="image reconstruction (L1) weight")
    recon_s_w: float = param(1.0, min=0, source="official", doc="style reconstruction (L1) weight")
    recon_c_w: float = param(1.0, min=0, source="official", doc="content reconstruction (L1) weight")
    recon_x_cyc_w: float = param(10.0, min=0, source="official",
                                 doc="explicit style-augmented cycle weight (summer2winter 10; edges2shoes 0)")
    # optimisation
    lr: float = param(1e-4, min=0, source="official", doc="Adam learning rate, G and D")
    beta1: float = param(0.5, min=0, max=1, source="official", doc="Adam beta1")
    beta2: float = param(0.999, min=0, max=1, source="official", doc="Adam beta2")
    weight_decay: float = param(1e-4, min=0, source="official", doc="Adam (L2) weight decay")
    lr_step_fraction: float = param(0.1, min=0, max=1, source="official",
                                    doc="StepLR period as a fraction of the iterations (official 100k of 1M)")
    lr_gamma: float = param(0.5, min=0, max=1, source="official", doc="StepLR decay factor")
    init: Literal["kaiming", "gaussian", "xavier", "orthogonal"] = param(
        "kaiming", source="official",
        doc="generator init (config init); D always N(0, 0.02) as in the official trainer")


def _min_image_size(cfg: MUNITConfig) -> int:
    """Smallest side the D accepts: the coarsest scale must still be >= 2 px before its last 4x4 s2 conv (the
    reflection pad of 1 needs 2 px), i.e. size / 2^(num_scales - 1) / 2^(n_layer - 1) >= 2. The style encoder's four
    stride-2 convs need >= 16 px."""
    return max(16, 2 ** (cfg.dis_num_scales + cfg.dis_n_layer - 1))


# Copied from baselines.unit.model.frozen
@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Skip weight gradients of the discriminators during the G update (they are discarded anyway)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# Copied from baselines.unit.model.real_fake_outputs
def real_fake_outputs(dis: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """One D pass over [real; fake] -> (outputs on real, outputs on fake), per scale. The D has no batch statistics,
    so this equals two passes (the official code) with half the kernel launches."""
    n = real.shape[0]
    outs = dis(torch.cat([real, fake]))
    return [o[:n] for o in outs], [o[n:] for o in outs]


# Copied from baselines.unit.model.l1
def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(a.float() - b.float()))


class MUNIT(Translator):
    name = "munit"
    Config = MUNITConfig
    has_mask = False

    def __init__(self, cfg: MUNITConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        if image_size < _min_image_size(cfg) or image_size % 2 ** cfg.n_downsample:
            raise ValueError(f"munit: image_size {image_size} needs to be >= {_min_image_size(cfg)} and divisible by "
                             f"{2 ** cfg.n_downsample}; raise data.resolution or lower methods.munit.dis_num_scales")
        gen = dict(dim=cfg.dim, style_dim=cfg.style_dim, n_down=cfg.n_downsample, n_res=cfg.n_res, mlp_dim=cfg.mlp_dim)
        self.gen_a = AdaINGen(in_channels, **gen)  # opacity
        self.gen_b = AdaINGen(in_channels, **gen)  # normal
        self.dis_a = MsImageDis(in_channels, cfg.dis_dim, cfg.dis_n_layer, cfg.dis_num_scales)
        self.dis_b = MsImageDis(in_channels, cfg.dis_dim, cfg.dis_n_layer, cfg.dis_num_scales)
        init_weights(self.gen_a, cfg.init)
        init_weights(self.gen_b, cfg.init)
        init_weights(self.dis_a, "gaussian")
        init_weights(self.dis_b, "gaussian")

    def random_style(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """s ~ N(0, I), (n, style_dim), from the global torch RNG (seeded and checkpointed by the engine)."""
        return torch.randn(n, self.cfg.style_dim, device=like.device)

    # --- training ------------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_iterations: int):
        c = self.cfg
        adam = dict(lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay)
        self.opt_g = torch.optim.Adam(chain(self.gen_a.parameters(), self.gen_b.parameters()), **adam)
        self.opt_d = torch.optim.Adam(chain(self.dis_a.parameters(), self.dis_b.parameters()), **adam)
        step_size = max(1, round(c.lr_step_fraction * total_iterations))
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, step_size=step_size, gamma=c.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, step_size=step_size, gamma=c.lr_gamma)
        return {"gen": self.opt_g, "dis": self.opt_d}, {"gen": self.sched_g, "dis": self.sched_d}

    def train_step(self, real_a, real_b, step, ctx):
        c = self.cfg
        n = real_a.shape[0]
        style_a, style_b = self.random_style(n, real_a), self.random_style(n, real_b)
        # Generator forward, shared by the D and the G update (G's weights do not change in between; the official
        # trainer runs it twice with fresh random styles, which is the same in distribution). Each decoder decodes
        # its reconstruction and its translation as one batch: every norm is per sample, so this is exact.
        content_a, style_a_enc = self.gen_a.encode(real_a)
        content_b, style_b_enc = self.gen_b.encode(real_b)
        recon_a, fake_ba = self.gen_a.decode(torch.cat([content_a, content_b]),
                                             torch.cat([style_a_enc, style_a])).split(n)
        recon_b, fake_ab = self.gen_b.decode(torch.cat([content_b, content_a]),
                                             torch.cat([style_b_enc, style_b])).split(n)

        # --- D update (first, as in the official loop)
        self.opt_d.zero_grad(set_to_none=True)
        loss_dis_a = discriminator_loss(*real_fake_outputs(self.dis_a, real_a, fake_ba.detach()), c.gan_type)
        loss_dis_b = discriminator_loss(*real_fake_outputs(self.dis_b, real_b, fake_ab.detach()), c.gan_type)
        loss_dis = c.gan_w * (loss_dis_a + loss_dis_b)
        ctx.backward(loss_dis)
        self.opt_d.step()

        # --- G update
        self.opt_g.zero_grad(set_to_none=True)
        with frozen(self.dis_a, self.dis_b):
            loss_adv = generator_loss(self.dis_a(fake_ba), c.gan_type) + generator_loss(self.dis_b(fake_ab), c.gan_type)
        content_b_rec, style_a_rec = self.gen_a.encode(fake_ba)
        content_a_rec, style_b_rec = self.gen_b.encode(fake_ab)
        loss_x = l1(recon_a, real_a) + l1(recon_b, real_b)
        loss_s = l1(style_a_rec, style_a) + l1(style_b_rec, style_b)
        loss_c = l1(content_a_rec, content_a) + l1(content_b_rec, content_b)
        loss = c.gan_w * loss_adv + c.recon_x_w * loss_x + c.recon_s_w * loss_s + c.recon_c_w * loss_c
        losses = {"dis": loss_dis.detach(), "gen_adv": loss_adv.detach(), "gen_recon_x": loss_x.detach(),
                  "gen_recon_s": loss_s.detach(), "gen_recon_c": loss_c.detach()}
        if c.recon_x_cyc_w > 0:
            # style-augmented cycle: back to the source domain with the source image's own style code
            cyc_a = self.gen_a.decode(content_a_rec, style_a_enc)
            cyc_b = self.gen_b.decode(content_b_rec, style_b_enc)
            loss_cyc = l1(cyc_a, real_a) + l1(cyc_b, real_b)
            loss = loss + c.recon_x_cyc_w * loss_cyc
            losses["gen_cyc_x"] = loss_cyc.detach()
        ctx.backward(loss)
        self.opt_g.step()
        losses["gen_total"] = loss.detach()
        return losses

    # --- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        """Opacity -> normal with a random normal-domain style s ~ N(0, I) per image (the paper's multimodal
        translation; the global torch RNG makes it reproducible under a seed)."""
        content, _ = self.gen_a.encode(x)
        return Translation(self.gen_b.decode(content, self.random_style(x.shape[0], x)).float().clamp(-1, 1))

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        """Normal -> opacity with a random opacity-domain style s ~ N(0, I) per image."""
        content, _ = self.gen_b.encode(x)
        return Translation(self.gen_a.decode(content, self.random_style(x.shape[0], x)).float().clamp(-1, 1))

    @torch.no_grad()
    def translate_with_reference(self, x: torch.Tensor, reference: torch.Tensor) -> Translation:
        """Opacity -> normal with the style encoded from a normal-domain reference image (example-guided
        translation, paper Sec. 3.1); `reference` is (B, 1, H, W) or (1, 1, H, W) for one style for all."""
        content, _ = self.gen_a.encode(x)
        _, style = self.gen_b.encode(reference)
        return Translation(self.gen_b.decode(content, style.expand(x.shape[0], -1)).float().clamp(-1, 1))

    def inference_modules(self) -> list[str]:
        return ["gen_a", "gen_b"]
