"""Does G_A act on the whole opacity even where its mask is low? For each evaluation set: the pooled pixel AUROC
against the true opacity (whole image and lung field, beside the position floor; 95 % bootstrap over images and
seeds) of (1) G_A's mask m and (2) the change it makes, |G_A(x) - x| (the blend x + m r of Eq. 1 with the residual
head r, so the change is m |r|), and the ratio of their means on normals vs opacity images (rsna_like).
Usage (cwd + PYTHONPATH = the checkout that translated the model): change_map.py MODEL SEED [SEED ...]"""
import sys, numpy as np
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_mask, load_original, read_pngs, Translations
from eval.paired import mask_localisation
model, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
params = load_params(); layout = Layout()
trs = [Translations(layout, model, s) for s in seeds]


def fmt(d):
    return f"{d['value']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


for s in ("rsna_like", "ards_like"):
    ds, df = eval_rows(layout, s, params.eval.max_images)
    opa = df[df["domain"] == "opacity"].reset_index(drop=True)
    ids = list(opa["id"])
    x = load_original(ds, opa).astype(np.int16)
    o = load_mask(ds, opa, "opacity_mask"); lung = load_mask(ds, opa, "lung_mask")
    masks = [read_pngs(t.paths(s, ids, "a2b", "mask")) for t in trs]
    changes = [np.abs(read_pngs(t.paths(s, ids, "a2b", "image")).astype(np.int16) - x).clip(0, 255).astype(np.uint8)
               for t in trs]
    print(f"{s}: N={len(ids)} opacity images x {len(seeds)} seeds; true opacity / image {o.mean():.3f}, / lung field "
          f"{(o & lung).sum() / lung.sum():.2f}")
    for name, maps in (("mask m", masks), ("change |G_A(x) - x|", changes)):
        loc = mask_localisation(maps, o, lung, n_boot=1000)
        print(f"  {name:20s} whole image {fmt(loc['image']['mask'])} (floor {loc['image']['floor']['value']:.3f}), "
              f"lung field {fmt(loc['lung_field']['mask'])} (floor {loc['lung_field']['floor']['value']:.3f}), "
              f"per seed {[round(v, 3) for v in loc['image']['per_seed']]}")
        inside = np.mean([(m.astype(float) * o).sum() / o.sum() for m in maps]) / 255
        lung_out = np.mean([(m.astype(float) * (lung & ~o)).sum() / (lung & ~o).sum() for m in maps]) / 255
        out = np.mean([(m.astype(float) * (~lung & ~o)).sum() / (~lung & ~o).sum() for m in maps]) / 255
        big = np.mean([((m.astype(float) / 255 >= 0.5) & o).sum() / o.sum() for m in maps])
        print(f"  {'':20s} mean inside opacity {inside:.4f}, lung minus opacity {lung_out:.4f}, outside lung {out:.4f}; "
              f"share of opacity pixels at >= 0.5 of full scale {big:.2f}")
    if s == "rsna_like":
        nor = df[df["domain"] == "normal"].reset_index(drop=True)
        xn = load_original(ds, nor).astype(np.int16)
        mn = np.mean([read_pngs(t.paths(s, list(nor["id"]), "a2b", "mask")).mean() for t in trs])
        cn = np.mean([np.abs(read_pngs(t.paths(s, list(nor["id"]), "a2b", "image")).astype(np.int16) - xn).mean()
                      for t in trs])
        mo = np.mean([m.mean() for m in masks]); co = np.mean([c.mean() for c in changes])
        print(f"  normals / opacity images: mask {mn / 255:.4f} / {mo / 255:.4f} = {mn / mo:.2f}; "
              f"change {cn / 255:.4f} / {co / 255:.4f} = {cn / co:.2f}")
