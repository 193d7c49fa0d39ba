"""The `eval` section of params.yaml (owned by the evaluation suite in eval/).

Defaults are the `paper` profile's values. The paper does not state how its segmenters, detector and classifiers
were trained ("fine-tuned CXR lung segmentation models", "YOLOv5", "classifiers with different backbones"): those
values are `assumed` (common settings for each model family), the reason next to each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.schema import param


@dataclass
class EvalParams:
    # --- general --------------------------------------------------------------------------------------------------
    max_images: int = param(0, min=0, doc="cap on images per domain of each evaluation set, first by id (0 = all)")
    device: Literal["auto", "cpu", "cuda"] = param("auto", doc="device of every evaluator (auto = CUDA if visible)")
    batch_size: int = param(32, min=1, doc="inference batch size of the evaluators")
    seed: int = param(0, min=0, doc="seed of the evaluation models' training (segmenters, detector, classifiers)")
    switched_off: list[str] = param(
        default_factory=list,
        doc="evaluations not run because the data cannot support them (segment:<set> = no lung masks for that set: "
            "rsna_like, ards_like, jsrt_like or a name of data.extra_eval_sets; "
            "lesions = no boxes to train the detector on); the report says 'not evaluated' and why instead of a "
            "number. `cxrbench check` names the entry to add when an evaluation lacks its inputs")

    # --- FID / KID (eval/README.md) -----------------------------------------------------------------------------------
    fid_extractors: list[str] = param(default_factory=lambda: ["inception", "cxr-evaluator", "cxr-densenet"],
                                      choices=("inception", "cxr-evaluator", "cxr-densenet"),
                                      doc="feature spaces: inception (needs the weights file), cxr-evaluator (the "
                                          "independent evaluator: headline), cxr-densenet (the prior that ours "
                                          "trains against: diagnostic, never ranked)")
    inception_weights: str = param("", doc="torch-fidelity Inception weights file; empty = $TORCH_HOME/hub/checkpoints/"
                                           "weights-inception-2015-12-05-6726825d.pth; never downloaded")
    inception_check_hash: bool = param(True, doc="accept only the canonical file (sha256 starts with 6726825d); "
                                                 "anything else is reported as unavailable")
    prior_path: str = param("models/prior/prior.pt", doc="the prior whose pooled features make the cxr-densenet FID")
    kid_subsets: int = param(100, min=1, source="official", doc="KID subsets (torch-fidelity default)")
    kid_subset_size: int = param(1000, min=2, source="official",
                                 doc="KID subset size (torch-fidelity default), at most half the smaller set so that "
                                     "the subsets differ and their std means something")
    fid_groups: int = param(50, min=2, doc="groups of the jackknife that gives FID/KID their 95 % interval")
    n_boot: int = param(2000, min=100, doc="bootstrap replicates of every per-image 95 % interval")

    # --- the independent evaluator network (the cxr-evaluator FID/KID space; eval/evaluator.py) -------------------
    evaluator_path: str = param("models/evaluator/evaluator.pt", doc="checkpoint written by the evaluator stage")
    evaluator_arch: str = param("resnet18", doc="timm architecture of the evaluator (must differ from the prior's "
                                                "DenseNet-121)")
    evaluator_input_size: int = param(128, min=32, doc="evaluator input size (images are resized to it)")
    evaluator_split: Literal["val", "train"] = param(
        "val", doc="training split of the evaluator: val = held-out patients no method or prior trains on")
    evaluator_iterations: int = param(3000, min=1, source="assumed")
    evaluator_batch_size: int = param(32, min=1, source="assumed")
    evaluator_lr: float = param(1e-3, min=0.0, source="assumed", doc="AdamW learning rate, cosine decay to 0")
    evaluator_seed: int = param(1, min=0, doc="seed of the evaluator (distinct from the prior's)")

    # --- floor and ceiling rows (translators that need no training) ------------------------------------------------
    references: list[str] = param(default_factory=lambda: ["identity", "blur", "oracle"],
                                  choices=("identity", "blur", "oracle"),
                                  doc="reference rows of every table: identity (do nothing: the floor), blur (a "
                                      "fixed Gaussian: below the floor), oracle (the clean twin: the ceiling, DRR "
                                      "sets only)")
    blur_sigma: float = param(1.5, min=0.0, doc="Gaussian sigma of the blur row, in pixels at 64 px (scaled with "
                                                "the resolution)")

    # --- competence floors: a metric from an evaluator below its floor is not ranked --------------------------------
    floor_segmenter_miou: float = param(0.85, min=0.0, max=1.0, doc="segmenters: mIoU on clean normal test images")
    floor_detector_map50: float = param(0.3, min=0.0, max=1.0, doc="detector: mAP50 on opacity validation images")
    floor_evaluator_auroc: float = param(0.8, min=0.0, max=1.0, doc="evaluator: mean per-label test AUROC")
    floor_prior_auroc: float = param(0.8, min=0.0, max=1.0, doc="prior: mean per-label test AUROC")
    floor_classifier_auroc: float = param(0.8, min=0.0, max=1.0,
                                          doc="Table 2 classifiers trained on Original images: test AUROC")
    fid_rng_seed: int = param(2020, min=0, source="official", doc="torch-fidelity rng_seed (KID subset sampling)")

    # --- segmentation (eval/README.md) --------------------------------------------------------------------------------
    segmenters: list[str] = param(default_factory=lambda: ["pspnet", "unet", "cenet", "vgg16bn_unet"],
                                  choices=("pspnet", "unet", "cenet", "vgg16bn_unet"), doc="lung segmenters")
    seg_iterations: int = param(10_000, min=1, source="assumed", doc="training iterations of each segmenter")
    seg_batch_size: int = param(8, min=1, source="assumed")
    seg_lr: float = param(1e-3, min=0.0, source="assumed", doc="Adam learning rate (from scratch: no pretrained "
                                                                 "encoders offline), cosine decay to 0")
    seg_threshold: float = param(0.5, min=0.0, max=1.0, doc="lung probability threshold")

    # --- lesion detection (eval/README.md) ----------------------------------------------------------------------------
    detector_cfg: str = param("yolov5s.yaml", doc="ultralytics model yaml (yolov5n.yaml, yolov5s.yaml, ...) built "
                                                  "without weights")
    detector_weights: str = param("", doc="local YOLO .pt to start from instead of the yaml (never downloaded)")
    det_epochs: int = param(100, min=1, source="assumed")
    det_batch_size: int = param(16, min=1, source="assumed")
    det_image_size: int = param(0, min=0, doc="YOLO imgsz (multiple of 32); 0 = the data resolution")
    det_conf: float = param(0.25, min=0.0, max=1.0, source="official", doc="detection confidence threshold "
                                                                            "(ultralytics predict default)")
    det_iou: float = param(0.7, min=0.0, max=1.0, source="official", doc="NMS IoU (ultralytics predict default)")

    # --- classifiers (Table 2; eval/README.md) ------------------------------------------------------------------------
    classifiers: list[str] = param(
        default_factory=lambda: ["resnet50", "mobilenetv3_large_100", "efficientnet_b0", "densenet121"],
        doc="timm architectures (pretrained=False, in_chans=1, num_classes=2)")
    classify_models: list[str] = param(default_factory=lambda: ["ours"],
                                       doc="models whose translations/masks train the Generated/Mask classifiers "
                                           "(Table 2 is about the proposed method); Original is always trained")
    classifier_train_images: int = param(0, min=0, doc="cap per domain on training images translated for Table 2 "
                                                       "(read by the translate stage; 0 = all)")
    cls_iterations: int = param(5_000, min=1, source="assumed")
    cls_batch_size: int = param(16, min=1, source="assumed")
    cls_lr: float = param(1e-3, min=0.0, source="assumed", doc="AdamW learning rate, cosine decay to 0")
    cls_crop_scale: float = param(0.9, min=0.1, max=1.0, source="assumed",
                                  doc="augmentation: random square crops of side U[scale, 1] resized back + left-right "
                                      "flips; 1 = none (without it the classifiers memorise the training images)")
    ards_negatives: Literal["rsna_like", "jsrt_like"] = param(
        "rsna_like", doc="negatives of the ARDS test set (ards_like has only opacity images): the rsna_like test "
                         "normals (same detector as training) or the jsrt_like normals (another detector)")
