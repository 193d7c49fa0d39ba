"""Figures from the evaluation metric files (the report stage calls these; matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def lesion_boxplot(results: dict[str, dict[str, Any]], eval_set: str, out_png: Path, seed: str | None = None) -> Path:
    """Figure 6: detections per image, original vs each model's translations, on one evaluation set.

    `results` maps a display name to the JSON of run_lesions (metrics/lesions/<model>.json). Uses the first seed
    unless `seed` is given; the two-sided Wilcoxon p-value is printed under each model's box.
    """
    import matplotlib  # lazy: the Agg backend is chosen before pyplot is imported; only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, labels = [], []
    original_done = False
    for name, res in results.items():
        entry = res.get("sets", {}).get(eval_set)
        if not entry:
            continue
        if not original_done:
            data.append(entry["counts"]["original"])
            labels.append("Original")
            original_done = True
        translated = entry["counts"].get("translated")
        if not translated:
            continue
        s = seed if seed is not None else next(iter(translated))
        p = entry["wilcoxon"][s]["p_two_sided"]
        data.append(translated[s])
        labels.append(f"{name}\np={'n/a' if p is None else f'{p:.3g}'}")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(data)), 3.5))
    if data:
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel("detections per image")
    ax.set_title(f"Lesion counts ({eval_set})")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    plt.close(fig)
    return out_png
