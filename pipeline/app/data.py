"""The `data` stage: write data/drr, data/ards-like, data/jsrt-like (rendered, or from real datasets through the
adapters), data/summary.json and reports/figures/data_samples.png.

    run_data_stage(params, data_root)   # data_root = <project>/data (what `cxrbench data` passes)

Every dataset is written atomically (canonical.DatasetWriter). Nothing here depends on the clock: the same params give
byte-identical manifests, images and summary.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from pipeline.data.adapters import write_mimic_ards, write_source
from pipeline.data.canonical import LABEL_COLUMNS, NIH14, DatasetWriter, boxes_text, empty_row, read_manifest
from pipeline.data.drr import Case, PatientSpec, Settings, plan, render_patient, resolve_device
from pipeline.data.params import DataParams
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
            "labels": labels, "source": sorted(set(df["source"]))}


def run_data_stage(params, out_root: Path, log=print) -> dict:
    """Build every dataset of the `data` stage under `out_root` (the project's data/ folder)."""
    p: DataParams = params.data
    out_root = Path(out_root)
    log = log or (lambda *_: None)
    figure = out_root.parent / "reports" / "figures" / "data_samples.png"
    if p.threads:
        torch.set_num_threads(p.threads)
    start = time.perf_counter()
    settings = drr_settings(p)
    counts = drr_counts(p)
    workers = p.workers or (os.cpu_count() or 1)
    written = {}
    if p.source != "drr":
        write_source(p, p.source, out_root / "drr")
        written["drr"] = p.source
    if p.mimic_ards_studies:
        write_mimic_ards(p, out_root / "ards-like")
        written["ards-like"] = "mimic"
    if p.jsrt_dir and p.jsrt_as_eval:
        write_source(p, "jsrt", out_root / "jsrt-like", eval_only=True)
        written["jsrt-like"] = "jsrt"
    todo = [name for name in ("drr", "ards-like", "jsrt-like") if name not in written]
    with Renderer(settings, workers if todo else 1, p.threads or 1) as renderer:
        for name in todo:
            log(f"data: rendering {name} ({sum(counts[name].values())} images at {p.resolution} px)")
            write_drr_dataset(out_root / name, counts[name], renderer, p.images_per_patient, log)
            written[name] = "drr"

    if p.source == "drr":
        contact_sheet(example_cases(p), figure)
    else:
        contact_sheet(dataset_sheet_rows(out_root, ["drr", "ards-like", "jsrt-like"]), figure)
    summary = {"resolution": p.resolution, "seed": p.seed, "source": p.source,
               "datasets": {name: dataset_summary(out_root / name) for name in ("drr", "ards-like", "jsrt-like")}}
    summary["datasets"] = {k: {**v, "origin": written[k]} for k, v in summary["datasets"].items()}
    atomic_write(out_root / "summary.json", json.dumps(summary, indent=2) + "\n")  # a killed run leaves no half file
    wrote = ", ".join(f"{k} ({v['images']} images)" for k, v in summary["datasets"].items())
    log(f"data: wrote {wrote} and {figure} in {time.perf_counter() - start:.1f} s")
    return summary
