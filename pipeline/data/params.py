"""The `data` section of params.yaml (owned by the data package).

Defaults are the paper profile's values (512 px). The cpu / ci / gpu-quick profiles override the sizes (see the report
of the data package and pipeline/data/README.md for the proposed per-profile values).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pipeline.schema import ConfigError, param


SOURCES_WITH_DIRS = ("rsna", "mimic", "jsrt", "montgomery", "shenzhen", "folder")
PAPER_EVAL_SETS = ("rsna_like", "ards_like", "jsrt_like")
RESERVED_SET_NAMES = (*PAPER_EVAL_SETS, "train", "ards")  # "ards": the Table 2 test-set key


@dataclass
class ExtraEvalSet:
    """A user-named evaluation set beyond the paper's three: every image of one folder, written as data/extra/<name>
    and scored like jsrt_like / ards_like (segmentation, lesion counts, translations)."""

    source: Literal["rsna", "mimic", "jsrt", "montgomery", "shenzhen", "folder"] = param(
        doc="the adapter that reads the folder (its layout: pipeline/data/README.md)")
    dir: str = param(doc="the folder; the adapter's other keys (scr_dir, tb_domain, rsna_lung_masks, mimic_views, "
                         "...) come from data.*")
    description: str = param("", doc="one line for the report")


@dataclass
class DataParams:
    source: Literal["drr", "rsna", "mimic", "jsrt", "montgomery", "shenzhen", "folder"] = param(
        "drr", doc="where the training data (data/drr) comes from; drr = the embedded benchmark rendered from a real "
                   "CT, otherwise the adapter of that dataset (its folder in the matching *_dir key)")
    resolution: int = param(512, min=16, max=2048, doc="image side in pixels of every written dataset")
    seed: int = param(0, min=0, doc="seed of the DRR benchmark generator and of adapter splits")

    # --- DRR benchmark sizes (images) ---
    train_opacity: int = param(2000, min=1, source="assumed", doc="DRR training images with opacities (domain A)")
    train_normal: int = param(2000, min=1, source="assumed", doc="DRR training images without findings (domain B)")
    val_opacity: int = param(200, min=0, source="assumed", doc="DRR validation images with opacities")
    val_normal: int = param(200, min=0, source="assumed", doc="DRR validation normal images")
    test_opacity: int = param(500, min=1, source="assumed", doc="DRR test images with opacities (rsna_like set)")
    test_normal: int = param(500, min=1, source="assumed", doc="DRR test normal images (rsna_like set)")
    ards: int = param(100, min=1, source="assumed", doc="ards-like images (AP portable, bilateral opacities, devices)")
    jsrt: int = param(247, min=1, source="assumed", doc="jsrt-like normal images (other detector); JSRT has 247")
    images_per_patient: int = param(3, min=1, max=50, source="assumed",
                                    doc="images rendered per virtual patient (one warp each): different findings and "
                                        "exposures of the same anatomy, always in one split")
    other_finding_prob: float = param(0.4, min=0.0, max=1.0, source="assumed",
                                      doc="probability that an opacity image also has one non-opacity finding "
                                          "(Cardiomegaly, Nodule, Mass, Pneumothorax, Emphysema)")
    oversample: int = param(1, min=1, max=4, source="assumed",
                            doc="render at resolution*oversample, then bin pixels (anti-aliasing of small sizes)")
    depth_samples: int = param(160, min=16, max=512, source="assumed",
                               doc="samples along each ray (the ray-sum's depth resolution)")
    device: Literal["auto", "cpu", "cuda"] = param("auto", doc="where the warps run (auto = cuda if available)")
    threads: int = param(0, min=0, max=256, doc="torch CPU threads per rendering process (0 = torch default in "
                                                "one process, 1 per worker)")
    workers: int = param(0, min=0, max=256, doc="rendering processes (0 = one per CPU core; 1 = in-process); the "
                                                "output does not depend on it")
    sheet_resolution: int = param(256, min=32, max=1024, source="assumed",
                                  doc="pixel side of the examples rendered for reports/figures/data_samples.png")

    # --- real-data adapters (see pipeline/data/README.md for each folder layout) ---
    rsna_dir: str = param("", doc="RSNA Pneumonia Detection Challenge folder (stage_2_train_images/, CSVs)")
    rsna_not_normal: Literal["exclude", "normal", "opacity"] = param(
        "exclude", doc="RSNA class 'No Lung Opacity / Not Normal': left out (paper), or counted in a domain")
    rsna_lung_masks: str = param("", doc="optional folder of lung masks <patientId>.png for RSNA images (the "
                                         "test images' masks let the rsna_like segmentation rows be computed)")
    mimic_dir: str = param("", doc="MIMIC-CXR-JPG folder (files/, mimic-cxr-2.0.0-{metadata,chexpert,split}.csv)")
    mimic_views: list[str] = param(default_factory=lambda: ["PA", "AP"], doc="ViewPosition values kept")
    mimic_uncertain: Literal["negative", "positive", "exclude"] = param(
        "negative", source="assumed", doc="CheXpert label -1 (uncertain): U-zeros, U-ones, or drop the image")
    mimic_blank: Literal["negative", "exclude"] = param(
        "negative", source="assumed", doc="CheXpert blank (not mentioned): negative, or drop the image")
    mimic_ards_studies: str = param("", doc="CSV with a study_id (or dicom_id) column: the ARDS evaluation images "
                                            "(written as data/ards-like); empty = render the DRR ards-like set")
    mimic_ards_masks: str = param("", doc="folder of lung masks <dicom_id>.png for the ARDS images")
    jsrt_dir: str = param("", doc="JSRT folder of *.IMG (2048x2048 12-bit big-endian); all are opacity-free "
                                         "(normal domain), JPCLN* labelled Nodule from the file name")
    scr_dir: str = param("", doc="SCR masks folder (masks/left lung/*.gif, masks/right lung/*.gif)")
    jsrt_as_eval: bool = param(True, doc="when jsrt_dir is set, write JSRT (normals) as data/jsrt-like instead of "
                                         "the rendered one")
    montgomery_dir: str = param("", doc="Montgomery County set (CXR_png/, ManualMask/leftMask, rightMask)")
    shenzhen_dir: str = param("", doc="Shenzhen set (CXR_png/, mask/ with *_mask.png)")
    tb_domain: Literal["opacity", "exclude"] = param(
        "opacity", source="assumed", doc="Montgomery/Shenzhen tuberculosis images (file name ending _1)")
    folder_dir: str = param("", doc="plain folder: images/, masks/ (lung), opacity_masks/ (optional), labels.csv")
    # --- roles: which source trains what (the translation training set is `source`; see pipeline/data/README.md) ---
    segmenter_sources: list[str] = param(
        default_factory=lambda: ["train"], choices=("train", "drr", "jsrt", "montgomery", "shenzhen", "folder"),
        doc="lung-mask sets the segmenters train on, written together as data/seg-train: train = the normal images "
            "of the translation training set (data/drr) with their lung masks; drr = the same when source is drr; "
            "jsrt (needs scr_dir), montgomery, shenzhen, folder = every image of that set with a lung mask (a "
            "patient split by seed: its test split measures the segmenters' competence)")
    detector_sources: list[str] = param(
        default_factory=lambda: ["train"], choices=("train", "drr", "rsna", "folder"),
        doc="box sets the YOLO lesion detector trains on, written together as data/det-train: train = the "
            "train/val images of the translation training set (needs boxes: drr, rsna, folder with opacity masks); "
            "rsna, folder = that set's train/val images")
    extra_eval_sets: dict[str, ExtraEvalSet] = param(
        default_factory=dict,
        doc="user-named evaluation sets beyond rsna_like / ards_like / jsrt_like: name -> {source, dir, description}; "
            "each is written as data/extra/<name> (all its images in the test split), translated by every model, "
            "checked for lung masks and leakage by `cxrbench check`, and scored by segmentation and lesion counts "
            "(switch one off with 'segment:<name>' in eval.switched_off)")
    drop_eval_patients: bool = param(
        False, doc="drop from every training set (translation, segmenters, detector) the patients that are in an "
                   "evaluation set (ards_like, jsrt_like); false = such an overlap is an error of `cxrbench check`")
    val_fraction: float = param(0.1, min=0.0, max=0.5, doc="patient fraction for val where a source has no split")
    test_fraction: float = param(0.2, min=0.0, max=0.8, doc="patient fraction for test where a source has no split")
    lung_area_min: float = param(0.02, min=0.0, max=1.0, source="assumed",
                                 doc="a lung mask covering less of its image is refused (empty / speck / wrong file)")
    lung_area_max: float = param(0.95, min=0.0, max=1.0, source="assumed",
                                 doc="a lung mask covering more of its image is refused (inverted / all white)")
    max_images: int = param(0, min=0, doc="adapters: keep at most this many images per domain (0 = all)")

    def validate(self, where: str) -> None:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"{where}.test_fraction: val_fraction + test_fraction must be < 1, got "
                              f"{self.val_fraction + self.test_fraction}")
        needed = {"rsna": "rsna_dir", "mimic": "mimic_dir", "jsrt": "jsrt_dir", "montgomery": "montgomery_dir",
                  "shenzhen": "shenzhen_dir", "folder": "folder_dir"}
        if self.source in needed and not getattr(self, needed[self.source]):
            raise ConfigError(f"{where}.{needed[self.source]}: must name the {self.source} folder when "
                              f"data.source is {self.source!r} (see pipeline/data/README.md)")
        for key in ("segmenter_sources", "detector_sources"):
            for name in getattr(self, key):
                if name in needed and not getattr(self, needed[name]):
                    raise ConfigError(f"{where}.{needed[name]}: must name the {name} folder when data.{key} lists "
                                      f"{name!r} (see pipeline/data/README.md)")
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise ConfigError(f"{where}.{key}: lists a source twice; name each once")
            if not getattr(self, key):
                raise ConfigError(f"{where}.{key}: empty; name at least one source (default: [train])")
        for name, entry in self.extra_eval_sets.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ConfigError(f"{where}.extra_eval_sets.{name}: set names are lower-case letters, digits and '_', "
                                  "starting with a letter")
            if name in RESERVED_SET_NAMES:
                raise ConfigError(f"{where}.extra_eval_sets.{name}: {name!r} is taken (reserved: "
                                  f"{', '.join(RESERVED_SET_NAMES)}); choose another name")
            if not entry.dir:
                raise ConfigError(f"{where}.extra_eval_sets.{name}.dir: empty; name the {entry.source} folder")
        if self.mimic_ards_studies and not self.mimic_dir:
            raise ConfigError(f"{where}.mimic_dir: must name the MIMIC-CXR-JPG folder when mimic_ards_studies is set")

    def for_extra_set(self, name: str) -> "DataParams":
        """These params with the folder of extra evaluation set `name` in place of its source's *_dir key: what the
        source's adapter reads."""
        entry = self.extra_eval_sets[name]
        return dataclasses.replace(self, **{f"{entry.source}_dir": entry.dir})
