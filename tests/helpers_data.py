"""Write tiny canonical datasets for tests (independent of the DRR generator)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.canonical import MANIFEST_COLUMNS


def write_tiny_dataset(root: Path, name: str = "drr", n: int = 4, size: int = 64, seed: int = 0,
                       splits: tuple[str, ...] = ("train", "test")) -> Path:
    """n opacity + n normal images per split with lung masks; bright blobs mark 'opacities'."""
    rng = np.random.default_rng(seed)
    ds = Path(root) / "data" / name
    for sub in ("images", "lung_masks", "opacity_masks"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    lung = (((xx - size * 0.3) / (size * 0.18)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2 < 1) | \
           (((xx - size * 0.7) / (size * 0.18)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2 < 1)
    for split in splits:
        for domain in ("opacity", "normal"):
            for i in range(n):
                idx = f"{name}-{split}-{domain}-{i}"
                img = (60 + 40 * rng.random((size, size)) + 100 * ~lung).clip(0, 255)
                opacity = np.zeros_like(lung)
                if domain == "opacity":
                    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                    opacity = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2) & lung
                    img = np.where(opacity, 200, img)
                Image.fromarray(img.astype(np.uint8), "L").save(ds / "images" / f"{idx}.png")
                Image.fromarray((lung * 255).astype(np.uint8), "L").save(ds / "lung_masks" / f"{idx}.png")
                Image.fromarray((opacity * 255).astype(np.uint8), "L").save(ds / "opacity_masks" / f"{idx}.png")
                row = {c: "" for c in MANIFEST_COLUMNS}
                row.update(id=idx, split=split, domain=domain, patient_id=f"p-{idx}", image=f"images/{idx}.png",
                           lung_mask=f"lung_masks/{idx}.png", opacity_mask=f"opacity_masks/{idx}.png",
                           source="test", view="PA")
                for c in MANIFEST_COLUMNS:
                    if c.startswith("label_"):
                        row[c] = int(domain == "opacity" and c == "label_Pneumonia")
                rows.append(row)
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(ds / "manifest.csv", index=False)
    if name == "drr":
        from pipeline.app.data import write_default_role_sets

        write_default_role_sets(Path(root) / "data")  # data/seg-train, data/det-train as the data stage writes them
    return ds
