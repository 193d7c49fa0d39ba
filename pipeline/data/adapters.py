"""Real-data adapters: RSNA Pneumonia Detection Challenge, MIMIC-CXR-JPG (+ a user ARDS list), JSRT + SCR masks,
Montgomery, Shenzhen, and a plain folder, each converted into the canonical format (canonical.py) at the profile's
resolution. Folder layouts: pipeline/data/README.md.

Every adapter lists `SourceImage`s (lazy readers + metadata); `write_images` assigns patient-disjoint splits where
the source has none, converts and writes them atomically. Bad input stops with one DataError line naming the file and
the fix; the partial dataset folder is removed.

Conversions: images are scaled to [0, 1] (DICOM: modality LUT, then the VOI window if the file has one, else the
0.1-99.9 percentile range; MONOCHROME1 inverted; values above 2^BitsStored - 1 are an error), resized directly to
resolution x resolution (aspect not kept, as CheXNet-style pipelines do; boxes are normalised so they follow), and
quantised to 8 bit. Masks must have the aspect ratio of their image.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.canonical import NIH14, OPACITY_LABELS, DataError, DatasetWriter, boxes_text, empty_row, write_png
from pipeline.data.drr import boxes_from_mask
from pipeline.data.params import DataParams
from pipeline.errors import suggest
from pipeline.progress import bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class SourceImage:
    id: str
    patient_id: str
    domain: str  # opacity | normal
    source: str
    read: Callable[[], np.ndarray]  # float32 (H, W) in [0, 1], bright = dense
    split: str | None = None  # None: assigned by patient with the seed
    view: str = ""
    labels: tuple[str, ...] = ()
    lung: Callable[[], np.ndarray] | None = None  # bool mask (any size with the image's aspect)
    lung_file: str = ""
    opacity: Callable[[], np.ndarray] | None = None
    opacity_file: str = ""
    boxes_px: np.ndarray | None = None  # (K, 4) x, y, w, h in source pixels (RSNA)
    view_from: Callable[[], str] | None = None  # reads the view from the file header (DICOM)
    file: str = ""  # the image file (leakage checks, the conversion cache key)
    extra_files: tuple[str, ...] = ()  # other files read for this image (a second lung-mask half)


# ---------------------------------------------------------------------------------------------------------------------
# Readers of the source formats.
# ---------------------------------------------------------------------------------------------------------------------
def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_dicom(path: Path) -> np.ndarray:
    """float32 [0, 1] of a DICOM radiograph (bright = dense)."""
    import pydicom  # lazy: only DICOM sources need it (start-up of every data stage)

    try:
        ds = pydicom.dcmread(str(path))
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for a damaged or truncated file
        raise DataError(f"{path}: unreadable DICOM ({_first_line(exc)}); replace the file (re-download it) or "
                        "remove it and its CSV rows") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or raw.ndim != 2:
        raise DataError(f"{path}: {photometric} image with shape {raw.shape} where a grayscale radiograph "
                        "(MONOCHROME1/2) is expected; convert it or remove it")
    bits = int(getattr(ds, "BitsStored", raw.dtype.itemsize * 8))
    allocated = int(getattr(ds, "BitsAllocated", raw.dtype.itemsize * 8))
    syntax = ds.file_meta.TransferSyntaxUID
    unsigned = not getattr(ds, "PixelRepresentation", 0)
    if bits < allocated and allocated in (8, 16) and not syntax.is_compressed and unsigned:
        # pydicom masks the bits above BitsStored away; a value there means the header does not describe the data
        words = np.frombuffer(ds.PixelData, dtype=("<" if syntax.is_little_endian else ">") + f"u{allocated // 8}")
        if words.size and int(words.max()) > 2 ** bits - 1:
            raise DataError(f"{path}: pixel value {int(words.max())} exceeds BitsStored={bits}; the header is wrong "
                            "for the data (fix BitsStored or re-export the file)")
    values = raw.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + \
        float(getattr(ds, "RescaleIntercept", 0) or 0)
    centre, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if centre is not None and width is not None:
        centre = float(centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        lo, hi = centre - width / 2, centre + width / 2
    elif bits <= 8:
        lo, hi = 0.0, float(2 ** bits - 1)
    else:
        lo, hi = (float(v) for v in np.percentile(values, [0.1, 99.9]))
    image = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    return 1.0 - image if photometric == "MONOCHROME1" else image


def dicom_view(path: Path) -> str:
    import pydicom  # lazy: only DICOM sources need it

    try:
        return str(getattr(pydicom.dcmread(str(path), stop_before_pixels=True), "ViewPosition", "") or "")
    except Exception as exc:
        raise DataError(f"{path}: unreadable DICOM header ({_first_line(exc)}); replace the file") from None


def read_jsrt_img(path: Path) -> np.ndarray:
    """float32 [0, 1] of a JSRT raw image: 2048 x 2048, 16-bit big-endian words holding 12-bit values stored as
    film density (large = dark), so it is inverted."""
    size = path.stat().st_size
    if size != 2048 * 2048 * 2:
        raise DataError(f"{path}: {size} bytes, a JSRT .IMG has 2048*2048*2 = 8388608 (a truncated or non-JSRT "
                        "file; re-download it)")
    raw = np.fromfile(path, dtype=">u2").reshape(2048, 2048)
    if int(raw.max()) > 4095:
        raise DataError(f"{path}: value {int(raw.max())} above 4095: not 12-bit big-endian JSRT data (check the "
                        "byte order / re-download)")
    return 1.0 - raw.astype(np.float32) / 4095.0


def read_picture(path: Path) -> np.ndarray:
    """float32 [0, 1] of a PNG/JPEG radiograph: 8-bit as is, 16-bit by its 0.1-99.9 percentile range; a colour
    image is accepted only when its channels are equal."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (restore it or remove it from the source folder)") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({_first_line(exc)}); replace or remove it") from None
    if mode in ("RGB", "RGBA", "LA", "P"):
        if mode == "P":
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        channels = array[..., :3] if array.ndim == 3 and array.shape[-1] >= 3 else array[..., :1]
        if channels.ndim == 3 and not (channels == channels[..., :1]).all():
            raise DataError(f"{path}: colour ({mode}) image where a grayscale radiograph is expected; convert it "
                            "to grayscale (e.g. PIL .convert('L')) or remove it")
        array, mode = channels[..., 0] if channels.ndim == 3 else channels, "L"
    if mode in ("L", "1"):
        return array.astype(np.float32) / (1.0 if mode == "1" else 255.0)
    if mode.startswith("I") or mode == "F":
        values = array.astype(np.float32)
        lo, hi = np.percentile(values, [0.1, 99.9])
        return np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    raise DataError(f"{path}: unsupported image mode {mode}; save it as 8- or 16-bit grayscale PNG")


def read_mask(path: Path) -> np.ndarray:
    """bool mask of a PNG/GIF/JPEG (any non-zero... above half intensity is inside)."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found (add it, or remove the image it belongs to)") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable or corrupt mask ({_first_line(exc)}); replace it") from None
    return array > 127


def resize_square(image: np.ndarray, res: int) -> np.ndarray:
    """float image -> (res, res) by area averaging (PIL BOX filter, float mode)."""
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((res, res), Image.Resampling.BOX))


def _check_aspect(mask: np.ndarray, image_shape, mask_file: str, image_id: str) -> None:
    (mh, mw), (ih, iw) = mask.shape, image_shape
    if abs(mw / mh - iw / ih) > 0.01 * (iw / ih) or mw > iw or mh > ih:
        raise DataError(f"{mask_file}: mask size {mw}x{mh} does not match image {image_id} ({iw}x{ih}); masks must "
                        "be the image's size (or an exact downscale of it): fix or remove the mask")


def _check_lung_area(mask: np.ndarray, mask_file: str, image_id: str, bounds: tuple[float, float]) -> None:
    """An empty, all-white or speck lung mask (a wrong file, an inverted export) would score every segmenter
    against nothing: refused, naming the file (bounds: data.lung_area_min / lung_area_max)."""
    area = float((np.asarray(mask) >= 0.5).mean())
    if not bounds[0] <= area <= bounds[1]:
        raise DataError(f"{mask_file}: lung mask of {image_id} covers {area:.1%} of the image, outside "
                        f"data.lung_area_min/max ({bounds[0]:.0%}-{bounds[1]:.0%}; lungs cover roughly 15-60 %): "
                        "empty, inverted or of another image? fix or remove the mask")


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found (see the expected layout in pipeline/data/README.md)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable CSV ({_first_line(exc)}); restore the original file") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}; add it or restore the original file (expected "
                        f"columns: {', '.join(columns)}; found: {', '.join(df.columns[:12])})")
    return df


def _find_csv(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / name}: not found (also looked for {name}.gz; see pipeline/data/README.md)")


def _folder(path_text: str, key: str) -> Path:
    folder = Path(path_text).expanduser()
    if not folder.is_dir():
        raise DataError(f"params.yaml: data.{key}: folder {folder} not found (point it to the dataset folder)")
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Ids, splits and caps: functions of the id (or patient id) and the seed only, so adding or filtering other images
# never moves an image to another split or out of a capped set.
# ---------------------------------------------------------------------------------------------------------------------
ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def safe_id(text: str) -> str:
    """The same file-name rule in every adapter: characters other than letters, digits, '.', '_', '-' (spaces,
    brackets, ...) become '_'. Two files that map to one id are an error naming both (write_images)."""
    return ID_CHARS.sub("_", text.strip())


def unit_hash(*parts) -> float:
    """A uniform number in [0, 1) determined by `parts` alone (sha256)."""
    digest = hashlib.sha256("\x1f".join(str(x) for x in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def stable_split(patient: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """A patient's split from its id and the seed only: test with probability test_fraction, val with val_fraction.
    Fractions are expected values (a set of 20 patients gets about, not exactly, 20 % test); `cxrbench check`
    prints the counts."""
    u = unit_hash("split", seed, patient)
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def patient_splits(patients: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Patient -> split (stable_split of each unique patient)."""
    return {pid: stable_split(pid, seed, val_fraction, test_fraction) for pid in sorted(set(patients))}


def _cap(items: list[SourceImage], max_images: int, seed: int) -> list[SourceImage]:
    """At most max_images per domain: those with the smallest hash of (seed, id), in their input order."""
    if not max_images:
        return items
    keep = set()
    for domain in ("opacity", "normal"):
        group = sorted((it for it in items if it.domain == domain), key=lambda it: unit_hash("cap", seed, it.id))
        keep.update(it.id for it in group[:max_images])
    return [it for it in items if it.id in keep]


def assign_splits(items: list[SourceImage], p: DataParams, eval_only: bool = False,
                  what: str = "source") -> list[SourceImage]:
    """Cap, check ids, and set every item's split (eval_only: all test). Returns new items sorted by id."""
    if not items:
        raise DataError(f"{what}: no usable images found (check the folder layout in pipeline/data/README.md and "
                        "the data.* filters)")
    items = _cap(items, p.max_images, p.seed)
    seen: dict[str, SourceImage] = {}
    for it in items:
        if it.id in seen:
            raise DataError(f"{what}: two files map to image id {it.id!r} ({seen[it.id].file or seen[it.id].id} and "
                            f"{it.file or it.id}; ids keep letters, digits, '.', '_', '-'): rename or remove one")
        seen[it.id] = it
    out, by_patient = [], {}
    for it in sorted(items, key=lambda it: it.id):
        split = "test" if eval_only else (it.split or stable_split(it.patient_id, p.seed, p.val_fraction,
                                                                   p.test_fraction))
        if by_patient.setdefault(it.patient_id, split) != split:
            raise DataError(f"{what}: patient {it.patient_id} is in both {by_patient[it.patient_id]} and {split} "
                            "(the official split must be patient-disjoint; fix the split file)")
        out.append(dataclasses.replace(it, split=split))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Conversion (one image: read, check, resize, quantise), its resume cache, and parallel workers.
# ---------------------------------------------------------------------------------------------------------------------
CONVERT_VERSION = 1  # bump when the conversion of an image changes: cached conversions are then redone


def convert_item(it: SourceImage, res: int, lung_area: tuple[float, float] = (0.02, 0.95)) -> dict:
    """The canonical files of one image: {"image": uint8, "lung": bool|None, "opacity": bool|None, "boxes": (K, 5)
    |None, "view": str}. Bad masks raise DataError naming the file."""
    image = it.read()
    out = {"image": np.round(resize_square(image, res) * 255).astype(np.uint8), "lung": None, "opacity": None,
           "boxes": None, "view": it.view or (it.view_from() if it.view_from else "")}
    if it.lung is not None:
        lung = it.lung()
        _check_aspect(lung, image.shape, it.lung_file, it.id)
        _check_lung_area(lung, it.lung_file, it.id, lung_area)
        out["lung"] = resize_square(lung, res) >= 0.5
    if it.opacity is not None:
        mask = it.opacity()
        _check_aspect(mask, image.shape, it.opacity_file, it.id)
        out["opacity"] = resize_square(mask, res) >= 0.5
        out["boxes"] = boxes_from_mask(out["opacity"])
    elif it.boxes_px is not None:
        h, w = image.shape
        b = it.boxes_px
        boxes = np.stack([np.zeros(len(b)), (b[:, 0] + b[:, 2] / 2) / w, (b[:, 1] + b[:, 3] / 2) / h,
                          b[:, 2] / w, b[:, 3] / h], 1).astype(np.float32).reshape(-1, 5)
        boxes[:, 1:] = np.clip(boxes[:, 1:], 0, 1)
        opacity = np.zeros((res, res), bool)
        for _, cx, cy, bw, bh in boxes:
            x0, x1 = int(np.floor((cx - bw / 2) * res)), int(np.ceil((cx + bw / 2) * res))
            y0, y1 = int(np.floor((cy - bh / 2) * res)), int(np.ceil((cy + bh / 2) * res))
            opacity[max(0, y0):y1, max(0, x0):x1] = True
        out["opacity"], out["boxes"] = opacity, boxes
    return out


def cache_key(it: SourceImage, res: int, lung_area: tuple[float, float] = (0.02, 0.95)) -> str:
    """What a conversion depends on: the input files (path, size, mtime), the id, boxes and the resolution."""
    def stat(path: str):
        if not path:
            return None
        st = os.stat(path)
        return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]

    boxes = None if it.boxes_px is None else np.asarray(it.boxes_px, np.float64).round(4).tolist()
    blob = json.dumps([CONVERT_VERSION, res, list(lung_area), it.source, it.id, stat(it.file), stat(it.lung_file),
                       [stat(f) for f in it.extra_files], stat(it.opacity_file), boxes, it.view], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def convert_cached(it: SourceImage, res: int, cache: Path | None,
                   lung_area: tuple[float, float] = (0.02, 0.95)) -> tuple[Path | None, dict | None]:
    """Convert one image into its cache folder (written under a temporary name, then renamed: a killed worker
    leaves no half entry). Returns (folder, None), or (None, converted) without a cache."""
    if cache is None:
        return None, convert_item(it, res, lung_area)
    folder = cache / cache_key(it, res, lung_area)
    if (folder / "meta.json").is_file():
        return folder, None
    out = convert_item(it, res, lung_area)
    tmp = cache / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_png(tmp / "image.png", out["image"])
    for name in ("lung", "opacity"):
        if out[name] is not None:
            write_png(tmp / f"{name}.png", out[name])
    if out["boxes"] is not None:
        (tmp / "boxes.txt").write_text(boxes_text(out["boxes"]))
    (tmp / "meta.json").write_text(json.dumps({"id": it.id, "view": out["view"]}))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, None


_JOB: tuple = ()  # (items, res, cache, lung_area) of the running conversion, inherited by forked workers


def _convert_index(i: int):
    items, res, cache, lung_area = _JOB
    return i, *convert_cached(items[i], res, cache, lung_area)


def convert_all(items: list[SourceImage], res: int, cache: Path | None, workers: int = 1, what: str = "",
                log=print, lung_area: tuple[float, float] = (0.02, 0.95)):
    """Yield (item, cache folder | None, converted | None) in item order; `workers` forked processes convert in
    parallel (the readers are closures, so the processes are forked, not spawned). Reports how many conversions
    were reused from the cache and shows progress with ETA."""
    global _JOB
    if not items:
        return
    reused = sum(1 for it in items
                 if cache is not None and (cache / cache_key(it, res, lung_area) / "meta.json").is_file())
    if log and reused:
        log(f"data: {what}: {reused} of {len(items)} images already converted (reused from {cache})")
    _JOB = (items, res, cache, lung_area)
    results: dict[int, tuple] = {}
    progress = bar(total=len(items), desc=f"convert {Path(what).name or what}", unit="img")
    try:
        if workers > 1 and len(items) - reused > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for i, folder, out in pool.imap_unordered(_convert_index, range(len(items)), chunksize=4):
                    results[i] = (folder, out)
                    progress.update()
        else:
            for i in range(len(items)):
                results[i] = _convert_index(i)[1:]
                progress.update()
    finally:
        progress.close()
        _JOB = ()
    for i, it in enumerate(items):
        yield it, *results.pop(i)


def add_converted(writer: DatasetWriter, it: SourceImage, folder: Path | None, out: dict | None) -> None:
    """One manifest row (and its files, hard-linked from the cache when there is one) in `writer`."""
    row = empty_row(id=it.id, split=it.split, domain=it.domain, patient_id=it.patient_id, source=it.source)
    if folder is not None:
        row["view"] = json.loads((folder / "meta.json").read_text())["view"]
        for column, sub, name in (("image", "images", "image.png"), ("lung_mask", "lung_masks", "lung.png"),
                                  ("opacity_mask", "opacity_masks", "opacity.png"), ("boxes", "boxes", "boxes.txt")):
            if (folder / name).is_file():
                row[column] = writer.link(sub, f"{it.id}{Path(name).suffix}", folder / name)
    else:
        row["view"] = out["view"]
        row["image"] = writer.png("images", f"{it.id}.png", out["image"])
        if out["lung"] is not None:
            row["lung_mask"] = writer.png("lung_masks", f"{it.id}.png", out["lung"])
        if out["opacity"] is not None:
            row["opacity_mask"] = writer.png("opacity_masks", f"{it.id}.png", out["opacity"])
            row["boxes"] = writer.text("boxes", f"{it.id}.txt", boxes_text(out["boxes"]))
    for name in it.labels:
        row[f"label_{name}"] = 1
    writer.add_row(row)


def lung_area(p: DataParams) -> tuple[float, float]:
    return p.lung_area_min, p.lung_area_max


def write_images(target: Path, items: list[SourceImage], p: DataParams, eval_only: bool = False,
                 what: str = "source", cache: Path | None = None, log=None) -> dict:
    """Convert and write `items` as one canonical dataset (atomically)."""
    items = assign_splits(items, p, eval_only, what)
    with DatasetWriter(target) as writer:
        for it, folder, out in convert_all(items, p.resolution, cache, p.workers or 1, what, log, lung_area(p)):
            add_converted(writer, it, folder, out)
    return {"images": len(items)}


# ---------------------------------------------------------------------------------------------------------------------
# RSNA Pneumonia Detection Challenge.
# ---------------------------------------------------------------------------------------------------------------------
RSNA_CLASSES = {"Lung Opacity": "opacity", "Normal": "normal", "No Lung Opacity / Not Normal": "not_normal"}


def rsna_items(p: DataParams) -> list[SourceImage]:
    root = _folder(p.rsna_dir, "rsna_dir")
    labels_csv = root / "stage_2_train_labels.csv"
    classes_csv = root / "stage_2_detailed_class_info.csv"
    labels = _read_csv(labels_csv, ("patientId", "x", "y", "width", "height", "Target"))
    classes = _read_csv(classes_csv, ("patientId", "class"))
    class_of = {}
    for row, (pid, cls) in enumerate(zip(classes["patientId"], classes["class"])):
        if cls not in RSNA_CLASSES:
            raise DataError(f"{classes_csv}: row {row + 2}: unknown class {cls!r}{suggest(cls, RSNA_CLASSES)}; "
                            "expected one of "
                            f"{', '.join(RSNA_CLASSES)}")
        class_of[pid] = cls
    boxes: dict[str, list] = {}
    for row, r in labels.iterrows():
        if r["Target"] not in ("0", "1"):
            raise DataError(f"{labels_csv}: row {row + 2}: Target must be 0 or 1, got {r['Target']!r}; fix the row")
        if r["Target"] == "1":
            try:
                box = [float(r[c]) for c in ("x", "y", "width", "height")]
            except ValueError:
                raise DataError(f"{labels_csv}: row {row + 2}: Target 1 needs numeric x, y, width, height; fix the "
                                "row") from None
            boxes.setdefault(r["patientId"], []).append(box)
    images = root / "stage_2_train_images"
    if not images.is_dir():
        raise DataError(f"{images}: folder not found (the RSNA DICOMs go there; see pipeline/data/README.md)")
    masks = _folder(p.rsna_lung_masks, "rsna_lung_masks") if p.rsna_lung_masks else None
    items = []
    for pid in sorted(set(labels["patientId"])):
        if pid not in class_of:
            raise DataError(f"{classes_csv}: no class for patientId {pid} of {labels_csv.name} (restore the file)")
        domain = RSNA_CLASSES[class_of[pid]]
        if domain == "not_normal":
            if p.rsna_not_normal == "exclude":
                continue
            domain = p.rsna_not_normal
        path = images / f"{pid}.dcm"
        if not path.is_file():
            raise DataError(f"{path}: DICOM listed in {labels_csv.name} not found (copy it there, or remove its rows)")
        if class_of[pid] == "Lung Opacity" or domain == "normal":
            found = np.array(boxes.get(pid, []), np.float32).reshape(-1, 4)  # normal: known empty
        else:
            found = None  # 'Not Normal' counted as opacity: no boxes drawn, the opacity mask is unknown
        items.append(SourceImage(id=f"rsna-{safe_id(pid)}", patient_id=pid, domain=domain, source="rsna", view="",
                                 read=lambda path=path: read_dicom(path), boxes_px=found, file=str(path),
                                 view_from=lambda path=path: dicom_view(path),
                                 labels=("Pneumonia",) if class_of[pid] == "Lung Opacity" else ()))
        if masks is not None and (masks / f"{pid}.png").is_file():  # optional, e.g. for the test images only
            items[-1].lung = lambda m=masks / f"{pid}.png": read_mask(m)
            items[-1].lung_file = str(masks / f"{pid}.png")
    return items


# ---------------------------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG.
# ---------------------------------------------------------------------------------------------------------------------
CHEXPERT_TO_NIH = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
                   "Edema": "Edema", "Pleural Effusion": "Effusion", "Pneumonia": "Pneumonia",
                   "Pneumothorax": "Pneumothorax", "Lung Opacity": "Infiltration", "Lung Lesion": "Nodule",
                   "Pleural Other": "Pleural_Thickening"}
CHEXPERT_COLUMNS = ("subject_id", "study_id", "No Finding", *CHEXPERT_TO_NIH)


def _mimic_tables(p: DataParams):
    root = _folder(p.mimic_dir, "mimic_dir")
    meta_csv = _find_csv(root, "mimic-cxr-2.0.0-metadata.csv")
    meta = _read_csv(meta_csv, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    chex_csv = _find_csv(root, "mimic-cxr-2.0.0-chexpert.csv")
    chex = _read_csv(chex_csv, CHEXPERT_COLUMNS)
    split_csv = _find_csv(root, "mimic-cxr-2.0.0-split.csv")
    split = _read_csv(split_csv, ("dicom_id", "study_id", "subject_id", "split"))
    bad = split.loc[~split["split"].isin(["train", "validate", "test"]), "split"]
    if len(bad):
        raise DataError(f"{split_csv}: row {bad.index[0] + 2}: unknown split {bad.iloc[0]!r}; use train, validate or "
                        "test")
    for column in CHEXPERT_TO_NIH.keys() | {"No Finding"}:
        bad = chex.loc[~chex[column].isin(["", "1.0", "0.0", "-1.0", "1", "0", "-1"]), column]
        if len(bad):
            raise DataError(f"{chex_csv}: row {bad.index[0] + 2}: unknown label value {bad.iloc[0]!r} in column "
                            f"{column!r}; fix the cell (CheXpert values are 1.0, 0.0, -1.0 or blank)")
    return root, meta, chex, split, chex_csv


def _chexpert_value(text: str, p: DataParams) -> int | None:
    """1 / 0 / None (drop the image) of a CheXpert cell under the -1 and blank policies."""
    if text == "":
        return 0 if p.mimic_blank == "negative" else None
    value = int(float(text))
    if value == -1:
        return {"negative": 0, "positive": 1, "exclude": None}[p.mimic_uncertain]
    return value


def mimic_items(p: DataParams, studies: set[str] | None = None, dicoms: set[str] | None = None,
                masks: Path | None = None, matched: set[str] | None = None) -> list[SourceImage]:
    """MIMIC-CXR-JPG images: every PA/AP image with a domain, or (studies / dicoms) the listed ones; `matched`
    collects the study and dicom ids of the images returned."""
    root, meta, chex, split, _ = _mimic_tables(p)
    chex_of = {(r["subject_id"], r["study_id"]): r for _, r in chex.iterrows()}
    split_of = dict(zip(split["dicom_id"], split["split"]))
    items = []
    for _, r in meta.iterrows():
        if studies is not None or dicoms is not None:
            if not ((studies and r["study_id"] in studies) or (dicoms and r["dicom_id"] in dicoms)):
                continue
        elif r["ViewPosition"] not in p.mimic_views:
            continue
        c = chex_of.get((r["subject_id"], r["study_id"]))
        if c is None:
            continue  # studies without CheXpert labels have no domain
        values = {name: _chexpert_value(c[col], p) for col, name in CHEXPERT_TO_NIH.items()}
        no_finding = _chexpert_value(c["No Finding"], p)
        if None in values.values() or no_finding is None:
            continue
        positive = tuple(n for n in NIH14 if values.get(n) == 1)
        if studies is not None or dicoms is not None:
            domain = "opacity"
        elif any(n in OPACITY_LABELS for n in positive):
            domain = "opacity"
        elif no_finding == 1:
            domain = "normal"
        else:
            continue  # not normal, no opacity: left out like RSNA's third class
        sid = r["subject_id"]
        path = root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{r['study_id']}" / f"{r['dicom_id']}.jpg"
        if not path.is_file():
            continue  # a partial download: only the images present are used
        item = SourceImage(id=f"mimic-{safe_id(r['dicom_id'])}", patient_id=f"p{sid}", domain=domain, source="mimic",
                           view=r["ViewPosition"], read=lambda path=path: read_picture(path), labels=positive,
                           file=str(path),
                           split={"train": "train", "validate": "val", "test": "test"}.get(split_of.get(r["dicom_id"])))
        if masks is not None:
            mask_path = masks / f"{r['dicom_id']}.png"
            if not mask_path.is_file():
                raise DataError(f"{mask_path}: lung mask of ARDS image {r['dicom_id']} not found (add it to "
                                "data.mimic_ards_masks, or remove the study from the ARDS list)")
            item.lung, item.lung_file = (lambda mp=mask_path: read_mask(mp)), str(mask_path)
        items.append(item)
        if matched is not None:
            matched.update((r["study_id"], r["dicom_id"]))
    return items


def mimic_ards_items(p: DataParams) -> list[SourceImage]:
    """The images of the user's ARDS list (study_id or dicom_id column), with their lung masks."""
    list_path = Path(p.mimic_ards_studies).expanduser()
    if not list_path.is_file():
        raise DataError(f"params.yaml: data.mimic_ards_studies: {list_path} not found (a CSV with a study_id or "
                        "dicom_id column)")
    df = pd.read_csv(list_path, dtype=str, keep_default_na=False)
    if "study_id" not in df.columns and "dicom_id" not in df.columns:
        raise DataError(f"{list_path}: missing column 'study_id' (or 'dicom_id'): list the ARDS studies or images")
    studies = {s.lstrip("s") for s in df.get("study_id", [])} or None
    dicoms = set(df.get("dicom_id", [])) or None
    masks = _folder(p.mimic_ards_masks, "mimic_ards_masks") if p.mimic_ards_masks else None
    if masks is None:
        raise DataError("params.yaml: data.mimic_ards_masks: must name the folder of ARDS lung masks "
                        "(<dicom_id>.png): the ards-like set needs lung masks")
    matched: set[str] = set()
    items = mimic_items(p, studies=studies, dicoms=dicoms, masks=masks, matched=matched)
    lost = sorted(f"s{s}" for s in (studies or set()) - matched) + sorted((dicoms or set()) - matched)
    if lost:  # an ARDS set is what its list says: a silently shorter one would change every ARDS number
        raise DataError(f"{list_path}: {len(lost)} listed study/image id(s) without a usable image "
                        f"({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}): not in the metadata, no CheXpert "
                        "row, labels dropped by data.mimic_uncertain/mimic_blank, or the JPG is missing; complete the "
                        "download or remove them from the list")
    return items


def write_mimic_ards(p: DataParams, target: Path) -> dict:
    """data/ards-like from the ARDS list and lung-mask folder."""
    return write_images(target, mimic_ards_items(p), p, eval_only=True, what=p.mimic_ards_studies)


# ---------------------------------------------------------------------------------------------------------------------
# JSRT (+ SCR masks), Montgomery, Shenzhen, plain folder.
# ---------------------------------------------------------------------------------------------------------------------
def jsrt_items(p: DataParams) -> list[SourceImage]:
    root = _folder(p.jsrt_dir, "jsrt_dir")
    files = sorted(f for f in root.rglob("*") if f.suffix.upper() == ".IMG")
    if not files:
        raise DataError(f"{root}: no JSRT .IMG files found; copy JPCLN001.IMG ... JPCNN093.IMG there")
    scr = {}
    if p.scr_dir:
        for f in _folder(p.scr_dir, "scr_dir").rglob("*.gif"):
            side = f.parent.name.lower()
            if side in ("left lung", "right lung"):
                scr.setdefault(f.stem, {})[side] = f
    items = []
    for f in files:
        stem = f.stem
        item = SourceImage(id=f"jsrt-{safe_id(stem)}", patient_id=stem, domain="normal", source="jsrt", view="PA",
                           read=lambda f=f: read_jsrt_img(f), labels=("Nodule",) if stem.startswith("JPCLN") else (),
                           file=str(f))
        if p.scr_dir:
            sides = scr.get(stem, {})
            if len(sides) != 2:
                raise DataError(f"{p.scr_dir}: SCR masks 'left lung/{stem}.gif' and 'right lung/{stem}.gif' not both "
                                "found (complete the SCR folder or leave data.scr_dir empty)")
            item.lung = lambda s=sides: read_mask(s["left lung"]) | read_mask(s["right lung"])
            item.lung_file, item.extra_files = str(sides["left lung"]), (str(sides["right lung"]),)
        items.append(item)
    return items


def tb_items(p: DataParams, name: str) -> list[SourceImage]:
    """Montgomery or Shenzhen: CXR_png/<stem>.png, stem ending _0 (normal) or _1 (tuberculosis)."""
    key = f"{name}_dir"
    root = _folder(getattr(p, key), key)
    images = root / "CXR_png"
    files = sorted(f for f in images.glob("*.png")) if images.is_dir() else []
    if not files:
        raise DataError(f"{images}: no PNG images found; point data.{key} to the {name} folder (layout: "
                        "pipeline/data/README.md)")
    items = []
    for f in files:
        if not re.search(r"_[01]$", f.stem):
            raise DataError(f"{f}: unknown label: rename it to end in _0 (normal) or _1 (tuberculosis)")
        tb = f.stem.endswith("_1")
        if tb and p.tb_domain == "exclude":
            continue
        if name == "montgomery":
            masks = [root / "ManualMask" / side / f.name for side in ("leftMask", "rightMask")]
        else:
            masks = [root / "mask" / f"{f.stem}_mask.png"]
        item = SourceImage(id=f"{name}-{safe_id(f.stem)}", patient_id=f.stem, domain="opacity" if tb else "normal",
                           source=name, view="PA", read=lambda f=f: read_picture(f), file=str(f))
        present = [m for m in masks if m.is_file()]
        if present:
            if len(present) != len(masks):
                raise DataError(f"{masks[len(present)]}: lung mask missing while its other half exists (add it)")
            item.lung = lambda ms=masks: np.logical_or.reduce([read_mask(m) for m in ms])
            item.lung_file, item.extra_files = str(masks[0]), tuple(str(m) for m in masks[1:])
        items.append(item)
    return items


FOLDER_COLUMNS = ("id", "image", "domain", "patient_id", "split")


def folder_items(p: DataParams) -> list[SourceImage]:
    root = _folder(p.folder_dir, "folder_dir")
    labels_csv = root / "labels.csv"
    images_dir = root / "images"
    files = sorted(f for f in images_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) \
        if images_dir.is_dir() else []
    if not files:
        raise DataError(f"{images_dir}: no images found; add them (a plain folder needs images/*.png|jpg, "
                        "labels.csv, optional masks/ and opacity_masks/)")
    df = _read_csv(labels_csv, ("domain",))
    key = "image" if "image" in df.columns else "id" if "id" in df.columns else None
    if key is None:
        raise DataError(f"{labels_csv}: missing column 'image' (the file name in images/, or 'id' = its stem)")
    label_names, ignored = {}, []
    for column in df.columns:
        if column in FOLDER_COLUMNS:
            continue
        prefixed = column.startswith("label_")
        name = column[len("label_"):] if prefixed else column
        if name not in NIH14:
            hint = suggest(name, NIH14)
            if not (prefixed or hint):  # real CSVs carry age, sex, view, ...: not labels, kept out
                ignored.append(column)
                continue
            # meant as a label (label_ prefix, or a near-miss of a label name): a typo must not drop it silently
            raise DataError(f"{labels_csv}: unknown label column {column!r}{hint}; labels are NIH-14 names "
                            f"(or label_<name>): {', '.join(NIH14)}")
        bad = df.loc[~df[column].isin(["0", "1", ""]), column]
        if len(bad):
            raise DataError(f"{labels_csv}: row {bad.index[0] + 2}: {column} must be 0 or 1, got {bad.iloc[0]!r}; "
                            "fix the cell")
        label_names[column] = name
    if ignored:
        print(f"data: {labels_csv.name}: column(s) {', '.join(ignored)} are not NIH-14 labels: not used", flush=True)
    bad = df.loc[~df["domain"].isin(["opacity", "normal"]), "domain"]
    if len(bad):
        raise DataError(f"{labels_csv}: row {bad.index[0] + 2}: unknown domain {bad.iloc[0]!r}; use opacity or normal")
    if "split" in df.columns:
        bad = df.loc[~df["split"].isin(["train", "val", "test", ""]), "split"]
        if len(bad):
            raise DataError(f"{labels_csv}: row {bad.index[0] + 2}: unknown split {bad.iloc[0]!r}; use train, val, "
                            "test or leave it empty")
    by_stem = {f.stem: f for f in files}
    by_name = {f.name: f for f in files}
    dup = df[key][df[key].duplicated()]
    if len(dup):
        raise DataError(f"{labels_csv}: duplicate {key} {dup.iloc[0]!r}; keep one row per image")
    items = []
    for row, r in df.iterrows():
        f = by_name.get(r[key]) or by_stem.get(r[key])
        if f is None:
            raise DataError(f"{labels_csv}: row {row + 2}: image {r[key]!r} not found in {images_dir} (add it or "
                            "remove the row)")
        stem = f.stem
        item = SourceImage(id=safe_id(stem), patient_id=r.get("patient_id") or stem, domain=r["domain"],
                           source="folder", split=(r.get("split") or None), read=lambda f=f: read_picture(f),
                           file=str(f),
                           labels=tuple(name for column, name in label_names.items() if r[column] == "1"))
        for folder, attr in (("masks", "lung"), ("opacity_masks", "opacity")):
            candidates = [root / folder / f"{stem}{s}" for s in (".png", ".gif", ".jpg")]
            found = next((c for c in candidates if c.is_file()), None)
            if found is not None:
                setattr(item, attr, lambda m=found: read_mask(m))
                setattr(item, f"{attr}_file", str(found))
        items.append(item)
    return items


SOURCES = ("rsna", "mimic", "jsrt", "montgomery", "shenzhen", "folder")


def source_items(p: DataParams, name: str) -> list[SourceImage]:
    """Every usable image of source `name` (no pixel is read: a plan that `cxrbench check` can inspect)."""
    if name == "rsna":
        return rsna_items(p)
    if name == "mimic":
        return mimic_items(p)
    if name == "jsrt":
        return jsrt_items(p)
    if name in ("montgomery", "shenzhen"):
        return tb_items(p, name)
    if name == "folder":
        return folder_items(p)
    raise DataError(f"params.yaml: data.source: unknown source {name!r}; use one of {', '.join(SOURCES)}, drr")


def write_source(p: DataParams, name: str, target: Path, eval_only: bool = False, cache: Path | None = None) -> dict:
    """Write the dataset of source `name` (rsna, mimic, jsrt, montgomery, shenzhen, folder) to `target`."""
    return write_images(target, source_items(p, name), p, eval_only=eval_only,
                        what=getattr(p, f"{name}_dir", name), cache=cache)
