"""FID and KID through torch-fidelity 0.4.0, in two feature spaces (DESIGN 5.1, Tables 1 and 3).

- `inception`: torch-fidelity's `inception-v3-compat` (pool3, 2048-d), the standard space comparable with papers. Its
  weights come only from a local file (params `eval.inception_weights`, else torch hub's cache file
  `$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`). No download, ever: without the file the
  result is {"status": "unavailable", "how_to_fix": ...}, never a number from other weights.
- `cxr-densenet`: the prior's pooled 1024-d DenseNet-121 features (ReLU + global average pool after norm5), registered
  as a torch-fidelity feature extractor. Available as soon as models/prior/prior.pt exists.

Both go through torch-fidelity's own code: its PIL loader (grayscale PNG -> RGB uint8), its feature extractor
interface and batching (`get_featuresdict_from_dataset`), its FID (`fid_features_to_statistics`,
`fid_statistics_to_metric`) and KID (`kid_features_to_metric`: polynomial kernel (x.y/d + 1)^3, unbiased MMD^2 over
`kid_subsets` random subsets drawn with `np.random.RandomState(rng_seed)`). Features are extracted here rather than
inside `calculate_metrics` so that the reference set (real normal test images) can be cached in one file per
extractor, keyed by everything that changes its features.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pipeline  # noqa: F401  (offline switches before torch-fidelity is imported)
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from pipeline.prior import load_prior

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HASH_PREFIX = "6726825d"  # torch.hub convention: the file name carries the first 8 hex of its sha256
CXR_EXTRACTOR = "cxr-densenet"
FEATURE_LAYERS = {"inception": "2048", CXR_EXTRACTOR: "1024"}
TORCH_FIDELITY_NAMES = {"inception": "inception-v3-compat", CXR_EXTRACTOR: CXR_EXTRACTOR}


# --------------------------------------------------------------------------------------------------------------------
# The cxr-densenet feature extractor (torch-fidelity interface)
# --------------------------------------------------------------------------------------------------------------------
class FeatureExtractorCxrDenseNet(FeatureExtractorBase):
    """uint8 (B, 3, H, W) -> ((B, 1024) float32,): the prior's pooled features of channel 0 mapped to [-1, 1].

    torch-fidelity passes `feature_extractor_weights_path` (= the prior checkpoint) to the constructor. The prior
    resizes to its own input size internally (256 px gives the paper's 1024x8x8 map).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if not feature_extractor_weights_path:
            raise ValueError("cxr-densenet needs feature_extractor_weights_path = the prior checkpoint")
        self.prior = load_prior(str(feature_extractor_weights_path), device="cpu")  # frozen, eval mode
        self.prior.requires_grad_(False).eval()

    @staticmethod
    def get_provided_features_list():
        return ("1024",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "1024"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"cxr-densenet expects uint8 Bx3xHxW, got {x.dtype} {tuple(x.shape)}")
        gray = x[:, :1].float().div(127.5).sub(1.0)  # PIL replicated the gray channel; [-1, 1] like every model here
        return (self.prior.pooled(gray).float(),)


def register_cxr_extractor() -> str:
    """Register `cxr-densenet` with torch-fidelity once per process (a second registration would raise)."""
    if CXR_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(CXR_EXTRACTOR, FeatureExtractorCxrDenseNet)
    return CXR_EXTRACTOR


# --------------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE  # torch.hub.get_dir() = $TORCH_HOME/hub


@dataclass
class Extractor:
    """A resolved feature space: name, torch-fidelity name, layer, weights file, its hash, or why it is missing."""

    name: str
    weights: Path | None
    sha256: str | None
    input_size: int | None
    unavailable: str = ""  # non-empty: the how-to-fix message

    @property
    def available(self) -> bool:
        return not self.unavailable

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "torch_fidelity_extractor": TORCH_FIDELITY_NAMES[self.name],
                "feature_layer": FEATURE_LAYERS[self.name], "weights": str(self.weights) if self.weights else None,
                "weights_sha256": self.sha256, "resize": self.input_size,
                "canonical_weights": (self.sha256 or "").startswith(INCEPTION_HASH_PREFIX)
                if self.name == "inception" else None}


def resolve_extractor(name: str, inception_weights: str = "", check_hash: bool = True,
                      prior_path: str | Path = "models/prior/prior.pt") -> Extractor:
    """Find the weights of a feature space; never downloads. An unavailable space carries its how-to-fix line."""
    if name == "inception":
        path = Path(inception_weights) if inception_weights else default_inception_path()
        if not path.is_file():
            return Extractor(name, path, None, 299, unavailable=(
                f"Inception weights not found at {path}: copy torch-fidelity's {INCEPTION_FILE} (from "
                "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/ on a machine with internet) to "
                f"that path or set eval.inception_weights in params.yaml; canonical FID/KID are not computed "
                "without it"))
        digest = sha256_file(path)
        if check_hash and not digest.startswith(INCEPTION_HASH_PREFIX):
            return Extractor(name, path, digest, 299, unavailable=(
                f"{path}: sha256 {digest[:12]}... is not the canonical Inception file (expected {INCEPTION_HASH_PREFIX}"
                "...); provide the original file, or set eval.inception_check_hash: false to accept other weights"))
        return Extractor(name, path, digest, 299)
    if name == CXR_EXTRACTOR:
        path = Path(prior_path)
        if not path.is_file():
            return Extractor(name, path, None, None, unavailable=(
                f"{path}: prior checkpoint not found; run `dvc repro prior` first"))
        input_size = None
        meta = path.with_suffix(".json")
        if meta.is_file():
            try:
                input_size = int(json.loads(meta.read_text()).get("input_size") or 0) or None
            except (ValueError, TypeError, json.JSONDecodeError):
                input_size = None
        return Extractor(name, path, sha256_file(path), input_size)
    raise ValueError(f"unknown feature space {name!r}; known: inception, {CXR_EXTRACTOR}")


# --------------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------------
def extract_features(paths: list[Path], extractor: Extractor, batch_size: int = 32,
                     cuda: bool | None = None) -> np.ndarray:
    """(N, D) float32 features of PNG files through torch-fidelity's loader, extractor and batching.

    Paths are sorted first (torch-fidelity's folder order), so KID's subset draws do not depend on manifest order.
    """
    if not extractor.available:
        raise RuntimeError(extractor.unavailable)
    if not paths:
        raise ValueError("extract_features: no images")
    if extractor.name == CXR_EXTRACTOR:
        register_cxr_extractor()
    cuda = torch.cuda.is_available() if cuda is None else cuda
    layer = FEATURE_LAYERS[extractor.name]
    fe = create_feature_extractor(TORCH_FIDELITY_NAMES[extractor.name], [layer], cuda=cuda, verbose=False,
                                  feature_extractor_weights_path=str(extractor.weights))
    dataset = ImagesPathDataset(sorted(str(Path(p).resolve()) for p in paths))
    feats = get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, False)  # save_cpu_ram, quiet
    return feats[layer].numpy().astype(np.float32)


def _files_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(str(Path(x).resolve()) for x in paths):
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def cache_key(paths: list[Path], extractor: Extractor, batch_size: int) -> dict[str, Any]:
    """Everything that changes the reference features: image bytes, extractor, its weights, library versions."""
    import torch_fidelity

    return {"images_sha256": _files_digest(paths), "n": len(paths), "extractor": extractor.name,
            "weights_sha256": extractor.sha256, "torch_fidelity": torch_fidelity.__version__,
            "torch": torch.__version__.split("+")[0], "batch_size": batch_size}


def cached_features(paths: list[Path], extractor: Extractor, cache_file: Path | None, batch_size: int = 32,
                    write: bool = True) -> tuple[np.ndarray, str]:
    """Features from `cache_file` when its key matches, else extracted (and written when `write`).

    Returns (features, "hit" | "miss"). The file is an .npz with `features` and `key` (a JSON string).
    """
    key = json.dumps(cache_key(paths, extractor, batch_size), sort_keys=True)
    if cache_file is not None and Path(cache_file).is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["features"].astype(np.float32), "hit"
        except (OSError, KeyError, ValueError):
            pass
    feats = extract_features(paths, extractor, batch_size)
    if cache_file is not None and write:
        cache_file = Path(cache_file)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".tmp-{cache_file.name}")
        with open(tmp, "wb") as fh:
            np.savez(fh, features=feats, key=np.array(key))
        os.replace(tmp, cache_file)
    return feats, "miss"


# --------------------------------------------------------------------------------------------------------------------
# Metrics (torch-fidelity's own functions on the features)
# --------------------------------------------------------------------------------------------------------------------
def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    s1 = fid_features_to_statistics(torch.from_numpy(np.asarray(f1, np.float64)))  # float64 statistics
    s2 = fid_features_to_statistics(torch.from_numpy(np.asarray(f2, np.float64)))
    return float(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      rng_seed: int = 2020) -> dict[str, Any]:
    """KID mean and std over subsets; the subset size is clamped to the smaller set (torch-fidelity would raise)."""
    size = int(min(subset_size, len(f1), len(f2)))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    # float64: torch-fidelity computes the kernels in the features' dtype; float32 loses ~1e-4 of the std
    t1, t2 = torch.from_numpy(np.asarray(f1, np.float64)), torch.from_numpy(np.asarray(f2, np.float64))
    out = kid_features_to_metric(t1, t2, kid_subsets=subsets, kid_subset_size=size, rng_seed=rng_seed, verbose=False)
    return {"kid_mean": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"],
            "kid_subsets": subsets, "kid_subset_size": size}


def metrics_from_features(f_gen: np.ndarray, f_ref: np.ndarray, kid_subsets: int = 100, kid_subset_size: int = 1000,
                          rng_seed: int = 2020) -> dict[str, Any]:
    return {"fid": fid_from_features(f_gen, f_ref), **kid_from_features(f_gen, f_ref, kid_subsets, kid_subset_size,
                                                                         rng_seed), "rng_seed": rng_seed}


def fid_kid(generated: list[Path], reference: list[Path], extractor: Extractor, *, kid_subsets: int = 100,
            kid_subset_size: int = 1000, rng_seed: int = 2020, batch_size: int = 32,
            reference_cache: Path | None = None, write_cache: bool = True) -> dict[str, Any]:
    """FID and KID of `generated` vs `reference` images in one feature space; N, settings and weights recorded.

    An unavailable space returns {"status": "unavailable", "how_to_fix": ...} and no numbers.
    """
    info = {**extractor.describe(), "n_generated": len(generated), "n_reference": len(reference)}
    if not extractor.available:
        return {"status": "unavailable", "how_to_fix": extractor.unavailable, **info}
    f_ref, cache = cached_features(reference, extractor, reference_cache, batch_size, write=write_cache)
    f_gen = extract_features(generated, extractor, batch_size)
    return {"status": "ok", **metrics_from_features(f_gen, f_ref, kid_subsets, kid_subset_size, rng_seed),
            "reference_cache": cache, **info}
