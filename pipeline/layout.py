"""Where every stage reads and writes (one layout), and building or loading a translator from params.yaml."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed, registry
from pipeline.config import Params
from pipeline.contract import Probe
from pipeline.data.canonical import EVAL_DATASETS, extra_dataset, extra_sets, load_images, load_masks, read_manifest
from pipeline.engine import safe_load, to_model_range
from pipeline.errors import CxrbenchError
from pipeline.offline import PROJECT_ROOT

# The paper's evaluation sets: name -> (dataset folder under data/, split). The DRR data stage writes all three;
# real-data adapters write folders of the same names (see pipeline/data/README.md). Layout.eval_sets() adds the
# user-named ones (data.extra_eval_sets) that the data stage wrote.
EVAL_SETS = {name: (dataset, "test") for name, dataset in EVAL_DATASETS.items()}
TRAIN_DATASET = "drr"


class Layout:
    """Where every stage reads and writes, relative to the project root."""

    def __init__(self, root: Path = PROJECT_ROOT):
        self.root = Path(root)

    data = property(lambda self: self.root / "data")
    prior_dir = property(lambda self: self.root / "models" / "prior")

    def dataset(self, name: str) -> Path:
        return self.data / name

    def eval_sets(self) -> dict[str, tuple[str, str]]:
        """Every evaluation set written under data/: the paper's three (EVAL_SETS), then the user-named ones in the
        order of data.extra_eval_sets: name -> (dataset, split)."""
        return {**EVAL_SETS, **{name: (extra_dataset(name), "test") for name in extra_sets(self.data)}}

    def checkpoints(self, model: str, seed: int) -> Path:
        return self.root / "checkpoints" / model / f"seed{seed}"

    def weights(self, model: str, seed: int) -> Path:
        return self.root / "models" / model / f"seed{seed}.pt"

    def curve(self, model: str, seed: int) -> Path:
        return self.root / "curves" / model / f"seed{seed}.csv"

    def loss_terms(self, model: str) -> Path:
        """Every seed's loss terms of one model in long format (step, seed, term, value): the DVC loss plot."""
        return self.root / "curves" / "losses" / f"{model}.csv"

    def outputs(self, model: str, seed: int) -> Path:
        return self.root / "outputs" / model / f"seed{seed}"

    def metrics(self, stage: str, name: str) -> Path:
        return self.root / "metrics" / stage / f"{name}.json"


def code_of(source: str) -> str:
    """The code of a Python source without its comments, docstrings and layout (its AST, docstrings dropped): what
    can change a result. A file that does not parse is taken as it is."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def source_hash(*paths: Path) -> str:
    """Hash of the code under `paths` (code_of: a comment or docstring is not a new model): a checkpoint of changed
    code is never resumed."""
    h = hashlib.sha256()
    for base in paths:
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(base.parent)).encode())
            h.update(code_of(f.read_text(encoding="utf-8", errors="replace")).encode())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def set_threads(params: Params) -> int:
    """A stage's torch CPU threads: train.threads, or (0) a fair share of the cores (distributed.share_threads)."""
    return distributed.share_threads(params.train.threads)


PROBE_IMAGES = 32  # per domain: enough for a stable mean mask AUROC, cheap enough to run at every log step


def load_probe(root: Path, size: int, n: int = PROBE_IMAGES) -> Probe | None:
    """The fixed validation batch of the training diagnostics: the first n validation images of each domain (by
    id), opacity images with their true opacity and lung masks when the dataset has them (the DRR benchmark does),
    resized to the training resolution. None when the dataset has no validation split."""
    ds = Layout(root).dataset(TRAIN_DATASET)
    df = read_manifest(ds)
    val = df[df["split"] == "val"].sort_values("id")
    a_rows, b_rows = val[val["domain"] == "opacity"].iloc[:n], val[val["domain"] == "normal"].iloc[:n]
    if a_rows.empty or b_rows.empty:
        return None

    def tensor(images: np.ndarray) -> torch.Tensor:
        x = to_model_range(torch.from_numpy(images)[:, None])
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def mask(column: str) -> torch.Tensor | None:
        if not (a_rows[column].fillna("").astype(str) != "").all():
            return None
        m = torch.from_numpy(load_masks(ds, a_rows, column))[:, None].float()
        return F.interpolate(m, size=(size, size), mode="nearest") > 0.5

    opacity = mask("opacity_mask")
    return Probe(tensor(load_images(ds, a_rows)), opacity, tensor(load_images(ds, b_rows)),
                 mask("lung_mask") if opacity is not None else None)


def check_buildable(params: Params, source: str = "params.yaml") -> None:
    """Every model of params.yaml is built and translates one image at data.resolution on the meta device (shapes
    only: no memory, no weights, ~0.2 s a model), so a size a network cannot take is refused by `cxrbench check` in
    one line, not by a traceback hours into a stage."""
    res = params.data.resolution
    for model in params.models:
        entry = params.models[model]
        cfg = params.method_config(model)
        if hasattr(cfg, "prior_weights"):  # ours' prior is the prior stage's output: not there before it runs
            cfg = dataclasses.replace(cfg, prior_weights="")
        where = f"{source}: models.{model} (method {entry.method}) at data.resolution {res}"
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                translator = registry.get(entry.method)(cfg, in_channels=1, image_size=res).eval()
                x = torch.zeros(1, 1, res, res)
                shapes = {tuple(translator.translate(x).image.shape), tuple(translator.translate_b2a(x).image.shape)}
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CxrbenchError(f"{where}: {str(exc).splitlines()[0]}") from None
        if shapes != {(1, 1, res, res)}:
            raise CxrbenchError(f"{where}: translates a {res} x {res} image into {sorted(shapes)[0][-2:]}; change "
                                "data.resolution")


def build_translator(params: Params, model: str):
    """A fresh translator of `model` (method config with the model's overrides) at the data resolution."""
    entry = params.models[model]
    cls = registry.get(entry.method)
    cfg = params.method_config(model)
    try:
        return cls(cfg, in_channels=1, image_size=params.data.resolution)
    except ValueError as exc:  # a size or setting the network cannot take: one line, not a traceback
        raise CxrbenchError(f"params.yaml models.{model}: {str(exc).splitlines()[0]}") from None


def load_trained(params: Params, model: str, seed: int, weights: Path | None = None, device: str = "cpu"):
    """A trained translator in eval mode, from models/<model>/seed<k>.pt (or an explicit weights file)."""
    path = Path(weights) if weights else Layout().weights(model, seed)
    if not path.exists():
        raise CxrbenchError(f"{path}: no trained weights; run `dvc repro train@{model}` first")
    t = build_translator(params, model)
    try:  # weights_only=True: a pickle payload, a corrupt or a non-torch file all end here, in one line
        state = safe_load(path, map_location=device)
    except Exception as exc:  # noqa: BLE001
        raise CxrbenchError(f"{path}: not a weights file torch.load(weights_only=True) can read "
                            f"({type(exc).__name__}); use the models/{model}/seed<k>.pt the train stage "
                            "writes") from None
    if not isinstance(state, dict):
        raise CxrbenchError(f"{path}: holds a {type(state).__name__}, not a state dict; use the models/{model}/"
                            "seed<k>.pt the train stage writes")
    try:
        missing, unexpected = t.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes (e.g. another width in methods.<method>)
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "")[:160]
        raise CxrbenchError(f"{path}: weights do not fit model {model!r} ({detail or type(exc).__name__}); check "
                            f"methods.{params.models[model].method} in params.yaml") from None
    keep = set(t.inference_modules())
    missing = [k for k in missing if k.split(".", 1)[0] in keep]
    if missing or unexpected:
        raise CxrbenchError(f"{path}: weights do not fit model {model!r} (missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]}); check methods.{params.models[model].method} in params.yaml")
    return t.to(device).eval()
