"""Real-format fixtures of the paper's datasets, drawn so that the task is learnable: RSNA (DICOM, both CSVs),
MIMIC-CXR-JPG (tree, metadata/chexpert/split CSVs, an ARDS study list + lung masks), JSRT (.IMG 2048 x 2048 raw
big-endian 12-bit film density) + SCR (left/right lung GIFs), Montgomery (CXR_png + ManualMask).

Every image is a synthetic chest: two lung ellipses (dark) in a brighter body, quantum-like noise, and for opacity
images one to three bright blobs inside the lungs (the RSNA boxes are the blobs' bounding boxes). Each writer returns
what it wrote so tests can check counts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from test_data_adapters import CHEXPERT, write_dicom


def chest(rng: np.random.Generator, size: int, opacity: bool):
    """(image float [0, 1] bright = dense, lung bool, boxes [(x, y, w, h)] in pixels) of one synthetic chest."""
    yy, xx = np.mgrid[:size, :size] / size
    shift = rng.normal(0, 0.02, 2)
    lung = np.zeros((size, size), bool)
    for cx in (0.3, 0.7):
        lung |= ((xx - cx - shift[0]) / 0.17) ** 2 + ((yy - 0.5 - shift[1]) / 0.3) ** 2 < 1
    image = np.where(lung, 0.25, 0.7) + rng.normal(0, 0.04, (size, size))
    boxes = []
    if opacity:
        ys, xs = np.nonzero(lung)
        for _ in range(rng.integers(1, 4)):
            k = rng.integers(len(ys))
            r = rng.uniform(0.05, 0.09) * size
            blob = ((np.arange(size)[:, None] - ys[k]) ** 2 + (np.arange(size)[None] - xs[k]) ** 2 < r * r) & lung
            image = np.where(blob, 0.75, image)
            y, x = np.nonzero(blob)
            boxes.append((int(x.min()), int(y.min()), int(x.max() - x.min() + 1), int(y.max() - y.min() + 1)))
    return np.clip(image, 0, 1).astype(np.float32), lung, boxes


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "L").save(path)


def write_rsna_set(root: Path, n_opacity: int, n_normal: int, n_not_normal: int = 2, size: int = 128, seed: int = 0,
                   masks: Path | None = None) -> dict:
    """RSNA stage-2 layout; 12-bit DICOMs, every third MONOCHROME1. `masks`: lung masks <patientId>.png of all."""
    rng = np.random.default_rng(seed)
    labels, classes = [], []
    kinds = ["opacity"] * n_opacity + ["normal"] * n_normal + ["not_normal"] * n_not_normal
    for i, kind in enumerate(kinds):
        pid = f"{i:04d}abcd-{kind[:3]}"
        image, lung, boxes = chest(rng, size, kind == "opacity")
        words = np.round(image * 4095).astype(np.uint16)
        mono1 = i % 3 == 0
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", 4095 - words if mono1 else words,
                    "MONOCHROME1" if mono1 else "MONOCHROME2", 12, window=(2048.0, 4096.0),
                    view="AP" if i % 2 else "PA", uid=f"1.2.826.0.1.3680043.2.9.{i + 1}")
        cls = {"opacity": "Lung Opacity", "normal": "Normal", "not_normal": "No Lung Opacity / Not Normal"}[kind]
        for box in boxes or [None]:
            labels.append([pid, *(box if box else ("", "", "", "")), int(box is not None)])
            classes.append([pid, cls])
        if masks is not None:
            _png(masks / f"{pid}.png", (lung * 255).astype(np.uint8))
    pd.DataFrame(labels, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(root / "stage_2_detailed_class_info.csv",
                                                                 index=False)
    return {"images": len(kinds)}


def write_mimic_set(root: Path, n_ards: int, n_other: int = 4, size: int = 96, seed: int = 1,
                    masks: Path | None = None, n_pneumonia: int = 0, shared: bool = False) -> Path:
    """MIMIC-CXR-JPG tree: n_ards AP studies with bilateral opacities (listed in ards.csv, lung masks in `masks`;
    official test split), n_other PA No Finding studies and n_pneumonia PA Pneumonia studies (a third in test);
    `shared`: every ARDS patient also has a PA No Finding study, and all of them are in the train split (physicians
    pick ARDS patients whatever their split). Returns the ARDS list path."""
    rng = np.random.default_rng(seed)
    meta, chex, split, ards = [], [], [], []
    studies = [("ards", i) for i in range(n_ards)] + [("normal", i) for i in range(n_other)] + \
        [("pneumonia", i) for i in range(n_pneumonia)] + ([("shared", i) for i in range(n_ards)] if shared else [])
    for k, (kind, i) in enumerate(studies):
        subject = f"1{i:07d}" if kind in ("ards", "shared") else f"2{k:07d}"
        study, dicom = f"5{k:07d}", f"dcm{k:03d}"
        image, lung, _ = chest(rng, size, kind in ("ards", "pneumonia"))
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8), "L").save(folder / f"{dicom}.jpg", quality=95)
        meta.append(dict(dicom_id=dicom, subject_id=subject, study_id=study,
                         ViewPosition="AP" if kind == "ards" else "PA", Rows=size, Columns=size))
        row = {"subject_id": subject, "study_id": study, **{c: "" for c in CHEXPERT}}
        if kind == "ards":
            row.update({"Edema": "1.0", "Consolidation": "1.0", "Lung Opacity": "1.0"})
            ards.append(study)
            if masks is not None:
                _png(masks / f"{dicom}.png", (lung * 255).astype(np.uint8))
        elif kind == "pneumonia":
            row["Pneumonia"] = "1.0"
        else:
            row["No Finding"] = "1.0"
        chex.append(row)
        split.append(dict(dicom_id=dicom, study_id=study, subject_id=subject,  # official split: by subject
                          split=("train" if shared else "test") if kind in ("ards", "shared") else
                          "test" if k % 3 == 0 else "train"))
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(chex).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    pd.DataFrame({"study_id": ards}).to_csv(root / "ards.csv", index=False)
    return root / "ards.csv"


def write_jsrt_set(root: Path, scr: Path, n: int, seed: int = 2) -> None:
    """JSRT .IMG (2048 x 2048 big-endian 12-bit film density: large = dark) + SCR masks (1024 x 1024 GIFs)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"JPCLN{i + 1:03d}" if i % 2 == 0 else f"JPCNN{i + 1:03d}"
        image, lung, _ = chest(rng, 256, False)
        big = np.kron(image, np.ones((8, 8), np.float32))  # 2048 x 2048
        np.round((1 - big) * 4095).astype(">u2").tofile(root / f"{stem}.IMG")
        half = np.kron(lung, np.ones((4, 4), bool))  # 1024 x 1024
        for side, cols in (("left lung", slice(512, None)), ("right lung", slice(None, 512))):
            part = np.zeros_like(half)
            part[:, cols] = half[:, cols]
            (scr / "masks" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray((part * 255).astype(np.uint8), "L").save(scr / "masks" / side / f"{stem}.gif")


def write_montgomery_set(root: Path, n: int, size: int = 96, seed: int = 3, spaces: bool = False,
                         first: int = 1) -> None:
    """Montgomery layout: CXR_png/MCUCXR_<i>_<tb>.png + ManualMask/{left,right}Mask (every fourth one TB); i counts
    from `first` (another `first` = other patients)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        tb = int(i % 4 == 3)
        stem = f"MCUCXR_{i + first:04d}_{tb}" if not spaces or i else f"MCUCXR {i + first:04d}_{tb}"
        image, lung, _ = chest(rng, size, bool(tb))
        _png(root / "CXR_png" / f"{stem}.png", (image * 255).astype(np.uint8))
        left, right = lung.copy(), lung.copy()
        left[:, : size // 2], right[:, size // 2:] = False, False
        _png(root / "ManualMask" / "leftMask" / f"{stem}.png", (left * 255).astype(np.uint8))
        _png(root / "ManualMask" / "rightMask" / f"{stem}.png", (right * 255).astype(np.uint8))


def write_all(root: Path, rsna=(24, 24), ards: int = 6, jsrt: int = 4, montgomery: int = 16) -> dict:
    """Every source under `root`; returns the data.* keys that point at them."""
    write_rsna_set(root / "rsna", *rsna, masks=root / "rsna_masks")
    ards_csv = write_mimic_set(root / "mimic", ards, masks=root / "ards_masks")
    write_jsrt_set(root / "jsrt", root / "scr", jsrt)
    write_montgomery_set(root / "montgomery", montgomery)
    return {"rsna_dir": str(root / "rsna"), "rsna_lung_masks": str(root / "rsna_masks"),
            "mimic_dir": str(root / "mimic"), "mimic_ards_studies": str(ards_csv),
            "mimic_ards_masks": str(root / "ards_masks"), "jsrt_dir": str(root / "jsrt"), "scr_dir": str(root / "scr"),
            "montgomery_dir": str(root / "montgomery")}
