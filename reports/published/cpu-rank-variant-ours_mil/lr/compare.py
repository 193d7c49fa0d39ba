"""Print item-3 figures from paired JSONs: mask AUROC (whole, lung), ratio, residual on rsna/ards."""
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); s = d['sets']; r = s['rsna_like']; a = s['ards_like']
    g = lambda x, k: x['opacity']['avg'][k]['mean']
    mo, mn = g(r, 'mean_mask'), r['normal']['avg']['mean_mask']['mean']
    print(f"{d['model']:>22} s{d['seeds']}: rsna auroc {g(r,'mask_auroc'):.3f} lung {g(r,'mask_auroc_lung'):.3f} "
          f"(floor {r['mask_floor']['lung_field']:.3f}) mask {mo:.3f}/{mn:.3f} ratio {mn/mo:.2f} resid {g(r,'residual_opacity_ratio'):.3f} | "
          f"ards auroc {g(a,'mask_auroc'):.3f} lung {g(a,'mask_auroc_lung'):.3f} (floor {a['mask_floor']['lung_field']:.3f}) "
          f"resid {g(a,'residual_opacity_ratio'):.3f}")
