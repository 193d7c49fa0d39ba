"""The record's table from the paired stage's files: python summarise.py [METRICS_DIR] > table.md
(values: mean [95 % bootstrap interval over images, seeds pooled] as the paired stage wrote them)."""
import json
import sys
from pathlib import Path

ROWS = [  # (paired file, setting, seeds, step reached)
    ("res_i2400", "ours_mil_res, 2,400-it schedule (lr halved at 960)", "0", "2,000"),
    ("res_i9600", "ours_mil_res (lr constant to 3,840)", "0, 1", "2,000"),
    ("res_i9600_s23", "ours_mil_res (lr constant to 3,840)", "2, 3", "1,600"),
    ("res_i9600_adv6", "+ lambda_adv 6", "0", "2,000"),
    ("res_i9600_adv6_s1", "+ lambda_adv 6", "1", "1,600"),
    ("res_i9600_lca2", "+ lambda_classifier 2", "0", "2,000"),
    ("res_i9600_lca2_s1", "+ lambda_classifier 2", "1", "1,600"),
    ("res_i9600_dis64", "+ dis_dim 64", "0", "2,000"),
    ("res_i9600_dis64_s1", "+ dis_dim 64", "1", "1,600"),
]


def ci(c, digits=3):
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"


def main(folder: Path) -> None:
    print("| run | setting | seeds | step | lung field - floor, rsna | mask normals / opacity | residual rsna | "
          "residual ards | brightness left rsna | anatomy r rsna | change outside rsna |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, setting, seeds, step in ROWS:
        sets = json.loads((folder / f"{name}.json").read_text())["sets"]
        r, a = sets["rsna_like"], sets["ards_like"]
        m = r["opacity"]["localisation"]["lung_field"]["margin"]
        ratio = r["normal"]["avg"]["mean_mask"]["mean"] / r["opacity"]["avg"]["mean_mask"]["mean"]
        rc, ac = r["opacity"]["ci95"], a["opacity"]["ci95"]
        print(f"| {name} | {setting} | {seeds} | {step} | {m['value']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] | "
              f"{ratio:.2f} | {ci(rc['residual_opacity_ratio'])} | {ci(ac['residual_opacity_ratio'])} | "
              f"{ci(rc['opacity_excess_ratio'], 2)} | {ci(rc['anatomy_corr'])} | "
              f"{ci(rc['change_outside_opacity'])} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "metrics" / "paired")
