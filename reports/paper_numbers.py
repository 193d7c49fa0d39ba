"""The paper's published numbers (Tables 1-3 and the Figure 6 claim), typed in once, for side-by-side columns.

Units as printed in the paper: FID and KID raw; mIoU, mIoU delta and sensitivity in %; Table 2 scores in [0, 1].
The paper's Table 1 column groups map to our evaluation sets: MIMIC_seg -> ards_like, RSNA_seg -> rsna_like,
JSRT_seg -> jsrt_like. Its FID/KID use Inception features on the real RSNA test set; KID is printed as
"mean (std)" where the bracket is torch-fidelity's std over KID subsets (the Original row, which has no seeds,
carries one too). `None` = an empty cell (or "-") in the paper.
"""
from __future__ import annotations

# Table 1 column groups in the paper's order, with the paper's names.
SEG_SETS = ("ards_like", "rsna_like", "jsrt_like")
PAPER_SET_NAMES = {"ards_like": "MIMIC_seg (ARDS)", "rsna_like": "RSNA_seg", "jsrt_like": "JSRT_seg"}

# Table 1 rows in the paper's order: (display name, model name in params.yaml; "original" = untranslated images).
TABLE1_ROWS = (("Original CXRs", "original"), ("MUNIT", "munit"), ("UNIT", "unit"), ("CycleGAN", "cyclegan"),
               ("UVCGAN", "uvcgan"), ("DRIT++", "drit"), ("Ours", "ours"))


def _t1(fid, kid, kid_std, ards, rsna, jsrt):
    """One Table 1 row; each set is (mIoU delta, mIoU, sensitivity) in %."""
    row = {"fid": fid, "kid": kid, "kid_subset_std": kid_std}
    for name, (delta, miou, sens) in zip(SEG_SETS, (ards, rsna, jsrt)):
        row.update({f"{name}_miou_delta": delta, f"{name}_miou": miou, f"{name}_sensitivity": sens})
    return row


TABLE1 = {
    "original": _t1(81.8, 0.043, 0.0104, (None, 86.66, 91.16), (None, 73.19, 79.56), (None, 91.15, 97.55)),
    "munit": _t1(109.4, 0.073, 0.0038, (-14.59, 72.07, 86.85), (-10.61, 62.58, 77.03), (-5.55, 85.60, 95.04)),
    "unit": _t1(103.2, 0.061, 0.0016, (-11.94, 74.72, 83.88), (-5.73, 67.46, 75.92), (-4.55, 86.60, 95.15)),
    "cyclegan": _t1(208.3, 0.216, 0.0068, (-26.93, 59.73, 66.72), (-14.35, 58.84, 65.39), (-10.29, 80.86, 88.42)),
    "uvcgan": _t1(210.4, 0.225, 0.0065, (-5.14, 81.52, 86.93), (-6.53, 66.66, 72.97), (-2.11, 89.04, 95.76)),
    "drit": _t1(117.6, 0.087, 0.0041, (-10.68, 75.98, 83.52), (-6.42, 66.77, 75.88), (-2.5, 88.65, 96.18)),
    "ours": _t1(67.18, 0.01604, 0.0034, (-0.46, 86.20, 92.68), (3.39, 76.58, 85.58), (-0.07, 91.08, 97.62)),
}

# Table 2: classifier rows (display, timm architecture) and data types; scores on RSNA and MIMIC-ARDS.
CLASSIFIER_ROWS = (("ResNet50", "resnet50"), ("MobileNet", "mobilenetv3_large_100"),
                   ("EfficientNet", "efficientnet_b0"), ("DenseNet", "densenet121"))
DATA_TYPES = ("Original", "Generated", "Mask")
CLASSIFIER_TESTS = (("rsna_like", "RSNA"), ("ards", "MIMIC-ARDS"))  # (our test-set key, the paper's name)
SCORES = ("acc", "f1", "recall", "precision")


def _t2(rsna, ards):
    out = {f"rsna_like_{k}": v for k, v in zip(SCORES, rsna)}
    out.update({f"ards_{k}": v for k, v in zip(SCORES, ards or (None,) * 4)})
    return out


TABLE2 = {
    ("resnet50", "Original"): _t2((0.8483, 0.7367, 0.7799, 0.6982), (0.8467, 0.7652, 0.8742, 0.6803)),
    ("resnet50", "Generated"): _t2((0.7978, 0.8755, 0.8504, 0.9020), None),
    ("resnet50", "Mask"): _t2((0.8803, 0.9580, 0.9765, 0.9402), (0.8489, 0.8452, 0.9154, 0.7852)),
    ("mobilenetv3_large_100", "Original"): _t2((0.878, 0.8470, 0.9164, 0.7874), (0.8133, 0.6573, 0.644, 0.6712)),
    ("mobilenetv3_large_100", "Generated"): _t2((0.7961, 0.8851, 0.7953, 0.9973), None),
    ("mobilenetv3_large_100", "Mask"): _t2((0.8535, 0.9436, 0.9599, 0.9278), (0.8267, 0.7283, 0.7429, 0.7142)),
    ("efficientnet_b0", "Original"): _t2((0.9093, 0.8864, 0.9260, 0.8501), (0.7733, 0.4684, 0.4024, 0.5603)),
    ("efficientnet_b0", "Generated"): _t2((0.8174, 0.8921, 0.8320, 0.9616), None),
    ("efficientnet_b0", "Mask"): _t2((0.8635, 0.9519, 0.9592, 0.9447), (0.7933, 0.7497, 0.8002, 0.7052)),
    ("densenet121", "Original"): _t2((0.8763, 0.8642, 0.8220, 0.9110), (0.8867, 0.8071, 0.8445, 0.7728)),
    ("densenet121", "Generated"): _t2((0.7837, 0.8789, 0.7852, 0.9979), None),
    ("densenet121", "Mask"): _t2((0.8866, 0.9671, 0.9614, 0.9729), (0.8267, 0.8396, 0.9021, 0.7852)),
}

# Table 3: (model name, AASPM, FA, LCA, BAML) in the paper's row order; the full model is `ours`.
TABLE3_ROWS = (("ours_none", False, False, False, False), ("ours_aaspm", True, False, False, False),
               ("ours_fa", False, True, False, False), ("ours_aaspm_fa", True, True, False, False),
               ("ours_aaspm_fa_lca", True, True, True, False), ("ours", True, True, True, True))
TABLE3_COMPONENTS = ("aaspm", "fa", "lca", "bam")  # config switches of ours/ behind AASPM, FA, LCA, BAML
TABLE3 = {
    "ours_none": {"fid": 77.05845, "kid": 0.03214},
    "ours_aaspm": {"fid": 74.19213, "kid": 0.02471},
    "ours_fa": {"fid": 73.94616, "kid": 0.02427},
    "ours_aaspm_fa": {"fid": 70.05348, "kid": 0.01891},
    "ours_aaspm_fa_lca": {"fid": 68.73514, "kid": 0.01612},
    "ours": {"fid": 67.17715, "kid": 0.01604},
}

# Figure 6: the paper prints no numbers, only this claim (Section 5).
FIGURE6_CLAIM = ("the proposed method reduced the number of detected lung opacities after translation, "
                 "with p <= 0.05 for both the RSNA and MIMIC-CXR test sets (YOLOv5 detections, Figure 6)")
FIGURE6_SETS = ("rsna_like", "ards_like")  # the paper's panels: RSNA and MIMIC-CXR (ARDS)
