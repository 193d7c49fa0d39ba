"""Probe curves of a run beside official_d's at the same steps and seed: lung-field mask AUROC, mean mask on the
probe's opacity images and normals, their ratio, and the Eq. 4 / L_mil pulls at the mask head (x the adversarial's).
Usage: python compare_curves.py CURVE.csv SEED"""
import sys
from pathlib import Path

import pandas as pd

new = pd.read_csv(sys.argv[1])
seed = sys.argv[2]
ref = pd.read_csv(Path(__file__).resolve().parent.parent / "official_d" / "curves" / f"ours_mil_res_d64-seed{seed}.csv")
m = new.merge(ref, on="step", suffixes=("", "_ref"))
m["ratio"] = m.diag_mask_area_normal / m.diag_mask_area_opacity
m["ratio_ref"] = m.diag_mask_area_normal_ref / m.diag_mask_area_opacity_ref
cols = ["diag_mask_auroc_lung", "diag_mask_area_opacity", "diag_mask_area_normal", "ratio"]
show = ["step"] + [c for k in cols for c in (k, k + "_ref")] + ["diag_grad_bam", "diag_grad_mil"]
pd.set_option("display.width", 250)
pd.set_option("display.max_columns", 30)
print(m[show][m.step % 200 == 0].round(3).to_string(index=False))
print("probe's lung-field position floor", round(float(ref.diag_mask_floor_lung.iloc[0]), 3))
