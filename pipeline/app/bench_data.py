"""`cxrbench bench-data`: conversion throughput of the real-data adapters at real sizes, and its extrapolation.

Writes RSNA-format DICOMs (1024 x 1024, 12-bit, MONOCHROME2 and MONOCHROME1, a VOI window, both CSVs), MIMIC-CXR-JPG
JPEGs and JSRT .IMG files (2048 x 2048, big-endian 12-bit film density) with SCR lung masks into a work folder, converts each set with
the data stage's own code (adapters.source_items -> assign_splits -> convert_all into the cache -> a canonical
dataset), once per worker count, and once more with everything cached (the resume path). MIMIC-CXR-JPG-format JPEGs
at the set's typical 3056 x 2544 px are measured too. Results: reports/bench/data-conversion.json and .md, with the
command and machine; images/s per core extrapolated to the full RSNA (26,684 images) and MIMIC-CXR-JPG (377,110).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.adapters import add_converted, assign_splits, convert_all, lung_area, source_items
from pipeline.data.canonical import DatasetWriter
from pipeline.data.params import DataParams
from pipeline.io import atomic_write

FULL = {"RSNA (stage 2 train)": 26_684, "MIMIC-CXR-JPG": 377_110, "JSRT": 247}


def _chest(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth synthetic chest (float [0, 1], bright = dense) and its lung mask, cheap to make at 2048 px."""
    yy, xx = np.mgrid[:size, :size] / size
    lung = np.zeros((size, size), bool)
    for cx in (0.3, 0.7):
        lung |= ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
    image = np.where(lung, 0.25, 0.7) + 0.05 * np.sin(40 * xx + rng.uniform(0, 6)) * np.cos(30 * yy)
    return np.clip(image, 0, 1), lung


def write_rsna(root: Path, n: int, size: int = 1024, seed: int = 0) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    rng = np.random.default_rng(seed)
    images = root / "stage_2_train_images"
    images.mkdir(parents=True, exist_ok=True)
    base, _ = _chest(rng, size)
    labels, classes = [], []
    for i in range(n):
        pid = f"bench{i:06d}"
        words = np.round(np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1) * 4095).astype("<u2")
        mono1 = i % 4 == 0
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.99.{i + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality, ds.ViewPosition = pid, "CR", "PA"
        ds.Rows, ds.Columns, ds.SamplesPerPixel = size, size, 1
        ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048.0, 4096.0
        ds.PixelData = (4095 - words if mono1 else words).astype("<u2").tobytes()
        ds.save_as(images / f"{pid}.dcm", enforce_file_format=True)
        opacity = i % 2 == 0
        labels.append([pid, 300, 400, 200, 180, 1] if opacity else [pid, "", "", "", "", 0])
        classes.append([pid, "Lung Opacity" if opacity else "Normal"])
    pd.DataFrame(labels, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(root / "stage_2_detailed_class_info.csv",
                                                                 index=False)


def write_jsrt(root: Path, scr: Path, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    base, lung = _chest(rng, 2048)
    half = lung[::2, ::2]
    for side, cols in (("left lung", slice(512, None)), ("right lung", slice(None, 512))):
        part = np.zeros_like(half)
        part[:, cols] = half[:, cols]
        (scr / "masks" / side).mkdir(parents=True, exist_ok=True)
        mask = Image.fromarray((part * 255).astype(np.uint8), "L")
        for i in range(n):
            mask.save(scr / "masks" / side / f"JPCNN{i + 1:03d}.gif")
    for i in range(n):
        noisy = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
        np.round((1 - noisy) * 4095).astype(">u2").tofile(root / f"JPCNN{i + 1:03d}.IMG")


def write_mimic(root: Path, n: int, shape: tuple[int, int] = (3056, 2544), seed: int = 2) -> None:
    """MIMIC-CXR-JPG tree at the set's typical size (about 3056 x 2544 px, JPEG quality 95) + the three CSVs."""
    rng = np.random.default_rng(seed)
    base, _ = _chest(rng, max(shape))
    base = base[: shape[0], : shape[1]]
    chexpert = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Lesion", "Lung Opacity", "No Finding",
                "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax"]
    meta, chex, split = [], [], []
    for i in range(n):
        subject, study, dicom = f"1{i:07d}", f"5{i:07d}", f"bench{i:05d}"
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        noisy = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
        Image.fromarray((noisy * 255).astype(np.uint8), "L").save(folder / f"{dicom}.jpg", quality=95)
        meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": "PA"})
        chex.append({"subject_id": subject, "study_id": study, **{c: "" for c in chexpert},
                     ("Pneumonia" if i % 2 else "No Finding"): "1.0"})
        split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": "train"})
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(chex).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)


def convert(p: DataParams, source: str, target: Path, cache: Path, workers: int) -> dict[str, Any]:
    """Time the data stage's conversion of one source (listing + converting + writing the dataset)."""
    start = time.perf_counter()
    items = assign_splits(source_items(p, source), p, eval_only=True, what=source)
    listed = time.perf_counter()
    with DatasetWriter(target) as writer:
        for it, folder, out in convert_all(items, p.resolution, cache, workers, source, None, lung_area(p)):
            add_converted(writer, it, folder, out)
    end = time.perf_counter()
    return {"images": len(items), "workers": workers, "list_s": round(listed - start, 2),
            "total_s": round(end - start, 2), "images_per_s": round(len(items) / (end - start), 2)}


def run_data_bench(args) -> dict[str, Any]:
    work = Path(args.work)
    rsna, jsrt, scr = work / "rsna", work / "jsrt", work / "scr"
    start = time.perf_counter()
    if not (rsna / "stage_2_detailed_class_info.csv").is_file() or len(list((rsna / "stage_2_train_images").glob(
            "*.dcm"))) != args.rsna:
        shutil.rmtree(rsna, ignore_errors=True)
        write_rsna(rsna, args.rsna)
    mimic = work / "mimic"
    if len(list((mimic / "files").rglob("*.jpg"))) != args.mimic:
        shutil.rmtree(mimic, ignore_errors=True)
        write_mimic(mimic, args.mimic)
    if len(list(jsrt.glob("*.IMG"))) != args.jsrt:
        shutil.rmtree(jsrt, ignore_errors=True)
        shutil.rmtree(scr, ignore_errors=True)
        write_jsrt(jsrt, scr, args.jsrt)
    print(f"bench-data: fixtures ready in {time.perf_counter() - start:.0f} s ({args.rsna} RSNA DICOMs 1024 px, "
          f"{args.mimic} MIMIC JPGs 3056 x 2544, {args.jsrt} JSRT .IMG 2048 px) under {work}", flush=True)
    p = DataParams(resolution=args.resolution, rsna_dir=str(rsna), jsrt_dir=str(jsrt), scr_dir=str(scr),
                   mimic_dir=str(mimic))
    workers = sorted({1, *[int(w) for w in args.workers.split(",") if w.strip()]})
    runs = []
    for source in ("rsna", "mimic", "jsrt"):
        for w in workers:
            cache = work / "cache" / f"{source}-{w}"
            shutil.rmtree(cache, ignore_errors=True)
            r = {"source": source, **convert(p, source, work / "out" / f"{source}-{w}", cache, w)}
            print(json.dumps(r), flush=True)
            runs.append(r)
            if w == workers[-1]:  # the resume path: everything already converted
                again = {"source": source, "resumed": True,
                         **convert(p, source, work / "out" / f"{source}-{w}", cache, w)}
                print(json.dumps(again), flush=True)
                runs.append(again)
    rate = {s: next(r["images_per_s"] for r in runs if r["source"] == s and r["workers"] == 1 and not r.get("resumed"))
            for s in ("rsna", "mimic", "jsrt")}
    cores = os.cpu_count() or 1
    of = {"RSNA (stage 2 train)": "rsna", "MIMIC-CXR-JPG": "mimic", "JSRT": "jsrt"}
    extrapolated = {name: {"images": n, "rate_from": of[name],
                           "hours_one_core": round(n / rate[of[name]] / 3600, 2),
                           "hours_all_cores_ideal": round(n / rate[of[name]] / 3600 / cores, 2)}
                    for name, n in FULL.items()}
    results = {"command": " ".join(["cxrbench"] + sys.argv[1:]), "resolution": args.resolution,
               "machine": {"cpus": cores, "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()},
               "runs": runs, "images_per_s_per_core": rate, "extrapolated": extrapolated}
    out = Path(args.out)
    atomic_write(out / "data-conversion.json", json.dumps(results, indent=2) + "\n")
    atomic_write(out / "data-conversion.md", markdown(results))
    print(f"wrote {out / 'data-conversion.json'} and .md")
    return results


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Real-data conversion throughput ({r['resolution']} px output)", "",
             f"Command: `{r['command']}`; machine: {r['machine']['cpus']} CPUs ({r['machine']['processor']}), "
             f"Python {r['machine']['python']}. Each run: list the source (CSVs, file tree), convert every image "
             "(read, check masks, resize, quantise) into the resume cache, write the canonical dataset (hard links).",
             "", "| Source | Images | Workers | Listing (s) | Total (s) | Images/s | Note |", "|---|---:|---:|---:|---:|---:|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['source']} | {x['images']} | {x['workers']} | {x['list_s']} | {x['total_s']} | "
                     f"{x['images_per_s']} | {'resumed: all cached' if x.get('resumed') else ''} |")
    cores = r["machine"]["cpus"]
    lines += ["", "Images/s per core (1 worker): " + ", ".join(f"{k} {v}" for k, v in
                                                               r["images_per_s_per_core"].items()), "",
              f"| Dataset | Images | Hours on one core | Hours on {cores} cores (ideal scaling) |", "|---|---:|---:|---:|"]
    for name, e in r["extrapolated"].items():
        lines.append(f"| {name} | {e['images']:,} | {e['hours_one_core']} | {e['hours_all_cores_ideal']} |")
    lines += ["", "Each dataset is extrapolated from the rate of its own format at its real size (MIMIC-CXR-JPG: "
              "3056 x 2544 JPEGs; RSNA: 1024 x 1024 12-bit DICOMs; JSRT: 2048 x 2048 raw). Ideal scaling assumes "
              "the measured single-worker rate on every core; the 2-worker rows above show what this machine gets."]
    return "\n".join(lines) + "\n"
