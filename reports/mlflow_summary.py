"""MLflow view of the report: one "summary" run per (model, seed) with every headline number as a flat metric, and
one "report" run holding the tables and figures as artifacts.

Metric names line up with the CSV columns of Table 1 (fid_cxr_densenet, kid_cxr_densenet, rsna_like_miou,
rsna_like_miou_delta, rsna_like_sensitivity, ...; mIoU, sensitivity and deltas in % as in the tables), so the MLflow
compare view shows Table 1's columns side by side; then per-segmenter (seg_<segmenter>_<set>_miou, ...), lesion
counts (lesions_<set>_...), paired DRR metrics (paired_<set>_...) and Table 2 scores (cls_<arch>_<type>_<test>_<score>).
Values are the seed's own (a summary run is one seed); the tables show the mean over seeds. The metric files stay the
source of truth: tracking failures only warn (pipeline.tracking).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from pipeline.config import to_plain
from reports import paper_numbers as paper
from reports.inputs import ORIGINAL, Inputs, dig
from reports.tables import space_key

UNITS = "mIoU, sensitivity and their deltas in %; FID/KID raw; classifier scores in [0, 1]; PSNR in dB"


def _put(out: dict[str, float], key: str, value: Any, scale: float = 1.0) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        out[key] = float(value) * scale


def summary_metrics(inp: Inputs, model: str, seed: int | None) -> dict[str, float]:
    """Flat headline metrics of one model at one seed (seed None: the untranslated "original" row)."""
    key = ORIGINAL if model == ORIGINAL else str(seed)
    m: dict[str, float] = {}
    fk = inp.read("fidkid", model)
    for space in inp.fid_spaces():
        ps = dig(fk, "extractors", space, "per_seed", key)
        k = space_key(space)
        _put(m, f"fid_{k}", dig(ps, "fid"))
        _put(m, f"kid_{k}", dig(ps, "kid_mean"))
        _put(m, f"kid_{k}_subset_std", dig(ps, "kid_std"))
    sg = inp.read("segment", model)
    for s, entry in (dig(sg, "sets") or {}).items():
        per = [("mean", entry.get("mean"))] + list((entry.get("segmenters") or {}).items())
        for name, res in per:
            prefix = s if name == "mean" else f"seg_{name}_{s}"
            vals = dig(res, "original") if model == ORIGINAL else dig(res, "translated", key)
            for src, dst in (("miou", "miou"), ("sensitivity", "sensitivity"), ("delta_miou", "miou_delta"),
                             ("delta_sensitivity", "sensitivity_delta")):
                _put(m, f"{prefix}_{dst}", dig(vals, src), 100)
    les = inp.read("lesions", model)
    for s, entry in (dig(les, "sets") or {}).items():
        orig = dig(entry, "counts", "original")
        if orig:
            _put(m, f"lesions_{s}_count_original", float(np.mean(orig)))
        after = dig(entry, "counts", "translated", key)
        if after:
            _put(m, f"lesions_{s}_count_translated", float(np.mean(after)))
            _put(m, f"lesions_{s}_p_greater", dig(entry, "wilcoxon", key, "p_greater"))
            _put(m, f"lesions_{s}_p_two_sided", dig(entry, "wilcoxon", key, "p_two_sided"))
    pa = inp.read("paired", model)
    for s, entry in (dig(pa, "sets") or {}).items():
        opa = entry.get("opacity") or {}
        res = opa if model == ORIGINAL else dig(opa, "per_seed", key)
        quality = dig(res, "before") if model == ORIGINAL else dig(res, "after")
        for k in ("psnr", "psnr_lung", "ssim", "ssim_lung"):
            _put(m, f"paired_{s}_{k}", dig(quality, k))
        for k in ("residual_opacity_before", "residual_opacity_after", "residual_opacity_ratio",
                  "opacity_excess_before", "opacity_excess_ratio", "anatomy_corr_before", "anatomy_corr",
                  "change_outside_opacity", "mask_auroc", "mask_auroc_lung", "mask_best_iou", "mean_mask"):
            _put(m, f"paired_{s}_{k}", dig(res, k))
        if model == ORIGINAL:  # the mask AUROC floor (no image seen): what a mask must beat
            for region, v in (entry.get("mask_floor") or {}).items():
                _put(m, f"paired_{s}_mask_floor_{region}", v)
        normal = dig(entry, "normal", "per_seed", key)
        for k in ("mean_abs_change", "psnr_vs_input", "mean_mask"):
            _put(m, f"paired_{s}_normal_{k}", dig(normal, k))
        if dig(normal, "mean_mask") is not None and dig(res, "mean_mask"):  # Eq. 4 wants at most a quarter
            _put(m, f"paired_{s}_mask_normal_to_opacity", dig(normal, "mean_mask") / dig(res, "mean_mask"))
    cls = inp.read("classifiers", model)
    if model == ORIGINAL:
        for arch, tests in (dig(cls, "results") or {}).items():
            for test in (t for t, _ in paper.CLASSIFIER_TESTS):
                for sc in paper.SCORES:
                    _put(m, f"cls_{arch}_original_{test}_{sc}", dig(tests, test, sc))
    elif model in inp.params.eval.classify_models:
        for kind in ("Generated", "Mask"):
            for arch, tests in (dig(cls, "seeds", key, kind, "results") or {}).items():
                for test in (t for t, _ in paper.CLASSIFIER_TESTS):
                    for sc in paper.SCORES:
                        _put(m, f"cls_{arch}_{kind.lower()}_{test}_{sc}", dig(tests, test, sc))
    return m


def summary_params(inp: Inputs, model: str, seed: int | None) -> dict[str, Any]:
    """What the compare page shows beside the metrics: the profile, the method and its whole config (so two runs of
    one method with different settings differ visibly), the seed, the resolution and the training length."""
    out: dict[str, Any] = {"profile": inp.profile, "model": model, "seed": "" if seed is None else seed,
                           "resolution": inp.params.data.resolution}
    if model in inp.params.models:
        out["method"] = inp.params.models[model].method
        out["iterations"] = inp.params.models[model].train_iterations(inp.params.train)
        out["cfg"] = to_plain(inp.params.method_config(model))
    else:
        out["method"] = model  # the Original row and the reference rows have no trained network
    return out


def log_summary_runs(inp: Inputs) -> list[dict[str, Any]]:
    """One summary run per (model, seed) with metrics, plus the original row; returns what was logged."""
    tr = inp.params.tracking
    logged = []
    # Original, the floor/ceiling rows and imported folders (one deterministic "seed" 0), then every model and seed
    targets: list[tuple[str, int | None]] = [(ORIGINAL, None)] + [(r, 0) for r in inp.references + inp.externals]
    targets += [(m, s) for m in inp.models for s in inp.seeds()]
    for model, seed in targets:
        metrics = summary_metrics(inp, model, seed)
        if not metrics:
            continue  # nothing evaluated yet for this model: no empty run
        with tracking.stage_run("summary", model=model, seed=seed, profile=inp.profile, enabled=tr.enabled,
                                experiment=tr.experiment, uri=tr.uri, params=summary_params(inp, model, seed),
                                extra_tags={"units": UNITS, "description": inp.description(model)}) as run:
            run.log_metrics(metrics)
        logged.append({"model": model, "seed": seed, "n_metrics": len(metrics)})
    return logged


def log_report_run(inp: Inputs, files: list[Path], reports_dir: Path) -> None:
    tr = inp.params.tracking
    with tracking.stage_run("report", profile=inp.profile, enabled=tr.enabled, experiment=tr.experiment,
                            uri=tr.uri, params={"seeds": inp.seeds(), "models": inp.models}) as run:
        run.log_metrics({"n_tables": sum(1 for f in files if f.suffix == ".md" and f.parent.name == "tables"),
                         "n_figures": sum(1 for f in files if f.suffix == ".png")})
        for f in files:
            rel = f.relative_to(reports_dir)
            run.log_artifact(f, str(rel.parent) if str(rel.parent) != "." else None)
