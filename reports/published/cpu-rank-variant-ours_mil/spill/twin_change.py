"""Where the true translation (input -> clean twin) changes the image, per set: mean |x - twin| (0-1 scale) inside
the opacity, in the lung field outside it, outside the lung; and how G_A's mask outside the lung relates to the
image's opacity area (per-image Pearson r, and rsna_like's least-squares line carried to ards_like). Usage: twin_change.py MODEL SEED"""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_mask, load_original, read_pngs, Translations
model, seed = sys.argv[1], int(sys.argv[2])
params = load_params(); layout = Layout(); tr = Translations(layout, model, seed)
for s in ("rsna_like", "ards_like"):
    ds, df = eval_rows(layout, s, params.eval.max_images)
    opa = df[df["domain"] == "opacity"].reset_index(drop=True)
    x = load_original(ds, opa).astype(float) / 255; t = load_original(ds, opa, "twin").astype(float) / 255
    o = load_mask(ds, opa, "opacity_mask"); lung = load_mask(ds, opa, "lung_mask")
    d = np.abs(x - t)
    m = read_pngs(tr.paths(s, list(opa["id"]), "a2b", "mask")).astype(float) / 255
    regions = {"opacity": o, "lung minus opacity": lung & ~o, "outside lung": ~lung & ~o}
    print(s, " ".join(f"{k}: |x - twin| {d[r].mean():.4f}, mask {m[r].mean():.3f};" for k, r in regions.items()))
    out_mask = np.array([m[i][~lung[i] & ~o[i]].mean() for i in range(len(m))])
    area = o.reshape(len(o), -1).mean(1)
    cuts = np.quantile(area, [0, 1 / 3, 2 / 3, 1])
    bins = [(area >= lo) & (area <= hi) for lo, hi in zip(cuts[:-1], cuts[1:])]
    if s == "rsna_like":
        slope, icpt = np.polyfit(area, out_mask, 1)
    print(f"  per image: r(mask outside lung, opacity area) {np.corrcoef(out_mask, area)[0, 1]:.2f}; by tercile of "
          f"area (mean area -> mask outside lung): "
          + ", ".join(f"{area[b].mean():.3f} -> {out_mask[b].mean():.3f}" for b in bins)
          + f"; rsna_like's line (mask = {icpt:.3f} + {slope:.3f} x area) predicts {icpt + slope * area.mean():.3f} "
            f"at this set's mean area {area.mean():.3f}, observed {out_mask.mean():.3f}")
