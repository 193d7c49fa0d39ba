"""Where G_A's mask sits on normal images (rsna_like test normals) vs opacity images: lung field vs outside,
and how much of the mean comes from a low haze (pixels below 0.1) vs high pixels.
Usage (cwd + PYTHONPATH = the checkout that translated the model): where_mask_sits.py MODEL SEED"""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_mask, read_pngs, Translations
model, seed = sys.argv[1], int(sys.argv[2])
params = load_params(); layout = Layout(); tr = Translations(layout, model, seed)
ds, df = eval_rows(layout, "rsna_like", params.eval.max_images)
for dom in ("normal", "opacity"):
    rows = df[df["domain"] == dom].reset_index(drop=True)
    m = read_pngs(tr.paths("rsna_like", list(rows["id"]), "a2b", "mask")).astype(np.float64) / 255.0
    l = load_mask(ds, rows, "lung_mask")
    tot = m.sum()
    q = np.quantile(m, [0.5, 0.8, 0.9, 0.95, 0.99])
    line = [f"{dom}: N={len(rows)} mean {m.mean():.3f}; lung field mean {m[l].mean():.3f} (share of mass {m[l].sum()/tot:.2f}, area {l.mean():.2f}), outside {m[~l].mean():.3f}",
            f"pixel quantiles 50/80/90/95/99 %: {np.round(q, 3)}",
            f"mass from pixels < 0.1: {m[m < 0.1].sum()/tot:.2f}, 0.1-0.5: {m[(m >= 0.1) & (m < 0.5)].sum()/tot:.2f}, >= 0.5: {m[m >= 0.5].sum()/tot:.2f}",
            f"top-20 % mean per image: {np.sort(m.reshape(len(m), -1), 1)[:, -int(0.2 * m[0].size):].mean():.3f}"]
    if dom == "opacity":
        o = load_mask(ds, rows, "opacity_mask")
        line.append(f"inside opacity {m[o].mean():.3f}, lung minus opacity {m[l & ~o].mean():.3f}, outside lung {m[~l & ~o].mean():.3f}")
    print("\n  ".join(line))
