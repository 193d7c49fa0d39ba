"""UVCGAN v1 (Torbunov et al., WACV 2023) as a cxrbench translator; follows `uvcgan/cgan/cyclegan.py` (translation)
and `uvcgan/cgan/autoencoder.py` (BERT-like pre-training) upstream.

Range: UVCGAN works on images in [0, 1] (ToTensor data, Sigmoid generator). The suite hands [-1, 1]; this class maps
x01 = (x + 1) / 2 on the way in and 2 y - 1 on the way out, so G, D, the L1 terms and the gradient penalty (whose
target norm gamma = 100 refers to gradients w.r.t. [0, 1] images) all see exactly upstream's scale.

Translation iteration (`optimization_step`):
  forward  fake_b = G_ab(a), reco_a = G_ba(fake_b), fake_a = G_ba(b), reco_b = G_ab(fake_a)
  G step   Ds frozen; L_G = gan(D_b(fake_b), real) + gan(D_a(fake_a), real) + lambda_a |reco_a - a|_1
           + lambda_b |reco_b - b|_1 + lambda_id (lambda_b |G_ab(b) - b|_1 + lambda_a |G_ba(a) - a|_1)
  D step   fake_a, fake_b through their pools (a first); for D_b then D_a:
           L_D = 0.5 (gan(D(real), real) + gan(D(fake), fake)) + GP(D, real, fake)
Pre-training (joint): one generator (G_ab) reconstructs masked images of both domains, L1; AdamW + cosine restarts;
its weights then initialise both G_ab and G_ba (upstream transfer map gen_ab <- encoder, gen_ba <- encoder).
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch
from torch import nn

from pipeline.contract import Translation, Translator

from .config import UVCGANConfig
from .image_pool import ImagePool
from .losses import gan_loss, gradient_penalty, linear_anneal_factor
from .masking import mask_patches
from .networks import PatchDiscriminator, ViTUNetGenerator, init_weights
from .pretraining import MaskedPretraining


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """suite range [-1, 1] -> UVCGAN range [0, 1]"""
    return (x + 1) * 0.5


def to_suite(x: torch.Tensor) -> torch.Tensor:
    """UVCGAN range [0, 1] -> suite range [-1, 1]"""
    return x * 2 - 1


class UVCGAN(Translator):
    name = "uvcgan"
    Config = UVCGANConfig
    has_mask = False
    has_pretraining = True

    def __init__(self, cfg: UVCGANConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        c = cfg
        factor = 2 ** len(c.unet_features)
        if image_size % factor:
            raise ValueError(f"baselines/uvcgan: image size {image_size} must be divisible by {factor} "
                             f"(2^{len(c.unet_features)} UNet levels); change data.resolution or unet_features")

        def generator() -> nn.Module:
            net = ViTUNetGenerator(in_channels, list(c.unet_features), c.vit_features, c.vit_heads, c.vit_blocks,
                                   c.vit_ffn_features, c.vit_embed_features, c.vit_rezero, c.unet_rezero)
            return init_weights(net, c.init_gain)

        def discriminator() -> nn.Module:
            return init_weights(PatchDiscriminator(in_channels, c.ndf, c.n_layers_d), c.init_gain)

        self.gen_ab, self.gen_ba = generator(), generator()
        self.disc_a, self.disc_b = discriminator(), discriminator()
        self.pool_a, self.pool_b = ImagePool(c.pool_size), ImagePool(c.pool_size)  # past fake_a / fake_b, [0, 1]

    # --- translation training -------------------------------------------------------------------------------------
    def configure_optimizers(self, total_iterations: int):
        c = self.cfg
        betas = (c.beta1, c.beta2)
        self.opt_gen = torch.optim.Adam(itertools.chain(self.gen_ab.parameters(), self.gen_ba.parameters()),
                                        lr=c.lr_gen, betas=betas)
        self.opt_disc = torch.optim.Adam(itertools.chain(self.disc_a.parameters(), self.disc_b.parameters()),
                                         lr=c.lr_disc, betas=betas)
        rule = lambda it: linear_anneal_factor(it, total_iterations, c.warmup_fraction)  # noqa: E731
        optimizers = {"gen": self.opt_gen, "disc": self.opt_disc}
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in optimizers.items()}
        return optimizers, schedulers

    def _disc_loss(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        loss = 0.5 * (gan_loss(disc(real), True, c.gan_mode) + gan_loss(disc(fake), False, c.gan_mode))
        gp = gradient_penalty(disc, real, fake, c.gp_lambda, c.gp_constant, c.gp_type)
        return loss + gp, gp

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, ctx) -> dict[str, torch.Tensor]:
        c = self.cfg
        a, b = to_unit(real_a), to_unit(real_b)
        fake_b = self.gen_ab(a)
        reco_a = self.gen_ba(fake_b)
        fake_a = self.gen_ba(b)
        reco_b = self.gen_ab(fake_a)

        set_requires_grad([self.disc_a, self.disc_b], False)
        self.opt_gen.zero_grad(set_to_none=True)
        loss_gan_ab = gan_loss(self.disc_b(fake_b), True, c.gan_mode)
        loss_gan_ba = gan_loss(self.disc_a(fake_a), True, c.gan_mode)
        loss_cycle_a = c.lambda_a * (reco_a - a).abs().mean()
        loss_cycle_b = c.lambda_b * (reco_b - b).abs().mean()
        loss_g = loss_gan_ab + loss_gan_ba + loss_cycle_a + loss_cycle_b
        losses = {}
        if c.lambda_identity > 0:
            loss_idt_b = c.lambda_b * c.lambda_identity * (self.gen_ab(b) - b).abs().mean()
            loss_idt_a = c.lambda_a * c.lambda_identity * (self.gen_ba(a) - a).abs().mean()
            loss_g = loss_g + loss_idt_a + loss_idt_b
            losses.update(idt_a=loss_idt_a.detach(), idt_b=loss_idt_b.detach())
        ctx.backward(loss_g)
        self.opt_gen.step()

        set_requires_grad([self.disc_a, self.disc_b], True)
        self.opt_disc.zero_grad(set_to_none=True)
        pooled_a = self.pool_a.query(fake_a)  # upstream order: pool a, pool b, then D_b, D_a
        pooled_b = self.pool_b.query(fake_b)
        loss_d_b, gp_b = self._disc_loss(self.disc_b, b, pooled_b)
        loss_d_a, gp_a = self._disc_loss(self.disc_a, a, pooled_a)
        ctx.backward(loss_d_a + loss_d_b)
        self.opt_disc.step()

        losses.update(g_ab=loss_gan_ab.detach(), g_ba=loss_gan_ba.detach(), cycle_a=loss_cycle_a.detach(),
                      cycle_b=loss_cycle_b.detach(), d_a=loss_d_a.detach(), d_b=loss_d_b.detach(),
                      gp_a=gp_a.detach(), gp_b=gp_b.detach())
        return losses

    # --- BERT-like masked pre-training ----------------------------------------------------------------------------
    def mask_patch_size(self, side: int) -> int:
        """Masked patch side for an image side: 32 at 256 px, scaled with the image when pretrain_patch_scales."""
        c = self.cfg
        if not c.pretrain_patch_scales:
            return c.pretrain_patch_size
        return max(1, round(c.pretrain_patch_size * side / 256))

    def configure_pretraining(self, total_iterations: int):
        """AdamW on the pre-trained generator (G_ab), stepped per iteration by a CosineAnnealingWarmRestarts."""
        c = self.cfg
        scale = c.pretrain_batch_size / 512
        self.opt_pretrain = torch.optim.AdamW(self.gen_ab.parameters(), lr=scale * c.pretrain_base_lr,
                                              betas=(c.pretrain_beta1, c.pretrain_beta2),
                                              weight_decay=c.pretrain_weight_decay)
        period = max(1, round(c.pretrain_restart_fraction * total_iterations))
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.opt_pretrain, T_0=period, T_mult=1,
                                                                     eta_min=scale * c.pretrain_base_eta_min)
        return {"pretrain": self.opt_pretrain}, {"pretrain": sched}

    def pretrain_step(self, images: torch.Tensor | Sequence[torch.Tensor], step: int, ctx) -> dict[str, torch.Tensor]:
        """images: (real_a, real_b), each (B, 1, H, W) in [-1, 1] (upstream `joint`: L1(a) + L1(b)), or one tensor.

        Each image loses ~40 % of its patches (set to 0 in [0, 1], i.e. -1 in suite range); G_ab reconstructs the whole
        image; loss = mean absolute error over all pixels, summed over the domains given.
        """
        groups = list(images) if isinstance(images, (tuple, list)) else [images]
        names = ["pretrain_a", "pretrain_b"] if len(groups) == 2 else [f"pretrain_{i}" for i in range(len(groups))]
        c = self.cfg
        if getattr(self, "opt_pretrain", None) is None:
            raise RuntimeError("baselines/uvcgan: call configure_pretraining(total_iterations) before pretrain_step")
        self.opt_pretrain.zero_grad(set_to_none=True)
        targets = [to_unit(x) for x in groups]
        masked = [mask_patches(x, self.mask_patch_size(x.shape[-1]), c.pretrain_mask_fraction) for x in targets]
        losses = [(self.gen_ab(m) - x).abs().mean() for m, x in zip(masked, targets)]
        ctx.backward(sum(losses))
        self.opt_pretrain.step()
        return {n: loss.detach() for n, loss in zip(names, losses)}

    def pretraining_view(self) -> Translator:
        """An object the engine can `fit` to run the pre-training (see pretraining.py)."""
        return MaskedPretraining(self)

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """The pre-trained generator's weights (upstream's `encoder`)."""
        return {k: v.detach().clone() for k, v in self.gen_ab.state_dict().items()}

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """Initialise both generators from pre-trained weights (strict, as upstream's transfer)."""
        self.gen_ab.load_state_dict(state, strict=True)
        self.gen_ba.load_state_dict(state, strict=True)

    # --- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        return Translation(to_suite(self.gen_ab(to_unit(x)).float()))  # fp32 even under bf16 autocast

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        return Translation(to_suite(self.gen_ba(to_unit(x)).float()))

    def inference_modules(self) -> list[str]:
        return ["gen_ab", "gen_ba"]

    # --- exact resume ---------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"pool_a", "pool_b"}
        if unknown:
            raise ValueError(f"baselines/uvcgan: unexpected extra state keys {sorted(unknown)}")
        device = next(self.parameters()).device
        self.pool_a.load_state(state.get("pool_a", torch.zeros(0)), device)
        self.pool_b.load_state(state.get("pool_b", torch.zeros(0)), device)
