"""95 % bootstrap intervals (over images; seeds pooled) for the numbers the paired stage reports as means only: mean
mask on opacity images and on normals, their ratio, and the mean |y - x| on normal images (rsna_like, test split).

Run in the checkout that trained the models (its params.yaml, data/ and outputs/):
    python intervals.py ours_mil_cyc:0 ours_mil_res:0 ours_mil_res:0,1 cyclegan:0"""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_original, read_pngs, Translations
params = load_params(); layout = Layout(); rng = np.random.default_rng(0)
ds, df = eval_rows(layout, "rsna_like", params.eval.max_images)
opa, nor = (df[df["domain"] == d].reset_index(drop=True) for d in ("opacity", "normal"))
x_nor = load_original(ds, nor) / 255.
def ci(values, B=2000):  # values: (seeds, images) per-image means; resample images, keep every seed
    n = values.shape[1]; idx = rng.integers(0, n, (B, n))
    r = values[:, idx].mean(axis=(0, 2))
    return values.mean(), np.quantile(r, .025), np.quantile(r, .975), idx
for spec in sys.argv[1:]:
    model, seeds = spec.split(":"); seeds = [int(s) for s in seeds.split(",")]
    trs = [Translations(layout, model, s) for s in seeds]
    y_nor = np.stack([read_pngs(t.paths("rsna_like", list(nor["id"]), "a2b")) / 255. for t in trs])
    change = np.abs(y_nor - x_nor[None]).mean(axis=(2, 3))
    pt, lo, hi, _ = ci(change)
    out = [f"{model} seeds {seeds}: N = {len(nor)} normals x {len(seeds)}; "
           f"change on normals {pt:.4f} [{lo:.4f}, {hi:.4f}]"]
    if trs[0].has_masks():
        def masks(rows):
            return np.stack([read_pngs(t.paths("rsna_like", list(rows["id"]), "a2b", "mask")) / 255.
                             for t in trs]).mean(axis=(2, 3))
        m_opa, m_nor = masks(opa), masks(nor)
        a, alo, ahi, ia = ci(m_opa); b, blo, bhi, ib = ci(m_nor)
        ratio = m_nor[:, ib].mean(axis=(0, 2)) / m_opa[:, ia].mean(axis=(0, 2))  # independent resamples of the two sets
        out.append(f"mask on opacity images {a:.3f} [{alo:.3f}, {ahi:.3f}] (N = {len(opa)} x {len(seeds)}), "
                   f"on normals {b:.3f} [{blo:.3f}, {bhi:.3f}], ratio {b / a:.2f} "
                   f"[{np.quantile(ratio, .025):.2f}, {np.quantile(ratio, .975):.2f}]")
    print("\n  ".join(out))
