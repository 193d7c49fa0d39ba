"""Where G_A's mask fires, per evaluation set: mean mask inside the true opacity, in the lung field outside it, and
outside the lung field; share of the mask's mass in each; opacity's share of the lung field. Per-image values,
averaged over the images, with a 95 % percentile bootstrap over images (2,000 draws, seed 0).
Usage (cwd + PYTHONPATH = the checkout that translated the model): where_mask_fires.py MODEL SEED"""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_mask, read_pngs, Translations
model, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)


def ci(v):
    b = np.array([v[rng.integers(0, len(v), len(v))].mean() for _ in range(2000)])
    return f"{v.mean():.3f} [{np.quantile(b, 0.025):.3f}, {np.quantile(b, 0.975):.3f}]"


params = load_params(); layout = Layout(); tr = Translations(layout, model, seed)
for s in ("rsna_like", "ards_like"):
    ds, df = eval_rows(layout, s, params.eval.max_images)
    opa = df[df["domain"] == "opacity"].reset_index(drop=True)
    ids = list(opa["id"])
    m = read_pngs(tr.paths(s, ids, "a2b", "mask")).astype(np.float64) / 255.0
    o = load_mask(ds, opa, "opacity_mask"); l = load_mask(ds, opa, "lung_mask")
    regions = {"opacity": o, "lung minus opacity": l & ~o, "outside lung": ~l & ~o}
    mass = m.sum((1, 2))
    line = [f"{s}: N={len(ids)} opacity/lung {((o & l).sum((1, 2)) / l.sum((1, 2))).mean():.2f}, mean mask {m.mean():.3f}"]
    for k, r in regions.items():
        mean_in = (m * r).sum((1, 2)) / np.maximum(r.sum((1, 2)), 1)
        share = (m * r).sum((1, 2)) / np.maximum(mass, 1e-9)
        line.append(f"{k}: mean {ci(mean_in)}, share of mask {ci(share)}, area {r.mean():.3f}")
    print("\n  ".join(line))
