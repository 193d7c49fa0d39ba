"""The `report` stage (`cxrbench report`): reports/ from the DVC metric files, never from mlflow.db.

    build_reports(params, root=None)   tables (markdown + CSV) in reports/tables/, figures (PNG) in reports/figures/,
                                       the index reports/README.md; MLflow summary runs and one report run

Tables: reports/tables.py (numbers from metrics/, published numbers from reports/paper_numbers.py). Figures:
reports/figures.py (images from data/ and outputs/, segmenters from models/segmenters/, curves/). MLflow:
reports/mlflow_summary.py. Partial inputs (a model not in this profile, a stage not run yet) never stop the stage:
the row or panel says what is missing and how to get it.
"""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from eval.fid_kid import DIAGNOSTIC_SPACES
from pipeline.config import Params
from pipeline.io import atomic_write, write_json
from pipeline.offline import PROJECT_ROOT
from pipeline.tracking import tracking_uri
from reports import figures as figs
from reports import tables as tabs
from reports.html import render_page
from reports.inputs import ORIGINAL, Inputs

TABLE_INDEX = {
    "table_competence": "Evaluator competence: each evaluator's own score on held-out data against its floor; numbers "
                        "from an evaluator below its floor are not ranked.",
    "table_per_finding": "Beyond the paper (DRR only): residual opacity and PSNR gain per finding type.",
    "table1": "Paper Table 1: FID/KID of the opacity -> non-opacity translations (rsna_like) and lung segmentation "
              "(mIoU Δ, mIoU, sensitivity; mean of the segmenters) on ards_like, rsna_like, jsrt_like; Original + "
              "six methods.",
    "table2": "Paper Table 2: opacity classifiers (ResNet50, MobileNet, EfficientNet, DenseNet) trained on Original "
              "images, ours' Generated translations and ours' activation Masks; Acc, F1, Recall, Precision on "
              "rsna_like and ARDS-like.",
    "table3": "Paper Table 3: ablation of AASPM / FA / LCA / BAML (FID/KID on rsna_like).",
    "table_segmenters": "Supplementary: segmentation per segmenter (PSPNet, U-Net, CE-Net, VGG16-BN U-Net) and set.",
    "table_paired": "Beyond the paper (DRR only): PSNR/SSIM vs the clean twin (whole / lung), residual opacity "
                    "before/after, activation-mask AUROC / IoU vs the true opacity, change on normal images.",
    "table_lesions": "Figure 6 data: YOLOv5 detections per image before/after translation, Wilcoxon p-values.",
    "training": "Training summary: steps, wall time, parameters, final losses per model and seed.",
}
FIGURE_INDEX = {
    "figure3_qualitative.png": "Paper Figure 3: rsna_like opacity test images (rows) and their translations by "
                               "each method (columns: Original, Ours, MUNIT, UNIT, DRIT++, CycleGAN, UVCGAN).",
    "figure4_segmentation.png": "Paper Figure 4: expert lung mask, opacity image + its segmentation, translated "
                                "image (ours) + its segmentation, with per-image mIoU / sensitivity.",
    "figure5_masks.png": "Paper Figure 5: opacity images, ours' activation masks (true DRR opacity outlined), "
                         "translations.",
    "figure6_lesions.png": "Paper Figure 6: box plots of lesion detections per image, original vs translated, "
                           "rsna_like and ards_like, with one-sided Wilcoxon p-values.",
    "training_curves.png": "Training losses of every model (curves/<model>/seed<k>.csv).",
    "training_mask_diagnostics.png": "Does ours' mask find the opacity while it trains? Mask AUROC/IoU against the "
                                     "true opacity and mean mask on opacity vs normal validation images; each "
                                     "Eq. 8 term's pull on the mask head relative to the adversarial term's.",
}
STAGES = ("train", "translate", "fidkid", "segment", "lesions", "paired", "classifiers")


def coverage(inp: Inputs) -> list[str]:
    """A markdown table: which metric files exist for each model of the profile."""
    head = "| Model | " + " | ".join(STAGES) + " |"
    lines = [head, "|---|" + "---|" * len(STAGES)]
    for model in [ORIGINAL] + inp.models:
        cells = []
        for stage in STAGES:
            if model == ORIGINAL and stage in ("train", "translate"):
                cells.append("")
            elif stage == "classifiers" and model not in (ORIGINAL, *inp.params.eval.classify_models):
                cells.append("")
            else:
                cells.append("✓" if inp.path(stage, model).is_file() else "missing")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def mlflow_lines(params: Params) -> list[str]:
    tr = params.tracking
    off = ([] if tr.enabled else
           ["**MLflow tracking is off in this profile** (`tracking.enabled: false`): no summary or report runs were "
            "logged by this build; the tables above are complete without them. With tracking on:", ""])
    return off + [f"`make ui` serves the MLflow UI on http://127.0.0.1:5000 (store: `{tracking_uri(tr.uri)}`, "
                  f"experiment `{tr.experiment}`).",
            "- Summary runs (one per model and seed, the Original row as model `original`): filter "
            "`tags.stage = 'summary'`, select runs, *Compare*: metrics are named like Table 1's CSV columns "
            "(`fid_cxr_densenet`, `kid_cxr_densenet`, `rsna_like_miou`, `rsna_like_miou_delta`, "
            "`rsna_like_sensitivity`, ...; segmentation in %), then `seg_*`, `lesions_*`, `paired_*`, `cls_*`.",
            "- The report run (`tags.stage = 'report'`) holds these tables and figures as artifacts.",
            "- The numbers here come from the DVC metric files (`dvc metrics show`); MLflow is a view of them."]


def write_index(inp: Inputs, reports: Path, tables: list[tabs.Table], figures: dict[str, Path],
                problems: list[str]) -> Path:
    ev = inp.params.eval
    lines = ["# cxrbench reports", "", *([tabs.SMOKE_LINE, ""] if inp.is_smoke() else []),
             f"Written by `cxrbench report` (the DVC stage `report`) from the metric files under `metrics/` (never "
             f"from mlflow.db). Profile `{inp.profile}`, seeds {inp.seeds()}, models: "
             + ", ".join(f"`{m}`" for m in inp.models) + ".", "",
             f"- {tabs.data_description(inp)}",
             f"- Evaluation cap: {ev.max_images or 'all'} images per domain of each evaluation set "
             "(`eval.max_images`); N of each table is stated in it.",
             *[f"- {line}" for line in tabs.budget_notes(inp)],
             *[f"- {line}" for line in tabs.fid_notes(inp)[:-1]],
             "- Every table shows this run's numbers and, in a second block, the paper's published numbers. The data "
             "differ from the paper's (unless real datasets were plugged in), so the numbers are not expected to "
             "match; the layout and the direction of the comparisons are what to check.", "",
             "## Does any method remove opacity? (paired DRR metrics vs the Identity floor)", "",
             *[f"- {line}" for line in tabs.removal_sentences(inp)], "",
             "## Tables", "", "| Table | What it shows | Files |", "|---|---|---|"]
    for t in tables:
        lines.append(f"| {t.title.split(':')[0]} | {TABLE_INDEX.get(t.name, t.title)} | "
                     f"[md](tables/{t.name}.md), [csv](tables/{t.name}.csv) |")
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        lines += [f"### {name}", "", FIGURE_INDEX.get(name, ""), "", f"![{name}](figures/{name})", ""]
    if (reports / "figures" / "data_samples.png").is_file():
        lines += ["### data_samples.png", "", "Samples of the three datasets (written by the `data` stage).", "",
                  "![data samples](figures/data_samples.png)", ""]
    lines += ["## Which metric files this report found", "", *coverage(inp), "",
              "A missing file: run `dvc repro` (or the stage named in the table's Status column).", "",
              "## MLflow", "", *mlflow_lines(inp.params), ""]
    if problems:
        lines += ["## Problems while building this report", "", *[f"- {p}" for p in problems], ""]
    return atomic_write(reports / "README.md", "\n".join(lines))


def _placeholder(path: Path, text: str) -> Path:
    plt = figs._plt()
    fig, ax = plt.subplots(figsize=(6, 2))
    figs._note(ax, text, 80)
    return figs._save(fig, path)


def headline_metrics(inp: Inputs, tables: list) -> dict[str, Any]:
    """The small file for `dvc metrics show` / `dvc exp show` (metrics/headline.json): the headline FID of every
    Table 1 row that has one (Original, the reference rows, the methods), rounded to 0.1, null where its evaluator
    is not competent or the number is missing. The space is the first available non-diagnostic FID space of
    eval.fid_extractors (Inception when its weights are there, else the independent evaluator's);
    everything else (KID, intervals, N, per-image values) stays in the per-stage metric files and the tables."""
    status = inp.fid_space_status()
    spaces = [s for s in inp.fid_spaces() if s not in DIAGNOSTIC_SPACES and status[s].get("status") == "ok"]
    table1 = next((t for t in tables if t.name == "table1"), None)
    if not spaces or table1 is None:
        return {"fid": {}}
    k = tabs.space_key(spaces[0])
    fid = {}
    for row in table1.rows:
        value = row.get(f"fid_{k}")
        ok = row.get(f"{k}_competent", True)
        if row.get("model"):
            fid[row["model"]] = round(float(value), 1) if isinstance(value, (int, float)) and ok else None
    return {"fid": fid, "space": spaces[0],
            "interval": {row["model"]: [row.get(f"fid_{k}_lo"), row.get(f"fid_{k}_hi")] for row in table1.rows
                         if row.get("model") and fid.get(row["model"]) is not None}}


def headline_plot_rows(headline: dict[str, Any]) -> str:
    """metrics/headline_plot.csv for the cross-model DVC plot `headline_fid`: one row per Table 1 row with a
    competent headline FID (model, fid, 95 % interval, feature space)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "fid", "fid_lo", "fid_hi", "space"])
    for model, value in headline.get("fid", {}).items():
        if value is not None:
            lo, hi = headline.get("interval", {}).get(model, [None, None])
            writer.writerow([model, value, "" if lo is None else round(lo, 1), "" if hi is None else round(hi, 1),
                             headline.get("space", "")])
    return buf.getvalue()


def build_reports(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Write reports/ under `root` (default: the project) and log the MLflow summary; returns what was written."""
    root = Path(root) if root else PROJECT_ROOT
    reports = root / "reports"
    inp = Inputs(params, root)
    tables = tabs.all_tables(inp)
    files: list[Path] = []
    for t in tables:
        files += list(t.write(reports / "tables"))
    headline = headline_metrics(inp, tables)
    write_json(root / "metrics" / "headline.json", {"fid": headline["fid"]})  # for dvc metrics show: FIDs only
    atomic_write(root / "metrics" / "headline_plot.csv", headline_plot_rows(headline))  # for dvc plots show
    problems: list[str] = []
    written: dict[str, Path] = {}
    for name, fn in figs.FIGURES.items():
        try:
            written[name] = fn(inp, reports / "figures" / name)
        except Exception as exc:  # noqa: BLE001  (a figure bug must not hide the tables; it is reported)
            msg = f"figures/{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            problems.append(msg)
            warnings.warn(f"report: {msg}", stacklevel=2)
            written[name] = _placeholder(reports / "figures" / name, f"This figure failed: {msg}")
    files += list(written.values())
    files.append(write_index(inp, reports, tables, written, problems))
    page_figures = dict(written)
    if (reports / "figures" / "data_samples.png").is_file():
        page_figures["data_samples.png"] = reports / "figures" / "data_samples.png"
    captions = {**FIGURE_INDEX, "data_samples.png": "Samples of the three datasets (written by the data stage)."}
    files.append(atomic_write(reports / "index.html", render_page(inp, tables, page_figures, captions,
                                                                 coverage(inp), problems)))
    logged = []
    if params.tracking.enabled:
        from reports.mlflow_summary import log_report_run, log_summary_runs  # lazy: mlflow only when tracking is on

        logged = log_summary_runs(inp)
        log_report_run(inp, files, reports)
    print(f"report: {len(tables)} tables, {len(written)} figures and the index in {reports}"
          + (f"; {len(logged)} MLflow summary runs" if params.tracking.enabled else "; MLflow off")
          + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""))
    return {"tables": [t.name for t in tables], "figures": list(written), "files": [str(f) for f in files],
            "problems": problems, "summary_runs": logged}
