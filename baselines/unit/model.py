"""UNIT (Liu, Breuel, Kautz, "Unsupervised Image-to-Image Translation Networks", NeurIPS 2017) as trained by the
maintained code, mingyuliutw/UNIT master (`trainer.py: UNIT_Trainer`,
`configs/unit_summer2winter_yosemite256_folder.yaml`).

Objective (paper Sec. 3, VAE + GAN + cycle-consistency terms; weights of the master configs):
    G: gan_w * [LSGAN(D_a(x_ba)) + LSGAN(D_b(x_ab))]
       + recon_x_w * (|x_aa - x_a|_1 + |x_bb - x_b|_1)           VAE likelihood term, L1
       + recon_kl_w * (mean(h_a^2) + mean(h_b^2))                 VAE KL term, unit-variance posterior
       + recon_x_cyc_w * (|x_aba - x_a|_1 + |x_bab - x_b|_1)     cycle-consistency likelihood
       + recon_kl_cyc_w * (mean(h_ab^2) + mean(h_ba^2))           cycle-consistency KL
    D: gan_w * sum over 3 scales of mean((D(real) - 1)^2) + mean(D(fake)^2)
with z = h + N(0, I) during training (the reduced VAE) and x_ab = G_b(z_a), x_aa = G_a(z_a), h_ab = E_b(x_ab),
x_aba = G_a(h_ab + N(0, I)). Each iteration updates D first, then G (official order). No VGG loss (vgg_w 0).
Domain A = opacity, B = normal.
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

from .networks import MsImageDis, VAEGen, discriminator_loss, generator_loss, init_weights


@dataclass
class UNITConfig:
    """Defaults = mingyuliutw/UNIT master, configs/unit_summer2winter_yosemite256_folder.yaml."""

    batch_size: int = param(1, min=1, source="official", doc="images per domain per step (config batch_size)")
    # generator (config `gen:`)
    dim: int = param(64, min=1, source="official", doc="width of the first generator conv (gen.dim)")
    n_downsample: int = param(2, min=1, max=4, source="official",
                              doc="stride-2 convs in the encoder (gen.n_downsample)")
    n_res: int = param(4, min=1, source="official", doc="residual blocks in encoder and in decoder (gen.n_res)")
    share_layers: bool = param(False, source="paper",
                               doc="paper variant (branch version_02): the last encoder residual block and the first "
                                   "decoder residual block are shared by both domains; master shares nothing")
    # discriminator (config `dis:`)
    dis_dim: int = param(64, min=1, source="official", doc="width of the first D conv (dis.dim)")
    dis_n_layer: int = param(4, min=1, source="official", doc="stride-2 convs per scale (dis.n_layer)")
    dis_num_scales: int = param(3, min=1, source="official", doc="scales of the multi-scale D (dis.num_scales)")
    gan_type: Literal["lsgan", "nsgan"] = param("lsgan", source="official", doc="dis.gan_type")
    # loss weights
    gan_w: float = param(1.0, min=0, source="official", doc="adversarial loss weight")
    recon_x_w: float = param(10.0, min=0, source="official", doc="within-domain reconstruction (L1) weight")
    recon_kl_w: float = param(0.01, min=0, source="official", doc="KL weight, mean(h^2) of the encoder output")
    recon_x_cyc_w: float = param(10.0, min=0, source="official", doc="cycle reconstruction (L1) weight")
    recon_kl_cyc_w: float = param(0.01, min=0, source="official", doc="KL weight on the re-encoded translations")
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


def _min_image_size(cfg: UNITConfig) -> int:
    """Smallest side the D accepts: the coarsest scale must still be >= 2 px before its last 4x4 s2 conv (the
    reflection pad of 1 needs 2 px), i.e. size / 2^(num_scales - 1) / 2^(n_layer - 1) >= 2."""
    return 2 ** (cfg.dis_num_scales + cfg.dis_n_layer - 1)


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


def real_fake_outputs(dis: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """One D pass over [real; fake] -> (outputs on real, outputs on fake), per scale. The D has no batch statistics,
    so this equals two passes (the official code) with half the kernel launches."""
    n = real.shape[0]
    outs = dis(torch.cat([real, fake]))
    return [o[:n] for o in outs], [o[n:] for o in outs]


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(a.float() - b.float()))


def kl_unit_gaussian(h: torch.Tensor) -> torch.Tensor:
    """KL(N(h, I) || N(0, I)) up to constants and scale, as the official `__compute_kl`: mean(h^2)."""
    return torch.mean(h.float() ** 2)


class UNIT(Translator):
    name = "unit"
    Config = UNITConfig
    has_mask = False

    def __init__(self, cfg: UNITConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        if image_size < _min_image_size(cfg) or image_size % 2 ** cfg.n_downsample:
            raise ValueError(f"unit: image_size {image_size} needs to be >= {_min_image_size(cfg)} and divisible by "
                             f"{2 ** cfg.n_downsample}; raise data.resolution or lower methods.unit.dis_num_scales")
        self.gen_a = VAEGen(in_channels, cfg.dim, cfg.n_downsample, cfg.n_res)  # opacity auto-encoder
        self.gen_b = VAEGen(in_channels, cfg.dim, cfg.n_downsample, cfg.n_res)  # normal auto-encoder
        self.dis_a = MsImageDis(in_channels, cfg.dis_dim, cfg.dis_n_layer, cfg.dis_num_scales)
        self.dis_b = MsImageDis(in_channels, cfg.dis_dim, cfg.dis_n_layer, cfg.dis_num_scales)
        init_weights(self.gen_a, cfg.init)
        init_weights(self.gen_b, cfg.init)
        init_weights(self.dis_a, "gaussian")
        init_weights(self.dis_b, "gaussian")
        if cfg.share_layers:
            # paper / branch version_02 weight sharing (exps/unit/synthia2cityscape.yaml: 3 private + 1 shared encoder
            # residual blocks, 1 shared + 3 private decoder blocks): the highest encoder block and the first decoder
            # block are the same module in both generators, so depth stays 4 + 4 as on master.
            self.gen_b.enc.res[-1] = self.gen_a.enc.res[-1]
            self.gen_b.dec.res[0] = self.gen_a.dec.res[0]

    # --- training ------------------------------------------------------------------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        """Both generators' parameters, each once (shared blocks appear in both modules)."""
        return list(dict.fromkeys(chain(self.gen_a.parameters(), self.gen_b.parameters())))

    def configure_optimizers(self, total_iterations: int):
        c = self.cfg
        adam = dict(lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay)
        self.opt_g = torch.optim.Adam(self.generator_parameters(), **adam)
        self.opt_d = torch.optim.Adam(chain(self.dis_a.parameters(), self.dis_b.parameters()), **adam)
        step_size = max(1, round(c.lr_step_fraction * total_iterations))
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, step_size=step_size, gamma=c.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, step_size=step_size, gamma=c.lr_gamma)
        return {"gen": self.opt_g, "dis": self.opt_d}, {"gen": self.sched_g, "dis": self.sched_d}

    def train_step(self, real_a, real_b, step, ctx):
        c = self.cfg
        n = real_a.shape[0]
        # Generator forward, shared by the D and the G update (G's weights do not change in between; the official
        # trainer runs it twice with fresh noise, which is the same in distribution). Each decoder decodes its
        # within-domain and its cross-domain code as one batch: every norm is per sample, so this is exact.
        h_a, h_b = self.gen_a.encode(real_a), self.gen_b.encode(real_b)
        z_a, z_b = h_a + torch.randn_like(h_a), h_b + torch.randn_like(h_b)
        recon_a, fake_ba = self.gen_a.decode(torch.cat([z_a, z_b])).split(n)
        recon_b, fake_ab = self.gen_b.decode(torch.cat([z_b, z_a])).split(n)

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
        loss_recon = l1(recon_a, real_a) + l1(recon_b, real_b)
        loss_kl = kl_unit_gaussian(h_a) + kl_unit_gaussian(h_b)
        loss = c.gan_w * loss_adv + c.recon_x_w * loss_recon + c.recon_kl_w * loss_kl
        losses = {"dis": loss_dis.detach(), "gen_adv": loss_adv.detach(), "gen_recon_x": loss_recon.detach(),
                  "gen_kl": loss_kl.detach()}
        if c.recon_x_cyc_w > 0 or c.recon_kl_cyc_w > 0:
            h_ab, h_ba = self.gen_b.encode(fake_ab), self.gen_a.encode(fake_ba)  # official h_a_recon, h_b_recon
            loss_kl_cyc = kl_unit_gaussian(h_ab) + kl_unit_gaussian(h_ba)
            loss = loss + c.recon_kl_cyc_w * loss_kl_cyc
            losses["gen_kl_cyc"] = loss_kl_cyc.detach()
            if c.recon_x_cyc_w > 0:
                cyc_a = self.gen_a.decode(h_ab + torch.randn_like(h_ab))
                cyc_b = self.gen_b.decode(h_ba + torch.randn_like(h_ba))
                loss_cyc = l1(cyc_a, real_a) + l1(cyc_b, real_b)
                loss = loss + c.recon_x_cyc_w * loss_cyc
                losses["gen_cyc_x"] = loss_cyc.detach()
        ctx.backward(loss)
        self.opt_g.step()
        losses["gen_total"] = loss.detach()
        return losses

    # --- inference: the posterior mean, no noise (official `forward`/`sample`) -------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        return Translation(self.gen_b.decode(self.gen_a.encode(x)).float().clamp(-1, 1))

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        return Translation(self.gen_a.decode(self.gen_b.encode(x)).float().clamp(-1, 1))

    def inference_modules(self) -> list[str]:
        return ["gen_a", "gen_b"]
