"""`cxrbench translate --model M INPUT... --out DIR`: translate a user's own PNG, JPG or DICOM radiographs.

Preprocessing is the training data's (pipeline/data/adapters.py): DICOM with rescale/window and MONOCHROME1
inversion, 16-bit PNG by its percentile range, resized to the model's resolution, quantised to 8 bit, then mapped to
[-1, 1]. For each input `<name>` it writes `<name>_translated.png`, `<name>_mask.png` (methods with an activation
mask) and `<name>_overlay.png` (input | translation | mask over the input). Every input is read first: when one
fails to read, the error names it and nothing is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.config import Params
from pipeline.errors import CxrbenchError

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


def read_any(path: Path, resolution: int) -> np.ndarray:
    """uint8 (resolution, resolution) exactly as the data stage prepares training images."""
    from pipeline.data.adapters import _resize, read_dicom, read_picture

    if path.suffix.lower() in (".dcm", ".dicom"):
        image = read_dicom(path)
    else:
        try:
            image = read_picture(path)
        except CxrbenchError:
            import pydicom

            if not pydicom.misc.is_dicom(str(path)):  # extension-less DICOMs are common in PACS exports
                raise
            image = read_dicom(path)
    return np.clip(np.round(_resize(image, resolution) * 255.0), 0, 255).astype(np.uint8)


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
    from tqdm.auto import tqdm

    from pipeline.engine import to_model_range
    from pipeline.layout import load_trained
    from pipeline.stages.translate import to_uint8

    if model not in params.models:
        raise CxrbenchError(f"unknown model {model!r}; params.yaml models: {', '.join(params.models)}")
    files = collect_inputs(inputs)
    seed = params.seeds[0] if seed is None else seed
    device = "cuda" if torch.cuda.is_available() else "cpu"
    translator = load_trained(params, model, seed, Path(weights) if weights else None, device=device)
    res = params.data.resolution
    decoded = [read_any(f, res) for f in files]  # every input is read before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = _unique_stems(files)
    for start in tqdm(range(0, len(files), batch), desc=f"translate ({model})", unit="batch", disable=None):
        chunk = files[start:start + batch]
        images = np.stack(decoded[start:start + batch])
        x = to_model_range(torch.from_numpy(images))[:, None].to(device)
        result = translator.translate(x)
        out = to_uint8(result.image)
        masks = to_uint8(result.mask, 0.0, 1.0) if result.mask is not None else None
        for i, f in enumerate(chunk):
            stem = names[f]
            paths = [out_dir / f"{stem}_translated.png", out_dir / f"{stem}_overlay.png"]
            Image.fromarray(out[i], "L").save(paths[0])
            if masks is not None:
                paths.append(out_dir / f"{stem}_mask.png")
                Image.fromarray(masks[i], "L").save(paths[-1])
            overlay(images[i], out[i], masks[i] if masks is not None else None).save(paths[1])
            written += paths
    print(f"translated {len(files)} image(s) with {model} (seed {seed}) into {out_dir}")
    return written


def _unique_stems(files: list[Path]) -> dict[Path, str]:
    seen: dict[str, int] = {}
    out = {}
    for f in files:
        stem = f.stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out[f] = stem if n == 0 else f"{stem}_{n}"
    return out
