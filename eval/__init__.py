"""cxrbench evaluation suite (DESIGN section 5): FID/KID, lung segmentation, YOLO lesion counts, classifiers, paired
DRR metrics. Depends on pipeline.* (data format, prior, contract, tracking) only, never on a specific method.
Stage entry points: eval/stages.py; the protocol in words: eval/README.md."""
