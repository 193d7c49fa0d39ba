"""The item-3 figures of one paired-metrics file (as `cxrbench paired` wrote it): per set, whole-image and
lung-field mask AUROC beside the position floor, residual opacity after/before with its paired difference from
Identity, anatomy kept, change outside the opacity; 95 % bootstrap intervals as the stage computed them.
Usage: python summary.py metrics/paired/MODEL.json [...]"""
import json
import sys


def ci(d):
    return f"{d['value' if 'value' in d else 'mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


for path in sys.argv[1:]:
    print(path)
    for name, s in json.load(open(path))["sets"].items():
        o = s.get("opacity")
        if not o or "localisation" not in o:
            continue
        loc, c = o["localisation"], o["ci95"]
        print(f"  {name}: N={loc['n']} x {loc['seeds']} seeds")
        for region in ("image", "lung_field"):
            r = loc[region]
            print(f"    mask AUROC {region}: {ci(r['mask'])} floor {r['floor']['value']:.3f} margin {ci(r['margin'])} "
                  f"beyond position {r['beyond_position']} per seed {[round(v, 3) for v in r['per_seed']]}")
        vi = o["vs_identity"]["residual_opacity"]["diff"]
        print(f"    residual opacity after/before {ci(c['residual_opacity_ratio'])}; minus Identity {ci(vi)}")
        print(f"    anatomy r {ci(c['anatomy_corr'])}; change outside the opacity {ci(c['change_outside_opacity'])}")
