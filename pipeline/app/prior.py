"""The `prior` stage: convert `prior.weights` or train the prior on the training split, then report its per-label
AUROC on the test split (its competence). The network, its checkpoint layouts and its trainer are in pipeline/prior.py.

    run_prior_stage(params, data_root, out_dir)   # what `cxrbench prior` runs: out_dir/prior.pt + prior.json
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import distributed
from pipeline.auroc import per_label_auroc
from pipeline.data import canonical
from pipeline.data.canonical import NIH14
from pipeline.engine import select_device, to_model_range
from pipeline.io import write_json
from pipeline.offline import PROJECT_ROOT
from pipeline.prior import convert_checkpoint, predict_images, save_prior, train_prior

log = logging.getLogger("cxrbench.prior")


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def run_prior_stage(params: Any, data_root: Path, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """The `prior` stage: convert params.prior.weights or train on `data_root/<prior.dataset>` (train split), then
    report per-label AUROC on its test split. Writes out_dir/prior.pt and out_dir/prior.json; returns the summary."""
    pp = params.prior
    if hasattr(params, "train"):
        distributed.share_threads(params.train.threads)
    device = select_device(getattr(getattr(params, "train", None), "device", "auto"))
    dataset_dir = Path(data_root) / pp.dataset
    df = canonical.read_manifest(dataset_dir)
    summary: dict[str, Any] = {"input_size": pp.input_size, "dataset": pp.dataset,
                               "feature_shape": [1024, pp.input_size // 32, pp.input_size // 32]}
    if pp.weights:
        net, info = convert_checkpoint(_resolve(pp.weights), pp.input_size)
        summary.update(source="converted", weights=pp.weights, layout=info["layout"],
                       missing_labels=info["missing_labels"])
    else:
        train = df[df["split"] == "train"]
        net, info = train_prior(canonical.load_images(dataset_dir, train), canonical.label_matrix(train), pp,
                                device, progress=progress)
        summary.update(source="trained", n_train=len(train), **info)
    net = net.to(device)
    test = df[df["split"] == "test"]
    summary["n_test"] = len(test)
    if len(test):
        labels = canonical.label_matrix(test)
        aurocs = per_label_auroc(predict_images(net, canonical.load_images(dataset_dir, test), device), labels)
        summary["test_positives"] = {n: int(labels[:, i].sum()) for i, n in enumerate(NIH14)}
    else:
        aurocs = {n: "n/a" for n in NIH14}
    defined = [v for v in aurocs.values() if v != "n/a"]
    summary["localisation"] = prior_localisation(net, dataset_dir, test, device)
    summary["auroc"] = aurocs
    summary["mean_auroc"] = round(float(np.mean(defined)), 6) if defined else "n/a"
    summary["n_labels_with_auroc"] = len(defined)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_prior(net.cpu(), out_dir / "prior.pt", summary)
    write_json(out_dir / "prior.json", summary)
    log.info("prior: %s, mean AUROC %s over %d labels", summary["source"], summary["mean_auroc"], len(defined))
    per_label = ", ".join(f"{k} {v:.2f}" for k, v in aurocs.items() if v != "n/a")
    print(f"prior: {summary['source']}; test AUROC per label: {per_label}; mean {summary['mean_auroc']} over "
          f"{len(defined)} labels (feature map {summary['feature_shape'][1]}x{summary['feature_shape'][2]})",
          flush=True)
    loc = summary["localisation"]
    if loc.get("n_images"):
        print(f"prior: does it point at the opacity? per-image pixel AUROC against the true opacity masks of "
              f"{loc['n_images']} test images, mean [95 % bootstrap interval]: CAM {interval(loc['cam'])}, "
              f"input-gradient saliency {interval(loc['saliency'])} (pixel intensity {interval(loc['intensity'])}; "
              "chance 0.5)", flush=True)
    return summary


LOCALISATION_IMAGES = 64  # test opacity images scored: a stable mean AUROC in ~10 s on a CPU at 256 px input


def prior_localisation(net, dataset_dir: Path, test, device) -> dict[str, Any]:
    """eval/localisation.py's maps of the opacity-type labels on the first test opacity images that have a true
    opacity mask (the DRR benchmark has them; real datasets do not: then {"n_images": 0})."""
    import torch

    from eval.localisation import localisation

    rows = test[(test["domain"] == "opacity") & (test["opacity_mask"] != "")].sort_values("id")
    rows = rows.iloc[:LOCALISATION_IMAGES]
    if rows.empty:
        return {"n_images": 0, "note": "no test image with a true opacity mask"}
    images = to_model_range(torch.from_numpy(canonical.load_images(dataset_dir, rows))[:, None])
    truth = torch.from_numpy(canonical.load_masks(dataset_dir, rows, "opacity_mask"))[:, None] > 0
    net.eval()
    out = localisation(net, images.to(device), truth.to(device), list(canonical.OPACITY_LABELS))
    return out | {"labels": list(canonical.OPACITY_LABELS),
                  "maps": "max-over-labels CAM; |d logits / d x| box 9 px; intensity; position (no image)"}


def interval(summary: dict[str, Any]) -> str:
    """'0.640 [0.612, 0.668]' from a bootstrap summary (eval/stats.py bootstrap_ci)."""
    if summary.get("lo") is None:
        return f"{summary['mean']:.3f} (N = {summary['n']}: no interval)"
    return f"{summary['mean']:.3f} [{summary['lo']:.3f}, {summary['hi']:.3f}]"
