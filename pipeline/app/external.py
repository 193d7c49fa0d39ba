"""`cxrbench evaluate --images DIR --name NAME [--masks DIR]`: score translations made elsewhere (another
repository's results folder) with the whole per-model protocol (FID/KID, segmentation, lesion counts, paired
metrics) and add NAME as a row to every table and the results page.

DIR holds one PNG per evaluation image, named by the image's id, in one folder per evaluation set:

    DIR/rsna_like/<id>.png   DIR/ards_like/<id>.png   DIR/jsrt_like/<id>.png   DIR/<name>/<id>.png

(<name>: each user-named set of data.extra_eval_sets that the data stage wrote)

(`DIR/<set>/a2b/<id>.png`, the layout of outputs/<model>/seed<k>/, is read as well, so a folder this project wrote
can be scored again). The ids are the `id` column of the evaluation sets' manifests (data/drr test split,
data/ards-like, data/jsrt-like, data/extra/<name>); a missing or unexpected file is an error that names it. `--masks DIR`: the
method's activation masks in the same layout (optional). Images of another size than the evaluation image are
resized to it (PIL bilinear, antialiased) and colour or 16-bit images are converted to 8-bit grey; the summary says
how many. The images are copied into outputs/NAME/seed0/ (the translate format, plus external.json saying where
they came from), so `dvc repro` never touches them and a second import of the same name replaces only them.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

import pipeline.app.evaluate as stages
from eval.references import REFERENCE_SEED, REFERENCES
from eval.sets import EXTERNAL_FILE, ORIGINAL, EvalError, available_sets, eval_rows, is_external, load_original
from pipeline.app.report import build_reports
from pipeline.config import Params
from pipeline.io import write_json
from pipeline.layout import Layout

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
SHOW = 4  # file names listed in an error line


def _listing(items: list[str]) -> str:
    return ", ".join(items[:SHOW]) + (f" and {len(items) - SHOW} more" if len(items) > SHOW else "")


def _set_folder(root: Path, eval_set: str) -> Path:
    nested = root / eval_set / "a2b"
    return nested if nested.is_dir() else root / eval_set


def match_files(root: Path, layout: Layout, what: str = "translation") -> dict[str, dict[str, Path]]:
    """{eval set: {id: file}} for every image of every available evaluation set; one error line listing what is
    missing and what is unexpected otherwise."""
    if not root.is_dir():
        raise EvalError(f"{root}: not a folder; give the folder of {what}s, one subfolder per evaluation set "
                        f"({', '.join(available_sets(layout))})")
    sets = available_sets(layout)
    if not sets:
        raise EvalError("no evaluation sets under data/: run `dvc repro data` first")
    missing: list[str] = []
    extra: list[str] = [f"{p.name}/" for p in sorted(root.iterdir()) if p.is_dir() and p.name not in sets]
    found: dict[str, dict[str, Path]] = {}
    for eval_set in sets:
        _, df = eval_rows(layout, eval_set)
        expected = set(df["id"].astype(str))
        folder = _set_folder(root, eval_set)
        files = {p.stem: p for p in sorted(folder.glob("*")) if p.is_file()} if folder.is_dir() else {}
        pngs = {k: p for k, p in files.items() if p.suffix.lower() == ".png"}
        rel = folder.relative_to(root)
        missing += [f"{rel}/{i}.png" for i in sorted(expected - set(pngs))]
        extra += [f"{rel}/{p.name}" for k, p in files.items() if k not in expected or p.suffix.lower() != ".png"]
        found[eval_set] = {i: pngs[i] for i in expected & set(pngs)}
    if missing or extra:
        parts = ([f"{len(missing)} {what}(s) missing ({_listing(missing)})"] if missing else []) + \
                ([f"{len(extra)} unexpected file(s) ({_listing(extra)})"] if extra else [])
        raise EvalError(f"{root}: {' and '.join(parts)}; name each file <set>/<id>.png after the ids in the "
                        f"`id` column of the evaluation sets' manifest.csv (data/<dataset>/, test split)")
    return found


def read_grey(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool, bool]:
    """(uint8 (H, W) image at `size` = (H, W), resized?, converted?) of one PNG; one error line naming a bad file."""
    try:
        with Image.open(path) as im:
            im.load()
            converted = im.mode != "L"
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255)
                                     .astype(np.uint8), mode="L")
            elif im.mode == "F":
                raise EvalError(f"{path}: a floating-point image; save it as an 8- or 16-bit PNG")
            elif im.mode != "L":
                im = im.convert("L")
            resized = im.size != (size[1], size[0])
            if resized:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8), resized, converted
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise EvalError(f"{path}: not a readable PNG ({type(exc).__name__}); write it again or remove it") from None


def import_folder(params: Params, name: str, images: Path, masks: Path | None = None,
                  layout: Layout | None = None) -> dict[str, Any]:
    """Copy DIR (and the masks) into outputs/<name>/seed0 in the translate format; returns the import summary."""
    layout = layout or Layout()
    if not NAME_RE.fullmatch(name) or name == ORIGINAL:
        raise EvalError(f"--name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter "
                        f"(and not {ORIGINAL!r})")
    if name in params.models or name in REFERENCES:
        raise EvalError(f"--name {name!r} is a model or reference row of this project already; choose another name")
    final = layout.outputs(name, REFERENCE_SEED)
    if final.parent.exists() and not is_external(layout, name):
        raise EvalError(f"{final.parent} exists and was not written by `cxrbench evaluate --images`; choose another "
                        "--name (it is kept as it is)")
    images = Path(images).resolve()
    files = match_files(images, layout)
    mask_files = match_files(Path(masks).resolve(), layout, "mask") if masks else None
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    records, resized, converted = [], 0, 0
    for eval_set, by_id in files.items():
        ds, df = eval_rows(layout, eval_set)
        originals = load_original(ds, df)  # the size each translation is scored at
        (tmp / eval_set / "a2b").mkdir(parents=True)
        if mask_files:
            (tmp / eval_set / "a2b_mask").mkdir(parents=True)
        for i, row in enumerate(df.itertuples(index=False)):
            img, r, c = read_grey(by_id[str(row.id)], originals[i].shape)
            resized, converted = resized + r, converted + c
            rel, mrel = f"{eval_set}/a2b/{row.id}.png", ""
            Image.fromarray(img, mode="L").save(tmp / rel)
            if mask_files:
                mask, _, _ = read_grey(mask_files[eval_set][str(row.id)], originals[i].shape)
                mrel = f"{eval_set}/a2b_mask/{row.id}.png"
                Image.fromarray(mask, mode="L").save(tmp / mrel)
            records.append({"eval_set": eval_set, "dataset": ds.name, "id": row.id, "domain": row.domain,
                            "direction": "a2b", "image": rel, "mask": mrel})
    cols = ["eval_set", "dataset", "id", "domain", "direction", "image", "mask"]
    pd.DataFrame.from_records(records, columns=cols).to_csv(tmp / "index.csv", index=False)
    summary = {"model": name, "external": True, "source": str(images), "masks": str(Path(masks).resolve())
               if masks else "", "images": len(records), "resized": resized, "converted_to_grey": converted,
               "sets": {s: len(v) for s, v in files.items()}, "imported": time.strftime("%Y-%m-%d %H:%M:%S")}
    (tmp / EXTERNAL_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    # swap in: the previous import of this name (the only thing replaced) goes after the new one is complete
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    write_json(layout.metrics("translate", name), summary)
    return summary


def evaluate_folder(params: Params, name: str, images: Path, masks: Path | None = None,
                    root: Path | None = None) -> dict[str, Any]:
    """Import, score with the four per-model evaluators, rebuild the report; prints one summary line."""
    layout = Layout(root) if root else Layout()
    summary = import_folder(params, name, images, masks, layout)
    note = "".join(f", {summary[k]} {k.replace('_', ' ')}" for k in ("resized", "converted_to_grey") if summary[k])
    print(f"cxrbench evaluate: imported {summary['images']} image(s) of {', '.join(summary['sets'])} as "
          f"{name!r}{note}", flush=True)
    for evaluator in ("fidkid", "segment", "lesions", "paired"):
        getattr(stages, f"run_{evaluator}")(params, name, root)
    build_reports(params, root)
    return summary

