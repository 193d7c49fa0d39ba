"""CycleGAN (Zhu et al., ICCV 2017) as a cxrbench translator; follows `models/cycle_gan_model.py` upstream.

Names: G_ab = upstream G_A (A -> B), G_ba = G_B; D_b judges domain B (upstream D_A), D_a judges domain A (D_B).
One iteration (`optimize_parameters`):
  forward   fake_b = G_ab(a), rec_a = G_ba(fake_b), fake_a = G_ba(b), rec_b = G_ab(fake_a)
  G step    Ds frozen (requires_grad False);
            L_G = gan(D_b(fake_b), real) + gan(D_a(fake_a), real)
                + lambda_a |rec_a - a|_1 + lambda_b |rec_b - b|_1                              (paper Eq. 2, 3)
                + lambda_id (lambda_b |G_ab(b) - b|_1 + lambda_a |G_ba(a) - a|_1)             (paper Sec. 5.2)
  D step    Ds unfrozen; L_D = 0.5 (gan(D(real), real) + gan(D(pool(fake)), fake)) for D_b then D_a.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from pipeline.contract import Translation, Translator

from .config import CycleGANConfig
from .image_pool import ImagePool
from .losses import discriminator_loss, gan_loss, linear_decay_factor
from .networks import PatchDiscriminator, ResnetGenerator, init_weights


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class CycleGAN(Translator):
    name = "cyclegan"
    Config = CycleGANConfig
    has_mask = False

    def __init__(self, cfg: CycleGANConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        if image_size % 4:
            raise ValueError(f"baselines/cyclegan: image size {image_size} must be divisible by 4 (two stride-2 "
                             "downsamplings); set data.resolution to a multiple of 4")
        c = cfg

        def generator() -> nn.Module:
            net = ResnetGenerator(in_channels, in_channels, c.ngf, c.n_blocks, c.norm, c.use_dropout, c.padding)
            return init_weights(net, c.init_type, c.init_gain)

        def discriminator() -> nn.Module:
            return init_weights(PatchDiscriminator(in_channels, c.ndf, c.n_layers_d, c.norm), c.init_type, c.init_gain)

        self.gen_ab, self.gen_ba = generator(), generator()
        self.disc_a, self.disc_b = discriminator(), discriminator()
        self.pool_a, self.pool_b = ImagePool(c.pool_size), ImagePool(c.pool_size)  # past fake_a / fake_b

    # --- training -------------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_iterations: int):
        c = self.cfg
        betas = (c.beta1, c.beta2)
        self.opt_gen = torch.optim.Adam(itertools.chain(self.gen_ab.parameters(), self.gen_ba.parameters()),
                                        lr=c.lr, betas=betas)
        self.opt_disc = torch.optim.Adam(itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()),
                                         lr=c.lr, betas=betas)
        rule = lambda it: linear_decay_factor(it, total_iterations, c.decay_start_fraction)  # noqa: E731
        optimizers = {"gen": self.opt_gen, "disc": self.opt_disc}
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in optimizers.items()}
        return optimizers, schedulers

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, ctx) -> dict[str, torch.Tensor]:
        c = self.cfg
        fake_b = self.gen_ab(real_a)
        rec_a = self.gen_ba(fake_b)
        fake_a = self.gen_ba(real_b)
        rec_b = self.gen_ab(fake_a)

        # generators (Ds frozen so their weights receive no gradient from L_G)
        set_requires_grad([self.disc_a, self.disc_b], False)
        self.opt_gen.zero_grad(set_to_none=True)
        loss_gan_ab = gan_loss(self.disc_b(fake_b), True, c.gan_mode)
        loss_gan_ba = gan_loss(self.disc_a(fake_a), True, c.gan_mode)
        loss_cycle_a = c.lambda_a * (rec_a - real_a).abs().mean()
        loss_cycle_b = c.lambda_b * (rec_b - real_b).abs().mean()
        loss_g = loss_gan_ab + loss_gan_ba + loss_cycle_a + loss_cycle_b
        losses = {}
        if c.lambda_identity > 0:
            loss_idt_b = c.lambda_b * c.lambda_identity * (self.gen_ab(real_b) - real_b).abs().mean()
            loss_idt_a = c.lambda_a * c.lambda_identity * (self.gen_ba(real_a) - real_a).abs().mean()
            loss_g = loss_g + loss_idt_a + loss_idt_b
            losses.update(idt_a=loss_idt_a.detach(), idt_b=loss_idt_b.detach())
        ctx.backward(loss_g)
        self.opt_gen.step()

        # discriminators: real vs a pooled (detached) fake; upstream queries the fake_B pool first
        set_requires_grad([self.disc_a, self.disc_b], True)
        self.opt_disc.zero_grad(set_to_none=True)
        pooled_b = self.pool_b.query(fake_b)
        pooled_a = self.pool_a.query(fake_a)
        loss_d_b = discriminator_loss(self.disc_b(real_b), self.disc_b(pooled_b), c.gan_mode)
        loss_d_a = discriminator_loss(self.disc_a(real_a), self.disc_a(pooled_a), c.gan_mode)
        ctx.backward(loss_d_a + loss_d_b)  # disjoint parameters: same gradients as two backward calls
        self.opt_disc.step()

        losses.update(g_ab=loss_gan_ab.detach(), g_ba=loss_gan_ba.detach(), cycle_a=loss_cycle_a.detach(),
                      cycle_b=loss_cycle_b.detach(), d_a=loss_d_a.detach(), d_b=loss_d_b.detach())
        return losses

    # --- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        return Translation(self.gen_ab(x).float())  # fp32 even under bf16 autocast

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        return Translation(self.gen_ba(x).float())

    def inference_modules(self) -> list[str]:
        return ["gen_ab", "gen_ba"]

    # --- exact resume ---------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"pool_a", "pool_b"}
        if unknown:
            raise ValueError(f"baselines/cyclegan: unexpected extra state keys {sorted(unknown)}")
        device = next(self.parameters()).device
        self.pool_a.load_state(state.get("pool_a", torch.zeros(0)), device)
        self.pool_b.load_state(state.get("pool_b", torch.zeros(0)), device)
