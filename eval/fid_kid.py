"""FID and KID through torch-fidelity 0.4.0, in three feature spaces (Tables 1 and 3).

- `inception`: torch-fidelity's `inception-v3-compat` (pool3, 2048-d), the standard space comparable with papers. Its
  weights come only from a local file (params `eval.inception_weights`, else torch hub's cache file
  `$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`). No download, ever: without the file the
  result is {"status": "unavailable", "how_to_fix": ...}, never a number from other weights.
- `cxr-evaluator`: the pooled features of the independent evaluator network (eval/evaluator.py): another
  architecture, split and seed than the prior, never seen by any method. The headline space where Inception is
  unavailable.
- `cxr-densenet`: the prior's pooled 1024-d DenseNet-121 features (ReLU + global average pool after norm5). A
  DIAGNOSTIC only: ours' FA/LCA losses train against this very network, so it favours ours by construction.

Uncertainty. KID subsets are half the smaller set (never the whole set: then all subsets are identical and the std
is 0). Every FID/KID carries a 95 % interval from a bootstrap over images (both sets resampled; seeds resampled too
when there are several), reported with the basic (reverse-percentile) method because resampling with replacement
shifts FID/KID in one direction. FIDs are only compared at equal N (all rows of a table share the same test sets).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

import pipeline  # noqa: F401  (offline switches before torch-fidelity is imported)
from eval.evaluator import load_evaluator
from eval.sets import read_pngs
from pipeline.io import atomic_write
from pipeline.prior import load_prior

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HASH_PREFIX = "6726825d"  # torch.hub convention: the file name carries the first 8 hex of its sha256
CXR_EXTRACTOR = "cxr-densenet"  # the prior's space: diagnostic only
EVALUATOR_EXTRACTOR = "cxr-evaluator"  # the independent evaluator's space: a headline
FEATURE_LAYERS = {"inception": "2048", CXR_EXTRACTOR: "1024", EVALUATOR_EXTRACTOR: "pooled"}
TORCH_FIDELITY_NAMES = {"inception": "inception-v3-compat", CXR_EXTRACTOR: CXR_EXTRACTOR,
                        EVALUATOR_EXTRACTOR: EVALUATOR_EXTRACTOR}
DIAGNOSTIC_SPACES = (CXR_EXTRACTOR,)  # spaces a method trains against: shown, labelled, never ranked


# --------------------------------------------------------------------------------------------------------------------
# Our two feature extractors (torch-fidelity interface): a network of ours on channel 0 mapped to [-1, 1]
# --------------------------------------------------------------------------------------------------------------------
class _CxrExtractor(FeatureExtractorBase):
    """uint8 (B, 3, H, W) -> ((B, D) float32,): `self.net.pooled` of channel 0 (PIL replicated the gray channel)
    mapped to [-1, 1] like every model here. torch-fidelity passes `feature_extractor_weights_path` (the network's
    checkpoint) to the constructor; subclasses load it in `load`."""

    LAYER = ""
    WHAT = ""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if not feature_extractor_weights_path:
            raise ValueError(f"{name} needs feature_extractor_weights_path = the {self.WHAT} checkpoint")
        self.net = self.load(str(feature_extractor_weights_path))  # frozen, eval mode

    @classmethod
    def get_provided_features_list(cls):
        return (cls.LAYER,)

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        return cls.LAYER

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects uint8 Bx3xHxW, got {x.dtype} {tuple(x.shape)}")
        return (self.net.pooled(x[:, :1].float().div(127.5).sub(1.0)).float(),)


class FeatureExtractorCxrDenseNet(_CxrExtractor):
    """The prior's pooled 1024-d DenseNet-121 features; the prior resizes to its own input size (256 px gives the
    paper's 1024x8x8 map). Diagnostic only: ours trains against this network."""

    LAYER, WHAT = "1024", "prior"

    @staticmethod
    def load(path: str):
        return load_prior(path, device="cpu").requires_grad_(False).eval()


class FeatureExtractorCxrEvaluator(_CxrExtractor):
    """The independent evaluator's pooled features (eval/evaluator.py): the headline space without Inception."""

    LAYER, WHAT = "pooled", "evaluator"

    @staticmethod
    def load(path: str):
        return load_evaluator(path, device="cpu")


_EXTRACTOR_CLASSES = {CXR_EXTRACTOR: FeatureExtractorCxrDenseNet, EVALUATOR_EXTRACTOR: FeatureExtractorCxrEvaluator}


def register_cxr_extractor(name: str = CXR_EXTRACTOR) -> str:
    """Register one of our extractors with torch-fidelity once per process (a second registration would raise)."""
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _EXTRACTOR_CLASSES[name])
    return name


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
                      prior_path: str | Path = "models/prior/prior.pt",
                      evaluator_path: str | Path = "models/evaluator/evaluator.pt") -> Extractor:
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
    if name == EVALUATOR_EXTRACTOR:
        path = Path(evaluator_path)
        if not path.is_file():
            return Extractor(name, path, None, None, unavailable=(
                f"{path}: evaluator checkpoint not found; run `dvc repro evaluator` first"))
        return Extractor(name, path, sha256_file(path), None)
    raise ValueError(f"unknown feature space {name!r}; known: inception, {EVALUATOR_EXTRACTOR}, {CXR_EXTRACTOR}")


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
    if extractor.name in _EXTRACTOR_CLASSES:
        register_cxr_extractor(extractor.name)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    layer = FEATURE_LAYERS[extractor.name]
    fe = create_feature_extractor(TORCH_FIDELITY_NAMES[extractor.name], [layer], cuda=cuda, verbose=False,
                                  feature_extractor_weights_path=str(extractor.weights))
    dataset = ImagesPathDataset(sorted(str(Path(p).resolve()) for p in paths))
    try:
        feats = get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, False)  # save_cpu_ram, quiet
    except (OSError, SyntaxError, ValueError):  # torch-fidelity's loader does not say which file: find it
        for path in paths:
            read_pngs([Path(path)])  # raises EvalError naming the missing / truncated file and the fix
        raise
    return feats[layer].numpy().astype(np.float32)


def _files_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(str(Path(x).resolve()) for x in paths):
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def cache_key(paths: list[Path], extractor: Extractor, batch_size: int) -> dict[str, Any]:
    """Everything that changes the reference features: image bytes, extractor, its weights, library versions."""
    import torch_fidelity  # lazy: only the Inception space and the cache key need it (start-up ~1 s)

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
        atomic_write(cache_file, lambda fh: np.savez(fh, features=feats, key=np.array(key)))
    return feats, "miss"


# --------------------------------------------------------------------------------------------------------------------
# Metrics (torch-fidelity's own functions on the features)
# --------------------------------------------------------------------------------------------------------------------
def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID with torch-fidelity's own statistics and Frechet distance (float64)."""
    s1 = fid_features_to_statistics(torch.from_numpy(np.asarray(f1, np.float64)))  # float64 statistics
    s2 = fid_features_to_statistics(torch.from_numpy(np.asarray(f2, np.float64)))
    return float(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])


def fid_fast(f1: np.ndarray, f2: np.ndarray) -> float:
    """The same FID through an N x N SVD instead of a D x D matrix square root (for the bootstrap).

    With centred feature matrices A1 (n1 x D), A2 (n2 x D) and S_i = A_i^T A_i / (n_i - 1), the non-zero eigenvalues
    of S1 S2 are the squared singular values of M = A1 A2^T / sqrt((n1 - 1)(n2 - 1)), so
    tr sqrt(S1 S2) = sum of the singular values of M (the nuclear norm) and
    FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 ||M||_*. Tested equal to fid_from_features.
    """
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    a1, a2 = a - mu1, b - mu2
    n1, n2 = len(a), len(b)
    tr1 = float((a1 * a1).sum()) / (n1 - 1)
    tr2 = float((a2 * a2).sum()) / (n2 - 1)
    m = (a1 @ a2.T) / np.sqrt((n1 - 1) * (n2 - 1))
    nuc = float(np.linalg.svd(m, compute_uv=False).sum())
    return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2.0 * nuc)


def kid_subset_size(requested: int, n1: int, n2: int) -> int:
    """KID subset size: the requested one, but at most half the smaller set so that subsets differ (a subset as large
    as the set makes every subset the whole set and the KID std 0)."""
    return int(max(2, min(requested, min(n1, n2) // 2)))


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      rng_seed: int = 2020) -> dict[str, Any]:
    """KID mean and std over subsets (torch-fidelity's own estimator); subset size from `kid_subset_size`."""
    if min(len(f1), len(f2)) < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    size = kid_subset_size(subset_size, len(f1), len(f2))
    # float64: torch-fidelity computes the kernels in the features' dtype; float32 loses ~1e-4 of the std
    t1, t2 = torch.from_numpy(np.asarray(f1, np.float64)), torch.from_numpy(np.asarray(f2, np.float64))
    out = kid_features_to_metric(t1, t2, kid_subsets=subsets, kid_subset_size=size, rng_seed=rng_seed, verbose=False)
    whole = size >= min(len(f1), len(f2))  # fewer than 4 images: every subset is a whole set, the std means nothing
    return {"kid_mean": out["kernel_inception_distance_mean"],
            "kid_std": None if whole else out["kernel_inception_distance_std"],
            "kid_subsets": subsets, "kid_subset_size": size,
            **({"kid_std_note": "not available: the smaller set has fewer than 4 images"} if whole else {})}


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel matrices (diagonals of Kxx, Kyy left out): KID on the whole sets."""
    m, n = len(kxx), len(kyy)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def _groups(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k disjoint random groups of the indices 0..n-1 (sizes differ by at most one)."""
    return [g for g in np.array_split(rng.permutation(n), min(n, k)) if len(g)]


def _jackknife_var(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    g = len(v)
    return float((g - 1) / g * ((v - v.mean()) ** 2).sum()) if g > 1 else 0.0


def fid_kid_interval(gens: list[np.ndarray], ref: np.ndarray, groups: int = 50, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """95 % intervals of FID and KID (whole-set unbiased MMD^2) at this N, by a grouped jackknife over images.

    FID and KID are smooth functions of the two image sets; the delete-a-group jackknife (each set cut into `groups`
    random groups, one group left out at a time, the two sets in turn) estimates the standard error of the value at
    this N from the images themselves: SE^2 = var_jack(generated) + var_jack(reference). With several seeds (`gens`
    has one feature matrix per seed, same images in the same order) the point is the mean over seeds and
    SE^2 = mean over seeds of the image SE^2 (the test images are shared by the seeds) + var over seeds / S.
    Interval: point +- z SE (normal). A bootstrap with replacement is not used: duplicated images shrink the
    effective N and shift FID far more than its spread at N = 200. FID has an N-dependent bias, so the interval is
    for FID at this N: compare rows only at equal N.
    """
    gens = [np.asarray(g, np.float64) for g in gens]
    ref = np.asarray(ref, np.float64)
    s, n, m = len(gens), len(gens[0]), len(ref)
    if min(n, m) < 4:  # leaving a group out must keep at least 2 images per set
        return {"fid": {"mean": float(np.mean([fid_fast(g, ref) for g in gens])), "lo": None, "hi": None},
                "kid": {"mean": None, "lo": None, "hi": None}, "n_generated": n, "n_reference": m, "seeds": s,
                "method": "not available: fewer than 4 images in a set"}
    rng = np.random.default_rng(seed)
    g_groups, r_groups = _groups(n, groups, rng), _groups(m, groups, rng)
    kyy = _poly_kernel(ref, ref)
    fids, kids, fid_vars, kid_vars = [], [], [], []
    for g in gens:
        kxx, kxy = _poly_kernel(g, g), _poly_kernel(g, ref)
        fids.append(fid_fast(g, ref))
        kids.append(mmd2_unbiased(kxx, kyy, kxy))
        f_v, k_v = 0.0, 0.0
        for side, parts, size in (("gen", g_groups, n), ("ref", r_groups, m)):
            f_loo, k_loo = [], []
            for part in parts:
                keep = np.setdiff1d(np.arange(size), part)
                if side == "gen":
                    f_loo.append(fid_fast(g[keep], ref))
                    k_loo.append(mmd2_unbiased(kxx[np.ix_(keep, keep)], kyy, kxy[keep]))
                else:
                    f_loo.append(fid_fast(g, ref[keep]))
                    k_loo.append(mmd2_unbiased(kxx, kyy[np.ix_(keep, keep)], kxy[:, keep]))
            f_v += _jackknife_var(f_loo)
            k_v += _jackknife_var(k_loo)
        fid_vars.append(f_v)
        kid_vars.append(k_v)
    z = float(norm.ppf(0.5 + level / 2))
    out: dict[str, Any] = {"groups": len(g_groups), "level": level, "n_generated": n, "n_reference": m, "seeds": s,
                           "method": "grouped jackknife over the images of both sets (normal interval)"
                                     + (" + spread over seeds" if s > 1 else "")
                                     + "; KID here = unbiased MMD^2 on the whole sets"}
    for key, points, variances in (("fid", fids, fid_vars), ("kid", kids, kid_vars)):
        point = float(np.mean(points))
        var = float(np.mean(variances)) + (float(np.var(points, ddof=1)) / s if s > 1 else 0.0)
        se = var ** 0.5
        out[key] = {"mean": point, "lo": point - z * se, "hi": point + z * se, "se": se}
    return out


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
