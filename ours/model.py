"""The proposed method (the paper's section 3) as a cxrbench Translator.

Domain A = opacity, B = normal. G_A: opacity -> normal (gen_a), G_B: normal -> opacity (gen_b). Every translation
is blended by Eq. 1 with the generator's own mask. One training step, for a batch x_a, x_b (ACL-GAN's forward, run
from both domains when `symmetric`):

    fake_ab   = blend(G_A(x_a))               inter-domain            -> D_B, AASPM penalties, CDAM (FA, LCA)
    intra_aa  = blend(G_B(x_a))               intra-domain (A -> A)   -> D_A, pair D, BAML (mask should be 0)
    cycle_aba = blend(G_B(fake_ab))           cycle                   -> D_A, pair D
    rec_a     = G_B(c(x_a), s(x_a))  (image head, not blended)        -> L_rec (ACL-GAN's self-reconstruction, L1)
    and the same from x_b with the roles of G_A/G_B, D_A/D_B swapped (fake_ba, intra_bb, cycle_bab, rec_b).

The generators step on Eq. 8; the discriminators then step on the same (detached) translations.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ours.losses import (blend, l_bam, l_classifier, l_feature, l_mil, l_sparse, l_structural, l_style, l_total,
                         lsgan, normalise_mask, p_lower, p_repul, p_upper)
from ours.networks import MaskGenerator, MultiScaleDiscriminator, init_weights
from pipeline.contract import Probe, Translation, Translator, mask_diagnostics
from pipeline.data.canonical import OPACITY_LABELS as CANONICAL_OPACITY_LABELS
from pipeline.offline import PROJECT_ROOT
from pipeline.prior import NIH14, PriorError, PriorNet, freeze, load_prior
from pipeline.schema import ConfigError, param

OPACITY_LABELS = list(CANONICAL_OPACITY_LABELS)  # the six opacity-type NIH labels


@dataclass
class OursConfig:
    # --- optimisation (section 4.3) ------------------------------------------------------------------------------
    batch_size: int = param(2, min=1, source="paper", doc="images per domain per step (4.3)")
    lr: float = param(1e-4, min=0.0, source="paper", doc="Adam learning rate, G and D (4.3)")
    beta1: float = param(0.9, min=0.0, max=1.0, source="paper", doc="Adam beta1 (4.3)")
    beta2: float = param(0.9999, min=0.0, max=1.0, source="paper", doc="Adam beta2 (4.3)")
    weight_decay: float = param(0.0, min=0.0, source="assumed", doc="not stated; plain Adam (ACL-GAN code: 1e-4)")
    lr_decay_every: float = param(0.4, min=0.0, max=1.0, source="paper",
                                  doc="step decay period as a fraction of train.iterations (4.3: every 1e5 of 2.5e5)")
    lr_decay_factor: float = param(0.5, min=0.0, max=1.0, source="assumed",
                                   doc="decay factor, not stated (MUNIT/ACL-GAN step gamma 0.5)")
    # --- Eq. 8 weights ---------------------------------------------------------------------------------------------
    lambda_penalties: float = param(0.01, min=0.0, source="paper", doc="Eq. 8")
    lambda_bam: float = param(0.1, min=0.0, source="paper", doc="Eq. 8")
    lambda_feature: float = param(0.5, min=0.0, source="paper", doc="Eq. 8")
    lambda_classifier: float = param(0.5, min=0.0, source="paper", doc="Eq. 8")
    lambda_adv: float = param(2.0, min=0.0, source="paper", doc="Eq. 8")
    lambda_rec: float = param(1.0, min=0.0, source="paper", doc="Eq. 8")
    lambda_style: float = param(0.5, min=0.0, source="paper", doc="L_feature = lambda_style L_style + L_structural")
    acl_weight: float = param(0.2, min=0.0, source="official",
                              doc="adversarial-consistency term inside L_adv (ACL-GAN gan_cw / gan_w = 0.2 / 1); "
                                  "0 = no pair discriminator (README item 15)")
    # --- AASPM (Eq. 2-4) -------------------------------------------------------------------------------------------
    f_upper: float = param(0.75, source="paper", doc="Eq. 2")
    f_lower: float = param(0.0, min=0.0, max=1.0, source="official",
                           doc="lower bound of the mask's area on images to translate (ACL-GAN's focus_lower, 0.3 "
                               "there); the paper has none: 0 = off")
    f_central: float = param(0.1, source="paper", doc="Eq. 3")
    f_height: float = param(0.2, source="paper", doc="Eq. 3")
    eps: float = param(0.01, min=0.0, source="paper", doc="Eq. 3")
    reduction: Literal["mean", "sum", "acl"] = param("mean", source="assumed",
                                                     doc="per-image pixel reduction of Eq. 2-4 (printed as sums; "
                                                         "mean | sum | acl: ACL-GAN's focus-loss code, see README)")
    lambda_mil: float = param(0.0, min=0.0, source="assumed",
                              doc="not in the paper (0 = off): weight of L_mil, Eq. 4 read as multiple-instance "
                                  "learning (ours/losses.py l_mil; README item 10)")
    mil_fraction: float = param(0.2, min=0.0, max=1.0, source="assumed",
                                doc="L_mil: fraction of each mask's highest pixels whose mean is the image's score")
    mil_fraction_keep: float = param(0.0, min=0.0, max=1.0, source="assumed",
                                     doc="L_mil on the images to keep: their top fraction's mean is pushed to 0; "
                                         "0 = mil_fraction (README item 15)")
    lambda_cycle: float = param(0.0, min=0.0, source="assumed",
                                doc="not in the paper (0 = off): weight of CycleGAN's cycle L1 on the blended cycle, "
                                    "|cycle_aba - x_a| (+ mirrored), a pixel tie between a translation and its input "
                                    "(README item 12)")
    lambda_sparse: float = param(0.0, min=0.0, source="assumed",
                                 doc="not in the paper (0 = off): weight of L_sparse, the mean mask on the images each "
                                     "generator translates (ours/losses.py l_sparse; README item 17)")
    bam_fraction: float = param(0.5, min=0.0, max=1.0, source="assumed",
                                doc="size of the random subset D' of the other domain added to each generator's "
                                    "batch for Eq. 4, as a fraction of the batch (at least 1 image)")
    # --- CDAM (Eq. 5-7) --------------------------------------------------------------------------------------------
    q_labels: list[str] = param(default_factory=lambda: list(OPACITY_LABELS), source="assumed",
                                doc="the label filter q of Eq. 7 (paper: '6 of the 14', not named): the six "
                                    "opacity-type NIH labels")
    threshold: float = param(0.5, min=0.0, max=1.0, source="paper", doc="p of Eq. 7")
    style_gram_norm: Literal["hw", "chw"] = param("hw", source="assumed",
                                                  doc="Gram matrix of Eq. 6 divided by h w (channel second moments) "
                                                      "or by C h w (Gatys/Johnson; ~1e-6 smaller at C = 1024)")
    lca_select: Literal["positive", "q"] = param("positive", source="assumed",
                                                 doc="Eq. 7 pairs: q and source-positive (text), or all of q")
    prior_weights: str = param("models/prior/prior.pt", source="assumed",
                               doc="frozen prior written by the prior stage (relative to the project root); "
                                   "empty = random frozen prior (tests only)")
    # --- ablation switches (Table 3) -------------------------------------------------------------------------------
    aaspm: bool = param(True, doc="Eq. 2-3 mask penalties")
    fa: bool = param(True, doc="Eq. 5-6 feature alignment")
    lca: bool = param(True, doc="Eq. 7 label consistency alignment")
    bam: bool = param(True, doc="Eq. 4 bidirectional activation minimisation")
    # --- architecture (not in the paper: ACL-GAN / MUNIT defaults) ---------------------------------------------------
    generator: Literal["adain", "resnet"] = param("adain", source="assumed",
                                                  doc="ACL-GAN's AdaIN generator (+1 mask channel) or the same "
                                                      "encoder-decoder with IN and no style (deterministic)")
    gen_init: Literal["official", "pytorch"] = param(
        "official", source="assumed",
        doc="generator weights at step 0: ACL-GAN/MUNIT's kaiming-normal (fan-in) on every conv and linear layer, "
            "biases 0, or PyTorch's default layer init (README 'What we found', item 11: under the official init "
            "the mask follows the random style code as much as the image)")
    gen_output: Literal["image", "residual"] = param(
        "image", source="assumed",
        doc="what the generator's image head predicts: a new image (ACL-GAN) or a change added to its input, "
            "x + tanh head (not in the paper; README 'What we found', item 12: under the mask the image head paints "
            "a generic lung, so predict the change and keep the patient's pixels)")
    gen_dim: int = param(64, min=1, source="official", doc="ACL-GAN/MUNIT gen.dim")
    gen_n_downsample: int = param(2, min=0, max=6, source="official", doc="ACL-GAN/MUNIT gen.n_downsample")
    gen_n_res: int = param(4, min=0, source="official", doc="ACL-GAN/MUNIT gen.n_res")
    style_dim: int = param(8, min=1, source="official", doc="ACL-GAN/MUNIT gen.style_dim")
    mlp_dim: int = param(256, min=1, source="official", doc="ACL-GAN/MUNIT gen.mlp_dim")
    dis_dim: int = param(64, min=1, source="official", doc="ACL-GAN/MUNIT dis.dim")
    dis_n_layer: int = param(4, min=1, source="official", doc="ACL-GAN/MUNIT dis.n_layer")
    dis_num_scales: int = param(3, min=1, source="official", doc="ACL-GAN/MUNIT dis.num_scales")
    symmetric: bool = param(True, source="assumed",
                            doc="run ACL-GAN's losses from both domains (the paper trains both directions 'in a "
                                "cycle'; ACL-GAN trains one); false = from opacity images only")
    inference_style: Literal["zero", "random"] = param("zero", source="assumed",
                                                       doc="style code at translate(): z = 0 (deterministic, the "
                                                           "mode of N(0, I)) or a random draw")

    def validate(self, where: str) -> None:
        unknown = [n for n in self.q_labels if n not in NIH14]
        if unknown:
            raise ConfigError(f"{where}.q_labels: unknown label {unknown[0]!r} (NIH-14 names: {', '.join(NIH14)})")
        if len(set(self.q_labels)) != len(self.q_labels):
            raise ConfigError(f"{where}.q_labels: duplicate labels in {self.q_labels}")
        if self.lca and not self.q_labels:
            raise ConfigError(f"{where}.q_labels: empty while lca is on; list at least one label or set lca: false")


def label_filter(names: list[str]) -> torch.Tensor:
    """q of Eq. 7: (14,) float, 1 at the NIH-14 positions of `names`."""
    q = torch.zeros(len(NIH14))
    for n in names:
        q[NIH14.index(n)] = 1.0
    return q


class Ours(Translator):
    """Adaptive activation masks (AASPM, BAML) + cross-domain alignment (CDAM) + ACL-GAN adversarial loss."""

    name = "ours"
    Config = OursConfig
    has_mask = True

    def __init__(self, cfg: OursConfig, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        cfg.validate("ours")
        factor = 2 ** cfg.gen_n_downsample
        if image_size % factor:  # the decoder's upsampling must land on the input size for the blend of Eq. 1
            raise ValueError(f"ours: image size {image_size} must be divisible by {factor} (gen_n_downsample "
                             f"{cfg.gen_n_downsample} stride-2 convolutions); change data.resolution")
        gen = dict(in_channels=in_channels, dim=cfg.gen_dim, n_downsample=cfg.gen_n_downsample, n_res=cfg.gen_n_res,
                   style_dim=cfg.style_dim, mlp_dim=cfg.mlp_dim, adain=cfg.generator == "adain")
        dis = dict(dim=cfg.dis_dim, n_layer=cfg.dis_n_layer, num_scales=cfg.dis_num_scales)
        self.gen_a = MaskGenerator(**gen)  # G_A: opacity -> normal (the inference generator)
        self.gen_b = MaskGenerator(**gen)  # G_B: normal -> opacity
        self.dis_a = MultiScaleDiscriminator(in_channels, **dis)  # real vs generated opacity images
        self.dis_b = MultiScaleDiscriminator(in_channels, **dis)  # real vs generated normal images
        if cfg.acl_weight > 0:  # at 0 the pair term weighs nothing: no pair D to build, run or step
            self.dis_pair_a = MultiScaleDiscriminator(2 * in_channels, **dis)  # ACL pair D, pairs (x_a, .)
            if cfg.symmetric:
                self.dis_pair_b = MultiScaleDiscriminator(2 * in_channels, **dis)  # pairs (x_b, .)
        for name, module in self.named_children():
            if name.startswith("gen") and cfg.gen_init == "pytorch":
                continue  # the layers keep the init they were constructed with
            init_weights(module, "kaiming" if name.startswith("gen") else "gaussian")
        # the frozen classifier prior (phi, psi): only needed by FA / LCA
        self.prior = self._build_prior() if (cfg.fa or cfg.lca) else None
        self.register_buffer("q", label_filter(cfg.q_labels), persistent=False)

    def _build_prior(self) -> PriorNet:
        path = self.cfg.prior_weights
        if not path:
            warnings.warn("ours: prior_weights is empty: using a randomly initialised frozen prior (tests only)",
                          stacklevel=3)
            return freeze(PriorNet(input_size=max(64, min(256, self.image_size))))
        full = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
        if not full.is_file():
            raise PriorError(f"ours: prior weights {full} not found; run the `prior` stage first (dvc repro prior) "
                             "or set methods.ours.prior_weights in params.yaml")
        return load_prior(full)

    def train(self, mode: bool = True) -> "Ours":
        super().train(mode)
        if self.prior is not None:
            self.prior.eval()  # frozen: BatchNorm keeps its running statistics, always
        return self

    def discriminators(self) -> list[torch.nn.Module]:
        return [m for n, m in self.named_children() if n.startswith("dis_")]

    def inference_modules(self) -> list[str]:
        return ["gen_a", "gen_b"]

    # --- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_iterations: int):
        cfg = self.cfg
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        gen_params = list(self.gen_a.parameters()) + list(self.gen_b.parameters())
        dis_params = [p for d in self.discriminators() for p in d.parameters()]
        self.optimizers = {"gen": torch.optim.Adam(gen_params, **adam), "dis": torch.optim.Adam(dis_params, **adam)}
        period = max(1, round(cfg.lr_decay_every * total_iterations))  # paper: 1e5 of 2.5e5 iterations
        self.schedulers = {k: torch.optim.lr_scheduler.StepLR(o, step_size=period, gamma=cfg.lr_decay_factor)
                           for k, o in self.optimizers.items()}
        return self.optimizers, self.schedulers

    # --- forward ---------------------------------------------------------------------------------------------------
    def _run(self, gen: MaskGenerator, x: torch.Tensor, n_rec: int = 0, style: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """gen on a batch x (N, C, H, W) -> (blended images (Eq. 1), masks in [0, 1], self-reconstructions).

        The self-reconstructions are ACL-GAN's G(c(x), s(x)) of the last n_rec rows (image head, not blended; without
        AdaIN the intra-domain output itself). One encoder and one decoder pass for everything: every layer
        normalises per sample (IN, AdaIN, LN), so batching rows changes no result. With `gen_output: residual` the
        image head's tanh output is a change added to each row's own input (range [-2, 2] in training; inference
        clamps to [-1, 1]).
        """
        n = x.shape[0]
        content = gen.encode(x)
        style = gen.random_style(x) if style is None else style
        base = x
        if n_rec and gen.adain:
            content = torch.cat([content, content[n - n_rec:]])
            style = torch.cat([style, gen.style_of(x[n - n_rec:])])
            base = torch.cat([x, x[n - n_rec:]])
        image, mask_tanh = gen.decode(content, style)
        if self.cfg.gen_output == "residual":
            image = base + image
        mask = normalise_mask(mask_tanh[:n])
        rec = image[n:] if gen.adain else image[n - n_rec:n]
        return blend(image[:n], mask, x), mask, rec

    def forward_all(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every translation one step needs; names say <what>_<from><to>:
        fake_ab = G_A(x_a), intra_aa = G_B(x_a), cycle_aba = G_B(fake_ab), rec_a = G_B(c(x_a), s(x_a)), masks alike,
        and the mirror images from x_b (fake_ba, intra_bb, cycle_bab, rec_b). Without `symmetric` only what the
        opacity side needs plus G_A on x_b (self-reconstruction and Eq. 4)."""
        sym, n_a, n_b = self.cfg.symmetric, real_a.shape[0], real_b.shape[0]
        o: dict[str, torch.Tensor] = {}
        # G_A on x_a (inter-domain) and x_b (intra-domain), in one pass
        y, m, o["rec_b"] = self._run(self.gen_a, torch.cat([real_a, real_b]), n_rec=n_b)
        o["fake_ab"], o["intra_bb"], o["mask_ab"], o["mask_bb"] = y[:n_a], y[n_a:], m[:n_a], m[n_a:]
        # G_B on x_b (inter-domain) and x_a (intra-domain)
        y, m, o["rec_a"] = self._run(self.gen_b, torch.cat([real_b, real_a]) if sym else real_a, n_rec=n_a)
        o["intra_aa"], o["mask_aa"] = y[-n_a:], m[-n_a:]
        if sym:
            o["fake_ba"], o["mask_ba"] = y[:n_b], m[:n_b]
        # cycles
        o["cycle_aba"], o["mask_aba"], _ = self._run(self.gen_b, o["fake_ab"])
        if sym:
            o["cycle_bab"], o["mask_bab"], _ = self._run(self.gen_a, o["fake_ba"])
        # D' of Eq. 4: a random subset of each domain's batch (drawn even when bam is off: same RNG stream)
        k = max(1, math.ceil(self.cfg.bam_fraction * min(n_a, n_b)))
        o["subset_a"] = torch.randperm(n_a, device=real_a.device)[:k]
        o["subset_b"] = torch.randperm(n_b, device=real_b.device)[:k]
        return o

    # --- losses ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _scores(dis: MultiScaleDiscriminator, *groups: torch.Tensor) -> list[list[torch.Tensor]]:
        """One discriminator pass over several groups of images -> per group, its per-scale score maps."""
        sizes = [g.shape[0] for g in groups]
        per_scale = [out.split(sizes) for out in dis(torch.cat(groups))]
        return [list(scales) for scales in zip(*per_scale)]

    def _adversarial(self, real_a: torch.Tensor, real_b: torch.Tensor, o: dict[str, torch.Tensor],
                     for_generator: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """ACL-GAN's LSGAN losses, from x_a (and x_b when symmetric): (domain term, adversarial-consistency term).

        Domain D_B: real normals vs fake_ab; D_A: real opacity images vs the intra-domain and cycle outputs
        (each x0.5); the pair D: (x_a, intra_aa) labelled 0 vs (x_a, cycle_aba) labelled 1. Mirrored from x_b.
        The generators get the flipped targets (1 for every fake; 1 and 0 for the two pairs). With acl_weight 0 there
        is no pair D and the consistency term is 0.
        """
        sym = self.cfg.symmetric
        g = for_generator
        fake_label, real_label = (1.0, None) if g else (0.0, 1.0)
        into_b = [o["fake_ab"]] + ([o["intra_bb"], o["cycle_bab"]] if sym else [])
        into_a = [o["intra_aa"], o["cycle_aba"]] + ([o["fake_ba"]] if sym else [])
        if not g:
            into_b, into_a = [real_b] + [t.detach() for t in into_b], [real_a] + [t.detach() for t in into_a]
        sb, sa = self._scores(self.dis_b, *into_b), self._scores(self.dis_a, *into_a)
        gan = 0.0
        if not g:  # each origin domain brings one real term per domain discriminator
            gan = (2.0 if sym else 1.0) * (lsgan(sb.pop(0), real_label) + lsgan(sa.pop(0), real_label))
        gan = gan + lsgan(sb[0], fake_label) + 0.5 * (lsgan(sa[0], fake_label) + lsgan(sa[1], fake_label))
        if sym:
            gan = gan + lsgan(sa[2], fake_label) + 0.5 * (lsgan(sb[1], fake_label) + lsgan(sb[2], fake_label))
        pairs = []
        if self.cfg.acl_weight > 0:
            pairs.append((self.dis_pair_a, real_a, o["intra_aa"], o["cycle_aba"]))
            if sym:
                pairs.append((self.dis_pair_b, real_b, o["intra_bb"], o["cycle_bab"]))
        acl = real_a.new_zeros(())
        for dis, x, intra, cycle in pairs:
            if not g:
                intra, cycle = intra.detach(), cycle.detach()
            s_intra, s_cycle = self._scores(dis, torch.cat([x, intra], 1), torch.cat([x, cycle], 1))
            acl = acl + lsgan(s_intra, 1.0 if g else 0.0) + lsgan(s_cycle, 0.0 if g else 1.0)
        return gan, acl

    def generator_terms(self, real_a: torch.Tensor, real_b: torch.Tensor,
                        o: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every loss term of Eq. 8 (unweighted) for the current batch; terms of switched-off modules are absent."""
        cfg = self.cfg
        sym = cfg.symmetric
        o = self.forward_all(real_a, real_b) if o is None else o
        terms: dict[str, torch.Tensor] = {}
        terms["adv_gan"], terms["adv_acl"] = self._adversarial(real_a, real_b, o, for_generator=True)
        terms["rec"] = F.l1_loss(o["rec_a"], real_a) + F.l1_loss(o["rec_b"], real_b)
        if cfg.aaspm:  # Eq. 2-3 on the inter-domain masks (G_A on opacity images; G_B on normals when symmetric)
            masks = torch.cat([o["mask_ab"], o["mask_ba"]]) if sym else o["mask_ab"]
            terms["p_upper"] = p_upper(masks, cfg.f_upper, cfg.reduction)
            if cfg.f_lower > 0:  # not in the paper (ACL-GAN's lower size bound); counted with P_upper in Eq. 8
                terms["p_upper"] = terms["p_upper"] + p_lower(masks, cfg.f_lower, cfg.reduction)
            terms["p_repul"] = p_repul(masks, cfg.f_central, cfg.f_height, cfg.eps, cfg.reduction)
        if cfg.bam:  # Eq. 4 for G_A on D_Opacity+ = x_a + a subset of x_b, and by symmetry for G_B
            g_b_usual = o["mask_ba"] if sym else o["mask_aba"]  # G_B's inputs that do need translating
            terms["bam"] = (self._bam(o["mask_ab"], o["mask_bb"][o["subset_b"]])
                            + self._bam(g_b_usual, o["mask_aa"][o["subset_a"]]))
        if cfg.lambda_mil > 0:  # not in the paper: G_A on opacity (on) vs normal (off) inputs, G_B mirrored
            terms["mil"] = l_mil(o["mask_ab"], o["mask_bb"], cfg.mil_fraction, cfg.mil_fraction_keep)
            if sym:
                terms["mil"] = terms["mil"] + l_mil(o["mask_ba"], o["mask_aa"], cfg.mil_fraction,
                                                     cfg.mil_fraction_keep)
        if cfg.lambda_cycle > 0:  # not in the paper: CycleGAN's pixel tie, through the blended cycle (item 12)
            terms["cycle"] = F.l1_loss(o["cycle_aba"], real_a)
            if sym:
                terms["cycle"] = terms["cycle"] + F.l1_loss(o["cycle_bab"], real_b)
        if cfg.lambda_sparse > 0:  # not in the paper: G_A's masks on opacity images, G_B's on normals (item 17)
            terms["sparse"] = l_sparse(o["mask_ab"]) + (l_sparse(o["mask_ba"]) if sym else 0.0)
        if cfg.fa or cfg.lca:
            terms.update(self._cdam_terms(real_a, real_b, o))
        return terms

    def _bam(self, masks_translate: torch.Tensor, masks_keep: torch.Tensor) -> torch.Tensor:
        masks = torch.cat([masks_translate, masks_keep])
        keep = torch.zeros(len(masks), dtype=torch.bool, device=masks.device)
        keep[len(masks_translate):] = True
        return l_bam(masks, keep, self.cfg.reduction)

    def _cdam_terms(self, real_a: torch.Tensor, real_b: torch.Tensor,
                    o: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 5-7 through the frozen prior: translated images carry gradients, real ones do not."""
        cfg = self.cfg
        both = cfg.symmetric and cfg.fa
        feats_fake = self.prior.features(torch.cat([o["fake_ab"], o["fake_ba"]]) if both else o["fake_ab"])
        with torch.no_grad():
            feats_real = self.prior.features(torch.cat([real_a, real_b]) if both else real_a)
        terms = {}
        if cfg.fa:  # FA of both directions (the paper: 'the same notation applies to the reverse direction')
            terms["structural"] = l_structural(feats_fake, feats_real)
            terms["style"] = l_style(feats_fake, feats_real, cfg.style_gram_norm)
        if cfg.lca:  # Eq. 7 on opacity -> normal only: its inversion is specific to removing findings
            n = real_a.shape[0]
            with torch.no_grad():
                logits_source = self.prior.head(feats_real[:n])
            terms["classifier"] = l_classifier(self.prior.head(feats_fake[:n]), logits_source, self.q,
                                               cfg.threshold, cfg.lca_select)
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 8 with this model's lambdas."""
        c = self.cfg
        return l_total(terms, c.lambda_penalties, c.lambda_bam, c.lambda_feature, c.lambda_classifier, c.lambda_adv,
                       c.lambda_rec, c.lambda_style, c.acl_weight, c.lambda_mil, c.lambda_cycle,
                       c.lambda_sparse)

    def discriminator_terms(self, real_a: torch.Tensor, real_b: torch.Tensor,
                            o: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """LSGAN losses of D_A, D_B and the pair discriminator(s) on detached translations."""
        gan, acl = self._adversarial(real_a, real_b, o, for_generator=False)
        return {"d_gan": gan, "d_acl": acl}

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, step: int, ctx) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        opt_g, opt_d = self.optimizers["gen"], self.optimizers["dis"]
        # generators: Eq. 8 (discriminators frozen so their parameters collect no gradient)
        for d in self.discriminators():
            d.requires_grad_(False)
        o = self.forward_all(real_a, real_b)
        terms = self.generator_terms(real_a, real_b, o)
        total = self.total(terms)
        opt_g.zero_grad(set_to_none=True)
        ctx.backward(total)
        opt_g.step()
        # discriminators: on the same translations, detached (as CycleGAN orders it; one generator forward per step)
        for d in self.discriminators():
            d.requires_grad_(True)
        d_terms = self.discriminator_terms(real_a, real_b, o)
        d_total = cfg.lambda_adv * (d_terms["d_gan"] + cfg.acl_weight * d_terms["d_acl"])
        opt_d.zero_grad(set_to_none=True)
        ctx.backward(d_total)
        opt_d.step()
        logged = dict(terms, total=total, d_total=d_total, **d_terms,
                      mask_area_opacity=o["mask_ab"].mean(), mask_area_normal=o["mask_bb"].mean())
        return {k: v.detach() for k, v in logged.items()}

    # --- diagnostics (logged every log_every steps on the engine's fixed validation batch) -----------------------
    def diagnostics(self, probe: Probe) -> dict[str, float]:
        """The mask's behaviour (area on opacity vs normal images, AUROC and IoU against the true opacity mask) and
        how hard each term of Eq. 8 pulls on G_A's mask head."""
        out = {**mask_diagnostics(self, probe), **self.mask_gradient_ratios(probe.a[:4], probe.b[:4])}
        if self.gen_a.adain:
            out["diag_mask_style_share"] = self.mask_style_share(probe.a[:8])
        return out

    @torch.no_grad()
    def mask_style_share(self, x: torch.Tensor, draws: int = 4) -> float:
        """How much G_A's mask follows the random style code rather than the image (README item 11): the mask's
        std across style draws for the same image, over its std across images for the same draw, both averaged
        over pixels. Near 1: the mask is as much noise as image; a mask that localises needs it near 0."""
        g = self.gen_a
        was_training = g.training
        g.eval()
        content = g.encode(x)
        masks = torch.stack([normalise_mask(g.decode(content, g.random_style(x))[1]) for _ in range(draws)])
        g.train(was_training)
        return float(masks.std(0).mean() / masks.std(1).mean().clamp_min(1e-12))

    def mask_gradient_ratios(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """Norm of each weighted Eq. 8 term's gradient at G_A's mask head (the mask row of its last conv), divided by
        the adversarial term's: diag_grad_<term> (diag_grad_adv is the adversarial norm itself). A ratio of 1e-3
        means the term cannot move the mask against the adversarial pull; 1e3 means it alone decides it."""
        c = self.cfg
        head = self.gen_a.to_output[0].weight  # (C + 1, dim, 7, 7): rows C.. produce the mask
        terms = self.generator_terms(real_a, real_b)
        zero = head.new_zeros(())
        weighted = {"adv": c.lambda_adv * (terms["adv_gan"] + c.acl_weight * terms["adv_acl"]),
                    "rec": c.lambda_rec * terms["rec"]}
        if c.aaspm:
            weighted["p_upper"] = c.lambda_penalties * terms["p_upper"]
            weighted["p_repul"] = c.lambda_penalties * terms["p_repul"]
        if c.bam:
            weighted["bam"] = c.lambda_bam * terms["bam"]
        if c.fa:
            weighted["feature"] = c.lambda_feature * l_feature(terms["structural"], terms["style"], c.lambda_style)
        if c.lca:
            weighted["classifier"] = c.lambda_classifier * terms.get("classifier", zero)
        if c.lambda_mil > 0:
            weighted["mil"] = c.lambda_mil * terms["mil"]
        if c.lambda_cycle > 0:
            weighted["cycle"] = c.lambda_cycle * terms["cycle"]
        if c.lambda_sparse > 0:
            weighted["sparse"] = c.lambda_sparse * terms["sparse"]
        norms = {}
        for name, value in weighted.items():
            grad = (torch.autograd.grad(value, head, retain_graph=True, allow_unused=True)[0]
                    if value.requires_grad else None)
            norms[name] = 0.0 if grad is None else float(grad[self.in_channels:].norm())
        adv = norms.pop("adv")
        return {"diag_grad_adv": adv, **{f"diag_grad_{k}": v / max(adv, 1e-30) for k, v in norms.items()}}

    # --- inference -------------------------------------------------------------------------------------------------
    def _inference(self, gen: MaskGenerator, x: torch.Tensor) -> Translation:
        style = None
        if gen.adain:
            style = gen.random_style(x)
            if self.cfg.inference_style == "zero":
                style = torch.zeros_like(style)
        image, mask, _ = self._run(gen, x, style=style)
        return Translation(image.clamp(-1.0, 1.0), mask.clamp(0.0, 1.0))

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> Translation:
        """Opacity -> normal with G_A: the blended image (Eq. 1) and the activation mask in [0, 1]."""
        return self._inference(self.gen_a, x)

    @torch.no_grad()
    def translate_b2a(self, x: torch.Tensor) -> Translation:
        """Normal -> opacity with G_B."""
        return self._inference(self.gen_b, x)
