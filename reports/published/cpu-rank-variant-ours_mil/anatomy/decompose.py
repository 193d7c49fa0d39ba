"""Pooled decomposition of the residual opacity of seed 0's translations, 95 % bootstrap intervals over images.

Run in the checkout that trained the models (its params.yaml, data/ and outputs/):
    python decompose.py ours_mil ours_mil_det cyclegan
Per set: the brightness left (sum of (y - twin) over sum of (x - twin) inside the true opacity); for masked models
the share of opacity pixels under mask > 0.5, the mask > 0.5 area outside the opacity over the opacity's area and
the mean change (y - x) there; the image head's output recovered from the blend of Eq. 1 where the mask > 0.3,
(y - (1 - m) x) / m, against the twin."""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_original, load_mask, read_pngs, Translations
params = load_params(); layout = Layout(); rng = np.random.default_rng(0)
def ci(num, den, B=2000):
    n = len(num); pt = num.sum() / den.sum()
    idx = rng.integers(0, n, (B, n)); r = num[idx].sum(1) / den[idx].sum(1)
    return f"{pt:.3f} [{np.quantile(r,.025):.3f}, {np.quantile(r,.975):.3f}]"
for eval_set in ("rsna_like", "ards_like"):
    ds, df = eval_rows(layout, eval_set, params.eval.max_images)
    opa = df[df["domain"] == "opacity"].reset_index(drop=True)
    x = load_original(ds, opa) / 255.; t = load_original(ds, opa, "twin") / 255.
    o = load_mask(ds, opa, "opacity_mask").astype(bool)
    ax = (1, 2)
    for m in sys.argv[1:]:
        tr = Translations(layout, m, 0)
        y = read_pngs(tr.paths(eval_set, list(opa["id"]), "a2b")) / 255.
        print(f"{eval_set} {m}: N={len(opa)} pooled brightness left {ci(((y-t)*o).sum(ax), ((x-t)*o).sum(ax))}")
        if tr.has_masks():
            mk = read_pngs(tr.paths(eval_set, list(opa['id']), "a2b", "mask")) / 255.
            big = mk > 0.5
            sp = ~o & big
            print(f"   opacity pixels under mask>0.5: {ci((o&big).sum(ax).astype(float), o.sum(ax).astype(float))}; "
                  f"mask>0.5 outside opacity / opacity area: {ci(sp.sum(ax).astype(float), o.sum(ax).astype(float))}; "
                  f"mean (y - x) there: {ci(((y-x)*sp).sum(ax), sp.sum(ax).astype(float))}")
            sel = o & (mk > 0.3)
            raw = (y - (1 - mk) * x) / np.maximum(mk, 1e-3)
            print(f"   image head inside opacity (mask>0.3): mean (head - twin) {ci(((raw-t)*sel).sum(ax), sel.sum(ax).astype(float))}, "
                  f"mean |head - twin| {ci((np.abs(raw-t)*sel).sum(ax), sel.sum(ax).astype(float))} vs |x - twin| {ci((np.abs(x-t)*sel).sum(ax), sel.sum(ax).astype(float))}")
