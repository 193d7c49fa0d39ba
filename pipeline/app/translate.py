"""`translate@<model>`: run a trained model over every evaluation set (and the training set, for Table 2).

Writes outputs/<model>/seed<k>/index.csv plus 8-bit PNGs (metric inputs are 8-bit PNG, so every method is scored
on what a user would save):
- every image of each evaluation set goes A->B (normal images too: a translator should leave them alone);
- normal images of `train` and `rsna_like` also go B->A (Table 2 "Generated" uses both directions);
- activation masks (mask * 255) where the method has them.
The folder is written under a temporary name and renamed at the end: a killed stage leaves no partial output.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline import tracking
from pipeline.config import Params
from pipeline.data.canonical import load_images, read_manifest
from pipeline.engine import to_model_range
from pipeline.io import write_json
from pipeline.layout import TRAIN_DATASET, Layout, load_trained, set_threads
from pipeline.progress import bar

BATCH = 16


def to_uint8(x: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """(B, 1, H, W) in [lo, hi] -> (B, H, W) uint8 (round half to even, like np.rint)."""
    x = (x.float().clamp(lo, hi) - lo) / (hi - lo) * 255.0
    return torch.round(x).to(torch.uint8)[:, 0].cpu().numpy()


def _sets(params: Params, root: Path, train_cap: int) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    for name, (dataset, split) in Layout(root).eval_sets().items():
        ds = root / "data" / dataset
        if not (ds / "manifest.csv").exists():
            continue
        df = read_manifest(ds)
        out.append((name, dataset, df[df["split"] == split]))
    ds = root / "data" / TRAIN_DATASET
    df = read_manifest(ds)
    train = df[df["split"] == "train"]
    if train_cap:  # a deterministic, balanced subset for the Table 2 classifiers
        train = train.sort_values("id").groupby("domain").head(train_cap)
    out.append(("train", TRAIN_DATASET, train))
    return out


@torch.no_grad()
def translate_rows(translator, dataset_dir: Path, rows: pd.DataFrame, direction: str, out_dir: Path, rel: str,
                   device: str) -> list[dict]:
    fn = translator.translate if direction == "a2b" else translator.translate_b2a
    records = []
    img_dir, mask_dir = out_dir / rel / direction, out_dir / rel / f"{direction}_mask"
    img_dir.mkdir(parents=True, exist_ok=True)
    for start in bar(range(0, len(rows), BATCH), desc=f"translate {rel} {direction}", unit="batch"):
        chunk = rows.iloc[start:start + BATCH]
        x = to_model_range(torch.from_numpy(load_images(dataset_dir, chunk)))[:, None].to(device)
        result = fn(x)
        images = to_uint8(result.image)
        masks = to_uint8(result.mask, 0.0, 1.0) if result.mask is not None else None
        if masks is not None:
            mask_dir.mkdir(parents=True, exist_ok=True)
        for i, (_, row) in enumerate(chunk.iterrows()):
            image_rel = f"{rel}/{direction}/{row['id']}.png"
            Image.fromarray(images[i], mode="L").save(out_dir / image_rel, optimize=False)
            mask_rel = ""
            if masks is not None:
                mask_rel = f"{rel}/{direction}_mask/{row['id']}.png"
                Image.fromarray(masks[i], mode="L").save(out_dir / mask_rel, optimize=False)
            records.append({"id": row["id"], "domain": row["domain"], "direction": direction,
                            "image": image_rel, "mask": mask_rel})
    return records


def run_translate(params: Params, model: str, root: Path | None = None, train_cap: int = 0) -> dict:
    layout = Layout(root) if root else Layout()
    set_threads(params)
    device = "cuda" if torch.cuda.is_available() and params.train.device != "cpu" else "cpu"
    summary = {"model": model, "seeds": {}}
    for seed in params.seeds:
        translator = load_trained(params, model, seed, weights=layout.weights(model, seed), device=device)
        final = layout.outputs(model, seed)
        tmp = final.with_name(f".tmp-{final.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        records = []
        counts = {}
        for name, dataset, rows in _sets(params, layout.root, train_cap):
            ds = layout.dataset(dataset)
            recs = translate_rows(translator, ds, rows, "a2b", tmp, name, device)
            normals = rows[rows["domain"] == "normal"]
            if name in ("train", "rsna_like") and len(normals):
                try:
                    recs += translate_rows(translator, ds, normals, "b2a", tmp, name, device)
                except NotImplementedError:
                    pass
            for r in recs:
                r.update(eval_set=name, dataset=dataset)
            records += recs
            counts[name] = len(recs)
        cols = ["eval_set", "dataset", "id", "domain", "direction", "image", "mask"]
        pd.DataFrame.from_records(records, columns=cols).to_csv(tmp / "index.csv", index=False)
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)
        summary["seeds"][str(seed)] = counts
    with tracking.stage_run("translate", model=model, profile=params.profile, enabled=params.tracking.enabled,
                            experiment=params.tracking.experiment, uri=params.tracking.uri) as run:
        run.log_metrics({f"n_{k}": v for s in summary["seeds"].values() for k, v in s.items()})
    write_json(layout.metrics("translate", model), summary)
    return summary
