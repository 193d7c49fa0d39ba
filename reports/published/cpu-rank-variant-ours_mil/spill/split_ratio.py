"""Mask ratio normals / opacity images of one trained model on each split of the DRR training set (train, val:
the engine's probe draws its 32 + 32 images from val) and on the rsna_like test split, with a 95 % percentile
bootstrap over images (2,000 draws, seed 0): is the probe's ratio a sample of the test set's?
Usage (cwd + PYTHONPATH = the checkout that trained the model): split_ratio.py MODEL SEED"""
import sys, numpy as np, torch
from pipeline.config import load_params
from pipeline.layout import Layout, load_trained
from eval.sets import load_original, to_model_range, train_rows
torch.set_num_threads(1)
model, seed = sys.argv[1], int(sys.argv[2])
params = load_params(); layout = Layout(); t = load_trained(params, model, seed); rng = np.random.default_rng(0)
for split in ("train", "val", "test"):
    ds, df = train_rows(layout, split)
    means = {}
    for dom in ("opacity", "normal"):
        rows = df[df["domain"] == dom].reset_index(drop=True)
        x = to_model_range(load_original(ds, rows))
        with torch.no_grad():
            means[dom] = torch.cat([t.translate(x[i:i + 64]).mask for i in range(0, len(x), 64)]).flatten(1).mean(1).numpy()
    o, n = means["opacity"], means["normal"]
    boot = [n[rng.integers(0, len(n), len(n))].mean() / o[rng.integers(0, len(o), len(o))].mean() for _ in range(2000)]
    print(f"{split}: N = {len(o)} + {len(n)}; mask on opacity images {o.mean():.3f}, on normals {n.mean():.3f}, ratio "
          f"{n.mean() / o.mean():.2f} [{np.quantile(boot, 0.025):.2f}, {np.quantile(boot, 0.975):.2f}]; normals' "
          f"per-image mean: median {np.median(n):.3f}, 90th percentile {np.quantile(n, 0.9):.3f}, max {n.max():.3f}")
