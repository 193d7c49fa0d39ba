"""DRIT++ (Lee et al., IJCV 2020; DRIT: ECCV 2018) as a cxrbench translator, described from HsinYingLee/DRIT
`src/model.py` (class DRIT), `src/train.py` and `src/options.py`. Networks: networks.py. Deviations: README.md.

One training iteration of the official loop (train.py), for a batch of 2 images per domain:
- on 2 of every 3 iterations (`d_iter` 3) only the content discriminator is updated, on the encoded half;
- on the third, `update_D` then `update_EG`:
  the first half of each batch is the "encoded" branch (its own attribute code), the second half the "random" branch
  (real images for the discriminators of random-attribute fakes); four domain discriminators (disA/disB judge fakes
  made with encoded attributes, disA2/disB2 fakes made with random z) and the content discriminator are updated,
  then E_c, E_a, G with the main loss (L_EG) and E_c, G a second time with the random-z loss (L_alone).

Losses (DRIT++ paper, section 3; weights are fixed constants in the official code): content adversarial L^content_adv
(generator target 0.5), domain adversarial L^domain_adv (vanilla sigmoid BCE), cross-cycle L^cc_1 x10,
self-reconstruction L^recon_1 x10, KL of the attribute code x0.01 and mean square of the content code x0.01 (L_KL),
latent regression L^latent_1 x10 (on mu), and the mode-seeking term (new in DRIT++, from MSGAN, Mao et al. CVPR 2019)
L_ms = 1 / (mean|G(c, z1) - G(c, z2)| / mean|z1 - z2| + 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.contract import Translation, Translator
from pipeline.schema import param

from .networks import (AttributeEncoder, ContentDiscriminator, ContentEncoder, Generator, MultiScaleDiscriminator,
                       content_dis_out_size, init_official)

DOMAIN_DISCRIMINATORS = ("dis_a", "dis_b", "dis_a2", "dis_b2")


@dataclass
class DRITConfig:
    """Official defaults (HsinYingLee/DRIT, src/options.py and the constants of src/model.py)."""

    batch_size: int = param(2, min=1, source="official", doc="images per domain; first half 'encoded', second 'random'")
    # optimisation
    lr: float = param(1e-4, min=0.0, source="official", doc="Adam learning rate of every network")
    beta1: float = param(0.5, min=0.0, max=1.0, source="official")
    beta2: float = param(0.999, min=0.0, max=1.0, source="official")
    weight_decay: float = param(1e-4, min=0.0, source="official", doc="Adam L2 weight decay")
    lr_content_div: float = param(2.5, min=1e-6, source="official", doc="content discriminator lr = lr / this")
    content_grad_clip: float = param(5.0, min=0.0, source="official", doc="grad-norm clip of the content discriminator")
    d_iter: int = param(3, min=1, source="official",
                        doc="1 of every d_iter iterations is a full update, the others update only the content D")
    decay_start: float = param(0.5, min=0.0, max=1.0, source="official",
                               doc="fraction of the iterations at constant lr before the linear decay "
                                   "(official n_ep_decay / n_ep = 600 / 1200)")
    # loss weights (fixed constants in the official code)
    lambda_cycle: float = param(10.0, min=0.0, source="official", doc="cross-cycle L1")
    lambda_self: float = param(10.0, min=0.0, source="official", doc="self-reconstruction L1")
    lambda_kl_attr: float = param(0.01, min=0.0, source="official", doc="KL of the attribute code (summed)")
    lambda_l2_content: float = param(0.01, min=0.0, source="official", doc="mean square of the content code")
    lambda_latent: float = param(10.0, min=0.0, source="official", doc="latent regression L1 on mu")
    mode_seeking: bool = param(True, source="official", doc="DRIT++ mode-seeking term (official --no_ms turns it off)")
    ms_eps: float = param(1e-5, min=0.0, source="official")
    # architecture (official widths; the cpu/ci profiles reduce them)
    nz: int = param(8, min=1, source="official", doc="attribute code size")
    enc_dim: int = param(64, min=1, source="official", doc="content encoder base width; content code = 4x this")
    enc_res: int = param(3, min=0, source="official", doc="residual blocks per domain in the content encoder")
    attr_dim: int = param(64, min=1, source="official", doc="attribute encoder base width (64, 128, 192, 256)")
    attr_blocks: int = param(3, min=1, source="official", doc="down-sampling residual blocks of the attribute encoder")
    gen_res: int = param(3, min=0, source="official", doc="residual blocks per domain in the generator (at 264 ch)")
    dis_dim: int = param(64, min=1, source="official", doc="first width of each domain discriminator scale")
    dis_layers: int = param(4, min=1, source="official", doc="4x4 s2 conv layers per discriminator scale")
    dis_scales: int = param(3, min=1, source="official", doc="scales of the multi-scale discriminators")
    dis_spectral_norm: bool = param(False, source="official", doc="spectral norm in the domain discriminators")
    content_dis_down: int = param(3, min=0, source="official",
                                  doc="7x7 s2 layers of the content discriminator (3 need images >= 209 px)")
    content_dis_norm: bool = param(False, source="official",
                                   doc="instance norm in the content D; the official code requests it but never "
                                       "applies it (string-literal comparison), so off reproduces it")
    init_std: float = param(0.02, min=0.0, source="official", doc="N(0, std) init of conv weights")


# --------------------------------------------------------------------------------------------------------------------
# Pieces of the objective, as small functions (the tests check them against hand computations)
# --------------------------------------------------------------------------------------------------------------------
def split_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, ...) -> (encoded = x[:B//2], random = x[B//2:]); official half_size = 1 for batch 2. With B = 1 the single
    image serves both branches (the official loop skips incomplete batches instead)."""
    if x.shape[0] == 1:
        return x, x
    half = x.shape[0] // 2
    return x[:half], x[half:]


def is_content_only_step(step: int, d_iter: int) -> bool:
    """train.py: iteration `it` updates only the content discriminator when (it + 1) % d_iter != 0."""
    return (step + 1) % d_iter != 0


def lr_factor(iteration: int, total: int, decay_start: float) -> float:
    """Official LambdaLR `1 - max(0, ep - n_ep_decay) / (n_ep - n_ep_decay + 1)`, with epochs replaced by iterations
    and n_ep_decay = decay_start * total: constant, then linear towards 0 at the last iteration."""
    start = int(round(decay_start * total))
    return 1.0 - max(0, iteration - start) / float(total - start + 1)


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """sigmoid + binary cross-entropy against a constant target (official), in the stable logits form."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def adversarial_loss(logits: list[torch.Tensor], target: float) -> torch.Tensor:
    """Sum over discriminator scales of the mean BCE (official backward_G_GAN / backward_D)."""
    return sum(bce(out, target) for out in logits)


def content_adversarial_loss_g(logits: torch.Tensor) -> torch.Tensor:
    """Generator side of L^content_adv: push the content discriminator towards 0.5 (it cannot tell the domains apart)."""
    return bce(logits, 0.5)


def kl_attribute(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over batch and dimensions (official: torch.sum, not mean)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def mode_seeking_loss(fake1: torch.Tensor, fake2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """DRIT++ mode-seeking term: 1 / (mean|G(c, z1) - G(c, z2)| / mean|z1 - z2| + eps)."""
    ratio = torch.mean(torch.abs(fake2 - fake1)) / torch.mean(torch.abs(z2 - z1))
    return 1.0 / (ratio + eps)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def param_count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# --------------------------------------------------------------------------------------------------------------------
# The translator
# --------------------------------------------------------------------------------------------------------------------
class DRIT(Translator):
    """DRIT++ (concat variant). Domain A = opacity, B = normal. translate: A -> B with a random attribute z ~ N(0, I)
    (official test.py); translate_b2a likewise."""

    name = "drit"
    Config = DRITConfig
    has_mask = False

    def __init__(self, cfg: DRITConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        c = cfg
        if image_size % 4:  # E_c halves twice (rounding up) and G doubles twice: 66 px would come back as 68 px
            raise ValueError(f"drit: image size {image_size} must be divisible by 4 (two stride-2 convolutions in the "
                             "content encoder, two transposed ones in the generator); set data.resolution to a "
                             "multiple of 4")
        content = -(-image_size // 4)  # ceil(H / 4): two 3x3 s2 p1 convs in E_c
        if content_dis_out_size(content, c.content_dis_down) < 1:
            fits = max((n for n in range(c.content_dis_down) if content_dis_out_size(content, n) >= 1), default=None)
            hint = f"set methods.drit.content_dis_down: {fits}" if fits is not None else "use larger images"
            raise ValueError(f"params.yaml: methods.drit.content_dis_down={c.content_dis_down} does not fit "
                             f"{image_size} px images (content code {content} px); {hint}")
        self.enc_c = ContentEncoder(in_channels, c.enc_dim, c.enc_res)
        self.enc_a = AttributeEncoder(in_channels, c.attr_dim, c.attr_blocks, 4, c.nz)
        self.gen = Generator(in_channels, self.enc_c.out_ch, c.nz, c.gen_res)
        for name in DOMAIN_DISCRIMINATORS:
            setattr(self, name, MultiScaleDiscriminator(in_channels, c.dis_dim, c.dis_layers, c.dis_scales,
                                                        c.dis_spectral_norm))
        self.dis_content = ContentDiscriminator(self.enc_c.out_ch, c.content_dis_down, c.content_dis_norm)
        init_official(self, c.init_std)

    # --- optimisation -----------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_iterations: int):
        c = self.cfg
        nets = ("enc_c", "enc_a", "gen", "dis_content") + DOMAIN_DISCRIMINATORS
        self.optimizers = {
            n: torch.optim.Adam(getattr(self, n).parameters(), lr=c.lr / (c.lr_content_div if n == "dis_content" else 1),
                                betas=(c.beta1, c.beta2), weight_decay=c.weight_decay)
            for n in nets}
        self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(
            o, lambda it, t=total_iterations: lr_factor(it, t, c.decay_start)) for n, o in self.optimizers.items()}
        return self.optimizers, self.schedulers

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, ctx) -> dict[str, torch.Tensor]:
        if is_content_only_step(step, self.cfg.d_iter):
            return self.update_content_dis(real_a, real_b, ctx)
        out = self.forward_train(real_a, real_b)
        losses = self.update_discriminators(out, ctx)
        losses.update(self.update_encoders_generator(out, ctx))
        return {k: v.detach() for k, v in losses.items()}  # tensors: the engine reads them at the log cadence

    def update_content_dis(self, real_a: torch.Tensor, real_b: torch.Tensor, ctx) -> dict[str, torch.Tensor]:
        """Official update_D_content: the content D alone, on the encoded half."""
        with torch.no_grad():
            c_a = self.enc_c.forward_a(split_halves(real_a)[0])
            c_b = self.enc_c.forward_b(split_halves(real_b)[0])
        loss = self._content_dis_step(c_a, c_b, ctx)
        return {"d_content": loss.detach()}

    def _content_dis_step(self, c_a: torch.Tensor, c_b: torch.Tensor, ctx) -> torch.Tensor:
        """Content D: B's content code is 'real' (1), A's 'fake' (0); gradient norm clipped, lr / 2.5."""
        opt = self.optimizers["dis_content"]
        opt.zero_grad(set_to_none=True)
        loss = bce(self.dis_content(c_b.detach()), 1.0) + bce(self.dis_content(c_a.detach()), 0.0)
        ctx.backward(loss)
        torch.nn.utils.clip_grad_norm_(self.dis_content.parameters(), self.cfg.content_grad_clip)
        opt.step()
        return loss.detach()

    def forward_train(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Official DRIT.forward: both cross translations, self-reconstructions, random-z fakes, latent regression."""
        a_enc, a_rand = split_halves(real_a)
        b_enc, b_rand = split_halves(real_b)
        n = a_enc.shape[0]
        c_a, c_b = self.enc_c.forward_a(a_enc), self.enc_c.forward_b(b_enc)  # (n, 256, H/4, W/4)
        mu_a, logvar_a = self.enc_a.forward_a(a_enc)  # (n, nz)
        mu_b, logvar_b = self.enc_a.forward_b(b_enc)
        z_a, z_b = reparameterize(mu_a, logvar_a), reparameterize(mu_b, logvar_b)
        z_rand = torch.randn_like(z_a)
        zs = [z_rand, torch.randn_like(z_a)] if self.cfg.mode_seeking else [z_rand]

        # first cross translation, batched like the official code: [cross, self-recon, random z, (second random z)]
        k = len(zs)
        fakes_a = self.gen.forward_a(torch.cat([c_b, c_a] + [c_b] * k), torch.cat([z_a, z_a] + zs)).split(n)
        fakes_b = self.gen.forward_b(torch.cat([c_a, c_b] + [c_a] * k), torch.cat([z_b, z_b] + zs)).split(n)
        fake_a, fake_aa, rand_a = fakes_a[0], fakes_a[1], fakes_a[2:]
        fake_b, fake_bb, rand_b = fakes_b[0], fakes_b[1], fakes_b[2:]

        # second cross translation: fake_a carries B's content and A's attribute
        c_b_rec, c_a_rec = self.enc_c.forward_a(fake_a), self.enc_c.forward_b(fake_b)
        z_a_rec = reparameterize(*self.enc_a.forward_a(fake_a))
        z_b_rec = reparameterize(*self.enc_a.forward_b(fake_b))
        rec_a = self.gen.forward_a(c_a_rec, z_a_rec)
        rec_b = self.gen.forward_b(c_b_rec, z_b_rec)

        # latent regression: mu of the first random-z fakes should give back z_rand
        mu2_a, _ = self.enc_a.forward_a(rand_a[0])
        mu2_b, _ = self.enc_a.forward_b(rand_b[0])
        return dict(a_enc=a_enc, a_rand=a_rand, b_enc=b_enc, b_rand=b_rand, c_a=c_a, c_b=c_b, mu_a=mu_a,
                    logvar_a=logvar_a, mu_b=mu_b, logvar_b=logvar_b, zs=zs, fake_a=fake_a, fake_b=fake_b,
                    fake_aa=fake_aa, fake_bb=fake_bb, rand_a=list(rand_a), rand_b=list(rand_b), rec_a=rec_a,
                    rec_b=rec_b, mu2_a=mu2_a, mu2_b=mu2_b)

    def update_discriminators(self, out: dict, ctx) -> dict[str, torch.Tensor]:
        """Official update_D: disA/disB on encoded fakes, disA2/disB2 on random-z fakes (with the second random z
        each fake adds its own real+fake BCE, as two backward_D calls would), then the content D."""
        jobs = {"dis_a": (out["a_enc"], [out["fake_a"]]), "dis_a2": (out["a_rand"], out["rand_a"]),
                "dis_b": (out["b_enc"], [out["fake_b"]]), "dis_b2": (out["b_rand"], out["rand_b"])}
        losses = {}
        for name, (real, fakes) in jobs.items():
            net, opt = getattr(self, name), self.optimizers[name]
            opt.zero_grad(set_to_none=True)
            sizes = [real.shape[0]] + [f.shape[0] for f in fakes]
            loss = 0.0
            for logits in net(torch.cat([real] + [f.detach() for f in fakes])):  # one pass over real and fakes
                real_logits, *fake_logits = logits.split(sizes)
                loss = loss + sum(bce(real_logits, 1.0) + bce(f, 0.0) for f in fake_logits)
            ctx.backward(loss)
            opt.step()
            losses["d_" + name[4:]] = loss.detach()
        losses["d_content"] = self._content_dis_step(out["c_a"], out["c_b"], ctx)
        return losses

    def generator_losses(self, out: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(terms of L_EG: E_c, E_a, G;  terms of L_alone: E_c, G), official backward_EG / backward_G_alone."""
        c = self.cfg
        eg = {
            "g_content": content_adversarial_loss_g(self.dis_content(out["c_a"]))
            + content_adversarial_loss_g(self.dis_content(out["c_b"])),
            "g_gan": adversarial_loss(self.dis_a(out["fake_a"]), 1.0) + adversarial_loss(self.dis_b(out["fake_b"]), 1.0),
            "kl_attr": c.lambda_kl_attr * (kl_attribute(out["mu_a"], out["logvar_a"])
                                           + kl_attribute(out["mu_b"], out["logvar_b"])),
            "l2_content": c.lambda_l2_content * (out["c_a"].pow(2).mean() + out["c_b"].pow(2).mean()),
            "cycle_l1": c.lambda_cycle * (F.l1_loss(out["rec_a"], out["a_enc"]) + F.l1_loss(out["rec_b"], out["b_enc"])),
            "self_l1": c.lambda_self * (F.l1_loss(out["fake_aa"], out["a_enc"])
                                        + F.l1_loss(out["fake_bb"], out["b_enc"])),
        }
        z_rand = out["zs"][0]
        alone = {
            "g_gan2": sum(adversarial_loss(self.dis_a2(f), 1.0) for f in out["rand_a"])
            + sum(adversarial_loss(self.dis_b2(f), 1.0) for f in out["rand_b"]),
            "latent_l1": c.lambda_latent * (torch.mean(torch.abs(out["mu2_a"] - z_rand))
                                            + torch.mean(torch.abs(out["mu2_b"] - z_rand))),
        }
        if c.mode_seeking:
            z1, z2 = out["zs"]
            alone["mode_seeking"] = (mode_seeking_loss(*out["rand_b"], z1, z2, c.ms_eps)
                                     + mode_seeking_loss(*out["rand_a"], z1, z2, c.ms_eps))
        return eg, alone

    def update_encoders_generator(self, out: dict, ctx) -> dict[str, torch.Tensor]:
        """Official update_EG: step E_c, E_a, G on L_EG, then E_c, G again on L_alone.

        The official code back-propagates L_alone through the graph retained from before the first step, which
        PyTorch >= 1.5 refuses (DRIT#62). Here both gradients are taken on that one forward pass, before any step
        (the official gradients, up to the O(lr) weight change), then the two Adam steps are applied in order.
        """
        discriminators = [self.dis_content] + [getattr(self, n) for n in DOMAIN_DISCRIMINATORS]
        for d in discriminators:
            d.requires_grad_(False)  # only E/G gradients are needed here
        eg, alone = self.generator_losses(out)
        loss_eg, loss_alone = sum(eg.values()), sum(alone.values())
        for d in discriminators:
            d.requires_grad_(True)

        shared = [p for m in (self.enc_c, self.gen) for p in m.parameters()]  # stepped on both losses
        attr = list(self.enc_a.parameters())  # stepped on L_EG only (official)
        for p in shared + attr:
            p.grad = None
        ctx.backward(loss_eg, retain_graph=True)
        grads_eg = [p.grad for p in shared + attr]
        for p in shared + attr:
            p.grad = None
        ctx.backward(loss_alone)
        grads_alone = [p.grad for p in shared]

        for p, g in zip(shared + attr, grads_eg):
            p.grad = g
        for name in ("enc_c", "enc_a", "gen"):
            self.optimizers[name].step()
        for p, g in zip(shared, grads_alone):
            p.grad = g
        for name in ("enc_c", "gen"):
            self.optimizers[name].step()
        for p in shared + attr:
            p.grad = None
        return {**{k: v.detach() for k, v in {**eg, **alone}.items()},
                "g_eg": loss_eg.detach(), "g_alone": loss_alone.detach()}

    # --- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        z = torch.randn(x.shape[0], self.cfg.nz, device=x.device, dtype=x.dtype)
        return Translation(self.gen.forward_b(self.enc_c.forward_a(x), z))

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        z = torch.randn(x.shape[0], self.cfg.nz, device=x.device, dtype=x.dtype)
        return Translation(self.gen.forward_a(self.enc_c.forward_b(x), z))

    def inference_modules(self) -> list[str]:
        return ["enc_c", "gen"]

    def extra_state(self) -> dict[str, Any]:
        return {}  # the d_iter phase comes from `step`; no pools or EMA

    def parameter_counts(self) -> dict[str, int]:
        names = ["enc_c", "enc_a", "gen", "dis_content", *DOMAIN_DISCRIMINATORS]
        counts = {n: param_count(getattr(self, n)) for n in names}
        counts["encoders+generator"] = counts["enc_c"] + counts["enc_a"] + counts["gen"]
        return counts
