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
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pipeline  # noqa: F401  (offline switches first)
from eval import classification as cls_mod
from eval import fid_kid as fk
from eval import paired as paired_mod
from eval import segmentation as seg
from eval.sets import (ORIGINAL, EvalError, Translations, available_sets, eval_rows, load_mask, load_original,
                       pick_device, read_pngs, scored_rows, train_rows)
from eval.stats import average_over_seeds, mean_std, wilcoxon_paired
from pipeline.config import Params
from pipeline.stages.common import Layout, set_threads, write_json

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
    return {seed: Translations(layout, model, seed) for seed in params.seeds}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    tmp.replace(path)


def _finish(params: Params, layout: Layout, stage: str, name: str, result: dict[str, Any],
            rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    path = layout.metrics(stage, name)
    write_json(path, result)
    if rows is not None:
        _write_csv(path.with_suffix(".csv"), rows)
    if params.tracking.enabled:
        from pipeline import tracking

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
                                params.eval.inception_check_hash, _in_project(layout, params.eval.prior_path))


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
        per_seed = {}
        for seed, paths in generated.items():
            f_gen = fk.extract_features(paths, ext, ev.batch_size)
            m = fk.metrics_from_features(f_gen, f_ref, ev.kid_subsets, ev.kid_subset_size, ev.fid_rng_seed)
            per_seed["original" if seed is None else str(seed)] = m
            rows.append({"extractor": name, "seed": "" if seed is None else seed, "status": "ok",
                         "fid": m["fid"], "kid_mean": m["kid_mean"], "kid_std": m["kid_std"],
                         "kid_subset_size": m["kid_subset_size"], "n_generated": len(paths),
                         "n_reference": len(ref_paths)})
        first = next(iter(per_seed.values()))
        entry.update(status="ok", reference_cache=cache, kid_subset_size=first["kid_subset_size"], per_seed=per_seed,
                     avg=average_over_seeds(per_seed, ("fid", "kid_mean", "kid_std")))
        result["extractors"][name] = entry
    return _finish(params, layout, "fidkid", model, result, rows)


# --------------------------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------------------------
def segmenter_path(layout: Layout, name: str) -> Path:
    return layout.root / "models" / "segmenters" / f"{name}.pt"


def run_segmenters(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Train every segmenter once on the lung masks of the normal drr training images."""
    layout, device = _setup(params, root)
    ev = params.eval
    ds, rows = train_rows(layout, "train")
    rows = rows[rows["domain"] == "normal"].reset_index(drop=True)
    if len(rows) < 2:
        raise EvalError(f"{ds / 'manifest.csv'}: segmenter training needs at least 2 normal training images")
    images, masks = load_original(ds, rows), load_mask(ds, rows, "lung_mask")
    logs = {}
    for name in ev.segmenters:
        model, log = seg.train_segmenter(name, images, masks, ev.seg_iterations, ev.seg_batch_size, ev.seg_lr,
                                         ev.seed, device)
        seg.save_segmenter(model, name, images.shape[-1], log, segmenter_path(layout, name))
        logs[name] = log
    summary = {"stage": "segmenters", "n_train": int(len(rows)), "image_size": int(images.shape[-1]),
               "segmenters": logs}
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
    import json

    path = layout.metrics("segment", ORIGINAL)
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = all(prev.get("settings", {}).get(k) == settings[k] for k in ("segmenter_sha256", "threshold"))
    return prev.get("sets", {}) if same else {}


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
        if translations:
            mean_seed = {str(s): {k: _mean_over([r["translated"][str(s)] for r in per_seg.values()], k)
                                  for k in ("miou", "sensitivity", "delta_miou", "delta_sensitivity")}
                         for s in translations}
            mean["translated"] = mean_seed
            mean["avg"] = average_over_seeds(mean_seed, ("miou", "sensitivity", "delta_miou", "delta_sensitivity"))
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
    """Train the YOLOv5 lesion detector once on the opacity boxes of data/drr (train/val splits)."""
    from eval.detection import train_detector
    from pipeline.data.canonical import read_manifest
    from pipeline.stages.common import TRAIN_DATASET

    layout, device = _setup(params, root)
    ev = params.eval
    ds = layout.dataset(TRAIN_DATASET)
    df = read_manifest(ds)
    df = df[df["split"].isin(["train", "val"])].reset_index(drop=True)
    return train_detector(ds, df, detector_dir(layout), cfg=ev.detector_cfg,
                          weights=_in_project(layout, ev.detector_weights), epochs=ev.det_epochs,
                          batch_size=ev.det_batch_size, image_size=_det_size(params), seed=ev.seed,
                          device=_cuda_index(device))


def run_lesions(params: Params, model: str, root: Path | None = None) -> dict[str, Any]:
    """Detections per image before vs after translation, the Wilcoxon signed-rank test, box-plot data."""
    from eval.detection import DETECTOR_FILE, count_detections, load_detector

    layout, device = _setup(params, root)
    ev = params.eval
    detector = load_detector(detector_dir(layout) / DETECTOR_FILE)
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
        before = count_detections(detector, [ds / p for p in rows["image"]], **kw)
        entry: dict[str, Any] = {"n": len(ids), "domain": "+".join(sorted(rows["domain"].unique())),
                                 "counts": {"original": before.tolist()}, "ids": ids}
        if translations:
            after = {str(s): count_detections(detector, t.paths(eval_set, ids, "a2b"), **kw)
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
                                              batch_size=ev.cls_batch_size, lr=ev.cls_lr, seed=ev.seed, device=device)
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
                "lr": ev.cls_lr, "seed": ev.seed, "ards_negatives": ev.ards_negatives, "max_images": ev.max_images,
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
PAIRED_KEYS = ("residual_opacity_after", "residual_opacity_ratio", "change_outside_opacity", "mask_auroc",
               "mask_best_iou")


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
        entry: dict[str, Any] = {"n_opacity": int(len(opa)), "n_normal": int(len(nor))}
        if not translations:
            entry["opacity"] = paired_mod.paired_opacity_metrics(originals, twins, lungs, opacity)
        else:
            per_seed, normal_seed = {}, {}
            for seed, t in translations.items():
                masks = read_pngs(t.paths(eval_set, list(opa["id"]), "a2b", "mask")) if t.has_masks() else None
                per_seed[str(seed)] = paired_mod.paired_opacity_metrics(
                    originals, twins, lungs, opacity, read_pngs(t.paths(eval_set, list(opa["id"]), "a2b")), masks)
                if len(nor):
                    nmasks = read_pngs(t.paths(eval_set, list(nor["id"]), "a2b", "mask")) if t.has_masks() else None
                    normal_seed[str(seed)] = paired_mod.normal_change_metrics(
                        load_original(ds, nor), read_pngs(t.paths(eval_set, list(nor["id"]), "a2b")), nmasks)
            entry["opacity"] = {"per_seed": per_seed, "avg": average_over_seeds(per_seed, PAIRED_KEYS)}
            for part in ("psnr", "psnr_lung", "ssim", "ssim_lung"):
                entry["opacity"]["avg"][f"after_{part}"] = mean_std(r["after"][part] for r in per_seed.values())
            if normal_seed:
                entry["normal"] = {"per_seed": normal_seed,
                                   "avg": average_over_seeds(normal_seed, ("mean_abs_change", "psnr_vs_input",
                                                                           "mean_mask"))}
        result["sets"][eval_set] = entry
    return _finish(params, layout, "paired", model, result)
