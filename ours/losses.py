"""The paper's equations, one function each (its section 3), plus the LSGAN pieces of ACL-GAN's L_adv.

Conventions: masks are (B, 1, H, W) in [0, 1] after `normalise_mask`; images (B, C, H, W) in [-1, 1]; prior
features (B, 1024, h, w); prior logits (B, 14). Every loss returns a scalar tensor. `reduction` is how the pixel
sums printed in Eq. 2-4 are taken per image (ours/README.md, "Reading of the equations"):
  "mean"  every sum divided by the pixel count H W (Eq. 2 then caps the mask's area fraction, softly);
  "sum"   literal pixel sums (Eq. 2 is then zero only for a mask with under one pixel of activation in total);
  "acl"   ACL-GAN's focus-loss code, which Eq. 2-3 modify: Eq. 2 as ReLU(sum_m (m - F_upper))^2 / (H W)
          = H W ReLU(mean(m) - F_upper)^2 (a hard cap on the area fraction), Eq. 3 and 4 as means.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "sum", "acl"]


def _per_image(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """(B, ...) -> (B,): the pixel sum of Eq. 2-4 as a sum ("sum"), or divided by the pixel count ("mean", "acl")."""
    flat = x.flatten(1)
    return flat.sum(1) if reduction == "sum" else flat.mean(1)


# ---------------------------------------------------------------------------------------------------------------------
# 3.2 AASPM
# ---------------------------------------------------------------------------------------------------------------------
def normalise_mask(mask_tanh: torch.Tensor) -> torch.Tensor:
    """Eq. 1 (text below it): min-max normalisation of the generator's mask from [-1, 1] to [0, 1]: (m + 1) / 2."""
    return (mask_tanh + 1.0) * 0.5


def blend(output: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Eq. 1: X_hat = Output_G * M + (1 - M) * X_source. mask (B, 1, H, W) in [0, 1] broadcasts over channels."""
    return output * mask + (1.0 - mask) * source


def p_upper(mask: torch.Tensor, f_upper: float = 0.75, reduction: Reduction = "mean") -> torch.Tensor:
    """Eq. 2: P_upper = ReLU(sum_m m - F_upper)^2 per image, averaged over the batch.

    With reduction="mean" the sum is the mask's mean activation (its area fraction): penalise area above F_upper.
    With "acl" (ACL-GAN's size term, sum of (m - F_upper), squared, over the pixel count): H W times the "mean"
    value, so the cap binds at the scale of the other per-pixel terms.
    """
    if reduction == "acl":
        n_pixels = mask[0].numel()
        return (F.relu(mask.float().flatten(1).mean(1) - f_upper).pow(2) * n_pixels).mean()
    return F.relu(_per_image(mask.float(), reduction) - f_upper).pow(2).mean()


def p_lower(mask: torch.Tensor, f_lower: float = 0.0, reduction: Reduction = "mean") -> torch.Tensor:
    """Not in the paper: ACL-GAN's lower size bound, the mirror of Eq. 2, ReLU(F_lower - area)^2 per image (same
    reductions as `p_upper`). The paper drops it (F_lower = 0: off); `ours/README.md` says why we offer it back."""
    area = mask.float().flatten(1).mean(1)
    scale = mask[0].numel() if reduction == "acl" else 1.0
    if reduction == "sum":
        area, f_lower = area * mask[0].numel(), f_lower * mask[0].numel()
    return (F.relu(f_lower - area).pow(2) * scale).mean()


def p_repul(mask: torch.Tensor, f_central: float = 0.1, f_height: float = 0.2, eps: float = 0.01,
            reduction: Reduction = "mean") -> torch.Tensor:
    """Eq. 3: P_repul = sum_m (1 / (|m - F_central| + eps))^F_height per image, averaged over the batch.

    Largest (eps^-F_height = 2.51 at the defaults) where m = F_central: pushes activations away from it.
    """
    per_pixel = (1.0 / ((mask.float() - f_central).abs() + eps)).pow(f_height)
    return _per_image(per_pixel, reduction).mean()


def l_bam(masks: torch.Tensor, no_translation_needed: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Eq. 4: L_bam = A(M) * 1(label = Non-Opacity), averaged over the expanded set D_Opacity+.

    masks (N, 1, H, W): one generator's masks on D_Opacity+ (its usual inputs plus a random subset of images that
    already belong to its output domain); no_translation_needed (N,) bool: 1 for the latter (for G_A: the normal
    images; for G_B, by symmetry: the opacity images). A(.) = sum of absolute values (or their mean, `reduction`).
    """
    weight = no_translation_needed.float()
    return (_per_image(masks.float().abs(), reduction) * weight).mean()


def l_mil(masks_translate: torch.Tensor, masks_keep: torch.Tensor, fraction: float = 0.2,
          fraction_keep: float = 0.0) -> torch.Tensor:
    """Not in the paper (a named variant, `lambda_mil`; ours/README.md "What we found", item 10): Eq. 4 read as
    multiple-instance learning. Eq. 4 asks the mask to stay off on images that need no translation; this term also
    asks it to be on *somewhere* on images that do, so the mask head becomes a classifier of where the domains
    differ: binary cross-entropy of each image's top-`fraction` mean mask value against 1 for the generator's usual
    inputs and 0 for images already in its output domain, averaged over both groups (each group's images averaged).

    masks_translate, masks_keep: (N, 1, H, W) and (M, 1, H, W) in [0, 1]. fraction_keep > 0 pools the images to keep
    over their own top fraction (a smaller one aims at the mask's few confident pixels there; README item 15)."""
    def pooled(m: torch.Tensor, f: float) -> torch.Tensor:
        flat = m.float().flatten(1)
        return flat.topk(max(1, int(f * flat.shape[1])), dim=1).values.mean(1).clamp(1e-4, 1 - 1e-4)

    on, off = pooled(masks_translate, fraction), pooled(masks_keep, fraction_keep or fraction)
    return 0.5 * (F.binary_cross_entropy(on, torch.ones_like(on)) + F.binary_cross_entropy(off, torch.zeros_like(off)))


def l_sparse(masks_translate: torch.Tensor) -> torch.Tensor:
    """Not in the paper (a named variant, `lambda_sparse`; ours/README.md "What we found", item 17): the mean mask
    value on the images a generator does translate, i.e. Eq. 4's A(M) (mean reading) on D_Opacity itself rather than
    on the images to keep. Where the generator's own change is needed the adversarial terms hold the mask up; where
    the mask changes nothing (a residual near 0: outside the lung) only this term acts on it, so the mask's extent
    follows where the image needs changing instead of a fixed L_mil pool. masks_translate: (N, 1, H, W) in [0, 1]."""
    return masks_translate.float().abs().flatten(1).mean(1).mean()


# ---------------------------------------------------------------------------------------------------------------------
# 3.3 CDAM
# ---------------------------------------------------------------------------------------------------------------------
def instance_norm(feats: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """IN: per sample and channel, zero mean and unit variance over (h, w) (biased variance, as nn.InstanceNorm2d)."""
    return F.instance_norm(feats.float(), eps=eps)


def gram_matrix(feats: torch.Tensor, norm: Literal["hw", "chw"] = "hw") -> torch.Tensor:
    """GM: (B, C, h, w) -> (B, C, C) = F F^T / (h w) (channel second moments; "chw": / (C h w), Gatys/Johnson)."""
    b, c, h, w = feats.shape
    f = feats.float().reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w * (c if norm == "chw" else 1))


def l_structural(feats_translated: torch.Tensor, feats_source: torch.Tensor) -> torch.Tensor:
    """Eq. 5: || IN(phi(X_hat)) - IN(phi(X)) ||^2, as the mean over elements (MSE)."""
    return (instance_norm(feats_translated) - instance_norm(feats_source)).pow(2).mean()


def l_style(feats_translated: torch.Tensor, feats_source: torch.Tensor,
            norm: Literal["hw", "chw"] = "hw") -> torch.Tensor:
    """Eq. 6: || GM(phi(X_hat)) - GM(phi(X)) ||^2, as the mean over elements (MSE)."""
    return (gram_matrix(feats_translated, norm) - gram_matrix(feats_source, norm)).pow(2).mean()


def l_feature(structural: torch.Tensor, style: torch.Tensor, lambda_style: float = 0.5) -> torch.Tensor:
    """Text after Eq. 6: L_feature = lambda_style * L_style + L_structural."""
    return lambda_style * style + structural


def l_classifier(logits_translated: torch.Tensor, logits_source: torch.Tensor, q: torch.Tensor,
                 threshold: float = 0.5, select: Literal["positive", "q"] = "positive") -> torch.Tensor:
    """Eq. 7: L_classifier = BCE(Pred_inverted Non-Opacity, Pred_Opacity) over the labels selected by q.

    target  Pred_Opacity = 1(sigmoid(psi(phi(X))) > p) * q: hard, as printed (no gradient needed: X is real).
    input   Pred_inverted = 1 - sigmoid(psi(phi(X_hat))): f_inverted is 1 - (.). The printed 1(. > p) on this side
            has zero gradient almost everywhere, so the soft probability is used; BCE(1 - sigmoid(z), t) is
            computed stably as BCE-with-logits(-z, t).
    select  "positive": only (image, label) pairs with q = 1 and a positive source prediction ("the positive label
            predictions of the CXRs from the source domain above the threshold p are selected"); the translation
            must then make the prior call those findings absent. "q": every label with q = 1 (the literal masked
            vectors; source-negative labels then push the translation towards *predicting* the finding).
    Mean over the selected pairs; 0 (still connected to the graph) when none is selected.
    """
    q = q.to(logits_translated.device).bool()
    with torch.no_grad():
        target = (torch.sigmoid(logits_source.float()) > threshold) & q
        selected = target if select == "positive" else q.expand_as(target)
    per_label = F.binary_cross_entropy_with_logits(-logits_translated.float(), target.float(), reduction="none")
    weight = selected.float()
    return (per_label * weight).sum() / weight.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------------------
# 3.4 Total objective
# ---------------------------------------------------------------------------------------------------------------------
def l_total(terms: dict[str, torch.Tensor], lambda_penalties: float = 0.01, lambda_bam: float = 0.1,
            lambda_feature: float = 0.5, lambda_classifier: float = 0.5, lambda_adv: float = 2.0,
            lambda_rec: float = 1.0, lambda_style: float = 0.5, acl_weight: float = 0.2,
            lambda_mil: float = 0.0, lambda_cycle: float = 0.0, lambda_sparse: float = 0.0) -> torch.Tensor:
    """Eq. 8: lambda_penalties (P_upper + P_repul) + lambda_bam L_bam + lambda_feature L_feature
    + lambda_classifier L_classifier + lambda_adv L_adv + lambda_rec L_rec (+ lambda_mil L_mil, lambda_cycle
    L_cycle and lambda_sparse L_sparse, not in the paper).

    terms: any of p_upper, p_repul, bam, structural, style, classifier, adv_gan, adv_acl, rec, mil, cycle, sparse; a
    missing
    term (its ablation switch is off) contributes nothing. L_adv = adv_gan + acl_weight * adv_acl (ACL-GAN's gan_w,
    gan_cw).
    """
    zero = next(iter(terms.values())).new_zeros(()) if terms else torch.zeros(())
    t = lambda name: terms.get(name, zero)  # noqa: E731
    return (lambda_penalties * (t("p_upper") + t("p_repul"))
            + lambda_bam * t("bam")
            + lambda_feature * l_feature(t("structural"), t("style"), lambda_style)
            + lambda_classifier * t("classifier")
            + lambda_adv * (t("adv_gan") + acl_weight * t("adv_acl"))
            + lambda_rec * t("rec")
            + lambda_mil * t("mil")
            + lambda_cycle * t("cycle")
            + lambda_sparse * t("sparse"))


# ---------------------------------------------------------------------------------------------------------------------
# LSGAN (ACL-GAN's gan_type: lsgan), summed over the discriminator's scales
# ---------------------------------------------------------------------------------------------------------------------
def lsgan(outputs: list[torch.Tensor], target: float) -> torch.Tensor:
    """sum over scales of mean((D(x) - target)^2)."""
    return sum((o.float() - target).pow(2).mean() for o in outputs)
