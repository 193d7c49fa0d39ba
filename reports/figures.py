"""The paper's figures (3-6) and a training-curve overview, as PNG (matplotlib, Agg backend).

Inputs: images of data/ (the evaluation sets), translations and activation masks of outputs/<model>/seed<k>/,
models/segmenters/<name>.pt (Figure 4), metrics/lesions/<model>.json (Figure 6) and curves/<model>/seed<k>.csv.
Every figure is written even when inputs are missing: the panel that cannot be drawn says why (grey, with the
reason), so a partial run still has readable figures and DVC always finds its outputs. Images are shown as they are
stored (8-bit, grey levels 0-255, no per-image contrast stretch), so intensity changes between columns are real.
The first seed of params.seeds is shown; examples are chosen deterministically (largest true opacity area first).
"""
from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eval import segmentation as seg
from eval.segmentation import miou_sensitivity
from eval.sets import Translations, eval_rows, load_mask, load_original
from pipeline.layout import Layout
from reports import paper_numbers as paper
from reports.inputs import ORIGINAL, Inputs, dig
from reports.tables import SET_NAMES, display_name

FIGURE3_ORDER = ("ours", "munit", "unit", "drit", "cyclegan", "uvcgan")  # the paper's Figure 3 column order
N_EXAMPLES = 3
EXAMPLE_POOL = 64  # examples are the largest-opacity images among the first 64 evaluated ones (by id): bounded reads
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 6, "figure.titlesize": 10, "image.interpolation": "nearest"}


def _plt():
    import matplotlib  # lazy: the Agg backend is chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=150, format="png", metadata={"Software": "cxrbench reports"})
    plt.close(fig)
    tmp.replace(path)
    return path


def _note(ax, text: str, width: int = 22) -> None:
    """A grey panel that says why it is empty."""
    ax.set_facecolor("#e8e8e8")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, textwrap.fill(text, width), ha="center", va="center", fontsize=6.5, color="#444444",
            transform=ax.transAxes)


def _image(ax, img: np.ndarray, cmap: str = "gray", vmin: float = 0, vmax: float = 255):
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)


def _read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


def _footer(fig, inp: Inputs, extra: str = "") -> None:
    text = f"profile {inp.profile} · seed {inp.first_seed()} of {inp.seeds()}"
    fig.supxlabel(text + (f" · {extra}" if extra else ""), x=0.995, ha="right", fontsize=6, color="#666666")


# --------------------------------------------------------------------------------------------------------------------
# Inputs of the image figures
# --------------------------------------------------------------------------------------------------------------------
def examples(inp: Inputs, eval_set: str = "rsna_like", k: int = N_EXAMPLES):
    """(dataset dir, rows) of up to k evaluated opacity images of a set, largest true opacity first (then by id), among
    the first EXAMPLE_POOL by id; or (None, reason)."""
    try:
        ds, df = eval_rows(Layout(inp.root), eval_set, inp.params.eval.max_images)
    except Exception as exc:  # noqa: BLE001  (missing / unreadable manifest: the figure says so)
        return None, f"no {eval_set} images ({str(exc).splitlines()[0][:120]})"
    rows = df[df["domain"] == "opacity"].sort_values("id", kind="stable").head(EXAMPLE_POOL).reset_index(drop=True)
    if rows.empty:
        return None, f"{eval_set} has no opacity images"
    area = []
    for rel in rows["opacity_mask"].fillna("").astype(str):
        area.append(int((_read_png(ds / rel) > 127).sum()) if rel and (ds / rel).is_file() else 0)
    rows = rows.assign(_area=area).sort_values(["_area", "id"], ascending=[False, True], kind="stable")
    return ds, rows.head(k).reset_index(drop=True)


def translations(inp: Inputs, model: str):
    """eval.sets.Translations of the first seed, or (None, reason)."""
    if not inp.in_profile(model):
        return None, inp.not_run()
    try:
        return Translations(Layout(inp.root), model, inp.first_seed()), "ok"
    except Exception:  # noqa: BLE001  (missing or malformed index.csv)
        index = inp.rel(Layout(inp.root).outputs(model, inp.first_seed()) / "index.csv")
        return None, f"no {index}: run `dvc repro translate@{model}`"


def _translated(t, eval_set: str, image_id: str, column: str = "image") -> tuple[np.ndarray | None, str]:
    try:
        path = t.paths(eval_set, [image_id], "a2b", column)[0]
        return _read_png(path), "ok"
    except Exception as exc:  # noqa: BLE001
        return None, str(exc).splitlines()[0][-90:]


def _row_label(ax, letter: str, image_id: str) -> None:
    ax.set_ylabel(f"({letter})\n{image_id}", fontsize=6.5, rotation=0, ha="right", va="center", labelpad=4)


# --------------------------------------------------------------------------------------------------------------------
# Figure 3: qualitative grid
# --------------------------------------------------------------------------------------------------------------------
def figure3(inp: Inputs, out: Path) -> Path:
    plt = _plt()
    ds, rows = examples(inp)
    models = list(FIGURE3_ORDER) + [m for m in inp.models if m not in FIGURE3_ORDER and not m.startswith("ours_")]
    with plt.rc_context(STYLE):
        if ds is None:
            fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
            _note(ax, f"Figure 3 skipped: {rows}", 60)
        else:
            n, cols = len(rows), 1 + len(models)
            fig, axes = plt.subplots(n, cols, figsize=(1.45 * cols + 0.8, 1.5 * n + 0.8), squeeze=False,
                                     layout="constrained")
            trans = {m: translations(inp, m) for m in models}
            for i, r in rows.iterrows():
                _image(axes[i, 0], _read_png(ds / r["image"]))
                _row_label(axes[i, 0], "abcdefgh"[i], r["id"])
                for j, m in enumerate(models, start=1):
                    t, why = trans[m]
                    img, why2 = _translated(t, "rsna_like", r["id"]) if t is not None else (None, why)
                    if img is None:
                        _note(axes[i, j], why2, 16)
                    else:
                        _image(axes[i, j], img)
            axes[0, 0].set_title("Original (opacity)")
            for j, m in enumerate(models, start=1):
                axes[0, j].set_title(display_name(inp, m))
            fig.suptitle("Figure 3: opacity -> non-opacity translations of rsna_like test images (columns as in the "
                         "paper)")
        _footer(fig, inp, "grey levels as stored (0-255)")
        return _save(fig, out)


# --------------------------------------------------------------------------------------------------------------------
# Figure 4: segmentation before / after translation
# --------------------------------------------------------------------------------------------------------------------
def pick_segmenter(inp: Inputs) -> tuple[str | None, str]:
    names = list(inp.params.eval.segmenters)
    for name in (["unet"] if "unet" in names else []) + names:
        if (inp.root / "models" / "segmenters" / f"{name}.pt").is_file():
            return name, "ok"
    return None, "no segmenter weights in models/segmenters/: run `dvc repro segmenters`"


def pick_method(inp: Inputs) -> str:
    """ours when it ran, else the first of the paper's methods that did (figures 4 and 5 need one)."""
    for m in ("ours",) + FIGURE3_ORDER[1:] + tuple(inp.models):
        if inp.in_profile(m) and translations(inp, m)[0] is not None:
            return m
    return "ours"


def _overlay(ax, img: np.ndarray, pred: np.ndarray, truth: np.ndarray, title: str) -> None:
    _image(ax, img)
    rgba = np.zeros(pred.shape + (4,), np.float32)
    rgba[pred] = (0.0, 0.85, 1.0, 0.38)  # predicted lung: translucent cyan
    ax.imshow(rgba)
    if truth.any() and not truth.all():
        ax.contour(truth.astype(float), levels=[0.5], colors="#ffd400", linewidths=0.8)  # expert mask outline
    ax.set_title(title)


def _score_title(miou: float, sens: float) -> str:
    return f"mIoU {miou:.3f}, sens. " + ("n/a" if not np.isfinite(sens) else f"{sens:.3f}")


def _segment(inp: Inputs, seg_name: str, images: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """Lung masks of the given uint8 images (None stays None) by one trained segmenter (eval.segmentation)."""
    model, size = seg.load_segmenter(inp.root / "models" / "segmenters" / f"{seg_name}.pt", "cpu")
    present = [x for x in images if x is not None]
    if not present:
        return [None] * len(images)
    pred = iter(seg.predict_lungs(model, np.stack(present), size, "cpu", 8, inp.params.eval.seg_threshold))
    return [next(pred) if x is not None else None for x in images]


def figure4(inp: Inputs, out: Path) -> Path:
    """Rows: rsna_like opacity images. Columns: expert lung mask, the opacity image and its segmentation, the
    translation (ours, else the first method that ran) and its segmentation, by the same segmenter (U-Net if
    trained, else the first of eval.segmenters), with per-image mIoU / sensitivity against the expert mask."""
    plt = _plt()
    ds, rows = examples(inp)
    seg_name, seg_why = pick_segmenter(inp)
    model = pick_method(inp)
    t, t_why = translations(inp, model)
    headers = ["Expert lung mask", "CXR with opacity", "Segmentation (before)",
               f"Translated ({display_name(inp, model)})", "Segmentation (after)"]
    with plt.rc_context(STYLE):
        if ds is None:
            fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
            _note(ax, f"Figure 4 skipped: {rows}", 60)
        else:
            n = len(rows)
            fig, axes = plt.subplots(n, 5, figsize=(8.4, 1.75 * n + 0.9), squeeze=False, layout="constrained")
            images = list(load_original(ds, rows))
            truth = load_mask(ds, rows, "lung_mask") if (rows["lung_mask"].fillna("") != "").all() else None
            after = [(_translated(t, "rsna_like", i) if t is not None else (None, t_why)) for i in rows["id"]]
            pred_before = pred_after = [None] * n
            why_no_seg = seg_why if seg_name is None else "no expert lung mask to score against"
            if seg_name is not None and truth is not None:
                pred_before = _segment(inp, seg_name, images)
                pred_after = _segment(inp, seg_name, [a for a, _ in after])
            for i, r in rows.iterrows():
                _row_label(axes[i, 0], "abcdefgh"[i], r["id"])
                if truth is None:
                    _note(axes[i, 0], "no expert lung mask in the manifest")
                else:
                    _image(axes[i, 0], truth[i].astype(np.uint8) * 255)
                _image(axes[i, 1], images[i])
                for j, img, pred in ((2, images[i], pred_before[i]), (4, after[i][0], pred_after[i])):
                    if img is None:
                        _note(axes[i, j], "no translated image")
                    elif pred is None:
                        _note(axes[i, j], why_no_seg)
                    else:
                        miou, sens = miou_sensitivity(pred[None], truth[i][None])
                        _overlay(axes[i, j], img, pred, truth[i], _score_title(miou[0], sens[0]))
                if after[i][0] is None:
                    _note(axes[i, 3], after[i][1])
                else:
                    _image(axes[i, 3], after[i][0])
            for j, h in enumerate(headers):
                old = axes[0, j].get_title()
                axes[0, j].set_title(h + (f"\n{old}" if old else ""))
            fig.suptitle(f"Figure 4: lung segmentation ({seg_name or 'no segmenter'}) before and after translation "
                         "(cyan = predicted lung, yellow line = expert mask)")
        _footer(fig, inp, f"segmenter {seg_name or '-'}")
        return _save(fig, out)


# --------------------------------------------------------------------------------------------------------------------
# Figure 5: images, activation masks, translations
# --------------------------------------------------------------------------------------------------------------------
FIGURE5_VARIANTS = 2  # named variants of ours shown beside the main method (each adds a mask and a result column)


def figure5_models(inp: Inputs) -> list[str]:
    """The method of Figure 5 (pick_method), then up to FIGURE5_VARIANTS named variants of ours in this profile whose
    translations have masks (e.g. ours_mil_res), in params.yaml order: the paper's figure beside what localises."""
    main = pick_method(inp)
    ablation_rows = {r[0] for r in paper.TABLE3_ROWS}
    variants = []
    for m, entry in inp.params.models.items():
        if entry.method == "ours" and m != main and m not in ablation_rows:
            t, _ = translations(inp, m)
            if t is not None and t.has_masks():
                variants.append(m)
    return [main] + variants[:FIGURE5_VARIANTS]


def figure5(inp: Inputs, out: Path) -> Path:
    plt = _plt()
    ds, rows = examples(inp)
    models = figure5_models(inp)
    with plt.rc_context(STYLE):
        if ds is None:
            fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
            _note(ax, f"Figure 5 skipped: {rows}", 60)
        else:
            n, k = len(rows), len(models)
            # columns: the input, then a mask and a result per model, then a narrow column for the mask colour bar
            fig, grid = plt.subplots(n, 2 + 2 * k, figsize=(1.5 + 3.0 * k + 0.3, 1.8 * n + 0.9), squeeze=False,
                                     layout="constrained", width_ratios=[1] + [1, 1] * k + [0.06])
            for a in grid[:, -1]:
                a.remove()
            cax = fig.add_subplot(grid[0, 0].get_gridspec()[:, -1])
            found = {m: translations(inp, m) for m in models}  # (Translations or None, why), read once per model
            mappable = None
            for i, r in rows.iterrows():
                _row_label(grid[i, 0], "abcdefgh"[i], r["id"])
                _image(grid[i, 0], _read_png(ds / r["image"]))
                rel = str(r.get("opacity_mask") or "")
                truth = _read_png(ds / rel) > 127 if rel and (ds / rel).is_file() else None
                for j, model in enumerate(models):
                    ax_mask, ax_img = grid[i, 1 + 2 * j], grid[i, 2 + 2 * j]
                    t, t_why = found[model]
                    if t is None:
                        _note(ax_mask, t_why)
                        _note(ax_img, t_why)
                        continue
                    if t.has_masks():
                        mask, why = _translated(t, "rsna_like", r["id"], "mask")
                        if mask is None:
                            _note(ax_mask, why)
                        else:
                            mappable = _image(ax_mask, mask / 255.0, cmap="magma", vmin=0, vmax=1)
                            if truth is not None and truth.any():
                                ax_mask.contour(truth.astype(float), levels=[0.5], colors="#00e5ff", linewidths=0.8)
                    else:
                        _note(ax_mask, f"{display_name(inp, model)} has no activation masks")
                    img, why = _translated(t, "rsna_like", r["id"])
                    if img is None:
                        _note(ax_img, why)
                    else:
                        _image(ax_img, img)
            sep = " " if k == 1 else "\n"  # two-line titles where several models share the row
            grid[0, 0].set_title(f"CXR before{sep}translation")
            for j, model in enumerate(models):  # the main method by its display name, variants by their key
                name = display_name(inp, model) if j == 0 else model
                grid[0, 1 + 2 * j].set_title(f"Activation mask{sep}({name})")
                grid[0, 2 + 2 * j].set_title("CXR after translation" if k == 1 else f"After{sep}({name})")
            if mappable is not None:
                fig.colorbar(mappable, cax=cax, label="mask value (0 = keep input, 1 = generated)")
            else:
                cax.axis("off")
            fig.suptitle("Figure 5: activation masks (cyan line = true opacity of the DRR benchmark)")
        _footer(fig, inp)
        return _save(fig, out)


# --------------------------------------------------------------------------------------------------------------------
# Figure 6: lesion counts
# --------------------------------------------------------------------------------------------------------------------
def _p_text(p: Any) -> str:
    return "p n/a" if p is None else f"p={p:.3g}"  # n/a: every difference is zero (no test possible)


def figure6(inp: Inputs, out: Path) -> Path:
    """Box plots of detections per image: original vs each method's translations (seed-mean counts), one panel per
    set of the paper (rsna_like, ards_like), with the one-sided Wilcoxon p-value (H1: fewer after)."""
    plt = _plt()
    models = [m for m in ("ours",) + FIGURE3_ORDER[1:] + tuple(inp.models) if not m.startswith("ours_")]
    models = list(dict.fromkeys(models))
    sets = list(paper.FIGURE6_SETS)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.8), squeeze=False,
                                 layout="constrained")
        for ax, s in zip(axes[0], sets):
            base = None
            data, labels, colors, absent = [], [], [], []
            for m in [ORIGINAL] + models:
                res, why = inp.get("lesions", m)
                entry = dig(res, "sets", s)
                if entry is None:
                    if m in FIGURE3_ORDER:
                        absent.append(f"{display_name(inp, m)} ({'not run' if why == inp.not_run() else 'missing'})")
                    continue
                if base is None:
                    base = entry
                if m == ORIGINAL:
                    continue
                translated = dig(entry, "counts", "translated")
                if not translated:
                    continue
                counts = np.mean(np.array([translated[k] for k in sorted(translated)], float), axis=0)
                data.append(counts)
                labels.append(f"{display_name(inp, m)}\n{_p_text(dig(entry, 'wilcoxon_seed_mean', 'p_greater'))}")
                colors.append("#d62728" if m == "ours" else "#1f77b4")
            if base is None:
                off = dig(inp.read("lesions", ORIGINAL), "not_evaluated")
                _note(ax, off or f"no lesion counts for {s}: run `dvc repro evaluate@<model>` (needs the detector)",
                      40)
                ax.set_title(SET_NAMES.get(s, s))
                continue
            data.insert(0, np.asarray(base["counts"]["original"], float))
            labels.insert(0, "Original")
            colors.insert(0, "#7f7f7f")
            bp = ax.boxplot(data, showmeans=True, showfliers=False, widths=0.55, patch_artist=True,
                            medianprops={"color": "black"},
                            meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black",
                                       "markersize": 4})
            for patch, c in zip(bp["boxes"], colors):
                patch.set_facecolor(c)
                patch.set_alpha(0.45)
            for k, vals in enumerate(data, start=1):  # every image as a dot: N is small on the cpu profile
                jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
                ax.plot(k + jitter, vals, "o", color="black", markersize=2, alpha=0.6)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6.5)
            ax.set_ylabel("detections per image")
            ax.set_title(f"{SET_NAMES.get(s, s)}: N = {base.get('n')} opacity test images")
            if len(data) == 1:
                ax.text(0.98, 0.95, "no translated counts", transform=ax.transAxes, ha="right", va="top", fontsize=7)
            if absent:
                ax.text(0.99, 0.97, textwrap.fill("absent: " + ", ".join(absent) + f" (profile {inp.profile})", 45),
                        transform=ax.transAxes, ha="right", va="top", fontsize=6, color="#555555")
        fig.suptitle("Figure 6: lesion detections (YOLOv5) before and after translation; "
                     "one-sided Wilcoxon signed-rank p (H1: fewer after)")
        _footer(fig, inp, "translated counts = mean over seeds per image")
        return _save(fig, out)


# --------------------------------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------------------------------
def read_curve(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    cols = {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}
    return cols


MAX_CURVES = 8
NOT_LOSSES = ("step", "it_per_s")


def loss_terms(columns) -> list[str]:
    """The loss columns of a curve file, totals first (they summarise the rest), then alphabetical."""
    keys = [c for c in columns if c not in NOT_LOSSES and not c.startswith(("lr_", "diag_"))]
    return sorted(keys, key=lambda k: (0 if "total" in k else 1, k))


def figure_training(inp: Inputs, out: Path) -> Path:
    plt = _plt()
    models = inp.models
    with plt.rc_context(STYLE):
        if not models:
            fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
            _note(ax, "no models in params.yaml", 60)
        else:
            ncols = min(4, len(models))
            nrows = -(-len(models) // ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows + 0.6), squeeze=False,
                                     layout="constrained")
            for ax in axes.flat[len(models):]:
                ax.axis("off")
            for ax, m in zip(axes.flat, models):
                ax.set_title(m)
                files = [(s, inp.root / "curves" / m / f"seed{s}.csv") for s in inp.seeds()]
                files = [(s, p) for s, p in files if p.is_file()]
                if not files:
                    _note(ax, f"no curves/{m}/seed*.csv: run `dvc repro train@{m}`", 28)
                    continue
                styles = ["-", "--", ":", "-."]
                positive = True
                plotted = 0
                n_terms = 0
                for k, (seed, path) in enumerate(files):
                    curve = read_curve(path)
                    if "step" not in curve:
                        continue
                    keys = loss_terms(curve)
                    n_terms = max(n_terms, len(keys))
                    for j, key in enumerate(keys[:MAX_CURVES]):
                        y = curve[key]
                        if np.isfinite(y).any():
                            positive &= bool(np.nanmin(y) > 0)
                            ax.plot(curve["step"], y, styles[k % 4], color=f"C{j % 10}", linewidth=0.9,
                                    label=key if k == 0 else None)
                            plotted += 1
                if not plotted:
                    _note(ax, "curve file has no loss columns", 28)
                    continue
                if positive:
                    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # after _plt()

                    ax.set_yscale("log")
                    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                    ax.yaxis.set_minor_formatter(NullFormatter())
                if n_terms > MAX_CURVES:
                    ax.set_title(f"{m} ({MAX_CURVES} of {n_terms} terms)")
                ax.set_xlabel("iteration")
                ax.set_ylabel("loss (log scale)" if positive else "loss")
                ax.legend(loc="upper right", ncol=2, frameon=False)
                if len(files) > 1:
                    names = ("solid", "dashed", "dotted", "dash-dot")
                    ax.text(0.01, 0.01, ", ".join(f"{names[k % 4]} = seed {s}" for k, (s, _) in enumerate(files)),
                            transform=ax.transAxes, fontsize=6)
            fig.suptitle(f"Training curves (window means of the logged losses; up to {MAX_CURVES} terms per model, "
                         "totals first; all terms in curves/<model>/seed<k>.csv)")
        _footer(fig, inp)
        return _save(fig, out)


MASK_CURVES = ("diag_mask_auroc", "diag_mask_iou", "diag_mask_area_opacity", "diag_mask_area_normal",
               "diag_mask_auroc_lung", "diag_mask_floor_lung", "diag_mask_style_share")


def figure_mask_diagnostics(inp: Inputs, out: Path) -> Path:
    """Per model with logged mask diagnostics (ours): left, what the mask does on the validation probe (AUROC and
    IoU against the true opacity, mean mask on opacity vs normal images); right, each Eq. 8 term's gradient at
    G_A's mask head relative to the adversarial term's (log scale). One line style per seed."""
    plt = _plt()
    found = []
    for m in inp.models:
        files = [(s, inp.root / "curves" / m / f"seed{s}.csv") for s in inp.seeds()]
        curves = [(s, read_curve(p)) for s, p in files if p.is_file()]
        curves = [(s, c) for s, c in curves if "diag_mask_area_opacity" in c]
        if curves:
            found.append((m, curves))
    with plt.rc_context(STYLE):
        if not found:
            fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
            _note(ax, "no curve file has mask diagnostics (diag_* columns): train a model with a mask", 60)
            return _save(fig, out)
        fig, axes = plt.subplots(len(found), 2, figsize=(10, 3.0 * len(found) + 0.4), squeeze=False,
                                 layout="constrained")
        styles = ["-", "--", ":", "-."]
        for (m, curves), (left, right) in zip(found, axes):
            left.set_title(f"{m}: mask on the validation probe")
            right.set_title(f"{m}: pull on the mask head / adversarial")
            for k, (seed, c) in enumerate(curves):
                for j, key in enumerate(MASK_CURVES):
                    if key in c:
                        left.plot(c["step"], c[key], styles[k % 4], color=f"C{j}", linewidth=1.0,
                                  label=key.removeprefix("diag_") if k == 0 else None)
                grads = sorted(x for x in c if x.startswith("diag_grad_") and x != "diag_grad_adv")
                for j, key in enumerate(grads):
                    y = np.where(c[key] > 0, c[key], np.nan)
                    if np.isfinite(y).any():
                        right.plot(c["step"], y, styles[k % 4], color=f"C{j}", linewidth=1.0,
                                   label=key.removeprefix("diag_grad_") if k == 0 else None)
            left.set_ylim(0, 1)
            left.axhline(0.5, color="0.6", linewidth=0.6)
            right.set_yscale("log")
            right.axhline(1.0, color="0.6", linewidth=0.6)
            for ax in (left, right):
                ax.set_xlabel("iteration")
                ax.legend(loc="best", fontsize=7, frameon=False, ncol=2)
            if len(curves) > 1:
                names = ("solid", "dashed", "dotted", "dash-dot")
                left.text(0.01, 0.01, ", ".join(f"{names[k % 4]} = seed {s}" for k, (s, _) in enumerate(curves)),
                          transform=left.transAxes, fontsize=7, color="0.3")
        _footer(fig, inp)
    return _save(fig, out)


FIGURES = {"figure3_qualitative.png": figure3, "figure4_segmentation.png": figure4, "figure5_masks.png": figure5,
           "figure6_lesions.png": figure6, "training_curves.png": figure_training,
           "training_mask_diagnostics.png": figure_mask_diagnostics}
