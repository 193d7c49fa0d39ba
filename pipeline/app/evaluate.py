"""The evaluation stages (one function per DVC stage). Each writes metrics/<stage>/<name>.json (+ .csv where
tabular), logs the flat numbers to MLflow, and returns the JSON dict.

`model` is a trained model name whose translations live in outputs/<model>/seed<k>/ (one per seed in params.seeds),
or "original" for the untranslated rows. Every number carries N, the seeds and the settings that produced it.

    run_fidref(params)                  cache/fid/<extractor>-rsna_like-normal.npz (reference features), index.json
    run_fidkid(params, model)           metrics/fidkid/<model>.json, .csv
    run_segmenters(params)              models/segmenters/<name>.pt, models/segmenters/segmenters.json
    run_segment(params, model)          metrics/segment/<model>.json, .csv
    run_detector_training(params)       models/detector/detector.pt, models/detector/detector.json
    run_lesions(params, model)          metrics/lesions/<model>.json, .csv (per-image counts)
    run_classifiers(params)             metrics/classifiers/original.json, <model>.json, .csv
    run_paired(params, model)           metrics/paired/<model>.json
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

import pipeline  # noqa: F401  (offline switches first)
from eval import classification as cls_mod
from eval import evaluator as evmod
from eval import fid_kid as fk
from eval import paired as paired_mod
from eval import segmentation as seg
from eval import detection
from eval.references import REFERENCE_SEED, REFERENCES, blur_sigma_at, gaussian_blur
from eval.sets import (ORIGINAL, EvalError, Translations, available_sets, cap_rows, eval_rows, is_external,
                       load_mask, load_original, pick_device, read_pngs, scored_rows, train_rows)
from eval.stats import (auroc, average_over_seeds, bootstrap_ci, mean_std, paired_difference, ratio_of_means_ci,
                        wilcoxon_paired)
from pipeline import tracking
from pipeline.config import Params
from pipeline.data import canonical
from pipeline.data.canonical import LABEL_COLUMNS, NIH14, label_matrix
from pipeline.io import atomic_write, write_json
from pipeline.layout import TRAIN_DATASET, Layout, set_threads
from pipeline.auroc import per_label_auroc

# Tables 1 and 3: translated opacity test images vs real normal test images of the RSNA(-like) set
FID_SET = "rsna_like"


# --------------------------------------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------------------------------------
def _setup(params: Params, root: Path | None) -> tuple[Layout, torch.device]:
    set_threads(params)
    return (Layout(root) if root else Layout()), pick_device(params.eval.device)


def _translations(layout: Layout, params: Params, model: str) -> dict[int, Translations]:
    if model == ORIGINAL:
        return {}
    if model in REFERENCES or is_external(layout, model):  # no training here: one "seed"
        return {REFERENCE_SEED: Translations(layout, model, REFERENCE_SEED)}
    return {seed: Translations(layout, model, seed) for seed in params.seeds}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=cols)
    w.writeheader()
    w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    atomic_write(path, text.getvalue())  # the one atomic writer


def _finish(params: Params, layout: Layout, stage: str, name: str, result: dict[str, Any],
            rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    path = layout.metrics(stage, name)
    write_json(path, result)
    if rows is not None:
        _write_csv(path.with_suffix(".csv"), rows)
    if params.tracking.enabled:
        with tracking.stage_run(stage, model=name, profile=params.profile, enabled=True,
                                experiment=params.tracking.experiment, uri=params.tracking.uri) as run:
            run.log_metrics(result)  # flattened to a.b.c and filtered to finite numbers there
    return result


def _cuda_index(device: torch.device) -> str:
    return "0" if device.type == "cuda" else "cpu"


# --------------------------------------------------------------------------------------------------------------------
# FID / KID
# --------------------------------------------------------------------------------------------------------------------
def _in_project(layout: Layout, path: str) -> str:
    """A path from params.yaml: relative ones are relative to the project root (empty stays empty)."""
    return str(layout.root / path) if path and not Path(path).is_absolute() else path


def _extractor(params: Params, layout: Layout, name: str) -> fk.Extractor:
    return fk.resolve_extractor(name, _in_project(layout, params.eval.inception_weights),
                                params.eval.inception_check_hash, _in_project(layout, params.eval.prior_path),
                                _in_project(layout, params.eval.evaluator_path))


def fid_cache_file(layout: Layout, extractor: str, eval_set: str = FID_SET) -> Path:
    return layout.root / "cache" / "fid" / f"{extractor}-{eval_set}-normal.npz"


def _fid_sets(params: Params, layout: Layout):
    ds, rows = eval_rows(layout, FID_SET, params.eval.max_images)
    opacity, normal = rows[rows["domain"] == "opacity"], rows[rows["domain"] == "normal"]
    if len(opacity) < 2 or len(normal) < 2:
        raise EvalError(f"{ds / 'manifest.csv'}: FID/KID need at least 2 opacity and 2 normal test images, got "
                        f"{len(opacity)} and {len(normal)}")
    return ds, opacity, normal


def run_fidref(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Extract and cache the reference-set features (real normal rsna_like test images) for every available space."""
    layout, _ = _setup(params, root)
    ds, _, normal = _fid_sets(params, layout)
    ref_paths = [ds / p for p in normal["image"]]
    out = {}
    for name in params.eval.fid_extractors:
        ext = _extractor(params, layout, name)
        if not ext.available:
            out[name] = {"status": "unavailable", "how_to_fix": ext.unavailable}
            print(f"FID/KID space {name}: not computed. {ext.unavailable}", flush=True)  # once per pipeline run
            continue
        feats, hit = fk.cached_features(ref_paths, ext, fid_cache_file(layout, name), params.eval.batch_size)
        out[name] = {"status": "ok", "n": int(len(feats)), "dim": int(feats.shape[1]), "cache": hit,
                     "file": str(fid_cache_file(layout, name).relative_to(layout.root)),
                     "weights_sha256": ext.sha256}
    # the folder always exists (a DVC output), with what is in it and why something is not
    write_json(layout.root / "cache" / "fid" / "index.json", out)
    return out


def run_fidkid(params: Params, model: str, root: Path | None = None) -> dict[str, Any]:
    """FID/KID of translated (or, for "original", untranslated) opacity test images vs real normal test images."""
    layout, _ = _setup(params, root)
    ds, opacity, normal = _fid_sets(params, layout)
    ref_paths = [ds / p for p in normal["image"]]
    translations = _translations(layout, params, model)
    generated = ({seed: t.paths(FID_SET, list(opacity["id"]), "a2b") for seed, t in translations.items()}
                 if translations else {None: [ds / p for p in opacity["image"]]})
    ev = params.eval
    result: dict[str, Any] = {
        "stage": "fidkid", "model": model, "eval_set": FID_SET, "seeds": list(translations) or None,
        "n_generated": int(len(opacity)), "n_reference": int(len(normal)),
        "settings": {"kid_subsets": ev.kid_subsets, "kid_subset_size_requested": ev.kid_subset_size,
                     "rng_seed": ev.fid_rng_seed, "max_images": ev.max_images, "image_size": params.data.resolution,
                     "images": "8-bit grayscale PNG, loaded by torch-fidelity as RGB (gray replicated)"},
        "extractors": {}}
    rows = []
    for name in ev.fid_extractors:
        ext = _extractor(params, layout, name)
        entry: dict[str, Any] = ext.describe()
        if not ext.available:
            entry.update(status="unavailable", how_to_fix=ext.unavailable)
            rows.append({"extractor": name, "seed": "", "status": "unavailable"})
            result["extractors"][name] = entry
            continue
        f_ref, cache = fk.cached_features(ref_paths, ext, fid_cache_file(layout, name), ev.batch_size, write=False)
        per_seed, feats = {}, []
        for seed, paths in generated.items():
            f_gen = fk.extract_features(paths, ext, ev.batch_size)
            feats.append(f_gen)
            m = fk.metrics_from_features(f_gen, f_ref, ev.kid_subsets, ev.kid_subset_size, ev.fid_rng_seed)
            per_seed["original" if seed is None else str(seed)] = m
            rows.append({"extractor": name, "seed": "" if seed is None else seed, "status": "ok",
                         "fid": m["fid"], "kid_mean": m["kid_mean"], "kid_std": m["kid_std"],
                         "kid_subset_size": m["kid_subset_size"], "n_generated": len(paths),
                         "n_reference": len(ref_paths)})
        first = next(iter(per_seed.values()))
        entry.update(status="ok", reference_cache=cache, kid_subset_size=first["kid_subset_size"], per_seed=per_seed,
                     avg=average_over_seeds(per_seed, ("fid", "kid_mean", "kid_std")),
                     ci95=fk.fid_kid_interval(feats, f_ref, groups=ev.fid_groups, seed=ev.fid_rng_seed),
                     role="diagnostic: ours trains against this network" if name in fk.DIAGNOSTIC_SPACES
                     else "headline")
        result["extractors"][name] = entry
    return _finish(params, layout, "fidkid", model, result, rows)


# --------------------------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------------------------
def segmenter_path(layout: Layout, name: str) -> Path:
    return layout.root / "models" / "segmenters" / f"{name}.pt"


SEG_TRAIN, DET_TRAIN = "seg-train", "det-train"  # role sets written by the data stage (pipeline/data/plan.py)


def _role_manifest(ds: Path) -> pd.DataFrame:
    if not (ds / "manifest.csv").exists():
        raise EvalError(f"{ds / 'manifest.csv'}: not found; rerun `dvc repro data` (the data stage writes the "
                        "segmenter and detector training sets since this version)")
    return canonical.read_manifest(ds)


def not_evaluated(params: Params, stage: str, eval_set: str) -> str:
    """Why `stage` (segment) does not score `eval_set`, or "" when it does."""
    if f"{stage}:{eval_set}" in params.eval.switched_off:
        return f"not evaluated: no lung masks for {eval_set} ('{stage}:{eval_set}' in eval.switched_off)"
    return ""


def run_segmenters(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Train every segmenter once on the train split of data/seg-train (data.segmenter_sources); competence on its
    held-out test split, or, where it has none (the default: normal images of the training set), on the clean
    normal rsna_like images."""
    layout, device = _setup(params, root)
    ev = params.eval
    ds = layout.dataset(SEG_TRAIN)
    df = _role_manifest(ds)
    rows = cap_rows(df[(df["split"] == "train") & (df["lung_mask"] != "")], 0)
    if len(rows) < 2:
        raise EvalError(f"{ds / 'manifest.csv'}: segmenter training needs at least 2 training images with lung masks "
                        "(data.segmenter_sources names the sets; `cxrbench check` shows their counts)")
    images, masks = load_original(ds, rows), load_mask(ds, rows, "lung_mask")
    logs = {}
    for name in ev.segmenters:
        model, log = seg.train_segmenter(name, images, masks, ev.seg_iterations, ev.seg_batch_size, ev.seg_lr,
                                         ev.seed, device)
        seg.save_segmenter(model, name, images.shape[-1], log, segmenter_path(layout, name))
        logs[name] = log
    # competence: mIoU on held-out clean images, before any number depends on them
    held = cap_rows(df[(df["split"] == "test") & (df["lung_mask"] != "")], 0)
    if len(held):
        tds, normals, where = ds, held, f"held-out data/{SEG_TRAIN} test images"
    else:
        tds, tdf = eval_rows(layout, "rsna_like")
        normals = tdf[(tdf["domain"] == "normal") & (tdf["lung_mask"] != "")].reset_index(drop=True)
        where = "clean normal rsna_like test images"
    comp = {}
    if len(normals):
        timgs, tmasks = load_original(tds, normals), load_mask(tds, normals, "lung_mask")
        for name in ev.segmenters:
            model, size = seg.load_segmenter(segmenter_path(layout, name), device)
            pred = seg.predict_lungs(model, timgs, size, device, ev.batch_size, ev.seg_threshold)
            miou, _ = seg.miou_sensitivity(pred, tmasks)
            comp[name] = {**competence(float(miou.mean()), ev.floor_segmenter_miou,
                                       f"mIoU on {len(normals)} {where}"),
                          "ci95": bootstrap_ci(miou, ev.n_boot, seed=ev.seed)}
            print(f"segmenter {name}: mIoU {miou.mean():.3f} on {len(normals)} {where} (floor "
                  f"{ev.floor_segmenter_miou})", flush=True)
    else:
        print("segmenters: no held-out image with a lung mask: competence not measured (metrics not ranked)",
              flush=True)
    summary = {"stage": "segmenters", "n_train": int(len(rows)), "image_size": int(images.shape[-1]),
               "segmenters": logs, "competence": comp}
    write_json(layout.root / "models" / "segmenters" / "segmenters.json", summary)
    return summary


run_segmenters_training = run_segmenters


def _mean_over(items: list[dict[str, Any]], key: str) -> float | None:
    vals = [i[key] for i in items if i.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _known_original_scores(layout: Layout, settings: dict[str, Any]) -> dict[str, Any]:
    """metrics/segment/original.json when it was computed with the same segmenter weights and threshold, else {}.

    The original images' scores do not depend on the model; reusing them halves every segment@<model> stage. Only a
    speed-up: a missing or stale file means they are computed again here.
    """
    path = layout.metrics("segment", ORIGINAL)
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = all(prev.get("settings", {}).get(k) == settings[k] for k in ("segmenter_sha256", "threshold"))
    return prev.get("sets", {}) if same else {}


def _per_image_mean(results: list[dict[str, Any]], key: str) -> np.ndarray | None:
    """Per-image mean over segmenters of a per-image score (None when a result has no per-image data)."""
    rows = [r.get("per_image", {}).get(key) for r in results]
    if not rows or any(r is None for r in rows):
        return None
    return np.nanmean(np.array([[np.nan if v is None else v for v in r] for r in rows], np.float64), axis=0)


def run_segment(params: Params, model: str, root: Path | None = None) -> dict[str, Any]:
    """mIoU / sensitivity of the four segmenters on original and translated images of each evaluation set."""
    layout, device = _setup(params, root)
    ev = params.eval
    segmenters = {name: seg.load_segmenter(segmenter_path(layout, name), device) for name in ev.segmenters}
    translations = _translations(layout, params, model)
    result: dict[str, Any] = {"stage": "segment", "model": model, "seeds": list(translations) or None,
                              "settings": {"segmenters": list(ev.segmenters), "threshold": ev.seg_threshold,
                                           "max_images": ev.max_images,
                                           "segmenter_sha256": {n: fk.sha256_file(segmenter_path(layout, n))
                                                                for n in ev.segmenters},
                                           "miou": "mean over images of (IoU_background + IoU_lung) / 2",
                                           "sensitivity": "mean over images of lung-pixel recall"},
                              "sets": {}}
    known = _known_original_scores(layout, result["settings"]) if model != ORIGINAL else {}
    rows_out = []
    for eval_set in available_sets(layout):
        why = not_evaluated(params, "segment", eval_set)
        if why:
            result.setdefault("not_evaluated", {})[eval_set] = why
            continue
        ds, df = eval_rows(layout, eval_set, ev.max_images)
        rows = scored_rows(df)
        if rows.empty:
            continue
        translated = {seed: t.paths(eval_set, list(rows["id"]), "a2b") for seed, t in translations.items()}
        prev = known.get(eval_set, {})
        reuse = ({n: r["original"] for n, r in prev.get("segmenters", {}).items()}
                 if prev.get("ids") == list(rows["id"]) else {})
        per_seg = seg.evaluate_set(segmenters, ds, rows, translated, device, ev.batch_size, ev.seg_threshold, reuse)
        for name, res in per_seg.items():  # seed averages of each segmenter
            if "translated" in res:
                res["avg"] = average_over_seeds(res["translated"],
                                                ("miou", "sensitivity", "delta_miou", "delta_sensitivity"))
        # the four-segmenter mean: per seed, the mean over segmenters; then mean (std) over seeds
        mean: dict[str, Any] = {"original": {k: _mean_over([r["original"] for r in per_seg.values()], k)
                                             for k in ("miou", "sensitivity")}}
        orig_img = {k: _per_image_mean([r["original"] for r in per_seg.values()], k)
                    for k in ("miou", "sensitivity")}
        mean["ci95"] = {f"original_{k}": bootstrap_ci(v, ev.n_boot, seed=ev.seed) for k, v in orig_img.items()
                        if v is not None}
        if translations:
            mean_seed = {str(s): {k: _mean_over([r["translated"][str(s)] for r in per_seg.values()], k)
                                  for k in ("miou", "sensitivity", "delta_miou", "delta_sensitivity")}
                         for s in translations}
            mean["translated"] = mean_seed
            mean["avg"] = average_over_seeds(mean_seed, ("miou", "sensitivity", "delta_miou", "delta_sensitivity"))
            for k in ("miou", "sensitivity"):
                per = [_per_image_mean([r["translated"][str(s)] for r in per_seg.values()], k) for s in translations]
                if orig_img[k] is None or any(p is None for p in per):
                    continue
                mat = np.stack(per)  # (seeds, images): mean over segmenters per image
                mean["ci95"][k] = bootstrap_ci(mat, ev.n_boot, seed=ev.seed)
                mean["ci95"][f"delta_{k}"] = paired_difference(mat, orig_img[k], ev.n_boot, seed=ev.seed)
        result["sets"][eval_set] = {"n": int(len(rows)), "domain": "+".join(sorted(rows["domain"].unique())),
                                    "original_scores": "reused from metrics/segment/original.json" if reuse
                                    else "computed", "segmenters": per_seg, "mean": mean, "ids": list(rows["id"])}
        for name, res in list(per_seg.items()) + [("mean", mean)]:
            base = {"eval_set": eval_set, "segmenter": name, "n": len(rows),
                    "miou_original": res["original"]["miou"], "sensitivity_original": res["original"]["sensitivity"]}
            if not translations:
                rows_out.append({**base, "seed": ""})
            for s, r in res.get("translated", {}).items():
                rows_out.append({**base, "seed": s, "miou_translated": r["miou"],
                                 "sensitivity_translated": r["sensitivity"], "delta_miou": r.get("delta_miou"),
                                 "delta_sensitivity": r.get("delta_sensitivity")})
    return _finish(params, layout, "segment", model, result, rows_out)


# --------------------------------------------------------------------------------------------------------------------
# Lesion counts (YOLO)
# --------------------------------------------------------------------------------------------------------------------
def detector_dir(layout: Layout) -> Path:
    return layout.root / "models" / "detector"


def _det_size(params: Params) -> int:
    return params.eval.det_image_size or params.data.resolution


def run_detector_training(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Train the YOLOv5 lesion detector once on the boxes of data/det-train (data.detector_sources; train/val)."""
    layout, device = _setup(params, root)
    ev = params.eval
    if "lesions" in ev.switched_off:
        out = detector_dir(layout)
        out.mkdir(parents=True, exist_ok=True)
        result = {"stage": "detector", "not_evaluated": "switched off in eval.switched_off (no boxes to train on)"}
        write_json(out / "detector.json", result)
        print(f"detector: not trained: {result['not_evaluated']}", flush=True)
        return result
    ds = layout.dataset(DET_TRAIN)
    df = _role_manifest(ds)
    df = df[df["split"].isin(["train", "val"])].reset_index(drop=True)
    return detection.train_detector(ds, df, detector_dir(layout), cfg=ev.detector_cfg,
                          weights=_in_project(layout, ev.detector_weights), epochs=ev.det_epochs,
                          batch_size=ev.det_batch_size, image_size=_det_size(params), seed=ev.seed,
                          device=_cuda_index(device))


def run_lesions(params: Params, model: str, root: Path | None = None) -> dict[str, Any]:
    """Detections per image before vs after translation, the Wilcoxon signed-rank test, box-plot data."""
    layout, device = _setup(params, root)
    ev = params.eval
    if "lesions" in ev.switched_off:
        why = "not evaluated: no detector ('lesions' in eval.switched_off: no boxes to train it on)"
        return _finish(params, layout, "lesions", model, {"stage": "lesions", "model": model, "sets": {},
                                                           "not_evaluated": why}, [])
    detector = detection.load_detector(detector_dir(layout) / detection.DETECTOR_FILE)
    translations = _translations(layout, params, model)
    kw = dict(image_size=_det_size(params), conf=ev.det_conf, iou=ev.det_iou, device=_cuda_index(device),
              batch_size=ev.batch_size)
    result: dict[str, Any] = {"stage": "lesions", "model": model, "seeds": list(translations) or None,
                              "settings": {"conf": ev.det_conf, "iou": ev.det_iou, "image_size": kw["image_size"],
                                           "max_images": ev.max_images,
                                           "test": "Wilcoxon signed-rank (scipy, zero_method=wilcox), paired by "
                                                   "image; p_greater: H1 original > translated"},
                              "sets": {}}
    per_image = []
    for eval_set in available_sets(layout):
        ds, df = eval_rows(layout, eval_set, ev.max_images)
        rows = scored_rows(df)
        if rows.empty:
            continue
        ids = list(rows["id"])
        before = detection.count_detections(detector, [ds / p for p in rows["image"]], **kw)
        entry: dict[str, Any] = {"n": len(ids), "domain": "+".join(sorted(rows["domain"].unique())),
                                 "counts": {"original": before.tolist()}, "ids": ids}
        if translations:
            after = {str(s): detection.count_detections(detector, t.paths(eval_set, ids, "a2b"), **kw)
                     for s, t in translations.items()}
            entry["counts"]["translated"] = {s: a.tolist() for s, a in after.items()}
            entry["wilcoxon"] = {s: wilcoxon_paired(before, a) for s, a in after.items()}
            mean_after = np.mean(np.stack(list(after.values())), axis=0)
            entry["wilcoxon_seed_mean"] = wilcoxon_paired(before, mean_after)
            entry["mean_count"] = {"original": float(before.mean()),
                                   "translated": mean_std(a.mean() for a in after.values())}
            for i, image_id in enumerate(ids):
                for s, a in after.items():
                    per_image.append({"eval_set": eval_set, "id": image_id, "seed": s,
                                      "count_original": int(before[i]), "count_translated": int(a[i])})
        else:
            entry["mean_count"] = {"original": float(before.mean())}
            per_image += [{"eval_set": eval_set, "id": image_id, "seed": "", "count_original": int(c)}
                          for image_id, c in zip(ids, before)]
        result["sets"][eval_set] = entry
    return _finish(params, layout, "lesions", model, result, per_image)


# --------------------------------------------------------------------------------------------------------------------
# Classifiers (Table 2)
# --------------------------------------------------------------------------------------------------------------------
def _classifier_test_sets(params: Params, layout: Layout) -> dict[str, list[tuple[str, Any, Any, int]]]:
    """{test set: [(eval_set, dataset dir, rows, label)]}: rsna_like (both domains) and ards (see classification.py)."""
    ev = params.eval
    sets = available_sets(layout)
    out: dict[str, list] = {}
    if "rsna_like" in sets:
        ds, df = eval_rows(layout, "rsna_like", ev.max_images)
        out["rsna_like"] = [("rsna_like", ds, df[df["domain"] == d].reset_index(drop=True), int(d == "opacity"))
                            for d in ("opacity", "normal")]
    if "ards_like" in sets and ev.ards_negatives in sets:
        ds, df = eval_rows(layout, "ards_like", ev.max_images)
        nds, ndf = eval_rows(layout, ev.ards_negatives, ev.max_images)
        out["ards"] = [("ards_like", ds, df.reset_index(drop=True), 1),
                       (ev.ards_negatives, nds, ndf[ndf["domain"] == "normal"].reset_index(drop=True), 0)]
    for name, parts in out.items():
        if sum(len(p[2]) for p in parts if p[3] == 1) == 0 or sum(len(p[2]) for p in parts if p[3] == 0) == 0:
            raise EvalError(f"classifier test set {name}: needs opacity and normal images")
    return out


def _test_inputs(parts, translations: Translations | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (or a2b masks when kind == "mask") and labels of a test set."""
    xs, ys = [], []
    for eval_set, ds, rows, label in parts:
        if rows.empty:
            continue
        if kind == "mask":
            xs.append(read_pngs(translations.paths(eval_set, list(rows["id"]), "a2b", "mask")))
        else:
            xs.append(load_original(ds, rows))
        ys.append(np.full(len(rows), label))
    return np.concatenate(xs), np.concatenate(ys)


def _train_and_test(params: Params, device: torch.device, train_x: np.ndarray, train_y: np.ndarray,
                    tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    ev = params.eval
    out = {}
    for arch in ev.classifiers:
        model, log = cls_mod.train_classifier(arch, train_x, train_y, iterations=ev.cls_iterations,
                                              batch_size=ev.cls_batch_size, lr=ev.cls_lr, seed=ev.seed, device=device,
                                              crop_scale=ev.cls_crop_scale)
        out[arch] = {"train": log, **{name: cls_mod.score(model, x, y, device, ev.batch_size)
                                      for name, (x, y) in tests.items()}}
        del model
    return out


def run_classifiers(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Table 2: Original classifiers once, Generated and Mask classifiers for every model in eval.classify_models."""
    layout, device = _setup(params, root)
    ev = params.eval
    unknown = [m for m in ev.classify_models if m not in params.models]
    if unknown:
        raise EvalError(f"params.yaml eval.classify_models: {unknown[0]!r} is not in models "
                        f"({', '.join(params.models)}); list trained models only")
    ds, train = train_rows(layout, "train", ev.classifier_train_images)
    tests = _classifier_test_sets(params, layout)
    real_tests = {name: _test_inputs(parts, None, "image") for name, parts in tests.items()}
    settings = {"classifiers": list(ev.classifiers), "iterations": ev.cls_iterations, "batch_size": ev.cls_batch_size,
                "lr": ev.cls_lr, "crop_scale": ev.cls_crop_scale, "seed": ev.seed, "ards_negatives": ev.ards_negatives,
                "max_images": ev.max_images,
                "test_sets": {name: {"n": int(len(y)), "n_positive": int(y.sum())}
                              for name, (_, y) in real_tests.items()}}
    labels = (train["domain"] == "opacity").to_numpy().astype(int)
    original = {"stage": "classifiers", "model": ORIGINAL, "data_type": "Original", "settings": settings,
                "results": _train_and_test(params, device, load_original(ds, train), labels, real_tests)}
    all_results = {ORIGINAL: _finish(params, layout, "classifiers", ORIGINAL, original, _table_rows(original))}
    for model in ev.classify_models:
        res: dict[str, Any] = {"stage": "classifiers", "model": model, "settings": settings, "seeds": {}}
        for seed, t in _translations(layout, params, model).items():
            res["seeds"][str(seed)] = {"Generated": _generated(params, device, t, train, real_tests),
                                       "Mask": _masks(params, device, t, train, tests)}
        res["avg"] = _classifier_avg(res["seeds"])
        all_results[model] = _finish(params, layout, "classifiers", model, res, _table_rows(res))
    return all_results


def _generated(params, device, t: Translations, train, real_tests) -> dict[str, Any]:
    opa, nor = train[train["domain"] == "opacity"], train[train["domain"] == "normal"]
    if t.rows("train", "b2a").empty:
        return {"status": "n/a", "reason": "the model produced no B->A translations of the training normals"}
    x = np.concatenate([read_pngs(t.paths("train", list(opa["id"]), "a2b")),  # opacity -> normal: label 0
                        read_pngs(t.paths("train", list(nor["id"]), "b2a"))])  # normal -> opacity: label 1
    y = np.concatenate([np.zeros(len(opa), int), np.ones(len(nor), int)])
    return {"status": "ok", "results": _train_and_test(params, device, x, y, real_tests)}


def _masks(params, device, t: Translations, train, tests) -> dict[str, Any]:
    if not t.has_masks():
        return {"status": "n/a", "reason": "the model has no activation masks"}
    x = read_pngs(t.paths("train", list(train["id"]), "a2b", "mask"))
    y = (train["domain"] == "opacity").to_numpy().astype(int)
    mask_tests = {name: _test_inputs(parts, t, "mask") for name, parts in tests.items()}
    return {"status": "ok", "results": _train_and_test(params, device, x, y, mask_tests)}


SCORES = ("acc", "f1", "recall", "precision")


def _classifier_avg(seeds: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("Generated", "Mask"):
        done = {s: r[kind]["results"] for s, r in seeds.items() if r[kind]["status"] == "ok"}
        if not done:
            first = next(iter(seeds.values()), {}).get(kind, {})
            out[kind] = {"status": "n/a", "reason": first.get("reason", "")}
            continue
        archs = next(iter(done.values()))
        out[kind] = {"status": "ok", "results": {
            arch: {test: average_over_seeds({s: done[s][arch][test] for s in done}, SCORES)
                   for test in archs[arch] if test != "train"} for arch in archs}}
    return out


def _table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if res["model"] == ORIGINAL:
        for arch, r in res["results"].items():
            for test, s in r.items():
                if test != "train":
                    rows.append({"classifier": arch, "data_type": "Original", "seed": "", "test_set": test,
                                 **{k: s[k] for k in (*SCORES, "n", "tp", "fp", "tn", "fn")}})
        return rows
    for seed, kinds in res["seeds"].items():
        for kind, k in kinds.items():
            if k["status"] != "ok":
                rows.append({"classifier": "all", "data_type": kind, "seed": seed, "test_set": "",
                             "status": "n/a", "reason": k["reason"]})
                continue
            for arch, r in k["results"].items():
                for test, s in r.items():
                    if test != "train":
                        rows.append({"classifier": arch, "data_type": kind, "seed": seed, "test_set": test,
                                     "status": "ok", **{x: s[x] for x in (*SCORES, "n", "tp", "fp", "tn", "fn")}})
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Paired DRR metrics
# --------------------------------------------------------------------------------------------------------------------
PAIRED_KEYS = ("residual_opacity_after", "residual_opacity_ratio", "opacity_excess_ratio", "anatomy_corr",
               "change_outside_opacity", "mask_auroc", "mask_auroc_lung", "mask_best_iou", "mean_mask")


PER_IMAGE_KEYS = ("residual_opacity_after", "residual_opacity_ratio", "opacity_excess_ratio", "anatomy_corr",
                  "change_outside_opacity", "psnr_after")


def _arr(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _paired_intervals(per_seed: dict[str, Any], ev) -> tuple[dict[str, Any], dict[str, Any]]:
    """95 % intervals of the per-image paired metrics (over images and seeds) and the paired comparison with the
    Identity floor: residual opacity after vs before (identity leaves it as it is) and PSNR vs the twin after vs
    before (identity's PSNR is the input's)."""
    mats = {k: np.stack([_arr(r["per_image"][k]) for r in per_seed.values()]) for k in PER_IMAGE_KEYS}
    first = next(iter(per_seed.values()))["per_image"]
    ci = {k: bootstrap_ci(m, ev.n_boot, seed=ev.seed) for k, m in mats.items()}
    vs = {"residual_opacity": paired_difference(mats["residual_opacity_after"], _arr(first["residual_opacity_before"]),
                                                ev.n_boot, seed=ev.seed),
          "psnr": paired_difference(mats["psnr_after"], _arr(first["psnr_before"]), ev.n_boot, seed=ev.seed)}
    r, p = vs["residual_opacity"], vs["psnr"]
    removes = r["diff"]["hi"] is not None and r["diff"]["hi"] < 0
    keeps = p["diff"]["lo"] is not None and p["diff"]["lo"] > 0
    vs["beats_identity"] = bool(removes and keeps)
    vs["verdict"] = ("removes opacity and improves the whole image vs the clean twin (both 95 % intervals exclude 0)"
                     if removes and keeps else
                     "reduces opacity, but the whole image does not get closer to the clean twin (anatomy changed)"
                     if removes else "does not reduce the residual opacity below Identity's (95 % interval)")
    return ci, vs


def _mask_area_intervals(seeds: list[str], per_seed: dict[str, Any], normal_seed: dict[str, Any],
                         ev) -> dict[str, Any]:
    """The mask's mean on opacity images and on normals, and normals / opacity (Eq. 4 wants at most a quarter), each
    with its 95 % interval over images and seeds (the opacity and normal images drawn independently)."""
    m_opa = np.stack([_arr(per_seed[s]["per_image"]["mean_mask"]) for s in seeds])
    m_nor = np.stack([_arr(normal_seed[s]["per_image"]["mean_mask"]) for s in seeds])
    return {"opacity": bootstrap_ci(m_opa, ev.n_boot, seed=ev.seed),
            "normal": bootstrap_ci(m_nor, ev.n_boot, seed=ev.seed),
            "normal_to_opacity": ratio_of_means_ci(m_nor, m_opa, ev.n_boot, seed=ev.seed)}


def _per_finding(opa, per_seed: dict[str, Any], ev) -> dict[str, Any]:
    """Residual-opacity ratio (after / before, inside the true opacity) per finding label, over images and seeds."""
    ratio = np.stack([_arr(r["per_image"]["residual_opacity_ratio"]) for r in per_seed.values()])
    psnr_gain = np.stack([_arr(r["per_image"]["psnr_after"]) for r in per_seed.values()])
    before = _arr(next(iter(per_seed.values()))["per_image"]["psnr_before"])
    out = {}
    for name, col in zip(NIH14, LABEL_COLUMNS):
        sel = (opa[col].astype(float) > 0).to_numpy()
        if sel.sum() < 2:
            continue
        out[name] = {"n": int(sel.sum()), "residual_opacity_ratio": bootstrap_ci(ratio[:, sel], ev.n_boot, seed=ev.seed),
                     "psnr_gain": bootstrap_ci(psnr_gain[:, sel] - before[sel], ev.n_boot, seed=ev.seed)}
    return out


def run_paired(params: Params, model: str, root: Path | None = None) -> dict[str, Any]:
    """PSNR/SSIM vs the clean twin, residual opacity, activation-mask AUROC/IoU, change on normals (DRR sets)."""
    layout, _ = _setup(params, root)
    ev = params.eval
    translations = _translations(layout, params, model)
    result: dict[str, Any] = {"stage": "paired", "model": model, "seeds": list(translations) or None,
                              "settings": {"max_images": ev.max_images, "intensity": "[0, 1] = uint8 / 255",
                                           "ssim": "Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, valid windows"},
                              "sets": {}}
    for eval_set in available_sets(layout):
        ds, df = eval_rows(layout, eval_set, ev.max_images)
        opa = df[df["domain"] == "opacity"].reset_index(drop=True)
        nor = df[df["domain"] == "normal"].reset_index(drop=True)
        has_twins = len(opa) and (opa["twin"].fillna("").astype(str) != "").all()
        if not has_twins:
            continue  # paired metrics need the hidden clean twin: DRR sets only
        originals = load_original(ds, opa)
        twins = load_original(ds, opa, "twin")
        lungs, opacity = load_mask(ds, opa, "lung_mask"), load_mask(ds, opa, "opacity_mask")
        # the best AUROC a mask could reach without looking at the image (eval/paired.py position_floor)
        floor = {r: paired_mod.position_floor(opacity, paired_mod.localisation_region(opacity, lungs, r))
                 for r in paired_mod.REGIONS}
        entry: dict[str, Any] = {"n_opacity": int(len(opa)), "n_normal": int(len(nor)), "mask_floor": floor}
        if not translations:
            entry["opacity"] = paired_mod.paired_opacity_metrics(originals, twins, lungs, opacity)
            pi = entry["opacity"]["per_image"]
            entry["opacity"]["ci95"] = {"residual_opacity_before": bootstrap_ci(_arr(pi["residual_opacity_before"]),
                                                                                ev.n_boot, seed=ev.seed),
                                        "psnr_before": bootstrap_ci(_arr(pi["psnr_before"]), ev.n_boot, seed=ev.seed)}
        else:
            per_seed, normal_seed, seed_masks = {}, {}, []
            for seed, t in translations.items():
                masks = read_pngs(t.paths(eval_set, list(opa["id"]), "a2b", "mask")) if t.has_masks() else None
                if masks is not None:
                    seed_masks.append((str(seed), masks))
                per_seed[str(seed)] = paired_mod.paired_opacity_metrics(
                    originals, twins, lungs, opacity, read_pngs(t.paths(eval_set, list(opa["id"]), "a2b")), masks)
                if len(nor):
                    nmasks = read_pngs(t.paths(eval_set, list(nor["id"]), "a2b", "mask")) if t.has_masks() else None
                    normal_seed[str(seed)] = paired_mod.normal_change_metrics(
                        load_original(ds, nor), read_pngs(t.paths(eval_set, list(nor["id"]), "a2b")), nmasks)
            if seed_masks:  # pooled over all images: each seed's point value and the interval over seeds and images
                loc = paired_mod.mask_localisation([m for _, m in seed_masks], opacity, lungs, ev.n_boot, seed=ev.seed)
                for (seed, _), value in zip(seed_masks, loc["lung_field"]["per_seed"]):
                    per_seed[seed]["mask_auroc_lung"] = value
            entry["opacity"] = {"per_seed": per_seed, "avg": average_over_seeds(per_seed, PAIRED_KEYS)}
            for part in ("psnr", "psnr_lung", "ssim", "ssim_lung"):
                entry["opacity"]["avg"][f"after_{part}"] = mean_std(r["after"][part] for r in per_seed.values())
            entry["opacity"]["ci95"], entry["opacity"]["vs_identity"] = _paired_intervals(per_seed, ev)
            entry["per_finding"] = _per_finding(opa, per_seed, ev)
            if seed_masks:
                entry["opacity"]["localisation"] = loc
            if normal_seed:
                entry["normal"] = {"per_seed": normal_seed,
                                   "avg": average_over_seeds(normal_seed, ("mean_abs_change", "psnr_vs_input",
                                                                           "mean_mask"))}
            if seed_masks and len(nor):
                entry["mask_area"] = _mask_area_intervals([s for s, _ in seed_masks], per_seed, normal_seed, ev)
        result["sets"][eval_set] = entry
    return _finish(params, layout, "paired", model, result)


# --------------------------------------------------------------------------------------------------------------------
# The independent evaluator network (the cxr-evaluator FID/KID space)
# --------------------------------------------------------------------------------------------------------------------
def competence(value: Any, floor: float, what: str) -> dict[str, Any]:
    """{"value", "floor", "passed", "measure"}: an evaluator whose value is below its floor is not ranked."""
    ok = isinstance(value, (int, float)) and np.isfinite(value) and value >= floor
    return {"value": None if not isinstance(value, (int, float)) else float(value), "floor": float(floor),
            "passed": bool(ok), "measure": what}


def run_evaluator(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Train the evaluator on the held-out split of data/drr; per-label AUROC on its test split (competence)."""
    layout, device = _setup(params, root)
    ev = params.eval
    ds = layout.dataset(TRAIN_DATASET)
    df = canonical.read_manifest(ds)
    train, test = df[df["split"] == ev.evaluator_split], df[df["split"] == "test"]
    if train["domain"].nunique() < 2:
        raise EvalError(f"{ds / 'manifest.csv'}: the evaluator's training split {ev.evaluator_split!r} needs opacity "
                        "and normal images; raise data.val_opacity / data.val_normal")
    net, log = evmod.train_evaluator(
        load_original(ds, train), evmod.label_targets(label_matrix(train), train["domain"].to_numpy()),
        arch=ev.evaluator_arch, input_size=ev.evaluator_input_size, iterations=ev.evaluator_iterations,
        batch_size=ev.evaluator_batch_size, lr=ev.evaluator_lr, seed=ev.evaluator_seed, device=device)
    probs = evmod.predict(net, load_original(ds, test), device, ev.batch_size)
    aurocs = per_label_auroc(probs[:, :len(NIH14)], label_matrix(test))
    domain_auroc = auroc(probs[:, -1], (test["domain"] == "opacity").to_numpy())
    defined = [v for v in aurocs.values() if v != "n/a"]
    mean = float(np.mean(defined)) if defined else None
    summary = {"stage": "evaluator", "arch": ev.evaluator_arch, "input_size": ev.evaluator_input_size,
               "train_split": ev.evaluator_split, "n_train": int(len(train)), "n_test": int(len(test)),
               "seed": ev.evaluator_seed, **log, "auroc": aurocs, "mean_auroc": mean,
               "n_labels_with_auroc": len(defined), "opacity_domain_auroc": domain_auroc,
               "feature_dim": int(net.pooled(torch.zeros(1, 1, 64, 64, device=device)).shape[1]),
               "competence": competence(mean, ev.floor_evaluator_auroc,
                                        "mean per-label AUROC on the drr test split (labels with both classes)")}
    out = layout.root / "models" / "evaluator"
    evmod.save_evaluator(net.cpu(), out / "evaluator.pt", summary)
    write_json(out / "evaluator.json", summary)
    print(f"evaluator: {ev.evaluator_arch} on {len(train)} {ev.evaluator_split} images; mean AUROC "
          f"{'n/a' if mean is None else f'{mean:.3f}'} over {len(defined)} labels (floor {ev.floor_evaluator_auroc}), "
          f"opacity-domain AUROC {domain_auroc if domain_auroc is None else round(domain_auroc, 3)}", flush=True)
    return summary


# --------------------------------------------------------------------------------------------------------------------
# Floor and ceiling rows: identity, blur, oracle (eval/references.py)
# --------------------------------------------------------------------------------------------------------------------
def run_references(params: Params, root: Path | None = None, names: list[str] | None = None) -> dict[str, Any]:
    """Write outputs/<reference>/seed0 for `names` (default: every eval.references entry), in the translate format;
    metrics/translate/<reference>.json says how many images and which sets had no truth (oracle)."""
    layout, _ = _setup(params, root)
    ev = params.eval
    summary: dict[str, Any] = {"stage": "references", "references": {}}
    for name in names or ev.references:
        if name not in REFERENCES:
            raise EvalError(f"unknown reference row {name!r}; known: {', '.join(REFERENCES)}")
        final = layout.outputs(name, REFERENCE_SEED)
        tmp = final.with_name(f".tmp-{final.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        records, skipped = [], []
        for eval_set in available_sets(layout):
            ds, df = eval_rows(layout, eval_set)  # every image: max_images is applied by the evaluators
            if df.empty:
                continue
            x = load_original(ds, df)
            masks = None
            if name == "identity":
                y = x
            elif name == "blur":
                y = gaussian_blur(x, blur_sigma_at(x.shape[-1], ev.blur_sigma))
            else:  # oracle: the clean twin of opacity images, the input for normals, the true opacity as mask
                opa = (df["domain"] == "opacity").to_numpy()
                twins = df["twin"].fillna("").astype(str) != ""
                if (opa & ~twins.to_numpy()).any():
                    skipped.append(eval_set)
                    continue
                y = x.copy()
                masks = np.zeros_like(x)
                if opa.any():
                    sel = df[opa]
                    y[opa] = load_original(ds, sel, "twin")
                    masks[opa] = load_mask(ds, sel, "opacity_mask").astype(np.uint8) * 255
            (tmp / eval_set / "a2b").mkdir(parents=True, exist_ok=True)
            if masks is not None:
                (tmp / eval_set / "a2b_mask").mkdir(parents=True, exist_ok=True)
            for i, row in enumerate(df.itertuples(index=False)):
                rel = f"{eval_set}/a2b/{row.id}.png"
                Image.fromarray(y[i], mode="L").save(tmp / rel)
                mrel = ""
                if masks is not None:
                    mrel = f"{eval_set}/a2b_mask/{row.id}.png"
                    Image.fromarray(masks[i], mode="L").save(tmp / mrel)
                records.append({"eval_set": eval_set, "dataset": ds.name, "id": row.id, "domain": row.domain,
                                "direction": "a2b", "image": rel, "mask": mrel})
        cols = ["eval_set", "dataset", "id", "domain", "direction", "image", "mask"]
        tmp.mkdir(parents=True, exist_ok=True)
        pd.DataFrame.from_records(records, columns=cols).to_csv(tmp / "index.csv", index=False)
        shutil.rmtree(final, ignore_errors=True)  # a reference is recomputed in seconds: no training is lost
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)
        summary["references"][name] = {"images": len(records), "sets_without_truth": skipped}
        write_json(layout.metrics("translate", name), {"model": name, "reference": True, "images": len(records),
                                                        "sets_without_truth": skipped})
    return summary
