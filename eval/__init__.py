"""cxrbench evaluation suite: FID/KID, lung segmentation, YOLO lesion counts, classifiers, paired
DRR metrics. Depends on pipeline.* (data format, prior, contract, tracking) only, never on a specific method.
Stage entry points: pipeline/app/evaluate.py (the app layer); the protocol in words: eval/README.md."""
