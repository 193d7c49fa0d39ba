"""The `data` stage: write data/drr, data/ards-like, data/jsrt-like, data/seg-train, data/det-train (rendered, or
from real datasets through the adapters; roles in pipeline/data/plan.py), data/extra/ (the user-named evaluation
sets and their index sets.json; only the index when there are none), data/summary.json and
reports/figures/data_samples.png.

    run_data_stage(params, data_root)   # data_root = <project>/data (what `cxrbench data` passes)

The stage is atomic as a whole: the plan is checked first, every dataset is written into data/.next/ and
all are swapped in together (a kill leaves either the old set or, after the next run, the new one; never a mix).
Converted images are cached in data/.cache/convert/, so a rerun after an interruption converts only what is left.
Nothing here depends on the clock: the same params give
byte-identical manifests, images and summary.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from pipeline.data.adapters import add_converted, convert_all, lung_area
from pipeline.data.canonical import (EXTRA, EXTRA_INDEX, LABEL_COLUMNS, NIH14, DatasetWriter, boxes_text, empty_row,
                                     extra_dataset, read_manifest)
from pipeline.data.drr import Case, PatientSpec, Settings, plan, render_patient, resolve_device
from pipeline.data.params import DataParams
from pipeline.data.plan import DATASETS, ROLE_SETS, DatasetPlan, role_takes, validate
from pipeline.data.sheet import contact_sheet, dataset_sheet_rows
from pipeline.io import atomic_write

EXAMPLE_FINDINGS = ("Atelectasis", "Consolidation", "Edema", "Effusion", "Infiltration", "Pneumonia",
                    "Cardiomegaly", "Nodule", "Mass", "Pneumothorax", "Emphysema")


def drr_settings(p: DataParams, resolution: int | None = None) -> Settings:
    return Settings(seed=p.seed, resolution=resolution or p.resolution, oversample=p.oversample,
                    depth_samples=p.depth_samples, other_finding_prob=p.other_finding_prob,
                    device=resolve_device(p.device))


def drr_counts(p: DataParams) -> dict[str, dict[tuple[str, str, str], int]]:
    """Image counts per dataset and (dataset, split, domain) group."""
    drr = {("drr", "train", "opacity"): p.train_opacity, ("drr", "train", "normal"): p.train_normal,
           ("drr", "val", "opacity"): p.val_opacity, ("drr", "val", "normal"): p.val_normal,
           ("drr", "test", "opacity"): p.test_opacity, ("drr", "test", "normal"): p.test_normal}
    return {"drr": {k: v for k, v in drr.items() if v > 0},
            "ards-like": {("ards-like", "test", "opacity"): p.ards},
            "jsrt-like": {("jsrt-like", "test", "normal"): p.jsrt}}


def write_case(writer: DatasetWriter, case: Case) -> dict:
    """Write the files of one rendered case; return its manifest row."""
    image = writer.png("images", f"{case.id}.png", case.image)
    twin = image
    if case.findings:
        twin = writer.png("twins", f"{case.id}.png", case.twin)
    row = empty_row(
        id=case.id, split=case.split, domain=case.domain, patient_id=case.patient_id, image=image,
        lung_mask=writer.png("lung_masks", f"{case.id}.png", case.lung),
        opacity_mask=writer.png("opacity_masks", f"{case.id}.png", case.opacity),
        boxes=writer.text("boxes", f"{case.id}.txt", boxes_text(case.boxes)), twin=twin, source="drr",
        view=case.view)
    for label, value in zip(LABEL_COLUMNS, case.labels):
        row[label] = int(value)
    return row


def _init_worker(threads: int) -> None:
    torch.set_num_threads(max(1, threads))


class Renderer:
    """Renders virtual patients in plan order, in this process or in a pool of spawned worker processes (one torch
    thread each unless told otherwise). The output does not depend on the number of workers."""

    def __init__(self, settings: Settings, workers: int = 1, threads: int = 1):
        self.settings, self.workers, self.threads = settings, workers, threads
        self.pool = None

    def __enter__(self) -> "Renderer":
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker,
                                            initargs=(self.threads,),
                                            mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, specs: list[PatientSpec]):
        if self.pool is None or len(specs) < 2:
            for spec in specs:
                yield spec, render_patient(spec, self.settings)
            return
        yield from zip(specs, self.pool.map(render_patient, specs, [self.settings] * len(specs), chunksize=2))


def write_drr_dataset(target: Path, counts: dict, renderer: Renderer, images_per_patient: int, log=print) -> dict:
    """Render and write one DRR dataset; returns its summary."""
    findings, groups = Counter(), Counter()
    specs = plan(counts, images_per_patient)
    with DatasetWriter(target) as writer:
        for i, (spec, cases) in enumerate(renderer(specs)):
            for case in cases:
                writer.add_row(write_case(writer, case))
                findings.update(case.findings)
                groups[f"{case.split}/{case.domain}"] += 1
            if log and (i + 1) % 50 == 0:
                log(f"  {target.name}: {i + 1}/{len(specs)} patients")
    return {"images": sum(groups.values()), "patients": len(specs), "groups": dict(sorted(groups.items())),
            "findings": dict(sorted(findings.items()))}


def example_cases(p: DataParams) -> list[tuple[str, Case]]:
    """One single-finding virtual patient per finding (plus an ards-like, a jsrt-like and a normal one), rendered
    at sheet_resolution for the contact sheet. These patients are not part of any dataset."""
    settings = drr_settings(p, p.sheet_resolution)
    settings.oversample = 1  # at resolution * oversample == sheet_resolution the dataset's template is reused
    rows = []
    for i, name in enumerate(EXAMPLE_FINDINGS):
        (case,) = render_patient(PatientSpec("drr", "test", "opacity", 90000 + i, 1), settings, [[name]])
        rows.append((name, case))
    (case,) = render_patient(PatientSpec("ards-like", "test", "opacity", 90000, 1), settings)
    rows.append(("ards-like: " + "+".join(case.findings), case))
    (case,) = render_patient(PatientSpec("jsrt-like", "test", "normal", 90000, 1), settings)
    rows.append(("jsrt-like (normal)", case))
    (case,) = render_patient(PatientSpec("drr", "test", "normal", 90000, 1), settings)
    rows.append(("normal", case))
    return rows


def dataset_summary(folder: Path) -> dict:
    df = read_manifest(folder)
    groups = Counter(f"{s}/{d}" for s, d in zip(df["split"], df["domain"]))
    labels = {n: int(df[c].sum()) for n, c in zip(NIH14, LABEL_COLUMNS) if int(df[c].sum())}
    return {"images": len(df), "patients": int(df["patient_id"].nunique()), "groups": dict(sorted(groups.items())),
            "labels": labels, "source": sorted(set(df["source"])),
            "lung_masks": int((df["lung_mask"] != "").sum()), "boxes": int((df["boxes"] != "").sum())}


# ---------------------------------------------------------------------------------------------------------------------
# Atomic as a whole: every dataset is written into data/.next/, then all are swapped in together.
# ---------------------------------------------------------------------------------------------------------------------
NEXT, PREV, COMPLETE = ".next", ".prev", "COMPLETE"
OUTPUTS = (*DATASETS, EXTRA, "summary.json")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(root: Path) -> None:
    """Move every staged output into place (old ones to data/.prev/ first). Idempotent: after a kill it is simply
    run again (recover), so the visible set ends all new."""
    nxt, prev = root / NEXT, root / PREV
    prev.mkdir(exist_ok=True)
    for name in OUTPUTS:
        staged, live = nxt / name, root / name
        if not staged.exists():
            continue  # moved already
        if live.exists():
            _remove(prev / name)
            live.rename(prev / name)
        staged.rename(live)
    (nxt / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(nxt, ignore_errors=True)
    shutil.rmtree(prev, ignore_errors=True)


def recover(root: Path, log=print) -> None:
    """Finish or discard what a killed data stage left: a complete staging is swapped in (its datasets are whole and
    were about to replace the old ones), an incomplete one removed (its conversions stay in data/.cache)."""
    nxt = root / NEXT
    if (nxt / COMPLETE).is_file():
        if log:
            log("data: finishing the swap of a previous run that was stopped during it")
        _swap_in(root)
    elif nxt.exists() or (root / PREV).exists():
        shutil.rmtree(nxt, ignore_errors=True)
        shutil.rmtree(root / PREV, ignore_errors=True)


def _link_rows(writer: DatasetWriter, source: Path, keep) -> int:
    """Rows of a written dataset (and their files, hard-linked) that `keep(row)` selects."""
    df = read_manifest(source)
    n = 0
    for row in df.to_dict("records"):
        if not keep(row):
            continue
        linked: dict[str, str] = {}  # a normal DRR row's twin is its image: one link
        for column in ("image", "lung_mask", "opacity_mask", "boxes", "twin"):
            rel = row[column]
            if rel and rel not in linked:
                folder, name = rel.split("/", 1)
                linked[rel] = writer.link(folder, name, source / rel)
            row[column] = linked.get(rel, rel)
        writer.add_row(row)
        n += 1
    return n


def _role_keep(segmenters: bool):
    """plan.role_takes on manifest rows."""
    return lambda row: role_takes(segmenters, row["split"], row["domain"], bool(row["lung_mask"]))


def write_default_role_sets(data_root: Path) -> None:
    """data/seg-train and data/det-train from data/drr as `segmenter_sources: [train]` and `detector_sources:
    [train]` make them (for datasets written without the data stage: test fixtures, hand-made folders)."""
    drr = read_manifest(Path(data_root) / "drr")
    for name in ROLE_SETS:
        keep = _role_keep(name == "seg-train")
        if any(keep(row) for row in drr.to_dict("records")):  # a dataset is never empty: none rather than that
            with DatasetWriter(Path(data_root) / name) as writer:
                _link_rows(writer, Path(data_root) / "drr", keep)


def write_role_set(plan: DatasetPlan, stage: Path, p: DataParams, cache: Path, workers: int, log) -> None:
    """data/seg-train or data/det-train: parts linked from written datasets + adapter images."""
    keep = _role_keep(plan.name == "seg-train")
    with DatasetWriter(stage / plan.name) as writer:
        for source in plan.derived:
            parent = stage / "drr" if source == "train" or p.source == "drr" else stage / ".drr-aux"
            n = _link_rows(writer, parent, keep)
            if log:
                log(f"data: {plan.name}: {n} images from {source} ({parent.name})")
        for it, folder, out in convert_all(plan.items, p.resolution, cache, workers, plan.name, log, lung_area(p)):
            add_converted(writer, it, folder, out)


def run_data_stage(params, out_root: Path, log=print) -> dict:
    """Build every dataset of the `data` stage under `out_root` (the project's data/ folder): checked as a whole
    plan first, written into data/.next/, swapped in together."""
    p: DataParams = params.data
    out_root = Path(out_root)
    log = log or (lambda *_: None)
    figure = out_root.parent / "reports" / "figures" / "data_samples.png"
    if p.threads:
        torch.set_num_threads(p.threads)
    start = time.perf_counter()
    switched_off = getattr(getattr(params, "eval", None), "switched_off", ())
    plan = validate(p, switched_off, log)  # every problem before any image is converted
    out_root.mkdir(parents=True, exist_ok=True)
    recover(out_root, log)
    stage, cache = out_root / NEXT, out_root / ".cache" / "convert"
    stage.mkdir()
    workers = p.workers or (os.cpu_count() or 1)
    settings = drr_settings(p)
    counts = drr_counts(p)
    rendered = {name: counts[name] for name in ("drr", "ards-like", "jsrt-like") if not plan[name].items}
    if any(s == "drr" for s in p.segmenter_sources + p.detector_sources) and p.source != "drr":
        rendered[".drr-aux"] = {("drr-aux", split, domain): n for (_, split, domain), n in counts["drr"].items()
                                if split != "test"}
    with Renderer(settings, workers if rendered else 1, p.threads or 1) as renderer:
        extras = [name for name in plan if name.startswith(f"{EXTRA}/")]
        (stage / EXTRA).mkdir()
        for name in ("drr", "ards-like", "jsrt-like", *extras):
            ds = plan[name]
            if ds.items:
                log(f"data: converting {name} from {ds.origin} ({len(ds.items)} images at {p.resolution} px)")
                with DatasetWriter(stage / name) as writer:
                    for it, folder, out in convert_all(ds.items, p.resolution, cache, workers, name, log,
                                                       lung_area(p)):
                        add_converted(writer, it, folder, out)
        for name, groups in rendered.items():
            log(f"data: rendering {name} ({sum(groups.values())} images at {p.resolution} px)")
            write_drr_dataset(stage / name, groups, renderer, p.images_per_patient, log)
    for name in ROLE_SETS:
        write_role_set(plan[name], stage, p, cache, workers, log)
    shutil.rmtree(stage / ".drr-aux", ignore_errors=True)

    summary = {"resolution": p.resolution, "seed": p.seed, "source": p.source,
               "datasets": {name: {**dataset_summary(stage / name), "origin": plan[name].origin,
                                   "role": plan[name].role} for name in (*DATASETS, *extras)}}
    index = {"sets": {name: {**dataclasses.asdict(entry), "dataset": extra_dataset(name),
                             "images": summary["datasets"][extra_dataset(name)]["images"]}
                      for name, entry in p.extra_eval_sets.items()}}
    atomic_write(stage / EXTRA / EXTRA_INDEX, json.dumps(index, indent=2) + "\n")
    atomic_write(stage / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write(stage / COMPLETE, "\n".join(OUTPUTS) + "\n")
    _swap_in(out_root)

    if p.source == "drr":
        contact_sheet(example_cases(p), figure)
    else:
        contact_sheet(dataset_sheet_rows(out_root, ["drr", "ards-like", "jsrt-like"]), figure)
    wrote = ", ".join(f"{k} ({v['images']} images)" for k, v in summary["datasets"].items())
    log(f"data: wrote {wrote} and {figure} in {time.perf_counter() - start:.1f} s")
    return summary
