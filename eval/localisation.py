"""Does the prior point at the opacity? Maps taken from the frozen prior alone, scored against the true opacity masks.

Why this exists: in ours, L_classifier (Eq. 7) is the only term of Eq. 8 that tells the activation mask where the
opacity is, and it does so through the prior's gradients. A mask trained through a prior is not expected to localise
the opacity better than the prior's own maps do, so a prior is measured here before any mask is trained through it.

Maps, for images x (N, 1, H, W) in [-1, 1] and the prior's opacity-type labels Q (ours' `q_labels`):
- cam:        class-activation map (Zhou et al. 2016) per label k in Q: sum_c w_kc ReLU(phi(x))_c, phi the prior's
              last feature map (1024 x s/32 x s/32), w the classifier weights; bilinearly upsampled to H x W; the
              pixel's score is the maximum over the labels in Q (an image may show any of them);
- saliency:   |d sum_{k in Q} logit_k / d x|, box-smoothed over `smooth` px (a single pixel's gradient is noisy);
- intensity:  the pixel value itself: a floor (is the opacity simply the brightest region?);
- position:   the fraction of the scored images with opacity at each pixel position, the same map for every image:
              it sees no image, only where opacities tend to be (inside the lungs), and on the DRR benchmark it
              already scores about 0.87. A map that does not beat it says nothing about *this* image's opacity
              (eval/paired.py position_floor is its pooled form, the floor of the mask AUROC columns).

The score of a map is the mean over images (with some opacity and some background) of the per-image pixel AUROC
against the true opacity mask (0.5 = chance; the one AUROC of pipeline/auroc.py), with its N and a 95 % percentile
bootstrap interval over the images (eval/stats.py).

A second question is asked of the data, not of the prior: how well can *any* network that only knows which domain
an image comes from (all that unpaired translation knows) localise the opacity? `weak_label_localiser` trains a
small fully convolutional net (multiple-instance learning: the mean of its top-k pixel logits classifies the image,
opacity vs normal) on the training images and scores its pixel map like the maps above. It is the reference for
ours' mask: a mask taught only by domain labels is not expected to localise better than a net trained for nothing
else. `python -m eval.localisation DATASET_DIR` runs it on a dataset written by `cxrbench data`.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

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


def position_map(truth: torch.Tensor) -> torch.Tensor:
    """(N, H, W): the opacity frequency at each pixel position over the N images of `truth` (N, 1, H, W) bool, the
    same map for every image (the image-blind reference)."""
    return truth[:, 0].float().mean(0, keepdim=True).expand(len(truth), -1, -1)


def localisation(net, images: torch.Tensor, truth: torch.Tensor, labels: list[str], smooth: int = 9,
                 batch_size: int = 16) -> dict:
    """{"cam", "saliency", "intensity": map_auroc's summary of each map, "n_images": images scored} for opacity
    `images` (N, 1, H, W) in [-1, 1] with true opacity masks `truth` (N, 1, H, W) bool."""
    maps: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch_size):
        for k, v in prior_maps(net, images[i:i + batch_size], labels, smooth).items():
            maps.setdefault(k, []).append(v)
    maps["position"] = [position_map(truth)]
    out: dict = {k: map_auroc(torch.cat(parts), truth[:, 0].bool()) for k, parts in maps.items()}
    out["n_images"] = out["cam"]["n"]
    return out


# --------------------------------------------------------------------------------------------------------------------
# The data's own localisability: a net trained on domain labels only.
# --------------------------------------------------------------------------------------------------------------------
class MilNet(nn.Module):
    """Fully convolutional: (N, 1, H, W) -> (N, 1, H, W) pixel logits; two stride-2 stages, receptive field 37 px."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.InstanceNorm2d(o, affine=True), nn.LeakyReLU(0.2))

        w = width
        self.body = nn.Sequential(block(1, w), block(w, w, 2), block(w, 2 * w), block(2 * w, 2 * w, 2),
                                  block(2 * w, 2 * w), block(2 * w, 2 * w), nn.Conv2d(2 * w, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def top_k_mean(logits: torch.Tensor, fraction: float) -> torch.Tensor:
    """(N, 1, H, W) -> (N,): the mean of each image's top `fraction` of pixel logits (at least one pixel)."""
    flat = logits.flatten(1)
    return flat.topk(max(1, int(fraction * flat.shape[1])), dim=1).values.mean(1)


def weak_label_localiser(a: torch.Tensor, b: torch.Tensor, steps: int = 800, fraction: float = 0.2,
                         width: int = 16, batch_size: int = 16, lr: float = 1e-3, seed: int = 0) -> MilNet:
    """Train a MilNet on opacity images `a` and normal images `b` (N, 1, H, W) in [-1, 1]: binary cross-entropy of
    top_k_mean(logits) against the domain (1 = opacity), Adam, `batch_size` images per domain, random horizontal
    flips. Returns the net in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MilNet(width)
    opt = torch.optim.Adam(net.parameters(), lr)
    target = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)])
    for _ in range(steps):
        x = torch.cat([a[torch.randint(0, len(a), (batch_size,), generator=g)],
                       b[torch.randint(0, len(b), (batch_size,), generator=g)]])
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        loss = F.binary_cross_entropy_with_logits(top_k_mean(net(x), fraction), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def weak_label_localisation(net: MilNet, images: torch.Tensor, truth: torch.Tensor, normals: torch.Tensor,
                            fraction: float = 0.2) -> dict:
    """{"pixel": map_auroc of the net's pixel logits on opacity `images` vs `truth` (N, 1, H, W) bool, "position":
    the same for the image-blind position_map (what "pixel" must beat), "image": AUROC of top_k_mean between opacity
    images and `normals` (how well the net tells the domains apart), "n_images"}."""
    la, lb = net(images), net(normals)
    scores = torch.cat([top_k_mean(la, fraction), top_k_mean(lb, fraction)]).double().numpy()
    labels = torch.cat([torch.ones(len(la)), torch.zeros(len(lb))]).numpy()
    pixel = map_auroc(la[:, 0], truth[:, 0].bool())
    return {"pixel": pixel, "position": map_auroc(position_map(truth), truth[:, 0].bool()),
            "image": auroc(scores, labels), "n_images": pixel["n"], "n_normals": len(lb)}


def main(argv: list[str] | None = None) -> None:
    """Weak-label localisability of a dataset: train on its training split, score on its validation split."""
    from pipeline.data.canonical import load_images, load_masks, read_manifest

    ap = argparse.ArgumentParser(prog="python -m eval.localisation", description=main.__doc__)
    ap.add_argument("dataset", help="a dataset folder written by `cxrbench data` (e.g. data/drr)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--fraction", type=float, default=0.2, help="top-k fraction of the MIL pooling")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-val", type=int, default=200, help="validation images per domain scored")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    df = read_manifest(args.dataset)

    def images(split: str, domain: str, limit: int | None = None):
        rows = df[(df["split"] == split) & (df["domain"] == domain)].sort_values("id").iloc[:limit]
        return torch.from_numpy(load_images(args.dataset, rows)).float()[:, None] / 127.5 - 1, rows

    (a, _), (b, _) = images("train", "opacity"), images("train", "normal")
    (va, rows), (vb, _) = images("val", "opacity", args.max_val), images("val", "normal", args.max_val)
    if (rows["opacity_mask"] == "").any():
        raise SystemExit(f"{args.dataset}: its validation opacity images have no opacity masks (only the DRR "
                         "benchmark has them); nothing to score against")
    truth = torch.from_numpy(load_masks(args.dataset, rows, "opacity_mask"))[:, None] > 0
    for seed in args.seeds:
        t0 = time.time()
        net = weak_label_localiser(a, b, args.steps, args.fraction, args.width, seed=seed)
        r = weak_label_localisation(net, va, truth, vb, args.fraction)
        r.update(seed=seed, steps=args.steps, fraction=args.fraction, width=args.width, n_train=[len(a), len(b)],
                 seconds=round(time.time() - t0, 1))
        print(json.dumps(r, default=float))


if __name__ == "__main__":
    main()
