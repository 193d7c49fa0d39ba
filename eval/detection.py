"""Lesion counts before and after translation with a YOLOv5 detector (eval/README.md; paper Figure 6).

The detector (ultralytics 8.4, built from `yolov5n.yaml` / `yolov5s.yaml` without weights, or from a local .pt the
user names) is trained once on the opacity boxes of data/det-train (data.detector_sources; default the train/val
images of data/drr; train split for training, val split for validation; normal images
are background images with empty label files; every box class is mapped to 0 = "opacity"). Then it counts the boxes
it finds (confidence >= eval.det_conf) on each original and each translated image; the paired counts go to a
Wilcoxon signed-rank test (eval/stats.py) and to box plots (eval/plots.py).

Offline by construction: pipeline.offline sets YOLO_OFFLINE and friends before ultralytics is imported; here the
ultralytics settings that phone home or write tracking files (sync, mlflow, dvc, clearml, comet, raytune,
tensorboard, wandb) are switched off, the font its dataset check wants is provided locally (it would be fetched),
plots are off, runs go to a temporary folder, and the AMP self-check (which downloads a checkpoint on CUDA) is
skipped. tests/test_eval_detection.py proves it: no connection or name lookup is attempted during training.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

import pipeline  # noqa: F401  (offline switches before ultralytics is imported)
from eval.sets import EvalError

NETWORK_SETTINGS = ("sync", "mlflow", "dvc", "clearml", "comet", "raytune", "tensorboard", "wandb")
DETECTOR_FILE = "detector.pt"


def switch_off_integrations() -> None:
    """ultralytics settings: every integration that phones home or writes tracking files off (persisted in
    $YOLO_CONFIG_DIR/settings.json, which pipeline.offline keeps inside the project). Also puts a font named
    Arial.ttf there (matplotlib's DejaVuSans): the dataset check looks for it and would fetch it from GitHub."""
    import matplotlib  # lazy, like every ultralytics import here: after pipeline's offline switches, and
    from ultralytics import settings  # ultralytics takes ~3 s to import, which only the detector stages pay
    from ultralytics.utils import USER_CONFIG_DIR

    if any(settings.get(k) is not False for k in NETWORK_SETTINGS):
        settings.update({k: False for k in NETWORK_SETTINGS})
    font = Path(USER_CONFIG_DIR) / "Arial.ttf"
    if not font.exists():
        font.parent.mkdir(parents=True, exist_ok=True)
        tmp = font.with_name(".tmp-Arial.ttf")
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", tmp)
        tmp.replace(font)


@contextlib.contextmanager
def ultralytics_offline() -> Iterator[None]:
    """Integrations off (above) and the AMP self-check skipped: on CUDA it would download yolo26n.pt."""
    import ultralytics.engine.trainer as trainer_module

    switch_off_integrations()
    check_amp = trainer_module.check_amp
    trainer_module.check_amp = lambda model: True
    try:
        yield
    finally:
        trainer_module.check_amp = check_amp


def write_yolo_dataset(dataset_dir: Path, df: pd.DataFrame, work_dir: Path) -> Path:
    """images/<split>/<id>.png + labels/<split>/<id>.txt (class forced to 0) + data.yaml; returns the yaml path."""
    for split in ("train", "val"):
        rows = df[df["split"] == split]
        if rows.empty:
            raise EvalError(f"{dataset_dir / 'manifest.csv'}: no {split} images; the detector needs train and val")
        (work_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (work_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for r in rows.itertuples(index=False):
            shutil.copyfile(dataset_dir / r.image, work_dir / "images" / split / f"{r.id}.png")
            lines = []
            boxes = str(r.boxes or "") if not (isinstance(r.boxes, float) and np.isnan(r.boxes)) else ""
            if boxes:
                for line in (dataset_dir / boxes).read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 5:
                        lines.append(" ".join(["0"] + parts[1:]))
            (work_dir / "labels" / split / f"{r.id}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml_path = work_dir / "data.yaml"
    yaml_path.write_text(f"path: {work_dir}\ntrain: images/train\nval: images/val\nnames:\n  0: opacity\n")
    return yaml_path


def train_detector(dataset_dir: Path, df: pd.DataFrame, out_dir: Path, *, cfg: str = "yolov5n.yaml",
                   weights: str = "", epochs: int = 1, batch_size: int = 16, image_size: int = 64, seed: int = 0,
                   device: str = "cpu") -> dict[str, Any]:
    """Train on the manifest rows (train/val splits); writes out_dir/detector.pt and detector.json; returns the log."""
    from ultralytics import YOLO

    if image_size % 32:
        raise EvalError(f"params.yaml eval.det_image_size: {image_size} is not a multiple of 32 (YOLO stride)")
    if weights and not Path(weights).is_file():
        raise EvalError(f"params.yaml eval.detector_weights: {weights} not found (a local .pt; nothing is downloaded)")
    if not weights and not cfg.endswith(".yaml"):
        raise EvalError(f"params.yaml eval.detector_cfg: {cfg!r} must be a model yaml such as yolov5n.yaml "
                        "(a .pt name would be downloaded); put local weights in eval.detector_weights")
    if weights:
        check_weights_only(Path(weights))
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cxrbench-yolo-") as tmp:
        work = Path(tmp)
        data_yaml = write_yolo_dataset(dataset_dir, df, work / "dataset")
        with ultralytics_offline():
            model = YOLO(weights or cfg)
            model.train(data=str(data_yaml), epochs=epochs, batch=batch_size, imgsz=image_size, device=device,
                        workers=0, seed=seed, deterministic=True, project=str(work / "runs"), name="train",
                        exist_ok=True, plots=False, verbose=False, save=True, val=True)
            save_dir = Path(model.trainer.save_dir)
            best = save_dir / "weights" / "best.pt"
            src = best if best.is_file() else save_dir / "weights" / "last.pt"
            metrics = {k: float(v) for k, v in (model.trainer.metrics or {}).items()
                       if isinstance(v, (int, float, np.floating))}
        tmp_file = out_dir / f".tmp-{DETECTOR_FILE}"
        shutil.copyfile(src, tmp_file)
        tmp_file.replace(out_dir / DETECTOR_FILE)
    counts = df.groupby("split").size().to_dict()
    log = {"cfg": cfg if not weights else None, "weights": weights or None, "epochs": epochs, "batch_size": batch_size,
           "image_size": image_size, "seed": seed, "n_images": {k: int(v) for k, v in counts.items()},
           "val_metrics": metrics, "seconds": round(time.time() - t0, 1)}
    (out_dir / "detector.json").write_text(json.dumps(log, indent=2) + "\n")
    return log


def check_weights_only(path: Path) -> None:
    """Refuse a YOLO .pt that torch.load(weights_only=True) cannot read with ultralytics' allow-list of its model
    classes (a pickle payload, a corrupt file), before ultralytics unpickles it without that restriction."""
    from ultralytics.nn.tasks import torch_safe_load

    try:
        torch_safe_load(str(path), safe_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EvalError(f"{path}: not a YOLO checkpoint torch.load(weights_only=True) can read "
                        f"({type(exc).__name__}); retrain it with `dvc repro detector`") from None


def load_detector(path: Path):
    from ultralytics import YOLO

    if not Path(path).is_file():
        raise EvalError(f"{path}: detector not found; run `dvc repro detector` first")
    switch_off_integrations()
    check_weights_only(path)
    return YOLO(str(path))


def count_detections(model, paths: list[Path], *, image_size: int, conf: float, iou: float, device: str = "cpu",
                     batch_size: int = 16) -> np.ndarray:
    """Number of boxes found on each image (int array, same order as `paths`)."""
    counts = []
    for start in range(0, len(paths), batch_size):
        chunk = [str(p) for p in paths[start:start + batch_size]]
        results = model.predict(chunk, imgsz=image_size, conf=conf, iou=iou, device=device, verbose=False,
                                save=False, batch=len(chunk))
        counts += [0 if r.boxes is None else len(r.boxes) for r in results]
    return np.asarray(counts, dtype=np.int64)
