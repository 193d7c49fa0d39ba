"""Fixtures of the evaluation tests: tiny canonical datasets with boxes and twins, and fake translation outputs.

Written here (independent of the DRR generator and of any translator) so every evaluator can be tested in seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.canonical import MANIFEST_COLUMNS, read_manifest

SETS = {"drr": ("train", "val", "test"), "ards-like": ("test",), "jsrt-like": ("test",)}
DOMAINS = {"drr": ("opacity", "normal"), "ards-like": ("opacity",), "jsrt-like": ("normal",)}


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), "L").save(path)


def write_eval_datasets(root: Path, size: int = 32, n: int = 3, seed: int = 0) -> Path:
    """data/drr (train/val/test), data/ards-like (test, opacity), data/jsrt-like (test, normal); n images per
    (split, domain); two elliptic lungs; an opacity = a bright disc inside a lung, with its box and clean twin."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for name, splits in SETS.items():
        ds = Path(root) / "data" / name
        rows = []
        for split in splits:
            for domain in DOMAINS[name]:
                for i in range(n):
                    idx = f"{name}-{split}-{domain}-{i}"
                    sx = 1.0 + 0.1 * rng.standard_normal()
                    lung = (((xx - size * 0.3) / (size * 0.17 * sx)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2
                            < 1) | (((xx - size * 0.7) / (size * 0.17 * sx)) ** 2
                                    + ((yy - size * 0.5) / (size * 0.3)) ** 2 < 1)
                    twin = np.clip(50 + 30 * rng.random((size, size)) + 110 * ~lung, 0, 255).astype(np.uint8)
                    image, opacity, boxes = twin.copy(), np.zeros_like(lung), ""
                    if domain == "opacity":
                        cx = int(size * (0.3 if i % 2 == 0 else 0.7))
                        cy = int(rng.integers(size * 3 // 8, size * 5 // 8))
                        r = max(2, size // 8)
                        opacity = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & lung
                        image = np.where(opacity, 200, twin).astype(np.uint8)
                        ys, xs = np.nonzero(opacity)
                        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                        boxes = f"boxes/{idx}.txt"
                        (ds / "boxes").mkdir(parents=True, exist_ok=True)
                        (ds / boxes).write_text(f"0 {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                                                f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}\n")
                    _save(ds / "images" / f"{idx}.png", image)
                    _save(ds / "lung_masks" / f"{idx}.png", lung * 255)
                    _save(ds / "opacity_masks" / f"{idx}.png", opacity * 255)
                    row = {c: "" for c in MANIFEST_COLUMNS}
                    row.update(id=idx, split=split, domain=domain, patient_id=f"p-{idx}", image=f"images/{idx}.png",
                               lung_mask=f"lung_masks/{idx}.png", opacity_mask=f"opacity_masks/{idx}.png",
                               boxes=boxes, source="test", view="PA")
                    if name != "jsrt-like":
                        _save(ds / "twins" / f"{idx}.png", twin)
                        row["twin"] = f"twins/{idx}.png"
                    for c in MANIFEST_COLUMNS:
                        if c.startswith("label_"):
                            row[c] = int(domain == "opacity" and c == "label_Pneumonia")
                    rows.append(row)
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(ds / "manifest.csv", index=False)
    from pipeline.app.data import write_default_role_sets

    write_default_role_sets(Path(root) / "data")  # data/seg-train, data/det-train as the data stage writes them
    return Path(root)


EVAL_SET_OF = {("drr", "test"): "rsna_like", ("ards-like", "test"): "ards_like", ("jsrt-like", "test"): "jsrt_like",
               ("drr", "train"): "train"}


def write_fake_outputs(root: Path, model: str, seed: int, with_masks: bool = True, with_b2a: bool = True,
                       noise: float = 4.0) -> Path:
    """outputs/<model>/seed<k>/ as the translate stage writes it. A->B = the clean twin (+ noise; jsrt: the image
    itself + noise), masks = the true opacity mask (blurred by noise), B->A = the image with a bright disc."""
    rng = np.random.default_rng(seed + 100)
    out = Path(root) / "outputs" / model / f"seed{seed}"
    records = []
    for (dataset, split), eval_set in EVAL_SET_OF.items():
        ds = Path(root) / "data" / dataset
        df = read_manifest(ds)
        df = df[df["split"] == split]
        for r in df.itertuples(index=False):
            img = np.asarray(Image.open(ds / r.image), np.float64)
            src = np.asarray(Image.open(ds / r.twin), np.float64) if r.twin else img
            a2b = np.clip(src + noise * rng.standard_normal(src.shape), 0, 255)
            rel = f"{eval_set}/a2b/{r.id}.png"
            _save(out / rel, np.rint(a2b))
            mask_rel = ""
            if with_masks:
                m = np.asarray(Image.open(ds / r.opacity_mask), np.float64) / 255.0
                m = np.clip(0.8 * m + 0.15 * rng.random(m.shape), 0, 1)
                mask_rel = f"{eval_set}/a2b_mask/{r.id}.png"
                _save(out / mask_rel, np.rint(m * 255))
            records.append(dict(eval_set=eval_set, dataset=dataset, id=r.id, domain=r.domain, direction="a2b",
                                image=rel, mask=mask_rel))
            if with_b2a and r.domain == "normal" and eval_set in ("train", "rsna_like"):
                h, w = img.shape
                yy, xx = np.mgrid[:h, :w]
                b2a = np.where((yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 8) ** 2, 200, img)
                rel = f"{eval_set}/b2a/{r.id}.png"
                _save(out / rel, b2a)
                records.append(dict(eval_set=eval_set, dataset=dataset, id=r.id, domain=r.domain, direction="b2a",
                                    image=rel, mask=""))
    pd.DataFrame(records, columns=["eval_set", "dataset", "id", "domain", "direction", "image", "mask"]).to_csv(
        out / "index.csv", index=False)
    return out


def test_fixture_datasets_are_canonical(tmp_path):
    write_eval_datasets(tmp_path, size=32, n=2)
    for name, splits in SETS.items():
        df = read_manifest(tmp_path / "data" / name)  # validated by the canonical reader
        assert set(df["split"]) == set(splits) and set(df["domain"]) == set(DOMAINS[name])
        assert len(df) == 2 * len(splits) * len(DOMAINS[name])
    out = write_fake_outputs(tmp_path, "toy", 0)
    index = pd.read_csv(out / "index.csv", keep_default_na=False)
    assert {"rsna_like", "ards_like", "jsrt_like", "train"} == set(index["eval_set"])
    assert all((out / p).is_file() for p in index["image"])
