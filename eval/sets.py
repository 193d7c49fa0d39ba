"""Where the evaluators read from: the evaluation sets in data/ and a model's translations in outputs/.

Evaluation sets (Layout.eval_sets): rsna_like = data/drr test split (both domains), ards_like =
data/ards-like (opacity only), jsrt_like = data/jsrt-like (normal only), and the user-named sets of
data.extra_eval_sets = data/extra/<name> (all their images). Translations: outputs/<model>/seed<k>/
index.csv (columns eval_set, dataset, id, domain, direction, image, mask; paths relative to that folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.data import canonical  # module attributes, so tests can stand in for the readers
from pipeline.errors import CxrbenchError
from pipeline.layout import TRAIN_DATASET, Layout

ORIGINAL = "original"  # the model name of the untranslated rows
EXTERNAL_FILE = "external.json"  # in outputs/<name>/seed0/ of a row imported by `cxrbench evaluate --images`


class EvalError(CxrbenchError):
    """A missing or malformed evaluation input (one line: the file and the fix)."""


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise EvalError("params.yaml eval.device is 'cuda' but no CUDA device is visible; set it to auto or cpu")
    return torch.device("cuda" if preference in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def _manifest(dataset_dir: Path) -> pd.DataFrame:
    if not (dataset_dir / "manifest.csv").exists():
        raise EvalError(f"{dataset_dir / 'manifest.csv'}: not found; run `dvc repro data` first")
    return canonical.read_manifest(dataset_dir)


def cap_rows(df: pd.DataFrame, max_images: int) -> pd.DataFrame:
    """The first `max_images` rows of each domain by id (0 = all): deterministic and balanced."""
    df = df.sort_values("id", kind="stable")
    if max_images:
        df = df.groupby("domain", group_keys=False, sort=False).head(max_images)
    return df.reset_index(drop=True)


def eval_rows(layout: Layout, eval_set: str, max_images: int = 0) -> tuple[Path, pd.DataFrame]:
    """(dataset dir, rows of the set's split) of one evaluation set, capped per domain."""
    sets = layout.eval_sets()
    if eval_set not in sets:
        raise EvalError(f"unknown evaluation set {eval_set!r}; known: {', '.join(sets)}")
    dataset, split = sets[eval_set]
    ds = layout.dataset(dataset)
    df = _manifest(ds)
    return ds, cap_rows(df[df["split"] == split], max_images)


def scored_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows segmentation and lesion counts score: the opacity images of a set when it has any (rsna_like,
    ards_like: does removing opacities help?), else all of them (jsrt_like: a translator should change nothing)."""
    opacity = df[df["domain"] == "opacity"]
    return (opacity if len(opacity) else df).reset_index(drop=True)


def available_sets(layout: Layout) -> list[str]:
    return [name for name, (dataset, _) in layout.eval_sets().items()
            if (layout.dataset(dataset) / "manifest.csv").exists()]


def is_external(layout: Layout, model: str) -> bool:
    """Whether outputs/<model>/ holds translations made elsewhere (`cxrbench evaluate --images DIR --name model`)."""
    return (layout.outputs(model, 0) / EXTERNAL_FILE).is_file()


def external_models(layout: Layout) -> list[str]:
    """The rows imported by `cxrbench evaluate --images`, by name."""
    return sorted(p.parent.parent.name for p in (layout.root / "outputs").glob(f"*/seed0/{EXTERNAL_FILE}"))


def train_rows(layout: Layout, split: str = "train", max_images: int = 0) -> tuple[Path, pd.DataFrame]:
    ds = layout.dataset(TRAIN_DATASET)
    df = _manifest(ds)
    return ds, cap_rows(df[df["split"] == split], max_images)


def load_original(dataset_dir: Path, rows: pd.DataFrame, column: str = "image") -> np.ndarray:
    """uint8 (N, H, W) images of the manifest rows (column "twin": their clean twins)."""
    return canonical.load_images(dataset_dir, rows, column)


def load_mask(dataset_dir: Path, rows: pd.DataFrame, column: str) -> np.ndarray:
    """bool (N, H, W) masks (lung_mask, opacity_mask) of the manifest rows; a missing path is an error."""
    missing = rows[rows[column].fillna("").astype(str) == ""]
    if len(missing):
        raise EvalError(f"{dataset_dir / 'manifest.csv'}: {column} is empty for id {missing['id'].iloc[0]!r} "
                        f"({len(missing)} rows); this evaluation needs it for every image of the set")
    return canonical.load_masks(dataset_dir, rows, column)


def read_pngs(paths: list[Path]) -> np.ndarray:
    """8-bit grayscale PNGs -> uint8 (N, H, W)."""
    if not paths:
        return np.zeros((0, 0, 0), np.uint8)
    return np.stack([_read_png(Path(p)) for p in paths])


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise EvalError(f"{path}: missing; rerun the stage that writes it (`dvc repro` reruns translate for a "
                        "changed or deleted output)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: truncated / not a PNG / corrupt chunk
        why = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise EvalError(f"{path}: truncated or corrupt image ({why}); delete it and rerun `dvc repro` (its stage "
                        "writes it again)") from None


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)[:, None]


class Translations:
    """The translate stage's output of one (model, seed): look up translated images and masks by (set, id)."""

    def __init__(self, layout: Layout, model: str, seed: int):
        self.dir = layout.outputs(model, seed)
        index = self.dir / "index.csv"
        if not index.exists():
            raise EvalError(f"{index}: not found; run `dvc repro translate@{model}` first")
        df = pd.read_csv(index, dtype=str, keep_default_na=False)
        need = {"eval_set", "id", "domain", "direction", "image", "mask"}
        if not need <= set(df.columns):
            raise EvalError(f"{index}: missing columns {sorted(need - set(df.columns))}; rerun translate@{model}")
        self.df = df
        self._by_key = {(r.eval_set, r.id, r.direction): r for r in df.itertuples(index=False)}

    def has_masks(self) -> bool:
        return bool((self.df["mask"] != "").any())

    def rows(self, eval_set: str, direction: str, domain: str | None = None) -> pd.DataFrame:
        sel = (self.df["eval_set"] == eval_set) & (self.df["direction"] == direction)
        if domain is not None:
            sel &= self.df["domain"] == domain
        return self.df[sel].sort_values("id", kind="stable").reset_index(drop=True)

    def paths(self, eval_set: str, ids: list[str], direction: str = "a2b", column: str = "image") -> list[Path]:
        out = []
        for i in ids:
            rec = self._by_key.get((eval_set, str(i), direction))
            if rec is None:
                raise EvalError(f"{self.dir / 'index.csv'}: no {direction} translation of {eval_set} image {i!r}; "
                                "rerun the translate stage (params changed since?)")
            rel = getattr(rec, column)
            if not rel:
                raise EvalError(f"{self.dir / 'index.csv'}: {eval_set} image {i!r} has no {column} ({direction})")
            out.append(self.dir / rel)
        return out
