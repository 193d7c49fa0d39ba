"""Eq. 4's target on this run, with its 95 % interval: the mean activation mask on normal test images over that on
opacity test images (at most a quarter), per DRR set and model with masks, seeds pooled.

The run's own commit reported the two means without intervals; the paired stage now computes this (metrics/paired
`sets.<set>.mask_area`, Table 3's ratio column) with eval.stats.ratio_of_means_ci, and this script applies that same
function to this run's translated masks, which it reads, unchanged, from the checkout that made the run.
Run there (its params.yaml, data/, outputs/), with PYTHONPATH at a checkout that has ratio_of_means_ci:
    python mask_area.py > mask_area.txt"""
import numpy as np

from eval.sets import Translations, available_sets, eval_rows, read_pngs
from eval.stats import bootstrap_ci, ratio_of_means_ci
from pipeline.config import load_params
from pipeline.layout import Layout

params, layout = load_params(), Layout()
ev = params.eval


def per_image_mask(trs: list[Translations], eval_set: str, ids: list[str]) -> np.ndarray:
    """(seeds, images) mean mask value in [0, 1] of each image's a2b mask."""
    return np.stack([read_pngs(t.paths(eval_set, ids, "a2b", "mask")).reshape(len(ids), -1).mean(1) / 255.
                     for t in trs])


def fmt(ci: dict, key: str = "mean") -> str:
    return f"{ci[key]:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


for eval_set in available_sets(layout):
    ds, df = eval_rows(layout, eval_set, ev.max_images)
    opa, nor = (df[df["domain"] == d] for d in ("opacity", "normal"))
    if not len(opa) or not len(nor) or (opa["twin"].fillna("").astype(str) == "").any():
        continue  # DRR sets with normals only, as the paired stage
    for model in params.models:
        trs = [Translations(layout, model, s) for s in params.seeds]
        if not trs[0].has_masks():
            continue
        m_opa, m_nor = per_image_mask(trs, eval_set, list(opa["id"])), per_image_mask(trs, eval_set, list(nor["id"]))
        a, b = bootstrap_ci(m_opa, ev.n_boot, seed=ev.seed), bootstrap_ci(m_nor, ev.n_boot, seed=ev.seed)
        r = ratio_of_means_ci(m_nor, m_opa, ev.n_boot, seed=ev.seed)
        by_seed = ", ".join(f"{x / y:.2f}" for x, y in zip(m_nor.mean(1), m_opa.mean(1)))
        print(f"{eval_set} {model} seeds {list(params.seeds)}: mask on opacity images {fmt(a)} (N = {len(opa)}), "
              f"on normals {fmt(b)} (N = {len(nor)}); normals / opacity {fmt(r, 'value')} (by seed {by_seed})")
