"""The DRR benchmark: unpaired opacity / normal chest radiographs, with paired ground truth, rendered from one real CT.

Plan. Every dataset is a list of virtual patients; each patient belongs to one (dataset, split, domain) group and
gives `images_per_patient` images, so splits are patient-disjoint and the opacity and normal training images come
from different patients. Datasets:
    drr        train / val / test x opacity / normal, PA geometry (its test split is the rsna_like set)
    ards-like  test, opacity: AP portable geometry, bilateral diffuse opacities, ICU devices
    jsrt-like  test, normal: PA geometry under another detector (film-like curve, more blur, less noise)

Per patient: one warp of the template (render.sample_patient). Per image: findings inserted into a copy of the ray
space CT (findings.py), one exposure shared with the clean twin (the same patient, pose, devices, exposure and noise
field without the findings), both projected and exposed; masks and boxes from the projections.

Randomness: a numpy Generator per patient and per image, seeded from (seed, dataset, split, domain, patient, image),
so the output does not depend on thread counts, on the order of work, or on the other groups' sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi
import torch

from pipeline.data.canonical import NIH14, OPACITY_LABELS, DataError
from pipeline.data.ct import load_template
from pipeline.data.devices import devices
from pipeline.data.findings import INSERTERS, LABELS_OF, OTHER_FINDINGS
from pipeline.data.render import (
    AP,
    PA,
    Exposure,
    Pose,
    area_downsample,
    expose,
    influence_radius,
    line_integral,
    lung_mask,
    projected_mask,
    sample_patient,
)

DATASETS = {"drr": 1, "ards-like": 2, "jsrt-like": 3, "drr-aux": 4}  # drr-aux: DRR images for a role set
# (segmenter_sources / detector_sources: drr) when the translation training set comes from an adapter
SPLITS = {"train": 1, "val": 2, "test": 3}
DOMAINS = {"opacity": 1, "normal": 2}
KINDS = {"drr": "pa", "ards-like": "ap", "jsrt-like": "film", "drr-aux": "pa"}  # geometry + detector of each dataset
OPACITY_MIN_MM = 3.0  # a ray is in the opacity mask when it crosses at least this much of an opacity finding


@dataclass(frozen=True)
class PatientSpec:
    dataset: str
    split: str
    domain: str
    index: int  # within its (dataset, split, domain) group
    n_images: int

    @property
    def patient_id(self) -> str:
        prefix = {"drr": "drr", "ards-like": "ards", "jsrt-like": "jsrt", "drr-aux": "drraux"}[self.dataset]
        return f"{prefix}-{self.split}-{self.domain[0]}{self.index:05d}"

    def entropy(self, *more: int) -> list[int]:
        return [DATASETS[self.dataset], SPLITS[self.split], DOMAINS[self.domain], self.index, *more]


@dataclass
class Settings:
    seed: int
    resolution: int
    oversample: int
    depth_samples: int
    other_finding_prob: float
    device: str = "cpu"


@dataclass
class Case:
    """One rendered image with its ground truth (all arrays at the output resolution)."""

    id: str
    patient_id: str
    dataset: str
    split: str
    domain: str
    view: str
    findings: list[str]
    image: np.ndarray  # uint8 (H, W)
    twin: np.ndarray  # uint8 (H, W): same patient, pose, exposure, noise; no findings
    lung: np.ndarray  # bool (H, W)
    opacity: np.ndarray  # bool (H, W)
    boxes: np.ndarray  # float32 (K, 5) YOLO rows: class 0, cx, cy, w, h (normalised)
    changed: np.ndarray  # bool (H, W): pixels a finding can reach (changed rays widened by the detector blur)
    lung_projection: np.ndarray  # bool (H, W): rays crossing any lung-lobe voxel (before thresholding)
    per_finding_opacity: dict[str, np.ndarray] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        names = {label for f in self.findings for label in LABELS_OF[f]}
        return np.array([1 if n in names else 0 for n in NIH14], np.int64)


def plan(counts: dict[tuple[str, str, str], int], images_per_patient: int) -> list[PatientSpec]:
    """Virtual patients for image counts per (dataset, split, domain)."""
    specs = []
    for (dataset, split, domain), n in counts.items():
        for index in range(math.ceil(n / images_per_patient)):
            specs.append(PatientSpec(dataset, split, domain, index, min(images_per_patient,
                                                                        n - index * images_per_patient)))
    return specs


def template_spacing(settings: Settings) -> float:
    """CT voxel size matched to the render pixel size at the patient (about 0.95 of the detector pitch)."""
    return PA.detector_mm / (settings.resolution * settings.oversample) * 0.95


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """YOLO rows (0, cx, cy, w, h) of the 8-connected components of `mask`, normalised to the image size."""
    labelled, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    h, w = mask.shape
    rows = []
    for sl in ndi.find_objects(labelled):
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        rows.append([0, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return np.array(rows, np.float32).reshape(-1, 5)


def clean_opacity(mask: np.ndarray) -> np.ndarray:
    """Opacity mask as a reader would outline it: a 3x3 closing joins patchy fragments, and components smaller than
    0.04% of the image (2 pixels at 64 px) are dropped, so boxes mark regions, not speckle."""
    closed = ndi.binary_closing(np.pad(mask, 1), structure=np.ones((3, 3), bool))[1:-1, 1:-1] | mask
    labelled, n = ndi.label(closed, structure=np.ones((3, 3), bool))
    if n == 0:
        return closed
    sizes = np.bincount(labelled.ravel())
    keep = sizes >= max(2, round(mask.size * 0.0004))
    keep[0] = False
    return keep[labelled]


def choose_findings(rng: np.random.Generator, dataset: str, domain: str, other_prob: float) -> list[str]:
    if domain == "normal":
        return []
    if dataset == "ards-like":
        return ["ARDS"] + (["Effusion"] if rng.random() < 0.3 else [])
    k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    names = [str(n) for n in rng.choice(OPACITY_LABELS, size=k, replace=False)]
    if rng.random() < other_prob:
        names.append(str(rng.choice(OTHER_FINDINGS)))
    return names


def render_patient(spec: PatientSpec, settings: Settings, findings: list[list[str]] | None = None) -> list[Case]:
    """All images of one virtual patient. `findings` (one list per image) overrides the random choice."""
    template = load_template(template_spacing(settings))
    kind = KINDS[spec.dataset]
    geometry = AP if kind == "ap" else PA
    rng = np.random.default_rng([settings.seed, *spec.entropy()])
    pose = Pose.sample(rng, portable=kind == "ap")
    ov, res = settings.oversample, settings.resolution
    vol = sample_patient(template, pose, geometry, res * ov, settings.depth_samples, settings.device)
    lung = lung_mask(vol, ov)
    lung_projection = area_downsample(vol.lungs.any(axis=0).astype(np.float32), ov) > 0
    cases = []
    for j in range(spec.n_images):
        irng = np.random.default_rng([settings.seed, *spec.entropy(j + 1)])
        names = findings[j] if findings is not None else choose_findings(irng, spec.dataset, spec.domain,
                                                                          settings.other_finding_prob)
        hu = vol.hu.copy()
        opacity_support = np.zeros(hu.shape, bool)
        per_finding = {}
        kept = []
        for name in names:
            for attempt in range(8):  # a finding must show: redraw one that projects to nothing at this size
                before = hu.copy()
                try:
                    support = INSERTERS[name](vol, hu, irng)
                except ValueError:  # its compartment is missing from this patient's field of view
                    support = np.zeros(hu.shape, bool)
                shown = clean_opacity(projected_mask(support, vol.step_mm, OPACITY_MIN_MM, ov))
                if shown.any():
                    break
                hu = before
            else:  # never visible at this resolution: left out (and its label with it)
                continue
            kept.append(name)
            if any(label in OPACITY_LABELS for label in LABELS_OF[name]):
                opacity_support |= support
                per_finding[name] = shown
        wanted = [n for n in names if any(label in OPACITY_LABELS for label in LABELS_OF[n])]
        if wanted and not opacity_support.any():
            raise DataError(f"params.yaml: data.resolution: {res} px is too small to show {', '.join(wanted)} "
                            f"({spec.patient_id}); use 32 or more")
        names = kept
        exposure = Exposure.sample(irng, kind)
        noise = irng.standard_normal((res, res)).astype(np.float32)
        twin_p = line_integral(vol.hu, vol.step_mm, exposure.bone_gain)
        image_p = line_integral(hu, vol.step_mm, exposure.bone_gain)
        placed = []
        if kind == "ap":
            extra, placed = devices(vol, irng)
            twin_p, image_p = twin_p + extra, image_p + extra
        image, twin = expose([image_p, twin_p], exposure, noise, ov)
        rays = (hu != vol.hu).any(axis=0)
        radius = influence_radius(exposure, ov)
        reach = ndi.binary_dilation(rays, structure=np.ones((2 * radius + 1, 2 * radius + 1), bool)) if rays.any() \
            else rays
        changed = area_downsample(reach.astype(np.float32), ov) > 0
        opacity = clean_opacity(projected_mask(opacity_support, vol.step_mm, OPACITY_MIN_MM, ov))
        cases.append(Case(
            id=f"{spec.patient_id}-{j}", patient_id=spec.patient_id, dataset=spec.dataset, split=spec.split,
            domain=spec.domain, view=geometry.name, findings=list(names), image=image, twin=twin, lung=lung,
            opacity=opacity, boxes=boxes_from_mask(opacity), changed=changed, lung_projection=lung_projection,
            per_finding_opacity=per_finding, devices=placed))
    return cases


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("params.yaml: data.device is 'cuda' but no CUDA device is available (use auto or cpu)")
    return name
