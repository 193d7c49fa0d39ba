"""Probe curves of one long run, every 400 steps: lung-field mask AUROC (floor on the probe 0.695), mean mask on the
probe's 32 opacity images and 32 normals, their ratio; each a mean over the 10 logged rows up to that step (200
steps, to damp the step-to-step noise of a 32-image probe), beside official_d's at the same steps where it has them.
Usage: python steps_curve.py CURVE.csv SEED"""
import sys
from pathlib import Path

import pandas as pd

cols = ["diag_mask_auroc_lung", "diag_mask_area_opacity", "diag_mask_area_normal"]


def smoothed(path):
    c = pd.read_csv(path).dropna(subset=cols).set_index("step")[cols].rolling(10, min_periods=10).mean()
    c["ratio"] = c.diag_mask_area_normal / c.diag_mask_area_opacity
    return c


new = smoothed(sys.argv[1])
ref = smoothed(Path(__file__).resolve().parent.parent / "official_d" / "curves" / f"ours_mil_res_d64-seed{sys.argv[2]}.csv")
rows = [s for s in new.index if s % 400 == 0]
out = new.loc[rows].join(ref.add_suffix("_ref"), how="left")
pd.set_option("display.width", 250)
print(out[[c for k in cols + ["ratio"] for c in (k, k + "_ref")]].round(3).to_string())
