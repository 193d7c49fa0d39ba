"""The canonical dataset format every data source is converted into, its validated readers, and an atomic writer.

    data/<dataset>/manifest.csv     one row per image (columns: MANIFEST_COLUMNS)
    data/<dataset>/images/*.png     8-bit grayscale, all of one size
    data/<dataset>/lung_masks/      8-bit PNG {0, 255}     (optional per row: empty path)
    data/<dataset>/opacity_masks/   8-bit PNG {0, 255}     (optional)
    data/<dataset>/boxes/*.txt      YOLO: `class cx cy w h`, normalised to [0, 1]  (optional)
    data/<dataset>/twins/*.png      the same image without findings (DRR benchmark only)
    data/extra/sets.json            the user-named evaluation sets, each written as data/extra/<name>/

Evaluation sets: rsna_like = the test split of data/drr, ards_like = data/ards-like, jsrt_like = data/jsrt-like,
<name> = data/extra/<name> (data.extra_eval_sets); every image of a set is in its test split.

Paths in the manifest are relative to the dataset folder. Every reader raises `DataError` with one line naming the
file and the fix. `DatasetWriter` writes into a hidden sibling folder and renames it into place at the very end, so a
failed or killed run never leaves a half-written dataset under the final name.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.errors import CxrbenchError

# CheXNet / NIH ChestX-ray14 order.
NIH14 = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
         "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
OPACITY_LABELS = ("Atelectasis", "Consolidation", "Edema", "Effusion", "Infiltration", "Pneumonia")
LABEL_COLUMNS = tuple(f"label_{name}" for name in NIH14)
PATH_COLUMNS = ("image", "lung_mask", "opacity_mask", "boxes", "twin")
MANIFEST_COLUMNS = ("id", "split", "domain", "patient_id", *PATH_COLUMNS, "source", "view", *LABEL_COLUMNS)
SPLITS = ("train", "val", "test")
DOMAINS = ("opacity", "normal")
EVAL_DATASETS = {"rsna_like": "drr", "ards_like": "ards-like", "jsrt_like": "jsrt-like"}  # the paper's three
EXTRA, EXTRA_INDEX = "extra", "sets.json"


def extra_dataset(name: str) -> str:
    """The dataset (folder under data/) of the user-named evaluation set `name`."""
    return f"{EXTRA}/{name}"


def extra_sets(data_root: str | Path) -> dict[str, dict]:
    """The user-named evaluation sets the data stage wrote (data/extra/sets.json): name -> {source, dir, ...}."""
    index = Path(data_root) / EXTRA / EXTRA_INDEX
    if not index.is_file():
        return {}
    try:
        return json.loads(index.read_text())["sets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{index}: not a valid index of extra evaluation sets ({exc}); rerun `dvc repro data`") \
            from None


class DataError(CxrbenchError, ValueError):
    """Bad input data: the message is one line naming the file and what to do about it."""


# ---------------------------------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------------------------------
def read_manifest(dataset_dir: str | Path, check_files: bool = True) -> pd.DataFrame:
    """The validated manifest of `dataset_dir` (string columns, labels as int 0/1, paths relative, files present)."""
    root = Path(dataset_dir)
    path = root / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (build the dataset with `cxrbench data`, or point to a folder "
                        "written by it)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); rebuild it with `cxrbench data`")
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}; rebuild the dataset with `cxrbench data` (a manifest "
                        f"needs: {', '.join(MANIFEST_COLUMNS[:11])}, label_<NIH-14 name> x 14)")
    for column, allowed in (("split", SPLITS), ("domain", DOMAINS)):
        bad = df.loc[~df[column].isin(allowed), column]
        if len(bad):
            row = bad.index[0]
            raise DataError(f"{path}: row {row + 2} ({df.at[row, 'id']}): unknown {column} {bad.iloc[0]!r} "
                            f"(use one of {', '.join(allowed)})")
    if (df["id"] == "").any():
        raise DataError(f"{path}: row {int(np.flatnonzero(df['id'] == '')[0]) + 2}: empty id (every row needs one)")
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: duplicate id {dup.iloc[0]!r} (ids must be unique; rename or drop one row)")
    if (df["image"] == "").any():
        row = int(np.flatnonzero(df["image"] == "")[0])
        raise DataError(f"{path}: row {row + 2} ({df.at[row, 'id']}): empty image path (every row needs an image)")
    for column in LABEL_COLUMNS:
        bad = df.loc[~df[column].isin(("0", "1")), column]
        if len(bad):
            row = bad.index[0]
            raise DataError(f"{path}: row {row + 2} ({df.at[row, 'id']}): {column} must be 0 or 1, got "
                            f"{bad.iloc[0]!r} (fix the label or rebuild the dataset)")
        df[column] = df[column].astype(np.int64)
    resolved_root = root.resolve()
    for column in PATH_COLUMNS:
        for row, rel in df[column].items():
            if rel == "":
                continue
            full = (root / rel).resolve()
            if Path(rel).is_absolute() or not full.is_relative_to(resolved_root):
                raise DataError(f"{path}: row {row + 2} ({df.at[row, 'id']}): {column} path {rel!r} escapes the "
                                f"dataset folder (paths must be relative and stay inside {root})")
            if check_files and not full.is_file():
                raise DataError(f"{path}: row {row + 2} ({df.at[row, 'id']}): {column} file {rel!r} not found "
                                "(restore it or rebuild the dataset with `cxrbench data`)")
    return df


def read_gray_png(path: Path) -> np.ndarray:
    """uint8 (H, W) of an 8-bit grayscale PNG; anything else is a DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (restore it or rebuild the dataset)") from None
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable or corrupt image ({reason}); replace the file or rebuild the "
                        "dataset") from None
    if mode not in ("L", "1"):
        raise DataError(f"{path}: image mode {mode} where 8-bit grayscale (L) is expected; convert it "
                        "(e.g. PIL .convert('L')) or rebuild the dataset")
    return array.astype(np.uint8) * (255 if mode == "1" else 1)


def _stack(dataset_dir: Path, df: pd.DataFrame, column: str) -> list[np.ndarray]:
    arrays, shape = [], None
    for i, rel in zip(df["id"], df[column]):
        if rel == "":
            raise DataError(f"{Path(dataset_dir) / 'manifest.csv'}: {i}: no {column} (choose rows that have one)")
        path = Path(dataset_dir) / rel
        a = read_gray_png(path)
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise DataError(f"{path}: size {a.shape[1]}x{a.shape[0]} differs from {shape[1]}x{shape[0]} of the "
                            "other images (resize it or rebuild the dataset)")
        arrays.append(a)
    return arrays


def load_images(dataset_dir: str | Path, df: pd.DataFrame, column: str = "image") -> np.ndarray:
    """uint8 (N, H, W) images of the manifest rows (`column` may be 'twin')."""
    arrays = _stack(Path(dataset_dir), df, column)
    return np.stack(arrays) if arrays else np.zeros((0, 0, 0), np.uint8)


def load_masks(dataset_dir: str | Path, df: pd.DataFrame, column: str) -> np.ndarray:
    """bool (N, H, W) masks (column lung_mask or opacity_mask); a mask must match its image's size."""
    arrays = _stack(Path(dataset_dir), df, column)
    if not arrays:
        return np.zeros((0, 0, 0), bool)
    first = Path(dataset_dir) / df["image"].iloc[0]
    with Image.open(first) as im:
        width, height = im.size
    if arrays[0].shape != (height, width):
        raise DataError(f"{Path(dataset_dir) / df[column].iloc[0]}: mask size {arrays[0].shape[1]}x"
                        f"{arrays[0].shape[0]} differs from image size {width}x{height} (rebuild the dataset)")
    return np.stack(arrays) > 127


def label_matrix(df: pd.DataFrame) -> np.ndarray:
    """float32 (N, 14) of the label columns in NIH14 order."""
    return df[list(LABEL_COLUMNS)].to_numpy(dtype=np.float32)


def read_boxes(path: str | Path) -> np.ndarray:
    """float32 (K, 5) YOLO rows (class, cx, cy, w, h) of a boxes file."""
    text = Path(path).read_text().strip()
    if not text:
        return np.zeros((0, 5), np.float32)
    try:
        rows = np.array([[float(v) for v in line.split()] for line in text.splitlines()], np.float32)
    except ValueError:
        raise DataError(f"{path}: not a YOLO box file (lines of `class cx cy w h`); rebuild the dataset") from None
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise DataError(f"{path}: each line needs 5 numbers `class cx cy w h`; rebuild the dataset")
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------------------------------
def write_png(path: Path, array: np.ndarray) -> None:
    """Deterministic 8-bit grayscale PNG (PIL writes no timestamp chunk)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"write_png expects uint8 (H, W), got {array.dtype} {array.shape}")
    Image.fromarray(array, mode="L").save(path, format="PNG", compress_level=6)


def boxes_text(boxes: np.ndarray) -> str:
    """YOLO text of (K, 5) rows (class, cx, cy, w, h)."""
    return "".join(f"{int(b[0])} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}\n" for b in boxes)


def empty_row(**values) -> dict:
    row = {c: "" for c in MANIFEST_COLUMNS}
    row.update({c: 0 for c in LABEL_COLUMNS})
    row.update(values)
    return row


class DatasetWriter:
    """Write a dataset into `<parent>/.<name>.partial-<pid>` and rename it to `<parent>/<name>` when complete.

        with DatasetWriter(Path("data/drr")) as w:
            w.image("x1", img, "images"); ...; w.add_row(row)
        # manifest written, validated, folder renamed into place; on any error the partial folder is removed

    A SIGTERM during the write is turned into an exception (main thread only) so the partial folder is cleaned up;
    a SIGKILL can leave a hidden `.<name>.partial-*` folder, which the next writer of the same dataset removes. The
    final name only ever holds a complete, validated dataset.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.tmp = self.target.parent / f".{self.target.name}.partial-{os.getpid()}"
        self.rows: list[dict] = []
        self._old_handler = None

    def __enter__(self) -> "DatasetWriter":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.target.parent.glob(f".{self.target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.target.parent.glob(f".{self.target.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir()
        if threading.current_thread() is threading.main_thread():
            def _terminate(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._old_handler = signal.signal(signal.SIGTERM, _terminate)
        return self

    def path(self, folder: str, name: str) -> tuple[Path, str]:
        """(absolute path inside the partial folder, manifest-relative path) of folder/name."""
        (self.tmp / folder).mkdir(exist_ok=True)
        return self.tmp / folder / name, f"{folder}/{name}"

    def png(self, folder: str, name: str, array: np.ndarray) -> str:
        full, rel = self.path(folder, name)
        write_png(full, array)
        return rel

    def text(self, folder: str, name: str, text: str) -> str:
        full, rel = self.path(folder, name)
        full.write_text(text)
        return rel

    def link(self, folder: str, name: str, source: Path) -> str:
        """folder/name as a hard link to `source` (a cached conversion; a copy where links are impossible)."""
        full, rel = self.path(folder, name)
        try:
            os.link(source, full)
        except OSError:
            shutil.copyfile(source, full)
        return rel

    def add_row(self, row: dict) -> None:
        self.rows.append(row)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if not self.rows:
                    raise DataError(f"{self.target}: no images to write (check the data source and its settings)")
                df = pd.DataFrame(self.rows, columns=list(MANIFEST_COLUMNS))
                df.to_csv(self.tmp / "manifest.csv", index=False, lineterminator="\n")
                read_manifest(self.tmp)  # never publish a dataset the readers would reject
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                if self.target.exists():
                    self.target.rename(old)
                self.tmp.rename(self.target)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        finally:
            if self._old_handler is not None:
                signal.signal(signal.SIGTERM, self._old_handler)
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
