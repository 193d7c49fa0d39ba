"""Contact sheet of six rsna_like opacity images, seed 0: input, clean twin, true opacity, then per model its
translation (and mask). Run in the checkout that trained the models: python contact_sheet.py ours_mil ours_mil_det cyclegan
(writes /tmp/exp/sheet.png; this folder's contact_sheet.png is that file)."""
import sys, numpy as np
from PIL import Image
from pipeline.config import load_params
from pipeline.layout import Layout
from eval.sets import eval_rows, load_original, load_mask, read_pngs, Translations
params = load_params(); layout = Layout()
ds, df = eval_rows(layout, "rsna_like", params.eval.max_images)
opa = df[df["domain"] == "opacity"].reset_index(drop=True)
idx = [0, 3, 7, 12, 20, 33]
ids = list(opa["id"].iloc[idx])
sub = opa.iloc[idx]
x = load_original(ds, sub); t = load_original(ds, sub, "twin"); o = load_mask(ds, sub, "opacity_mask")
cols = [x, t, (o > 0).astype(np.uint8) * 255]
for m in sys.argv[1:]:
    tr = Translations(layout, m, 0)
    cols.append(read_pngs(tr.paths("rsna_like", ids, "a2b")))
    if tr.has_masks(): cols.append(read_pngs(tr.paths("rsna_like", ids, "a2b", "mask")))
rows = [np.concatenate([c[i] for c in cols], 1) for i in range(len(idx))]
img = np.concatenate(rows, 0)
Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save("/tmp/exp/sheet.png")
print(img.shape)
