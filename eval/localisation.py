"""Does the prior point at the opacity? Maps taken from the frozen prior alone, scored against the true opacity masks.

Why this exists: in ours, L_classifier (Eq. 7) is the only term of Eq. 8 that tells the activation mask where the
opacity is, and it does so through the prior's gradients. A mask trained through a prior is not expected to localise
the opacity better than the prior's own maps do, so a prior is measured here before any mask is trained through it.

Maps, for images x (N, 1, H, W) in [-1, 1] and the prior's opacity-type labels Q (ours' `q_labels`):
- cam:        class-activation map (Zhou et al. 2016) per label k in Q: sum_c w_kc ReLU(phi(x))_c, phi the prior's
              last feature map (1024 x s/32 x s/32), w the classifier weights; bilinearly upsampled to H x W; the
              pixel's score is the maximum over the labels in Q (an image may show any of them);
- saliency:   |d sum_{k in Q} logit_k / d x|, box-smoothed over `smooth` px (a single pixel's gradient is noisy);
- intensity:  the pixel value itself: a floor (is the opacity simply the brightest region?).

The score of a map is the mean over images (with some opacity and some background) of the per-image pixel AUROC
against the true opacity mask (0.5 = chance; the one AUROC of pipeline/auroc.py), with its N and a 95 % percentile
bootstrap interval over the images (eval/stats.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eval.stats import bootstrap_ci
from pipeline.auroc import auroc
from pipeline.data.canonical import NIH14


def class_activation_maps(net, feats: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """(N, K, s/32, s/32) CAMs of the labels `idx` from the prior's feature map `feats` (N, 1024, s/32, s/32):
    their spatial mean plus the classifier bias is the label's logit (global average pooling is linear)."""
    return torch.einsum("kc,nchw->nkhw", net.densenet.classifier.weight[idx], F.relu(feats))


def prior_maps(net, images: torch.Tensor, labels: list[str], smooth: int = 9) -> dict[str, torch.Tensor]:
    """{"cam", "saliency", "intensity"}: (N, H, W) float maps of `images` (N, 1, H, W) in [-1, 1] under the frozen
    prior `net` (a pipeline.prior.PriorNet in eval mode), for the NIH-14 `labels` named."""
    idx = [NIH14.index(n) for n in labels]
    h, w = images.shape[-2:]
    x = images.detach().clone().requires_grad_(True)
    feats = net.features(x)  # (N, 1024, s/32, s/32)
    cams = class_activation_maps(net, feats, idx)
    cam = F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False).amax(1)
    logits = net.head(feats)[:, idx]
    (grad,) = torch.autograd.grad(logits.sum(), x)
    saliency = grad.abs()
    if smooth > 1:
        saliency = F.avg_pool2d(saliency, smooth, stride=1, padding=smooth // 2, count_include_pad=False)
    return {"cam": cam.detach(), "saliency": saliency[:, 0].detach(), "intensity": images[:, 0].detach()}


def map_auroc(maps: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-image pixel AUROC of `maps` (N, H, W) against boolean `truth` (N, H, W), over the images it is defined for
    (some opacity and some background): {"mean", "lo", "hi" (95 % bootstrap over images), "n", ...}."""
    values = [auroc(m.flatten().double().cpu().numpy(), t.flatten().cpu().numpy())
              for m, t in zip(maps, truth)]
    return bootstrap_ci([v for v in values if v is not None])


def localisation(net, images: torch.Tensor, truth: torch.Tensor, labels: list[str], smooth: int = 9,
                 batch_size: int = 16) -> dict:
    """{"cam", "saliency", "intensity": map_auroc's summary of each map, "n_images": images scored} for opacity
    `images` (N, 1, H, W) in [-1, 1] with true opacity masks `truth` (N, 1, H, W) bool."""
    maps: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch_size):
        for k, v in prior_maps(net, images[i:i + batch_size], labels, smooth).items():
            maps.setdefault(k, []).append(v)
    out: dict = {k: map_auroc(torch.cat(parts), truth[:, 0].bool()) for k, parts in maps.items()}
    out["n_images"] = out["cam"]["n"]
    return out
