"""The paper's tables (and the supplementary ones) from the metric files, as markdown + CSV.

Every table has two blocks: "This run" (the numbers of the metric files, mean +- std over seeds) and "Paper" (the
paper's published numbers, or a line saying the paper publishes none). The CSV holds both, told apart by its
`source` column ("this run" / "paper"), at full precision; the markdown rounds. A row whose inputs are absent keeps
its place with empty numbers and a `status` that says why ("not run in profile ci", "missing metrics/...: run ...",
"n/a: the model has no activation masks"); nothing is ever filled in.

Units: FID and KID raw; mIoU, sensitivity and their deltas in % (as the paper prints them); classifier scores in
[0, 1]; PSNR in dB; SSIM, residual opacity and change in [0, 1] intensity units.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.canonical import extra_sets
from pipeline.io import atomic_write
from reports import paper_numbers as paper
from reports.inputs import ORIGINAL, SMOKE_LINE, Inputs, dig, display_seeds

SET_NAMES = {"rsna_like": "RSNA-like", "ards_like": "ARDS-like", "jsrt_like": "JSRT-like", "ards": "ARDS-like"}
CLASSIFIER_NAMES = dict((arch, name) for name, arch in paper.CLASSIFIER_ROWS)
SEGMENTER_NAMES = {"pspnet": "PSPNet", "unet": "U-Net", "cenet": "CE-Net", "vgg16bn_unet": "VGG16-BN U-Net",
                   "mean": "mean of the segmenters"}
REFERENCE_NAMES = {"identity": "Identity (floor: do nothing)", "blur": "Blur (fixed Gaussian)",
                   "oracle": "Oracle: clean twin (ceiling)"}
TABLE2_MODEL = "ours"  # Table 2 is about the proposed method's translations and masks
ABLATIONS = tuple(r[0] for r in paper.TABLE3_ROWS if r[0] != "ours")


def space_key(space: str) -> str:
    """Feature-space name -> column-name part: "cxr-densenet" -> "cxr_densenet"."""
    return space.replace("-", "_")


# --------------------------------------------------------------------------------------------------------------------
# A table: columns, rows of this run, rows of the paper; written as CSV + markdown
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Column:
    key: str  # the CSV column (and the MLflow metric name where the table is Table 1)
    header: str  # the markdown header
    fmt: str = "text"  # text | fid | kid | pct | delta | score | db | unit | ratio | p | count | int | check
    std: bool = False  # a `<key>_std` column (std over seeds) exists; markdown shows "mean ± std"


@dataclass
class Table:
    name: str  # file stem under reports/tables/
    title: str
    notes: list[str]  # profile, data, N, seeds, feature spaces
    columns: list[Column]
    rows: list[dict[str, Any]]  # this run: CSV values (+ "_text": {key: markdown text replacing the number})
    paper_columns: list[Column] = field(default_factory=list)
    paper_rows: list[dict[str, Any]] = field(default_factory=list)
    paper_note: str = ""

    def csv_columns(self) -> list[str]:
        cols = ["source"]
        for c in self.columns + self.paper_columns:
            for k in (c.key, f"{c.key}_std") if c.std else (c.key,):
                if k not in cols:
                    cols.append(k)
        for r in self.rows + self.paper_rows:
            cols += [k for k in r if not k.startswith("_") and k not in cols]
        return cols

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        cols = self.csv_columns()
        csv_path, md_path = folder / f"{self.name}.csv", folder / f"{self.name}.md"
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for source, rows in (("this run", self.rows), ("paper", self.paper_rows)):
            for r in rows:
                w.writerow({k: _csv_value(v) for k, v in {**r, "source": source}.items() if not k.startswith("_")})
        atomic_write(csv_path, buf.getvalue())
        lines = [f"# {self.title}", "", *[f"- {n}" for n in self.notes], "", "## This run", "",
                 markdown(self.columns, self.rows)]
        lines += ["", "## Paper (published numbers)", ""]
        if self.paper_note:
            lines += [self.paper_note, ""]
        if self.paper_rows:
            lines.append(markdown(self.paper_columns, self.paper_rows))
        atomic_write(md_path, "\n".join(lines).rstrip() + "\n")
        return md_path, csv_path


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else v  # full precision: the CSV must equal the metric files


def fmt_number(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if fmt == "check":
        return "✓" if v else "✗"
    if not isinstance(v, (int, float)):
        return str(v)
    if fmt in ("fid", "kid"):  # feature spaces differ by orders of magnitude: keep 2-3 significant digits
        return adaptive(v, 2 if fmt == "fid" else 5)
    spec = {"pct": ".2f", "delta": "+.2f", "score": ".4f", "db": ".2f", "unit": ".4f", "ratio": ".3f",
            "count": ".2f", "int": ".0f", "p": ".3g"}.get(fmt)
    return format(v, spec) if spec else str(v)


def adaptive(v: float, decimals: int) -> str:
    """Fixed `decimals` while that keeps two significant digits, else two significant digits (0.0032, 3.2e-06)."""
    if abs(v) >= 1e5:
        return f"{v:.4g}"
    if v == 0 or abs(v) >= 10 ** -(decimals - 1):
        return f"{v:.{decimals}f}"
    return f"{v:.2g}"


def cell(row: dict[str, Any], col: Column) -> str:
    text = row.get("_text", {})
    if col.key in text:
        return text[col.key]
    v = row.get(col.key)
    out = fmt_number(v, col.fmt) if col.fmt != "text" else ("" if v is None else str(v))
    if col.fmt == "kid" and v is not None and row.get(f"{col.key}_subset_std") is not None:
        out += f" ({adaptive(row[f'{col.key}_subset_std'], 4)})"  # the paper's bracket: std over KID subsets
    std = row.get(f"{col.key}_std") if col.std else None
    if std is not None and v is not None:
        out += f" ± {fmt_number(std, col.fmt).lstrip('+')}"
    lo, hi = row.get(f"{col.key}_lo"), row.get(f"{col.key}_hi")
    if v is not None and lo is not None and hi is not None:  # the 95 % interval
        out += f" [{fmt_number(lo, col.fmt)}, {fmt_number(hi, col.fmt)}]"
    return out


def markdown(columns: list[Column], rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(esc(c.header) for c in columns) + " |",
           "|" + "|".join({"text": "---", "check": ":---:"}.get(c.fmt, "---:") for c in columns) + "|"]
    out += ["| " + " | ".join(esc(cell(r, c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def _join(reasons: list[str]) -> str:
    uniq = [r for i, r in enumerate(reasons) if r != "ok" and r not in reasons[:i]]
    return "; ".join(uniq) if uniq else "ok"


def _mean_std(avg: Any, scale: float = 1.0) -> tuple[float | None, float | None]:
    """{"mean", "std", "n"} (eval.stats.mean_std) -> (mean, std) scaled; None where absent."""
    if not isinstance(avg, dict):
        return None, None
    m, s = avg.get("mean"), avg.get("std")
    return (None if m is None else m * scale), (None if s is None else s * scale)


# --------------------------------------------------------------------------------------------------------------------
# Notes every table carries
# --------------------------------------------------------------------------------------------------------------------
def data_description(inp: Inputs) -> str:
    """Where every dataset came from (data/summary.json, written by the data stage; params.yaml before it ran)."""
    source = getattr(inp.params.data, "source", "drr")
    origins: dict[str, str] = {}
    summary = inp.root / "data" / "summary.json"
    if summary.is_file():
        try:
            written = json.loads(summary.read_text())
            source = written.get("source", source)
            origins = {k: v.get("origin", "") for k, v in written.get("datasets", {}).items()}
        except ValueError:
            pass
    what = ("the DRR benchmark rendered from a chest CT (synthetic; not the paper's RSNA / MIMIC / JSRT images)"
            if source == "drr" else f"real data from adapter `{source}`")

    def of(name: str) -> str:
        return f" = {origins[name]}" if origins.get(name) and source != "drr" else ""

    roles = (f"`data/drr`{of('drr')} (training; its test split = rsna_like), `data/ards-like`{of('ards-like')} "
             f"(ards_like), `data/jsrt-like`{of('jsrt-like')} (jsrt_like)")
    if origins and source != "drr":
        roles += (f", `data/seg-train`{of('seg-train')} (segmenters), `data/det-train`{of('det-train')} "
                  "(detector)")
    for name, entry in extra_sets(inp.root / "data").items():
        roles += f", `data/extra/{name}` = {entry.get('source')} ({name}, user-named)"
    return f"Data: {what}: {roles}, {inp.params.data.resolution} px."


def common_notes(inp: Inputs) -> list[str]:
    return [f"Profile `{inp.profile}`; seeds {inp.seeds()} (one trained model per seed; \"± s\" = sample std over "
            "seeds, shown only with two or more seeds).", data_description(inp)] + budget_notes(inp)


def budget_notes(inp: Inputs) -> list[str]:
    """One warning line when some model trains for its own number of iterations (models.<name>.iterations): its
    rows are then not an equal-budget comparison with the others."""
    own = {name: e.iterations for name, e in inp.params.models.items() if e.iterations}
    if not own:
        return []
    listed = ", ".join(f"`{name}` {n:,}" for name, n in own.items())
    return [f"**Unequal training budgets**: {listed} iterations, every other model {inp.params.train.iterations:,} "
            "(train.iterations): those rows show what the method does with more steps, not an equal-budget ranking."]


def fid_notes(inp: Inputs) -> list[str]:
    lines = []
    for space, st in inp.fid_space_status().items():
        if st["status"] == "ok":
            extra = ("the prior's pooled DenseNet-121 features: comparable between runs with the same prior file only, "
                     "not with the paper; caution: FA (Eq. 5-6) and LCA (Eq. 7) train Ours against this same prior, so "
                     "variants with FA/LCA are favoured in this space by construction: weigh them by the paired "
                     "metrics (table_paired) and the inception space" if space == "cxr-densenet" else
                     "the independent evaluator network's pooled features (another architecture, split and seed "
                     "than the prior; no method trains against it): the headline space without Inception weights"
                     if space == "cxr-evaluator" else
                     "torch-fidelity inception-v3-compat pool3: the paper's feature space"
                     + ("" if st.get("canonical_weights") in (True, None) else " (NON-canonical weights file)"))
            lines.append(f"FID/KID feature space `{space}`: available ({extra}); N = {st.get('n_generated')} "
                         f"translated opacity test images (rsna_like) vs {st.get('n_reference')} real normal test "
                         "images.")
        else:
            lines.append(f"FID/KID feature space `{space}`: **{st['status']}**: {st.get('how_to_fix', '')}")
    lines.append("KID cells: mean over seeds (torch-fidelity's std over KID subsets in brackets, as the paper prints "
                 "it) ± std over seeds.")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Evaluator competence: measured before any number that depends on it
# --------------------------------------------------------------------------------------------------------------------
def competence_rows(inp: Inputs) -> list[dict[str, Any]]:
    """One row per evaluator: its competence value, floor, pass/fail, what it gates (from the models/ JSON files)."""
    ev = inp.params.eval
    rows: list[dict[str, Any]] = []

    def add(name: str, gates: str, value: Any, floor: float, measure: str, missing: str) -> None:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        rows.append({"evaluator": name, "gates": gates, "value": value if ok else None, "floor": floor,
                     "passed": bool(ok and value >= floor), "measure": measure,
                     "status": "ok" if ok else missing})

    evj = inp.model_json("models/evaluator/evaluator.json")
    add("evaluator", "FID/KID (cxr-evaluator)", dig(evj, "mean_auroc"), ev.floor_evaluator_auroc,
        "mean per-label AUROC, drr test split", "missing models/evaluator/evaluator.json: run `dvc repro evaluator`")
    prj = inp.model_json("models/prior/prior.json")
    add("prior", "FID/KID (cxr-densenet, diagnostic); ours' FA/LCA", dig(prj, "mean_auroc"), ev.floor_prior_auroc,
        "mean per-label AUROC, drr test split", "missing models/prior/prior.json: run `dvc repro prior`")
    sgj = inp.model_json("models/segmenters/segmenters.json")
    for name in ev.segmenters:
        comp = dig(sgj, "competence", name) or {}
        add(f"segmenter {SEGMENTER_NAMES.get(name, name)}", "segmentation (Table 1)", comp.get("value"),
            ev.floor_segmenter_miou, comp.get("measure", "mIoU on clean normal test images"),
            "missing competence in models/segmenters/segmenters.json: run `dvc repro segmenters`")
    cls = inp.read("classifiers", ORIGINAL)
    for arch in ev.classifiers:
        add(f"classifier {CLASSIFIER_NAMES.get(arch, arch)}", "Table 2", dig(cls, "results", arch, "rsna_like", "auroc"),
            ev.floor_classifier_auroc, "AUROC of the Original classifier on the rsna_like test set",
            "no AUROC in metrics/classifiers/original.json: run `dvc repro classifiers`")
    dtj = inp.model_json("models/detector/detector.json")
    add("detector", "lesion counts (Figure 6)", dig(dtj, "val_metrics", "metrics/mAP50(B)"), ev.floor_detector_map50,
        "mAP50 on the opacity validation images", (dtj or {}).get("not_evaluated") or
        "missing models/detector/detector.json: run `dvc repro detector`")
    sgj_missing = not sgj or not sgj.get("competence")
    if sgj_missing and sgj:  # trained, but no held-out image with a lung mask to measure them on
        for r in rows:
            if r["evaluator"].startswith("segmenter") and r["value"] is None:
                r["status"] = "not measured: no held-out image with a lung mask (see `cxrbench check`)"
    return rows


def competent(inp: Inputs, prefix: str) -> tuple[bool, str]:
    """(all evaluators whose name starts with `prefix` passed, a text for cells when they did not)."""
    bad = [r for r in competence_rows(inp) if r["evaluator"].startswith(prefix) and not r["passed"]]
    if not bad:
        return True, ""
    r = bad[0]
    value = "not measured" if r["value"] is None else f"{r['value']:.2f}"
    return False, f"evaluator not competent ({value} < {r['floor']:.2f})"


def table_competence(inp: Inputs) -> Table:
    cols = [Column("evaluator", "Evaluator"), Column("gates", "Numbers it produces"),
            Column("measure", "Competence measure"), Column("value", "Value", "unit"), Column("floor", "Floor", "unit"),
            Column("passed", "Passed", "check"), Column("status", "Status")]
    notes = common_notes(inp) + [
        "Every evaluator's competence is measured on data it was not trained on, before any number that depends on "
        "it. A number from an evaluator below its floor (params.yaml eval.floor_*) is shown in the tables as "
        "\"evaluator not competent (value < floor)\" and is not ranked; the CSV keeps the value."]
    return Table("table_competence", "Evaluator competence (gates every ranked number)", notes, cols,
                 competence_rows(inp), paper_note="The paper reports no competence of its evaluators.")


# --------------------------------------------------------------------------------------------------------------------
# Table 1: FID/KID and lung segmentation (mean of the segmenters) per evaluation set
# --------------------------------------------------------------------------------------------------------------------
def table1_models(inp: Inputs) -> list[tuple[str, str]]:
    """The paper's seven rows, then any other (non-ablation) model of this profile (e.g. a new baseline)."""
    refs = list(inp.references)
    if "oracle" not in refs and inp.params.data.source != "drr":
        refs.append("oracle")  # real data: the ceiling row says why it has no number
    rows = list(paper.TABLE1_ROWS[:1]) + [(REFERENCE_NAMES.get(r, r), r) for r in refs]
    rows += list(paper.TABLE1_ROWS[1:])
    known = {m for _, m in rows} | set(ABLATIONS)
    rows += [(inp.description(m), m) for m in inp.models if m not in known]
    rows += [(f"{m} (external)", m) for m in inp.externals if m not in known]  # cxrbench evaluate --images
    return rows


def fid_cells(inp: Inputs, model: str) -> tuple[dict[str, Any], str]:
    """FID/KID columns of one model (mean, seed std, KID subset std per feature space) and their status."""
    data, status = inp.get("fidkid", model)
    row: dict[str, Any] = {"_text": {}}
    for space in inp.fid_spaces():
        k = space_key(space)
        entry = dig(data, "extractors", space)
        if data is None or entry is None:
            row[f"{k}_status"] = status if data is None else f"no {space} entry in {inp.rel(inp.path('fidkid', model))}"
            continue
        row[f"{k}_status"] = entry.get("status", "unknown")
        if entry.get("status") != "ok":
            row["_text"][f"fid_{k}"] = row["_text"][f"kid_{k}"] = entry.get("status", "unknown")
            continue
        row[f"fid_{k}"], row[f"fid_{k}_std"] = _mean_std(dig(entry, "avg", "fid"))
        row[f"kid_{k}"], row[f"kid_{k}_std"] = _mean_std(dig(entry, "avg", "kid_mean"))
        row[f"kid_{k}_subset_std"] = _mean_std(dig(entry, "avg", "kid_std"))[0]
        for m in ("fid", "kid"):
            row[f"{m}_{k}_lo"], row[f"{m}_{k}_hi"] = dig(entry, "ci95", m, "lo"), dig(entry, "ci95", m, "hi")
        gate = {"cxr-evaluator": "evaluator", "cxr-densenet": "prior"}.get(space)
        ok, why = competent(inp, gate) if gate else (True, "")
        row[f"{k}_competent"] = ok
        if not ok:
            row["_text"][f"fid_{k}"] = row["_text"][f"kid_{k}"] = why
    if data is not None:
        row["fid_n_generated"], row["fid_n_reference"] = data.get("n_generated"), data.get("n_reference")
    return row, status


def seg_cells(inp: Inputs, model: str) -> tuple[dict[str, Any], str]:
    """mIoU delta, mIoU and sensitivity (in %, mean of the segmenters) per evaluation set."""
    data, status = inp.get("segment", model)
    row: dict[str, Any] = {"_text": {}}
    for s in paper.SEG_SETS:
        entry = dig(data, "sets", s)
        if entry is None:
            if data is not None:  # switched off (eval.switched_off: no lung masks), or the set is absent
                why = dig(data, "not_evaluated", s) or "no set"
                row["_text"].update({f"{s}_{x}": why for x in ("miou_delta", "miou", "sensitivity")})
            continue
        row[f"{s}_n"] = entry.get("n")
        mean = entry.get("mean", {})
        if model == ORIGINAL:
            row[f"{s}_miou"] = None if dig(mean, "original", "miou") is None else mean["original"]["miou"] * 100
            sens = dig(mean, "original", "sensitivity")
            row[f"{s}_sensitivity"] = None if sens is None else sens * 100
            row["_text"][f"{s}_miou_delta"] = ""
        else:
            row[f"{s}_miou_delta"], row[f"{s}_miou_delta_std"] = _mean_std(dig(mean, "avg", "delta_miou"), 100)
            row[f"{s}_miou"], row[f"{s}_miou_std"] = _mean_std(dig(mean, "avg", "miou"), 100)
            row[f"{s}_sensitivity"], row[f"{s}_sensitivity_std"] = _mean_std(dig(mean, "avg", "sensitivity"), 100)
        ci = mean.get("ci95", {})
        for col, src in ((f"{s}_miou", "original_miou" if model == ORIGINAL else "miou"),
                         (f"{s}_sensitivity", "original_sensitivity" if model == ORIGINAL else "sensitivity")):
            for end in ("lo", "hi"):
                v = dig(ci, src, end)
                row[f"{col}_{end}"] = None if v is None else v * 100
        for end in ("lo", "hi"):
            v = dig(ci, "delta_miou", "diff", end)
            row[f"{s}_miou_delta_{end}"] = None if v is None else v * 100
        row[f"{s}_miou_delta_p"] = dig(ci, "delta_miou", "wilcoxon_p_two_sided")
    ok, why = competent(inp, "segmenter")
    row["segmenters_competent"] = ok
    if not ok and data is not None:  # a set that was not evaluated keeps its reason (there is no number to gate)
        row["_text"].update({f"{s}_{x}": why for s in paper.SEG_SETS for x in ("miou_delta", "miou", "sensitivity")
                             if not dig(data, "not_evaluated", s)})
    return row, status


def n_line(rows: list[dict[str, Any]]) -> str:
    """"ards_like 93, rsna_like 40, ..." from the rows' <set>_n values (several values if files disagree)."""
    ns: dict[str, set] = {}
    for r in rows:
        for s in paper.SEG_SETS:
            if r.get(f"{s}_n") is not None:
                ns.setdefault(s, set()).add(r[f"{s}_n"])
    return ", ".join(f"{s} {'/'.join(str(x) for x in sorted(ns[s]))}" for s in paper.SEG_SETS if s in ns)


def _seeds_of(*datas: Any) -> str:
    for d in datas:
        if isinstance(d, dict) and d.get("seeds"):
            return display_seeds(d["seeds"])
    return "-"


def table1(inp: Inputs) -> Table:
    spaces = inp.fid_spaces()
    cols = [Column("row", "Model")]
    for space in spaces:
        k = space_key(space)
        label = f"{space}, diagnostic: ours trains against it" if space == "cxr-densenet" else space
        cols += [Column(f"fid_{k}", f"Avg. FID ↓ ({label})", "fid", std=True),
                 Column(f"kid_{k}", f"Avg. KID ↓ ({label})", "kid", std=True)]
    for s in paper.SEG_SETS:
        cols += [Column(f"{s}_miou_delta", f"{SET_NAMES[s]} mIoU Δ", "delta", std=True),
                 Column(f"{s}_miou", f"{SET_NAMES[s]} mIoU ↑", "pct", std=True),
                 Column(f"{s}_sensitivity", f"{SET_NAMES[s]} Sens. ↑", "pct", std=True)]
    cols += [Column("seeds", "Seeds"), Column("status", "Status")]
    rows = []
    for display, model in table1_models(inp):
        f, fs = fid_cells(inp, model)
        g, gs = seg_cells(inp, model)
        seeds = "-"
        if model != ORIGINAL and inp.in_profile(model):
            seeds = ("deterministic" if model in inp.references else "external" if model in inp.externals
                     else _seeds_of(inp.read("fidkid", model), inp.read("segment", model)))
        row = {"row": display, "model": model, **f, **g, "_text": {**f["_text"], **g["_text"]}, "seeds": seeds,
               "status": _join([fs, gs])}
        rows.append(row)
    pcols = [Column("row", "Model"), Column("fid_inception", "Avg. FID ↓", "fid"),
             Column("kid_inception", "Avg. KID ↓", "kid")]
    for s in paper.SEG_SETS:
        n = paper.PAPER_SET_NAMES[s]
        pcols += [Column(f"{s}_miou_delta", f"{n} mIoU Δ", "delta"), Column(f"{s}_miou", f"{n} mIoU ↑", "pct"),
                  Column(f"{s}_sensitivity", f"{n} Sens. ↑", "pct")]
    prows = []
    for display, model in paper.TABLE1_ROWS:
        p = paper.TABLE1[model]
        prow = {"row": display, "model": model, "fid_inception": p["fid"], "kid_inception": p["kid"],
                "kid_inception_subset_std": p["kid_subset_std"], "status": "published",
                **{k: v for k, v in p.items() if k.startswith(paper.SEG_SETS)}}
        if model == ORIGINAL:
            prow["_text"] = {f"{s}_miou_delta": "" for s in paper.SEG_SETS}
        prows.append(prow)
    seg_n = n_line(rows)
    notes = ([SMOKE_LINE] if inp.is_smoke() else []) + common_notes(inp) + fid_notes(inp) + [
        "Brackets: 95 % intervals (FID/KID: grouped jackknife over the images of both sets, at this N; segmentation: "
        "bootstrap over images and seeds; mIoU Δ: paired bootstrap of the per-image difference). Rows: Identity "
        "(do nothing) is the floor, Blur a fixed Gaussian that removes detail but no opacity, Oracle the clean twin "
        "(the truth, DRR sets only) the ceiling.",
        *removal_sentences(inp),
        "Segmentation: mIoU over {background, lung} and lung sensitivity, in %, averaged over the segmenters "
        f"{', '.join(inp.params.eval.segmenters)} (per-segmenter numbers: table_segmenters.md); Δ = translated - "
        "original per seed. Scored images: the opacity images of rsna_like and ards_like, all (normal) jsrt_like "
        f"images; N = {seg_n or 'unknown (no segment metrics yet)'}.",
        "Columns in the paper's order: ARDS-like = the paper's MIMIC_seg, RSNA-like = RSNA_seg, JSRT-like = JSRT_seg."]
    return Table("table1", "Table 1: unpaired translation (FID/KID) and lung segmentation before/after translation",
                 notes, cols, rows, pcols, prows,
                 paper_note=("Paper Table 1: Inception FID/KID on the real RSNA test set; segmentation on MIMIC_seg "
                             "(93 ARDS CXRs), RSNA_seg, JSRT (247 CXRs); mean of PSPNet, U-Net, CE-Net, VGG; "
                             "seeds and N of FID not stated. Different data: the numbers are not expected to match, "
                             "the layout is."))


# --------------------------------------------------------------------------------------------------------------------
# Table 2: classifiers on Original / Generated / Mask
# --------------------------------------------------------------------------------------------------------------------
def table2(inp: Inputs) -> Table:
    ev = inp.params.eval
    archs = [a for _, a in paper.CLASSIFIER_ROWS] + [a for a in ev.classifiers if a not in CLASSIFIER_NAMES]
    models = [TABLE2_MODEL] + [m for m in ev.classify_models if m != TABLE2_MODEL]
    original, ostatus = inp.get("classifiers", ORIGINAL)
    rows = []
    for arch in archs:
        for model in models:
            for kind in paper.DATA_TYPES:
                if kind == "Original" and model != TABLE2_MODEL:
                    continue  # Original classifiers do not depend on the model
                label = kind if model == TABLE2_MODEL else f"{kind} ({model})"
                row: dict[str, Any] = {"classifier": CLASSIFIER_NAMES.get(arch, arch), "arch": arch,
                                       "data_type": label, "model": "" if kind == "Original" else model, "_text": {}}
                if arch not in ev.classifiers:
                    row["status"] = f"{inp.not_run()} (not in eval.classifiers)"
                elif kind == "Original":
                    row["seeds"] = "-"
                    row["status"] = ostatus
                    for test, _ in paper.CLASSIFIER_TESTS:
                        for sc in paper.SCORES:
                            row[f"{test}_{sc}"] = dig(original, "results", arch, test, sc)
                        row[f"{test}_n"] = dig(original, "results", arch, test, "n")
                else:
                    res, status = inp.get("classifiers", model)
                    if model not in ev.classify_models and inp.in_profile(model):
                        status = f"{inp.not_run()} (not in eval.classify_models)"
                        res = None
                    row["seeds"] = display_seeds(list(res.get("seeds", {}))) if res else "-"
                    avg = dig(res, "avg", kind)
                    if res is not None and avg is not None and avg.get("status") != "ok":
                        status = f"n/a: {avg.get('reason', '')}".rstrip(": ")
                        row["_text"] = {f"{t}_{sc}": "n/a" for t, _ in paper.CLASSIFIER_TESTS for sc in paper.SCORES}
                    elif res is not None:
                        for test, _ in paper.CLASSIFIER_TESTS:
                            for sc in paper.SCORES:
                                row[f"{test}_{sc}"], row[f"{test}_{sc}_std"] = _mean_std(
                                    dig(avg, "results", arch, test, sc))
                    row["status"] = status
                rows.append(row)
    cols = [Column("classifier", "Classifier"), Column("data_type", "Data type")]
    for test, _ in paper.CLASSIFIER_TESTS:
        n = SET_NAMES[test]
        cols += [Column(f"{test}_{sc}", f"{n} {h}", "score", std=True)
                 for sc, h in zip(paper.SCORES, ("Acc.", "F1", "Recall", "Precision"))]
    cols += [Column("seeds", "Seeds"), Column("status", "Status")]
    pcols = [Column("classifier", "Model"), Column("data_type", "Data type")]
    for test, pname in paper.CLASSIFIER_TESTS:
        pcols += [Column(f"{test}_{sc}", f"{pname} {h}", "score")
                  for sc, h in zip(paper.SCORES, ("Acc.", "F1", "Recall", "Precision"))]
    prows = []
    for name, arch in paper.CLASSIFIER_ROWS:
        for kind in paper.DATA_TYPES:
            p = paper.TABLE2[(arch, kind)]
            prows.append({"classifier": name, "arch": arch, "data_type": kind, "status": "published", **p,
                          "_text": {k: "-" for k, v in p.items() if v is None}})
    tests = dig(original, "settings", "test_sets") or {}
    n_line = "; ".join(f"{SET_NAMES.get(t, t)}: N = {v.get('n')} ({v.get('n_positive')} opacity)"
                       for t, v in tests.items()) or "unknown (no classifier metrics yet)"
    settings = dig(original, "settings") or {}
    notes = common_notes(inp) + [
        f"Binary opacity classifiers (timm, from scratch): {', '.join(ev.classifiers)}; "
        f"{settings.get('iterations', ev.cls_iterations)} iterations x batch "
        f"{settings.get('batch_size', ev.cls_batch_size)}, "
        f"seed {settings.get('seed', ev.seed)}. Trained on the data/drr training split: Original = real images, "
        f"Generated = {TABLE2_MODEL}'s translations in both directions (labelled by target domain), Mask = "
        f"{TABLE2_MODEL}'s activation masks. Scores of the opacity class.",
        f"Test sets: {n_line}. ARDS-like = ards_like images (positives) vs the {ev.ards_negatives} test normals: "
        "they differ in more than opacity (AP geometry, devices), as the paper's MIMIC-ARDS task does.",
        "Generated and Mask rows: mean ± std over the translation seeds; Original: one classifier (no seeds)."]
    return Table("table2", "Table 2: opacity classifiers trained on Original images, Generated translations and "
                 "activation Masks", notes, cols, rows, pcols, prows,
                 paper_note=("Paper Table 2: RSNA and MIMIC-ARDS (1392 CXRs); '-' = not reported. Different data "
                             "and training budgets: the numbers are not expected to match, the layout is."))


# --------------------------------------------------------------------------------------------------------------------
# Table 3: the ablation
# --------------------------------------------------------------------------------------------------------------------
COMPONENT_HEADERS = ("AASPM", "FA", "LCA", "BAML")


def configured_switches(inp: Inputs, model: str) -> dict[str, bool] | None:
    """The component switches of a variant of ours as params.yaml configures it (defaults: all on)."""
    entry = inp.params.models.get(model)
    if entry is None:
        return None
    base = {c: True for c in paper.TABLE3_COMPONENTS}
    base.update({k: v for k, v in (inp.params.methods.get(entry.method, {}) or {}).items()
                 if k in paper.TABLE3_COMPONENTS})
    base.update({k: v for k, v in (entry.overrides or {}).items() if k in paper.TABLE3_COMPONENTS})
    return base


def mechanism_cells(inp: Inputs, model: str, eval_set: str = "rsna_like") -> dict[str, Any]:
    """What the mask mechanism does (paired DRR metrics of `eval_set`): mask AUROC vs the true opacity, mean mask on
    opacity images and on normals (Eq. 4 wants the latter near 0), residual opacity after/before with its two parts
    (brightness left, anatomy kept under the opacity) and the change outside the opacity (anatomy preservation);
    mean and std over seeds, with the 95 % interval where computed."""
    data, _ = inp.get("paired", model)
    entry = dig(data, "sets", eval_set) or {}
    avg = dig(entry, "opacity", "avg") or {}
    navg = dig(entry, "normal", "avg") or {}
    out: dict[str, Any] = {}
    for col, source, key in (("mask_auroc", avg, "mask_auroc"), ("mask_opacity", avg, "mean_mask"),
                             ("mask_normal", navg, "mean_mask"),
                             ("residual_opacity_ratio", avg, "residual_opacity_ratio"),
                             ("opacity_excess_ratio", avg, "opacity_excess_ratio"),
                             ("anatomy_corr", avg, "anatomy_corr"),
                             ("change_outside_opacity", avg, "change_outside_opacity")):
        if key in source:
            out[col], out[f"{col}_std"] = _mean_std(source[key])
    for col in ("residual_opacity_ratio", "opacity_excess_ratio", "anatomy_corr", "change_outside_opacity"):
        ci = dig(entry, "opacity", "ci95", col) or {}
        out[f"{col}_lo"], out[f"{col}_hi"] = ci.get("lo"), ci.get("hi")
    for col, key in (("mask_opacity", "opacity"), ("mask_normal", "normal")):
        ci = dig(entry, "mask_area", key) or {}
        out[f"{col}_lo"], out[f"{col}_hi"] = ci.get("lo"), ci.get("hi")
    ratio = dig(entry, "mask_area", "normal_to_opacity") or {}
    if ratio.get("value") is not None:
        out["mask_ratio"], out["mask_ratio_lo"], out["mask_ratio_hi"] = ratio["value"], ratio["lo"], ratio["hi"]
    out.update(localisation_cells(entry))
    return out


def localisation_cells(entry: dict[str, Any] | None) -> dict[str, Any]:
    """Mask AUROC over the whole image and over the lung field with their 95 % intervals, and whether the mask ranks
    opacity pixels above the position floor (eval/paired.py mask_localisation), from one set's paired entry."""
    loc = dig(entry, "opacity", "localisation")
    if not loc:
        return {}
    out: dict[str, Any] = {"beyond_position": bool(dig(loc, "lung_field", "beyond_position"))}
    for col, region in (("mask_auroc", "image"), ("mask_auroc_lung", "lung_field")):
        m = dig(loc, region, "mask") or {}
        out[col], out[f"{col}_lo"], out[f"{col}_hi"] = m.get("value"), m.get("lo"), m.get("hi")
    return out


def floor_row(inp: Inputs, eval_set: str) -> dict[str, Any] | None:
    """The mask columns' floor: the best map that sees only the pixel position (eval/paired.py position_floor) on the
    same images, from the untranslated rows' paired metrics (the floor does not depend on a model)."""
    floor = dig(inp.read("paired", ORIGINAL), "sets", eval_set, "mask_floor")
    if not floor:
        return None
    return {"mask_auroc": floor.get("image"), "mask_auroc_lung": floor.get("lung_field"),
            "status": "floor: no image seen (opacity frequency at each pixel position of these images)"}


FLOOR_NOTE = ("Mask AUROC floor: the pooled AUROC of the best map that sees only the pixel position (each position "
              "scored by how often it is opacity in these images; by the Neyman-Pearson lemma no image-blind map "
              "ranks higher; in-sample, so a conservative floor). The lung field = lung mask or true opacity; there "
              "the floor is far lower, because 'the opacity is in the lungs' no longer counts. Beyond position: the "
              "lung-field mask AUROC minus its floor has a 95 % interval above 0 (bootstrap over images and seeds).")


def prior_localisation_note(inp: Inputs) -> str:
    """How well the prior that FA and LCA train against points at the opacity by itself (prior.json): the ceiling a
    mask taught through L_classifier can be expected to reach."""
    loc = dig(inp.model_json("models/prior/prior.json"), "localisation") or {}
    if not loc.get("n_images"):
        return ("Prior localisation: not measured (no models/prior/prior.json with test images that have a true "
                "opacity mask; `dvc repro prior` on the DRR benchmark measures it).")
    def cell(k: str) -> str:
        d = loc[k]
        return f"{d['mean']:.3f}" + (f" [{d['lo']:.3f}, {d['hi']:.3f}]" if d.get("lo") is not None else "")
    return (f"Prior localisation (the prior alone, no translation; mean per-image pixel AUROC against the true "
            f"opacity masks of {loc['n_images']} test images, prior seed {inp.params.prior.seed}, [95 % bootstrap "
            f"interval over images]): CAM {cell('cam')}, input-gradient saliency {cell('saliency')}, pixel intensity "
            f"{cell('intensity')}" + (f", position-only map (no image; what a map must beat) {cell('position')}"
                                       if "position" in loc else "") +
            ". L_classifier tells the mask where the opacity is only through this prior, so the mask AUROC column is "
            "not expected to exceed these.")


def table3(inp: Inputs) -> Table:
    spaces = inp.fid_spaces()
    cols = [Column(c, h, "check") for c, h in zip(paper.TABLE3_COMPONENTS, COMPONENT_HEADERS)]
    cols.append(Column("model", "Model"))
    for space in spaces:
        k = space_key(space)
        cols += [Column(f"fid_{k}", f"Avg. FID ↓ ({space})", "fid", std=True),
                 Column(f"kid_{k}", f"Avg. KID ↓ ({space})", "kid", std=True)]
    cols += [Column("mask_auroc", "Mask AUROC ↑", "unit", std=True),
             Column("mask_auroc_lung", "Mask AUROC, lung field ↑", "unit"),
             Column("beyond_position", "Beyond position", "check"),
             Column("mask_opacity", "Mask area, opacity images", "unit", std=True),
             Column("mask_normal", "Mask area, normals ↓", "unit", std=True),
             Column("mask_ratio", "Mask area normals / opacity ↓ (Eq. 4: ≤ 0.25)", "ratio"),
             Column("residual_opacity_ratio", "Residual opacity after/before ↓", "ratio", std=True),
             Column("opacity_excess_ratio", "Brightness left (signed) →0", "ratio", std=True),
             Column("anatomy_corr", "Anatomy kept (r with twin) ↑", "unit", std=True),
             Column("change_outside_opacity", "Change outside opacity ↓", "unit", std=True),
             Column("seeds", "Seeds"), Column("status", "Status")]
    rows, prows = [], []
    for model, *flags in paper.TABLE3_ROWS:
        spec = dict(zip(paper.TABLE3_COMPONENTS, flags))
        f, status = fid_cells(inp, model)
        row = {**spec, "model": model, **f, "status": status, **mechanism_cells(inp, model),
               "seeds": _seeds_of(inp.read("fidkid", model)) if inp.in_profile(model) else "-"}
        conf = configured_switches(inp, model)
        if conf is not None and conf != spec:
            diff = ", ".join(f"{k}={conf[k]}" for k in paper.TABLE3_COMPONENTS if conf[k] != spec[k])
            row["status"] = _join([status, f"configured switches differ from the paper's row ({diff})"])
        rows.append(row)
        p = paper.TABLE3[model]
        prows.append({**spec, "model": model, "fid_inception": p["fid"], "kid_inception": p["kid"],
                      "status": "published"})
    paper_rows = {m for m, *_ in paper.TABLE3_ROWS}
    for model, entry in inp.params.models.items():  # named variants of ours in this profile (not in the paper)
        if entry.method != "ours" or model in paper_rows:
            continue
        f, status = fid_cells(inp, model)
        settings = ", ".join(f"{k}={v}" for k, v in (entry.overrides or {}).items()
                             if k not in paper.TABLE3_COMPONENTS)
        rows.append({**configured_switches(inp, model), "model": model, **f, **mechanism_cells(inp, model),
                     "status": _join([status, f"named variant, not in the paper ({settings or 'switches only'})"]),
                     "seeds": _seeds_of(inp.read("fidkid", model))})
    floor = floor_row(inp, "rsna_like")
    if floor is not None:
        rows.append({**{c: None for c in paper.TABLE3_COMPONENTS}, "model": "position-only map (floor)", **floor,
                     "seeds": "-"})
    pcols = [Column(c, h, "check") for c, h in zip(paper.TABLE3_COMPONENTS, COMPONENT_HEADERS)]
    pcols += [Column("fid_inception", "Avg. FID ↓", "fid"), Column("kid_inception", "Avg. KID ↓", "kid")]
    notes = common_notes(inp) + fid_notes(inp) + [
        "Rows: variants of ours with the components switched as marked (params.yaml models ours_none ... "
        "ours_aaspm_fa_lca; then the full model `ours`; then any named variant of ours in this profile, e.g. "
        "`ours_mil`, with its settings in the status column). AASPM = adaptive activation mask selection "
        "penalties, FA = feature alignment, LCA = label consistency alignment, BAML = bidirectional activation "
        "minimisation loss.",
        "Mechanism columns (DRR benchmark, rsna_like, beyond the paper): does the mask find the opacity (AUROC of "
        "the G_A mask against the true opacity mask, pixels pooled), is it off on normals (mean mask; Eq. 4 wants "
        "it at most a quarter of the mean mask on opacity images: the ratio column, its interval from resampling "
        "the opacity images and the normals independently, and the seeds), is the opacity removed (residual "
        "after/before, 1 = untouched; split into the brightness left, signed, 0 = the twin's level, and the "
        "anatomy kept under the opacity, r of the output with the twin there) and the anatomy kept elsewhere (mean |y - x| outside the "
        "opacity).", FLOOR_NOTE,
        prior_localisation_note(inp)]
    return Table("table3", "Table 3: ablation of the model components (FID/KID on rsna_like)", notes, cols, rows,
                 pcols, prows, paper_note="Paper Table 3: Inception FID/KID on the real RSNA test set.")


# --------------------------------------------------------------------------------------------------------------------
# Supplementary: per-segmenter results
# --------------------------------------------------------------------------------------------------------------------
def extra_set_notes(inp: Inputs) -> list[str]:
    """One line naming the user-named evaluation sets (beyond the paper) and where their images came from."""
    sets = extra_sets(inp.root / "data")
    if not sets:
        return []
    return ["User-named evaluation sets (data.extra_eval_sets, beyond the paper): " + "; ".join(
        f"{name} = {e.get('images', '?')} images of {e.get('source')} `{e.get('dir')}`"
        + (f" ({e['description']})" if e.get("description") else "") for name, e in sets.items()) + "."]


def report_models(inp: Inputs) -> list[str]:
    """Original, the paper's methods, other models of the profile, then the ablation variants in the profile."""
    names = [m for _, m in table1_models(inp)]
    return names + [m for m in ABLATIONS if m in inp.params.models]


def display_name(inp: Inputs, model: str) -> str:
    return dict((m, d) for d, m in paper.TABLE1_ROWS).get(model) or REFERENCE_NAMES.get(model) or model


def table_segmenters(inp: Inputs) -> Table:
    segmenters = list(inp.params.eval.segmenters) + ["mean"]
    cols = [Column("row", "Model"), Column("segmenter", "Segmenter")]
    sets = (*paper.SEG_SETS, *inp.extra_sets())
    for s in sets:
        name = SET_NAMES.get(s, s)
        cols += [Column(f"{s}_miou", f"{name} mIoU", "pct", std=True),
                 Column(f"{s}_miou_delta", f"{name} mIoU Δ", "delta", std=True),
                 Column(f"{s}_sensitivity", f"{name} Sens.", "pct", std=True),
                 Column(f"{s}_sensitivity_delta", f"{name} Sens. Δ", "delta", std=True)]
    cols += [Column("seeds", "Seeds"), Column("status", "Status")]
    rows = []
    for model in report_models(inp):
        data, status = inp.get("segment", model)
        if data is None:
            rows.append({"row": display_name(inp, model), "model": model, "segmenter": "all", "status": status})
            continue
        for seg_name in segmenters:
            row: dict[str, Any] = {"row": display_name(inp, model), "model": model,
                                   "segmenter": SEGMENTER_NAMES.get(seg_name, seg_name), "segmenter_key": seg_name,
                                   "seeds": display_seeds(data.get("seeds")) if model != ORIGINAL else "-",
                                   "status": status, "_text": {}}
            for s in sets:
                entry = dig(data, "sets", s)
                res = entry.get("mean") if seg_name == "mean" else dig(entry, "segmenters", seg_name)
                if entry is None and dig(data, "not_evaluated", s):
                    row["_text"].update({f"{s}_{x}": data["not_evaluated"][s] for x in
                                         ("miou", "miou_delta", "sensitivity", "sensitivity_delta")})
                if entry is None or res is None:
                    continue
                row[f"{s}_n"] = entry.get("n")
                if model == ORIGINAL:
                    for k in ("miou", "sensitivity"):
                        v = dig(res, "original", k)
                        row[f"{s}_{k}"] = None if v is None else v * 100
                        row["_text"][f"{s}_{k}_delta"] = ""
                else:
                    for k, src in (("miou", "miou"), ("miou_delta", "delta_miou"), ("sensitivity", "sensitivity"),
                                   ("sensitivity_delta", "delta_sensitivity")):
                        row[f"{s}_{k}"], row[f"{s}_{k}_std"] = _mean_std(dig(res, "avg", src), 100)
            rows.append(row)
    notes = common_notes(inp) + [
        "Per-segmenter mIoU / sensitivity in % on the scored images of each set (opacity images of rsna_like and "
        "ards_like, all jsrt_like images; a user-named set: its opacity images when it has any, else all); "
        "Δ = translated - original; `mean` = the mean over segmenters that "
        "Table 1 reports. Segmenters trained once on the lung masks of data/seg-train (data.segmenter_sources: "
        f"{', '.join(inp.params.data.segmenter_sources)}).", *extra_set_notes(inp),
        f"N = {n_line(rows) or 'unknown (no segment metrics yet)'} images."]
    return Table("table_segmenters", "Supplementary table: lung segmentation per segmenter", notes, cols, rows,
                 paper_note=("The paper publishes only the mean over its four segmenters (Table 1 above, "
                             "table1.md); its per-segmenter numbers are in its Supplementary Material, which "
                             "the paper does not include."))


# --------------------------------------------------------------------------------------------------------------------
# Paired DRR metrics (beyond the paper)
# --------------------------------------------------------------------------------------------------------------------
PAIRED_SETS = ("rsna_like", "ards_like")


def removal_sentences(inp: Inputs) -> list[str]:
    """One sentence per translator: does it beat Identity at removing opacity (paired DRR metrics, rsna_like)?"""
    out = []
    for model in report_models(inp):
        if model in (ORIGINAL, "identity"):
            continue
        data, status = inp.get("paired", model)
        vs = dig(data, "sets", "rsna_like", "opacity", "vs_identity")
        name = display_name(inp, model)
        if vs is None:
            out.append(f"{name}: not measured ({status if data is None else 'no paired metrics'}).")
            continue
        r, p = vs["residual_opacity"]["diff"], vs["psnr"]["diff"]
        verdict = "beats Identity" if vs.get("beats_identity") else "does NOT beat Identity"
        out.append(f"{name} {verdict} on rsna_like: it {vs['verdict']}; residual opacity change "
                   f"{_fmt_ci(r)} , PSNR vs the twin change {_fmt_ci(p, 'db')} dB (N = {vs['residual_opacity']['n']}).")
    return out


def _fmt_ci(ci: dict[str, Any], fmt: str = "unit") -> str:
    if not ci or ci.get("mean") is None:
        return "n/a"
    lo, hi = ci.get("lo"), ci.get("hi")
    body = fmt_number(ci["mean"], fmt)
    return body + (f" [{fmt_number(lo, fmt)}, {fmt_number(hi, fmt)}]" if lo is not None and hi is not None else "")


def table_paired(inp: Inputs) -> Table:
    cols = [Column("eval_set", "Set"), Column("row", "Model"), Column("n_opacity", "N opacity", "int"),
            Column("psnr", "PSNR vs twin (dB) ↑", "db", std=True),
            Column("psnr_lung", "PSNR lung (dB) ↑", "db", std=True),
            Column("ssim", "SSIM ↑", "unit", std=True), Column("ssim_lung", "SSIM lung ↑", "unit", std=True),
            Column("residual_opacity_before", "Residual opacity before", "unit"),
            Column("residual_opacity_after", "Residual opacity after ↓", "unit", std=True),
            Column("residual_opacity_ratio", "After/before ↓", "ratio", std=True),
            Column("opacity_excess_ratio", "Brightness left (signed) →0", "ratio", std=True),
            Column("anatomy_corr", "Anatomy kept (r with twin) ↑", "unit", std=True),
            Column("change_outside_opacity", "Change outside opacity ↓", "unit", std=True),
            Column("mask_auroc", "Mask AUROC ↑", "unit", std=True),
            Column("mask_auroc_lung", "Mask AUROC, lung field ↑", "unit"),
            Column("beyond_position", "Beyond position", "check"),
            Column("mask_best_iou", "Mask best IoU ↑", "unit", std=True),
            Column("n_normal", "N normal", "int"),
            Column("normal_mean_abs_change", "Normals: mean |G(z)-z| ↓", "unit", std=True),
            Column("normal_psnr_vs_input", "Normals: PSNR vs input (dB) ↑", "db", std=True),
            Column("normal_mean_mask", "Normals: mean mask ↓", "unit", std=True),
            Column("beats_identity", "Beats Identity", "check"),
            Column("seeds", "Seeds"), Column("status", "Status")]
    rows = []
    for s in PAIRED_SETS:
        for model in report_models(inp):
            data, status = inp.get("paired", model)
            row: dict[str, Any] = {"eval_set": s, "row": display_name(inp, model), "model": model, "status": status,
                                   "seeds": "-", "_text": {}}
            entry = dig(data, "sets", s)
            if data is not None and entry is None:
                row["status"] = (f"not evaluated: {s} has no clean twins (real data: data.source "
                                 f"{inp.params.data.source})" if inp.params.data.source != "drr" else
                                 f"no paired metrics for {s} (no clean twins?)")
            if entry is None:
                rows.append(row)
                continue
            row["n_opacity"], row["n_normal"] = entry.get("n_opacity"), entry.get("n_normal")
            opa = entry.get("opacity", {})
            if model == ORIGINAL:  # the untranslated images: the "before" of every model
                for k in ("psnr", "psnr_lung", "ssim", "ssim_lung"):
                    row[k] = dig(opa, "before", k)
                row["residual_opacity_before"] = opa.get("residual_opacity_before")
                row["anatomy_corr"] = opa.get("anatomy_corr_before")  # the input's r: what a translation starts from
                row["_text"].update({k: "" for k in ("residual_opacity_after", "residual_opacity_ratio",
                                                     "opacity_excess_ratio", "change_outside_opacity",
                                                     "mask_auroc", "mask_auroc_lung", "mask_best_iou",
                                                     "normal_mean_abs_change",
                                                     "normal_psnr_vs_input", "normal_mean_mask")})
                rows.append(row)
                floor = floor_row(inp, s)
                if floor is not None:
                    rows.append({"eval_set": s, "row": "Position-only map (floor)", "model": ORIGINAL,
                                 "n_opacity": entry.get("n_opacity"), "seeds": "-", **floor})
                continue
            else:
                row["seeds"] = display_seeds(data.get("seeds"))
                avg = opa.get("avg", {})
                for k in ("psnr", "psnr_lung", "ssim", "ssim_lung"):
                    row[k], row[f"{k}_std"] = _mean_std(avg.get(f"after_{k}"))
                first = next(iter(opa.get("per_seed", {}).values()), {})
                row["residual_opacity_before"] = first.get("residual_opacity_before")
                for k in ("residual_opacity_after", "residual_opacity_ratio", "opacity_excess_ratio", "anatomy_corr",
                          "change_outside_opacity", "mask_auroc", "mask_best_iou"):
                    row[k], row[f"{k}_std"] = _mean_std(avg.get(k))
                for k in ("residual_opacity_after", "residual_opacity_ratio", "opacity_excess_ratio", "anatomy_corr",
                          "change_outside_opacity"):
                    row[f"{k}_lo"], row[f"{k}_hi"] = dig(opa, "ci95", k, "lo"), dig(opa, "ci95", k, "hi")
                row["psnr_lo"], row["psnr_hi"] = dig(opa, "ci95", "psnr_after", "lo"), dig(opa, "ci95", "psnr_after", "hi")
                row["beats_identity"] = dig(opa, "vs_identity", "beats_identity")
                loc = localisation_cells(entry)
                row.update({k: v for k, v in loc.items() if k != "mask_auroc"})
                row["mask_auroc_lo"], row["mask_auroc_hi"] = loc.get("mask_auroc_lo"), loc.get("mask_auroc_hi")
                if row["mask_auroc"] is None and "mask_auroc" not in first:
                    row["_text"].update(mask_auroc="n/a (no mask)", mask_best_iou="n/a (no mask)",
                                        mask_auroc_lung="n/a (no mask)", normal_mean_mask="n/a (no mask)")
                navg = dig(entry, "normal", "avg") or {}
                for k in ("mean_abs_change", "psnr_vs_input", "mean_mask"):
                    if k in navg:
                        row[f"normal_{k}"], row[f"normal_{k}_std"] = _mean_std(navg[k])
            rows.append(row)
    notes = common_notes(inp) + [
        "DRR benchmark only (beyond the paper): every opacity image has a hidden clean twin (the same rendering "
        "without findings) and a true opacity mask. Intensities in [0, 1]. PSNR/SSIM of the translation vs the twin, "
        "whole image and lung field (the Original row = the untranslated image: the 'before' of every model); "
        "residual opacity = mean |y - twin| inside the true opacity mask, split in two: brightness left = mean "
        "(y - twin) / mean (x - twin) there (signed: 1 = Identity, 0 = the twin's level, below 0 = darker than the "
        "twin) and anatomy kept = per-image Pearson r of y with the twin there (the Original row: the input's r; the "
        "Oracle 1): a translation can take the brightness away and still lose the lung under it; change outside "
        "opacity = mean |y - x| outside it; mask AUROC / best IoU of the activation mask vs the true opacity mask; "
        "normals: how much a translator changes images without findings (it should not).", FLOOR_NOTE,
        "ards_like has no normal images (normal columns empty); jsrt_like has no twins (not in this table)."]
    notes.append("Brackets: 95 % bootstrap intervals over images and seeds (PSNR per image capped at 100 dB: the "
                 "oracle is exact). Beats Identity: residual opacity lower than Identity's AND PSNR vs the twin "
                 "higher, both paired 95 % intervals excluding 0.")
    return Table("table_paired", "Supplementary table: paired metrics on the DRR benchmark", notes, cols, rows,
                 paper_note="The paper has no paired metrics (its data have no clean twins).")


def table_per_finding(inp: Inputs) -> Table:
    """Residual opacity after/before and PSNR gain per finding label (DRR sets), with 95 % intervals."""
    cols = [Column("eval_set", "Set"), Column("row", "Model"), Column("finding", "Finding"),
            Column("n", "N images", "int"), Column("residual_opacity_ratio", "Residual after/before ↓", "ratio"),
            Column("psnr_gain", "PSNR gain vs input (dB) ↑", "db"), Column("status", "Status")]
    rows = []
    for s in PAIRED_SETS:
        for model in report_models(inp):
            if model == ORIGINAL:
                continue
            data, status = inp.get("paired", model)
            found = dig(data, "sets", s, "per_finding")
            if not found:
                rows.append({"eval_set": s, "row": display_name(inp, model), "model": model, "finding": "all",
                             "status": status if data is None else "no per-finding metrics"})
                continue
            for finding, e in found.items():
                row = {"eval_set": s, "row": display_name(inp, model), "model": model, "finding": finding,
                       "n": e["n"], "status": "ok"}
                for k in ("residual_opacity_ratio", "psnr_gain"):
                    row[k], row[f"{k}_lo"], row[f"{k}_hi"] = (e[k].get("mean"), e[k].get("lo"), e[k].get("hi"))
                rows.append(row)
    notes = common_notes(inp) + [
        "Per finding label of the opacity images (an image with several findings counts under each): residual "
        "opacity inside the true opacity mask after / before translation (1 = Identity, 0 = the Oracle) and the "
        "PSNR gain vs the clean twin; 95 % bootstrap intervals over images and seeds."]
    return Table("table_per_finding", "Supplementary table: opacity removal per finding type (DRR benchmark)",
                 notes, cols, rows, paper_note="The paper has no per-finding metrics.")


# --------------------------------------------------------------------------------------------------------------------
# Figure 6 data: lesion counts and the Wilcoxon test
# --------------------------------------------------------------------------------------------------------------------
def table_lesions(inp: Inputs) -> Table:
    cols = [Column("eval_set", "Set"), Column("row", "Model"), Column("n", "N images", "int"),
            Column("count_original", "Mean detections, original", "count"),
            Column("count_translated", "Mean detections, translated", "count", std=True),
            Column("p_greater", "Wilcoxon p (fewer after)", "p"), Column("p_two_sided", "Wilcoxon p (two-sided)", "p"),
            Column("n_nonzero", "Non-zero differences", "int"), Column("seeds", "Seeds"),
            Column("status", "Status")]
    rows = []
    sets = ("rsna_like", "ards_like", "jsrt_like", *inp.extra_sets())
    for s in sets:
        for model in report_models(inp):
            data, status = inp.get("lesions", model)
            entry = dig(data, "sets", s)
            row: dict[str, Any] = {"eval_set": s, "row": display_name(inp, model), "model": model,
                                   "status": status, "seeds": "-", "_text": {}}
            if entry is not None:
                row["n"] = entry.get("n")
                row["count_original"] = dig(entry, "mean_count", "original")
                if model != ORIGINAL:
                    row["seeds"] = display_seeds(data.get("seeds"))
                    row["count_translated"], row["count_translated_std"] = _mean_std(
                        dig(entry, "mean_count", "translated"))
                    w = entry.get("wilcoxon_seed_mean", {})
                    row["p_greater"], row["p_two_sided"] = w.get("p_greater"), w.get("p_two_sided")
                    row["n_nonzero"] = w.get("n_nonzero")
                    if w and w.get("p_two_sided") is None:
                        row["_text"].update(p_greater="undefined", p_two_sided="undefined")
                        row["status"] = w.get("note") or status
                else:
                    row["_text"].update(count_translated="", p_greater="", p_two_sided="", n_nonzero="")
            elif data is not None:
                row["status"] = data.get("not_evaluated") or f"no {s} entry"
            rows.append(row)
    notes = common_notes(inp) + [
        "YOLOv5 lesion detector (ultralytics, trained once on the boxes of data/det-train: data.detector_sources); "
        "detections per scored "
        "image (opacity images of rsna_like / ards_like, all jsrt_like images) before and after translation. "
        "Wilcoxon signed-rank test paired by image on the seed-mean counts (scipy, zero_method='wilcox'); "
        "'undefined' = every difference is zero. Box plots: figures/figure6_lesions.png.", *extra_set_notes(inp)]
    return Table("table_lesions", "Figure 6 data: lesion counts before and after translation", notes, cols, rows,
                 paper_note=f"The paper prints no numbers for Figure 6, only the claim: {paper.FIGURE6_CLAIM}.")


# --------------------------------------------------------------------------------------------------------------------
# Training summary
# --------------------------------------------------------------------------------------------------------------------
def table_training(inp: Inputs) -> Table:
    rows = []
    loss_keys: list[str] = []
    for model in inp.models:
        data, status = inp.get("train", model)
        if data is None:
            rows.append({"model": model, "method": inp.params.models[model].method, "status": status})
            continue
        for seed, res in data.get("seeds", {}).items():
            losses = res.get("final_losses") or {}
            loss_keys += [k for k in sorted(losses) if k not in loss_keys]
            rows.append({"model": model, "method": data.get("method"), "seed": seed, "steps": res.get("steps"),
                         "wall_s": res.get("wall_s"), "parameters": res.get("parameters"), "status": status,
                         **{f"loss_{k}": v for k, v in losses.items()}})
    cols = [Column("model", "Model"), Column("method", "Method"), Column("seed", "Seed"),
            Column("steps", "Steps", "int"), Column("wall_s", "Wall (s)", "count"),
            Column("parameters", "Parameters", "int"), Column("status", "Status")]
    notes = common_notes(inp) + [f"Training iterations: {inp.params.train.iterations} (the Steps column holds each "
                                 "model's own); final losses (mean of the "
                                 "last logged window) per model are in the CSV (loss_* columns); curves: "
                                 "figures/training_curves.png and curves/<model>/seed<k>.csv."]
    return Table("training", "Training summary", notes, cols, rows,
                 paper_note=("Paper: 2.5e5 iterations, batch size 2, 512 x 512 random crops, Adam lr 1e-4, "
                             "betas (0.9, 0.9999), one RTX 3090; seeds not stated."))


def all_tables(inp: Inputs) -> list[Table]:
    return [table_competence(inp), table1(inp), table2(inp), table3(inp), table_segmenters(inp), table_paired(inp),
            table_per_finding(inp), table_lesions(inp), table_training(inp)]
