"""`cxrbench translate --model M INPUT... --out DIR`: translate a user's own PNG, JPG, TIFF or DICOM radiographs.

Preprocessing is the training data's (pipeline/data/adapters.py): DICOM with rescale/window and MONOCHROME1
inversion, 16-bit PNG/TIFF by its percentile range, quantised to 8 bit, mapped to [-1, 1]. The model runs at its
training resolution; the outputs come back at each input's own size and aspect:

    input (H, W) -> pad to a square of side max(H, W) (edge pixels repeated: no artificial border) -> area-resize to
    the model's resolution -> translate -> bilinear resize to the square -> crop the padding -> (H, W)

so a 2000x2500 radiograph gives 2000x2500 outputs (as sharp as the model's resolution allows: the translation is an
upsampled low-resolution image, said in the summary line). For each input `<name>` it writes
`<name>_translated.png`, `<name>_mask.png` (methods with an activation mask) and `<name>_overlay.png` (input |
translation | mask over the input, each panel at most 1024 px), and `index.csv` lists every input with its outputs
and sizes. Names never collide (a.png, a.jpg, sub/a.png -> a, a_2, a_3, skipping names taken by other inputs).
Every input is read and checked first (unreadable, NaN/inf pixels, smaller than 16 px, or more elongated than 4:1:
one line naming the file, nothing written); each file is written atomically and an input's files are removed again
if one of them fails, so the folder holds complete results only; existing outputs are never overwritten (choose
another --out).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pipeline.app.translate import to_uint8
from pipeline.config import Params
from pipeline.data.adapters import read_dicom, read_picture, resize_square
from pipeline.engine import to_model_range
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_write
from pipeline.layout import load_trained

MIN_SIDE = 16  # px: below this an input is not a radiograph (and area-resizing it up would invent the image)
OVERLAY_MAX_SIDE = 1024  # px, long side of each overlay panel
MAX_ASPECT = 4.0  # longer side / shorter side: chest radiographs are 0.8-1.25; a strip is a mistake, not an image
SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff"}


def collect_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise CxrbenchError(f"{p}: no PNG, JPG or DICOM files in this folder; point to the images")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise CxrbenchError(f"{p}: no such file or folder; check the path")
    return files


def read_native(path: Path) -> np.ndarray:
    """float32 [0, 1] at the file's own size (H, W), checked: finite pixels, sides >= MIN_SIDE, aspect <= MAX_ASPECT."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        image = read_dicom(path)
    else:
        try:
            image = read_picture(path)
        except CxrbenchError:
            import pydicom  # lazy: only a DICOM input needs it

            if not pydicom.misc.is_dicom(str(path)):  # extension-less DICOMs are common in PACS exports
                raise
            image = read_dicom(path)
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise CxrbenchError(f"{path}: {image.ndim}-D pixel data where one grayscale image is expected; export a "
                            "single 2-D frame")
    if not np.isfinite(image).all():
        raise CxrbenchError(f"{path}: {int((~np.isfinite(image)).sum())} NaN/inf pixels; fix or re-export the file")
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        raise CxrbenchError(f"{path}: {h}x{w} px is too small to be a radiograph (at least {MIN_SIDE} px per side)")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise CxrbenchError(f"{path}: {h}x{w} px is more elongated than {MAX_ASPECT:g}:1; crop it to the chest first")
    return image


def to_model_input(image: np.ndarray, resolution: int) -> np.ndarray:
    """float (H, W) -> uint8 (resolution, resolution): pad to a square by repeating the edge pixels, area-resize,
    quantise as the data stage does."""
    square = _pad_square(image)
    return np.clip(np.round(resize_square(square, resolution) * 255.0), 0, 255).astype(np.uint8)


def read_any(path: Path, resolution: int) -> np.ndarray:
    """uint8 (resolution, resolution) exactly as the model sees the file (read_native + to_model_input)."""
    return to_model_input(read_native(path), resolution)


def back_to_input_size(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (r, r) model output -> uint8 (H, W): bilinear resize to the padded square, crop the padding."""
    h, w = shape
    side = max(h, w)
    big = Image.fromarray(x.astype(np.float32), mode="F").resize((side, side), Image.Resampling.BILINEAR)
    top, left = (side - h) // 2, (side - w) // 2
    return np.clip(np.round(np.asarray(big)[top:top + h, left:left + w]), 0, 255).astype(np.uint8)


def _pad_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return np.pad(image, ((top, side - h - top), (left, side - w - left)), mode="edge")


def overlay(image: np.ndarray, translated: np.ndarray, mask: np.ndarray | None) -> Image.Image:
    """Input | translation | activation mask in red over the input, side by side (RGB)."""
    gray = np.stack([image] * 3, -1).astype(np.float32)
    panels = [gray, np.stack([translated] * 3, -1).astype(np.float32)]
    if mask is not None:
        alpha = (mask.astype(np.float32) / 255.0)[..., None] * 0.6
        red = np.zeros_like(gray)
        red[..., 0] = 255
        panels.append(gray * (1 - alpha) + red * alpha)
    return Image.fromarray(np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8), "RGB")


@torch.no_grad()
def translate_files(params: Params, model: str, inputs: list[str], out_dir: Path, weights: str | None = None,
                    seed: int | None = None, batch: int = 8) -> list[Path]:
    if model not in params.models:
        raise CxrbenchError(f"unknown model {model!r}; params.yaml models: {', '.join(params.models)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CxrbenchError(f"--out {out_dir}: this is a file; name a folder (it is created when missing)")
    files = collect_inputs(inputs)
    seed = params.seeds[0] if seed is None else seed
    device = "cuda" if torch.cuda.is_available() else "cpu"
    translator = load_trained(params, model, seed, Path(weights) if weights else None, device=device)
    res = params.data.resolution
    native = [read_native(f) for f in files]  # every input is read and checked before anything is written
    names = _unique_stems(files)
    kinds = ("translated", "overlay") + (("mask",) if translator.has_mask else ())
    taken = [out_dir / f"{names[f]}_{k}.png" for f in files for k in kinds] + [out_dir / "index.csv"]
    existing = [p for p in taken if p.exists()]
    if existing:
        raise CxrbenchError(f"{existing[0]} already exists ({len(existing)} output(s) would be overwritten); "
                            "choose another --out or move the old results")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows: list[dict[str, object]] = []
    try:
        for start in tqdm(range(0, len(files), batch), desc=f"translate ({model})", unit="batch", disable=None):
            chunk = files[start:start + batch]
            images = np.stack([to_model_input(im, res) for im in native[start:start + batch]])
            result = translator.translate(to_model_range(torch.from_numpy(images))[:, None].to(device))
            out = to_uint8(result.image)
            masks = to_uint8(result.mask, 0.0, 1.0) if result.mask is not None else None
            for i, f in enumerate(chunk):
                shape = native[start + i].shape
                original = np.clip(np.round(native[start + i] * 255.0), 0, 255).astype(np.uint8)
                translated = back_to_input_size(out[i], shape)
                mask = back_to_input_size(masks[i], shape) if masks is not None else None
                pictures = {"translated": Image.fromarray(translated, "L"),
                            "overlay": overlay(*_preview(original, translated, mask))}
                if mask is not None:
                    pictures["mask"] = Image.fromarray(mask, "L")
                paths = _write_all(out_dir, names[f], pictures)
                written += paths.values()
                rows.append({"input": str(f), "height": shape[0], "width": shape[1], "model_resolution": res,
                             **{k: paths[k].name if k in paths else "" for k in ("translated", "mask", "overlay")}})
    finally:  # the index lists exactly the complete results, also after a failure part-way
        if rows:
            _write_index(out_dir / "index.csv", rows, model, seed)
    print(f"translated {len(files)} image(s) with {model} (seed {seed}) at {res}x{res}, outputs at each input's own "
          f"size (padded square, resized back) into {out_dir}; index: {out_dir / 'index.csv'}")
    return written


def _preview(*images: np.ndarray | None, longest: int = OVERLAY_MAX_SIDE) -> list[np.ndarray | None]:
    """The overlay is for looking at: its panels are at most `longest` px on their long side (a 3000 px radiograph
    would make a 9000 px wide PNG); the translated image and the mask keep the full size."""
    h, w = next(im for im in images if im is not None).shape
    scale = longest / max(h, w)
    if scale >= 1:
        return list(images)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return [None if im is None else np.asarray(Image.fromarray(im, "L").resize(size, Image.Resampling.BOX))
            for im in images]


def _write_all(out_dir: Path, stem: str, pictures: dict[str, Image.Image]) -> dict[str, Path]:
    """Write every picture of one input atomically; on any failure remove the ones already written and re-raise."""
    done: dict[str, Path] = {}
    try:
        for kind, picture in pictures.items():
            done[kind] = atomic_write(out_dir / f"{stem}_{kind}.png", lambda fh, p=picture: p.save(fh, format="PNG"))
    except OSError as exc:
        for path in done.values():
            path.unlink(missing_ok=True)
        raise CxrbenchError(f"{out_dir}: could not write the results of {stem} ({exc.strerror or exc}); free space "
                            "or choose another --out (complete results so far are listed in index.csv)") from None
    return done


def _write_index(path: Path, rows: list[dict[str, object]], model: str, seed: int) -> None:
    buf = io.StringIO()
    fields = ["input", "height", "width", "model", "seed", "model_resolution", "translated", "mask", "overlay"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "model": model, "seed": seed})
    atomic_write(path, buf.getvalue())


def _unique_stems(files: list[Path]) -> dict[Path, str]:
    """One output name per input: its stem, or stem_2, stem_3, ... when taken (also by another input's own stem)."""
    used = {f.stem for f in files}
    seen: set[str] = set()
    out = {}
    for f in files:
        name, n = f.stem, 1
        while name in seen or (n > 1 and name in used):
            n += 1
            name = f"{f.stem}_{n}"
        seen.add(name)
        out[f] = name
    return out
