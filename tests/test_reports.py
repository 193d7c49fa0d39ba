"""The report stage on a synthetic project whose metric files are written by the real evaluation stages.

The fixture runs pipeline.app.evaluate (run_fidkid, run_segment, run_lesions, run_paired, run_classifiers) on a tiny
canonical project (tests/test_eval_support.py datasets, 32 px) with fake translations of 11 models x 2 seeds, so the metric
formats the report reads cannot drift from what the evaluators write. Only the expensive networks are replaced by
cheap deterministic stand-ins (features for FID, segmenters, detector, classifiers); every JSON/CSV writer, average and
statistic is the evaluators' own. Then: every table has its rows and columns, the numbers in the CSVs equal the
metric files (checked against the per-seed values with numpy, not against the averages the report reads), absent
models give "not run" rows, figures are valid PNGs, and the MLflow summary runs carry Table 1's metrics.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from pipeline.config import ModelEntry, Params, TrackingParams, TrainParams
from pipeline.data.params import DataParams
from pipeline.eval_params import EvalParams
from pipeline.offline import PROJECT_ROOT

ALL_MODELS = ("ours", "munit", "unit", "cyclegan", "uvcgan", "drit", "ours_none", "ours_aaspm", "ours_fa",
              "ours_aaspm_fa", "ours_aaspm_fa_lca", "ours_mil")
CI_MODELS = ("ours", "ours_none", "cyclegan")
SEEDS = [0, 1]
SETS = ("ards_like", "rsna_like", "jsrt_like")
# how much of the opacity each fake model removes (1 = returns the clean twin): gives every model its own numbers
QUALITY = {"ours": 0.95, "munit": 0.5, "unit": 0.6, "cyclegan": 0.2, "uvcgan": 0.7, "drit": 0.55, "ours_none": 0.4,
           "ours_aaspm": 0.6, "ours_fa": 0.65, "ours_aaspm_fa": 0.8, "ours_aaspm_fa_lca": 0.9,
           "ours_mil": 0.85}
SEGMENTER_LEVELS = {"pspnet": 100, "unet": 120, "cenet": 140, "vgg16bn_unet": 90}


# --------------------------------------------------------------------------------------------------------------------
# The synthetic project
# --------------------------------------------------------------------------------------------------------------------
def model_entries(names) -> dict[str, ModelEntry]:
    base = yaml.safe_load((PROJECT_ROOT / "pipeline" / "profiles" / "base.yaml").read_text())["models"]
    return {m: ModelEntry(method=base[m]["method"], overrides=base[m].get("overrides", {}),
                          description=base[m].get("description", "")) for m in names}


def make_params(models=ALL_MODELS, profile="paper", seeds=SEEDS, tracking=False, uri="", resolution=32,
                references=()) -> Params:
    ev = EvalParams(batch_size=8, kid_subsets=5, classify_models=["ours"], max_images=0, references=list(references),
                    n_boot=200, fid_groups=3)
    return Params(profile=profile, seeds=list(seeds), data=DataParams(resolution=resolution),
                  train=TrainParams(threads=0, iterations=40), models=model_entries(models), eval=ev,
                  tracking=TrackingParams(enabled=tracking, uri=uri, experiment="cxrbench"))


def _save(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").save(path)


def write_outputs(root: Path, model: str, seed: int, quality: float, with_masks: bool) -> None:
    """outputs/<model>/seed<k>/ as the translate stage writes it: A->B = the image moved `quality` of the way to its
    clean twin (+ noise), masks = the true opacity mask (blurred by noise), B->A of normals = a bright disc."""
    from pipeline.data.canonical import read_manifest
    from pipeline.layout import EVAL_SETS, TRAIN_DATASET

    rng = np.random.default_rng(1000 * seed + sum(map(ord, model)))
    out = root / "outputs" / model / f"seed{seed}"
    records = []
    for eval_set, (dataset, split) in list(EVAL_SETS.items()) + [("train", (TRAIN_DATASET, "train"))]:
        ds = root / "data" / dataset
        df = read_manifest(ds)
        for r in df[df["split"] == split].itertuples(index=False):
            img = np.asarray(Image.open(ds / r.image), np.float64)
            twin = np.asarray(Image.open(ds / r.twin), np.float64) if r.twin else img
            y = quality * twin + (1 - quality) * img + 3.0 * rng.standard_normal(img.shape)
            _save(out / eval_set / "a2b" / f"{r.id}.png", y)
            rec = dict(eval_set=eval_set, dataset=dataset, id=r.id, domain=r.domain, direction="a2b",
                       image=f"{eval_set}/a2b/{r.id}.png", mask="")
            if with_masks:
                m = (np.asarray(Image.open(ds / r.opacity_mask), np.float64) / 255.0 if r.opacity_mask
                     else np.zeros_like(img))
                _save(out / eval_set / "a2b_mask" / f"{r.id}.png", 255 * np.clip(0.8 * m + 0.15 * rng.random(m.shape),
                                                                                  0, 1))
                rec["mask"] = f"{eval_set}/a2b_mask/{r.id}.png"
            records.append(rec)
            if r.domain == "normal" and eval_set in ("train", "rsna_like"):
                h, w = img.shape
                yy, xx = np.mgrid[:h, :w]
                _save(out / eval_set / "b2a" / f"{r.id}.png",
                      np.where((yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 8) ** 2, 200, img))
                records.append(dict(eval_set=eval_set, dataset=dataset, id=r.id, domain=r.domain, direction="b2a",
                                    image=f"{eval_set}/b2a/{r.id}.png", mask=""))
    pd.DataFrame(records).to_csv(out / "index.csv", index=False)
    summary_path = root / "metrics" / "translate" / f"{model}.json"  # run_translate's summary format
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"model": model, "seeds": {}}
    summary["seeds"][str(seed)] = {s: sum(r["eval_set"] == s for r in records) for s in {r["eval_set"]
                                                                                         for r in records}}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary))


class FakeSegmenter:
    """Lung = dark pixels (the fixture's lungs are 50-80, background 160-190, opacity 200)."""

    def __init__(self, level: int):
        self.level = level


def fake_predict_lungs(model, images, image_size, device, batch_size=32, threshold=0.5):
    return np.asarray(images) < model.level


class FakeClassifier(torch.nn.Module):
    """Opacity score = % of bright pixels (inputs in [-1, 1]) minus an architecture offset."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        score = (x > 0.5).float().mean(dim=(1, 2, 3)) * 100 - self.offset
        return torch.stack([-score, score], dim=1)


def fake_features(paths, extractor, batch_size=32, cuda=None):
    """2-d 'features' (mean, std of the grey levels) in torch-fidelity's sorted order."""
    feats = [[a.mean() / 64, a.std() / 16] for a in
             (np.asarray(Image.open(p).convert("L"), np.float64) for p in sorted(str(Path(p).resolve())
                                                                                 for p in paths))]
    return np.asarray(feats, np.float32)


def fake_counts(model, paths, **kw):
    """'Detections' = bright opacity pixels / 12 (the fixture's opacities are discs of grey level 200)."""
    return np.array([int((np.asarray(Image.open(p).convert("L")) >= 196).sum() // 12) for p in paths])


def write_training(root: Path, model: str, seeds) -> None:
    """metrics/train/<model>.json (run_train's summary format) and curves/<model>/seed<k>.csv (the engine's LossLog)."""
    from pipeline.engine import LossLog
    from pipeline.io import write_json

    names = (("g_adv", "g_rec", "p_upper", "p_repul", "l_feature", "d_adv") if model.startswith("ours")
             else ("g_adv", "g_cycle", "g_idt", "d_adv"))
    summary = {"model": model, "method": "ours" if model.startswith("ours") else model, "iterations": 40,
               "world_size": 1, "seeds": {}}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        log = LossLog(root / "curves" / model / f"seed{seed}.csv")
        last = {}
        for step in range(4, 41, 4):
            last = {n: float((1 + i) * math.exp(-step / 30) + 0.05 * rng.random()) for i, n in enumerate(names)}
            diag = ({"diag_mask_auroc": 0.5 + step / 100, "diag_mask_iou": step / 100,
                     "diag_mask_area_opacity": 0.3, "diag_mask_area_normal": 0.3 - step / 200,
                     "diag_grad_adv": 1.0, "diag_grad_bam": 0.01 * step, "diag_grad_p_repul": 0.001}
                    if model.startswith("ours") else {})
            log.append({"step": float(step), **last, "lr_g": 1e-4, "it_per_s": 10.0, **diag})
        summary["seeds"][str(seed)] = {"final_losses": last, "steps": 40, "wall_s": 1.5 + seed, "parameters": 12345}
    write_json(root / "metrics" / "train" / f"{model}.json", summary)


def build_project(root: Path, params: Params, models=ALL_MODELS, datasets: bool = True) -> Path:
    """A project root with data/, outputs/, models/, curves/ and every metric file of the evaluation stages."""
    from test_eval_support import write_eval_datasets

    from pipeline.data import canonical

    if datasets:
        write_eval_datasets(root, size=32, n=3)
    real_read_manifest, manifests = canonical.read_manifest, {}

    def cached_read_manifest(dataset_dir, check_files=True):  # validated once: the files do not change here
        key = str(Path(dataset_dir).resolve())
        if key not in manifests:
            manifests[key] = real_read_manifest(dataset_dir, check_files)
        return manifests[key].copy()

    mp0 = pytest.MonkeyPatch()
    mp0.setattr(canonical, "read_manifest", cached_read_manifest)
    try:
        _evaluate(root, params, models)
    finally:
        mp0.undo()
    return root


def fake_networks(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Cheap deterministic stand-ins for the networks behind the evaluators (everything else is theirs)."""
    from eval import classification as cls_mod
    from eval import detection
    from eval import fid_kid as fk

    mp.setenv("TORCH_HOME", str(root / "no-torch-home"))  # no Inception weights: "unavailable"
    mp.setattr(fk, "extract_features", fake_features)
    fake_segmenter_patch(mp)
    mp.setattr(detection, "load_detector", lambda path: "fake-detector")
    mp.setattr(detection, "count_detections", fake_counts)
    offsets = {"resnet50": 1.0, "mobilenetv3_large_100": 3.0, "efficientnet_b0": 6.0, "densenet121": 12.0}
    mp.setattr(cls_mod, "train_classifier",
               lambda arch, x, y, **kw: (FakeClassifier(offsets[arch]), {"arch": arch, "n_train": len(y)}))


def _evaluate(root: Path, params: Params, models) -> None:
    from pipeline.app import evaluate as stages

    for m in models:
        for s in params.seeds:
            write_outputs(root, m, s, QUALITY[m], with_masks=m.startswith("ours"))
        write_training(root, m, params.seeds)
    (root / "models" / "prior").mkdir(parents=True)
    (root / "models" / "prior" / "prior.pt").write_bytes(b"stand-in prior: features are faked")
    (root / "models" / "evaluator").mkdir(parents=True, exist_ok=True)
    (root / "models" / "evaluator" / "evaluator.pt").write_bytes(b"stand-in evaluator: features are faked")
    for name in SEGMENTER_LEVELS:
        (root / "models" / "segmenters").mkdir(parents=True, exist_ok=True)
        (root / "models" / "segmenters" / f"{name}.pt").write_bytes(name.encode())
    write_competence(root, 0.9)
    with pytest.MonkeyPatch.context() as mp:
        fake_networks(mp, root)
        for model in ("original",) + tuple(models):
            stages.run_fidkid(params, model, root=root)
            stages.run_segment(params, model, root=root)
            stages.run_lesions(params, model, root=root)
            stages.run_paired(params, model, root=root)
        stages.run_classifiers(params, root=root)


def write_competence(root: Path, value: float) -> None:
    """The competence records the evaluator stages write (evaluator, prior, segmenters, detector), all at `value`."""
    from pipeline.io import write_json

    write_json(root / "models" / "evaluator" / "evaluator.json", {"mean_auroc": value})
    write_json(root / "models" / "prior" / "prior.json", {"mean_auroc": value, "localisation": {
        "n_images": 12, "cam": {"mean": 0.61, "lo": 0.55, "hi": 0.67, "n": 12},
        "saliency": {"mean": 0.72, "lo": 0.68, "hi": 0.76, "n": 12}, "intensity": {"mean": 0.55, "lo": None,
                                                                                  "hi": None, "n": 1}}})
    write_json(root / "models" / "segmenters" / "segmenters.json",
               {"competence": {n: {"value": value, "measure": "test"} for n in SEGMENTER_LEVELS}})
    write_json(root / "models" / "detector" / "detector.json", {"val_metrics": {"metrics/mAP50(B)": value}})


def fake_segmenter_patch(mp) -> None:
    """Figure 4 loads segmenters through eval.segmentation: the same stand-ins as the fixture."""
    from eval import segmentation as seg

    mp.setattr(seg, "load_segmenter", lambda path, device="cpu": (FakeSegmenter(SEGMENTER_LEVELS[Path(path).stem]),
                                                                  32))
    mp.setattr(seg, "predict_lungs", fake_predict_lungs)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from pipeline.app.report import build_reports

    root = build_project(tmp_path_factory.mktemp("reports"), make_params())
    with pytest.MonkeyPatch.context() as mp:
        fake_segmenter_patch(mp)
        result = build_reports(make_params(), root=root)
    return root, result


def read_csv(path: Path, source: str = "this run") -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["source"] == source]


def metric(root: Path, stage: str, name: str) -> dict:
    return json.loads((root / "metrics" / stage / f"{name}.json").read_text())


def num(s: str) -> float | None:
    return float(s) if s not in ("", None) else None


# --------------------------------------------------------------------------------------------------------------------
# Tables: rows, columns, numbers
# --------------------------------------------------------------------------------------------------------------------
def test_table1_rows_columns_and_numbers(project):
    root, result = project
    assert result["problems"] == []
    rows = read_csv(root / "reports" / "tables" / "table1.csv")
    assert [r["row"] for r in rows] == ["Original CXRs", "MUNIT", "UNIT", "CycleGAN", "UVCGAN", "DRIT++", "Ours",
                                        "Ours + L_mil, PyTorch init (variant)"]
    assert len(read_csv(root / "reports" / "tables" / "table1.csv", "paper")) == 7
    for s in SETS:
        for col in (f"{s}_miou_delta", f"{s}_miou", f"{s}_sensitivity"):
            assert col in rows[0]
    segs = list(SEGMENTER_LEVELS)
    for r in rows:
        assert r["status"] == "ok", r
        model = r["model"]
        fk = metric(root, "fidkid", model)
        key_seeds = ["original"] if model == "original" else [str(s) for s in SEEDS]
        per_seed = fk["extractors"]["cxr-densenet"]["per_seed"]
        fids = [per_seed[k]["fid"] for k in key_seeds]
        assert num(r["fid_cxr_densenet"]) == pytest.approx(np.mean(fids), rel=1e-12)
        assert num(r["kid_cxr_densenet"]) == pytest.approx(np.mean([per_seed[k]["kid_mean"] for k in key_seeds]))
        if model != "original":
            assert num(r["fid_cxr_densenet_std"]) == pytest.approx(np.std(fids, ddof=1))
        assert r["fid_inception"] == "" and r["inception_status"] == "unavailable"  # no number without weights
        sg = metric(root, "segment", model)
        for s in SETS:
            entry = sg["sets"][s]
            if model == "original":  # the four-segmenter mean of the original images, in %
                expect = 100 * np.mean([entry["segmenters"][n]["original"]["miou"] for n in segs])
                assert r[f"{s}_miou_delta"] == ""
            else:  # per seed the mean over segmenters, then the mean over seeds, recomputed here
                per = [[entry["segmenters"][n]["translated"][str(k)] for n in segs] for k in SEEDS]
                expect = 100 * np.mean([np.mean([p["miou"] for p in ps]) for ps in per])
                delta = 100 * np.mean([np.mean([p["delta_miou"] for p in ps]) for ps in per])
                assert num(r[f"{s}_miou_delta"]) == pytest.approx(delta, abs=1e-9)
                sens = 100 * np.mean([np.mean([p["sensitivity"] for p in ps]) for ps in per])
                assert num(r[f"{s}_sensitivity"]) == pytest.approx(sens, abs=1e-9)
            assert num(r[f"{s}_miou"]) == pytest.approx(expect, abs=1e-9)
            assert int(r[f"{s}_n"]) == entry["n"] == 3
    ours = rows[-1]
    md = (root / "reports" / "tables" / "table1.md").read_text()
    assert f"{num(ours['rsna_like_miou']):.2f} ± {num(ours['rsna_like_miou_std']):.2f}" in md
    assert "## This run" in md and "## Paper (published numbers)" in md and "67.18" in md
    assert "`inception`: **unavailable**" in md and "weights-inception-2015-12-05-6726825d.pth" in md
    assert "Profile `paper`" in md and "seeds [0, 1]" in md and "N = 3 translated opacity" in md
    # the fixture's better fake translators remove more opacity: segmentation and FID order follow
    by = {r["model"]: r for r in rows}
    assert num(by["ours"]["rsna_like_miou"]) > num(by["cyclegan"]["rsna_like_miou"])
    assert num(by["ours"]["rsna_like_miou_delta"]) > num(by["cyclegan"]["rsna_like_miou_delta"])


def test_table2_rows_and_numbers(project):
    root, _ = project
    rows = read_csv(root / "reports" / "tables" / "table2.csv")
    pairs = [(r["classifier"], r["data_type"]) for r in rows]
    assert pairs == [(c, d) for c in ("ResNet50", "MobileNet", "EfficientNet", "DenseNet")
                     for d in ("Original", "Generated", "Mask")]
    assert len(read_csv(root / "reports" / "tables" / "table2.csv", "paper")) == 12
    original, ours = metric(root, "classifiers", "original"), metric(root, "classifiers", "ours")
    for r in rows:
        assert r["status"] == "ok", r
        for test in ("rsna_like", "ards"):
            for sc in ("acc", "f1", "recall", "precision"):
                if r["data_type"] == "Original":
                    expect = original["results"][r["arch"]][test][sc]
                else:
                    expect = np.mean([ours["seeds"][str(k)][r["data_type"]]["results"][r["arch"]][test][sc]
                                      for k in SEEDS])
                assert num(r[f"{test}_{sc}"]) == pytest.approx(expect, abs=1e-12), (r["arch"], test, sc)
    # the paper's "-" cells stay empty in the CSV and "-" in the markdown
    paper_rows = read_csv(root / "reports" / "tables" / "table2.csv", "paper")
    gen = [r for r in paper_rows if r["data_type"] == "Generated"]
    assert all(r["ards_acc"] == "" for r in gen) and num(gen[0]["rsna_like_acc"]) == 0.7978


def test_table3_and_supplementary_tables(project):
    root, _ = project
    rows = read_csv(root / "reports" / "tables" / "table3.csv")
    assert [r["model"] for r in rows] == ["ours_none", "ours_aaspm", "ours_fa", "ours_aaspm_fa", "ours_aaspm_fa_lca",
                                          "ours", "ours_mil", "position-only map (floor)"]
    floor, variant, rows = rows[-1], rows[-2], rows[:-2]
    # a named variant of ours (not a paper row): its switches as configured, its settings in the status
    assert tuple(variant[c] for c in ("aaspm", "fa", "lca", "bam")) == ("True",) * 4
    assert variant["status"] == "named variant, not in the paper (lambda_mil=200.0, gen_init=pytorch)"
    rows.append(variant)
    # the floor row: the best image-blind map on the same images, over the whole image and the lung field
    floors = metric(root, "paired", "original")["sets"]["rsna_like"]["mask_floor"]
    assert num(floor["mask_auroc"]) == pytest.approx(floors["image"])
    assert num(floor["mask_auroc_lung"]) == pytest.approx(floors["lung_field"])
    assert floors["lung_field"] < floors["image"] and floor["fid_cxr_densenet"] == ""
    marks = [tuple(r[c] for c in ("aaspm", "fa", "lca", "bam")) for r in rows]
    assert marks[0] == ("False",) * 4 and marks[-1] == ("True",) * 4 and marks[2] == ("False", "True", "False",
                                                                                      "False")
    for r in rows:
        assert r["status"] == "ok" or r is variant, r
        per_seed = metric(root, "fidkid", r["model"])["extractors"]["cxr-densenet"]["per_seed"]
        assert num(r["fid_cxr_densenet"]) == pytest.approx(np.mean([per_seed[str(k)]["fid"] for k in SEEDS]))
        # the mechanism beside FID/KID: mask AUROC and area (opacity vs normals), residual, change outside
        sets = metric(root, "paired", r["model"])["sets"]["rsna_like"]
        opa, nor = sets["opacity"]["per_seed"], sets["normal"]["per_seed"]
        assert num(r["mask_auroc"]) == pytest.approx(np.mean([opa[str(k)]["mask_auroc"] for k in SEEDS]))
        assert num(r["mask_opacity"]) == pytest.approx(np.mean([opa[str(k)]["mean_mask"] for k in SEEDS]), abs=1e-6)
        assert num(r["mask_normal"]) == pytest.approx(np.mean([nor[str(k)]["mean_mask"] for k in SEEDS]), abs=1e-6)
        # Eq. 4's target as its own column: normals / opacity images, with the interval the paired stage computed
        area = sets["mask_area"]
        assert num(r["mask_ratio"]) == pytest.approx(num(r["mask_normal"]) / num(r["mask_opacity"]), rel=1e-4)
        assert num(r["mask_ratio_lo"]) == pytest.approx(area["normal_to_opacity"]["lo"])
        assert num(r["mask_ratio_lo"]) < num(r["mask_ratio"]) < num(r["mask_ratio_hi"])
        assert num(r["mask_normal_lo"]) == pytest.approx(area["normal"]["lo"]) and area["normal"]["seeds"] == len(SEEDS)
        assert num(r["residual_opacity_ratio"]) == pytest.approx(
            np.mean([opa[str(k)]["residual_opacity_ratio"] for k in SEEDS]))
        for k in ("opacity_excess_ratio", "anatomy_corr"):  # the residual's two parts, mean over seeds
            assert num(r[k]) == pytest.approx(np.mean([opa[str(s)][k] for s in SEEDS])), k
        loc = sets["opacity"]["localisation"]
        assert loc["seeds"] == len(SEEDS) and loc["lung_field"]["floor"]["value"] == pytest.approx(floors["lung_field"])
        assert num(r["mask_auroc_lung"]) == pytest.approx(loc["lung_field"]["mask"]["value"])
        assert r["beyond_position"] == str(loc["lung_field"]["beyond_position"])
    # the ceiling the mask AUROC column is read against: the prior's own localisation, from prior.json
    assert ("masks of 12 test images, prior seed 0, [95 % bootstrap interval over images]): CAM 0.610 [0.550, 0.670], "
            "input-gradient saliency 0.720 [0.680, 0.760], pixel intensity 0.550. L_classifier"
            in (root / "reports" / "tables" / "table3.md").read_text())
    paper_rows = read_csv(root / "reports" / "tables" / "table3.csv", "paper")
    assert [num(r["fid_inception"]) for r in paper_rows][-1] == 67.17715
    seg_rows = read_csv(root / "reports" / "tables" / "table_segmenters.csv")
    unet = [r for r in seg_rows if r["model"] == "drit" and r["segmenter_key"] == "unet"][0]
    tr = metric(root, "segment", "drit")["sets"]["jsrt_like"]["segmenters"]["unet"]["translated"]
    assert num(unet["jsrt_like_miou"]) == pytest.approx(100 * np.mean([tr[str(k)]["miou"] for k in SEEDS]))
    assert {r["model"] for r in seg_rows} == {"original", *ALL_MODELS}
    paired = read_csv(root / "reports" / "tables" / "table_paired.csv")
    p_ours = [r for r in paired if r["model"] == "ours" and r["eval_set"] == "rsna_like"][0]
    per = metric(root, "paired", "ours")["sets"]["rsna_like"]["opacity"]["per_seed"]
    assert num(p_ours["psnr"]) == pytest.approx(np.mean([per[str(k)]["after"]["psnr"] for k in SEEDS]))
    assert num(p_ours["mask_auroc"]) == pytest.approx(np.mean([per[str(k)]["mask_auroc"] for k in SEEDS]))
    assert num(p_ours["mask_auroc_lung"]) == pytest.approx(
        metric(root, "paired", "ours")["sets"]["rsna_like"]["opacity"]["localisation"]["lung_field"]["mask"]["value"])
    p_floor = [r for r in paired if r["row"] == "Position-only map (floor)" and r["eval_set"] == "rsna_like"][0]
    assert num(p_floor["mask_auroc"]) == pytest.approx(floors["image"])
    p_munit = [r for r in paired if r["model"] == "munit" and r["eval_set"] == "rsna_like"][0]
    assert p_munit["mask_auroc"] == "" and "n/a (no mask)" in (root / "reports" / "tables" /
                                                                "table_paired.md").read_text()
    lesions = read_csv(root / "reports" / "tables" / "table_lesions.csv")
    les = [r for r in lesions if r["model"] == "ours" and r["eval_set"] == "rsna_like"][0]
    counts = metric(root, "lesions", "ours")["sets"]["rsna_like"]["counts"]
    assert num(les["count_original"]) == pytest.approx(np.mean(counts["original"]))
    assert num(les["count_translated"]) == pytest.approx(np.mean([np.mean(counts["translated"][str(k)])
                                                                  for k in SEEDS]))


def test_paper_numbers_are_consistent():
    """Typing check of the published numbers: every delta = mIoU - the Original row's mIoU (rounded to 0.01)."""
    from reports import paper_numbers as paper

    orig = paper.TABLE1["original"]
    for model, row in paper.TABLE1.items():
        if model == "original":
            continue
        for s in paper.SEG_SETS:
            assert row[f"{s}_miou_delta"] == pytest.approx(row[f"{s}_miou"] - orig[f"{s}_miou"], abs=0.011), (model, s)
    assert paper.TABLE3["ours"]["fid"] == pytest.approx(paper.TABLE1["ours"]["fid"], abs=0.005)
    assert paper.TABLE3["ours"]["kid"] == paper.TABLE1["ours"]["kid"]
    assert len(paper.TABLE2) == 12 and all(len(v) == 8 for v in paper.TABLE2.values())


# --------------------------------------------------------------------------------------------------------------------
# Partial inputs
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ci_project(project, tmp_path_factory):
    """The same metric tree reported under the ci profile (ours, ours_none, cyclegan) with one file deleted, tracked
    to a temporary MLflow store: the partial-input and the MLflow tests share this one build."""
    from mlflow.tracking import MlflowClient

    from pipeline.app.report import build_reports

    tmp = tmp_path_factory.mktemp("ci")
    root = tmp / "partial"
    shutil.copytree(project[0], root, ignore=shutil.ignore_patterns("reports"))
    (root / "metrics" / "fidkid" / "cyclegan.json").unlink()  # configured but not evaluated yet
    shutil.rmtree(root / "outputs" / "cyclegan")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("cxrbench", artifact_location=(tmp / "artifacts").as_uri())  # not the project's
    params = make_params(models=CI_MODELS, profile="ci", tracking=True, uri=uri)
    with pytest.MonkeyPatch.context() as mp:
        fake_segmenter_patch(mp)
        result = build_reports(params, root=root)
    return root, result, client


def test_missing_models_and_files_give_reasons_not_numbers(ci_project):
    root, result, _ = ci_project
    assert result["problems"] == []
    rows = {r["model"]: r for r in read_csv(root / "reports" / "tables" / "table1.csv")}
    assert len(rows) == 7
    for m in ("munit", "unit", "uvcgan", "drit"):  # metric files exist, but not in this profile: not this run's
        assert rows[m]["status"] == "not run in profile ci"
        assert all(rows[m][c] == "" for c in ("fid_cxr_densenet", "rsna_like_miou", "ards_like_sensitivity"))
    assert rows["cyclegan"]["status"].startswith("missing metrics/fidkid/cyclegan.json: run `dvc repro "
                                                 "evaluate@cyclegan`")
    assert rows["cyclegan"]["fid_cxr_densenet"] == "" and rows["cyclegan"]["rsna_like_miou"] != ""
    assert rows["ours"]["status"] == "ok"
    t3 = {r["model"]: r for r in read_csv(root / "reports" / "tables" / "table3.csv")}
    assert len(t3) == 7 and t3["ours_fa"]["status"] == "not run in profile ci" and t3["ours_none"]["status"] == "ok"
    md = (root / "reports" / "tables" / "table1.md").read_text()
    assert "not run in profile ci" in md
    from reports.inputs import SMOKE_LINE  # a smoke profile says so on top, before any number

    index = (root / "reports" / "README.md").read_text().splitlines()
    assert index[2] == SMOKE_LINE and SMOKE_LINE in md
    assert "| MUNIT | — | — |" in md  # a dash, never a zero
    fig3 = np.asarray(Image.open(root / "reports" / "figures" / "figure3_qualitative.png").convert("L"))
    assert fig3.std() > 10


def test_table2_says_na_where_the_evaluator_does(project, tmp_path):
    """A Table 2 model without activation masks: the classifier stage writes "n/a" and the table keeps it (never
    zeros). The metric files come from the real stage on a copy of the data with mask-less translations."""
    from pipeline.app import evaluate as stages
    from reports import tables
    from reports.inputs import Inputs

    root = tmp_path / "nomask"
    shutil.copytree(project[0] / "data", root / "data")
    params = make_params(models=CI_MODELS, profile="ci")
    for s in params.seeds:
        write_outputs(root, "ours", s, QUALITY["ours"], with_masks=False)
    with pytest.MonkeyPatch.context() as mp:
        fake_networks(mp, root)
        stages.run_classifiers(params, root=root)
    assert metric(root, "classifiers", "ours")["avg"]["Mask"]["status"] == "n/a"
    tables.table2(Inputs(params, root)).write(root / "reports" / "tables")
    rows = read_csv(root / "reports" / "tables" / "table2.csv")
    assert len(rows) == 12
    for r in rows:
        if r["data_type"] == "Mask":
            assert r["status"] == "n/a: the model has no activation masks"
            assert all(r[f"{t}_{sc}"] == "" for t in ("rsna_like", "ards") for sc in ("acc", "f1", "recall"))
        else:
            assert r["status"] == "ok" and num(r["rsna_like_acc"]) is not None
    md = (root / "reports" / "tables" / "table2.md").read_text()
    assert "| ResNet50 | Mask | n/a | n/a |" in md


def test_empty_project_does_not_crash(tmp_path):
    from pipeline.app.report import build_reports

    result = build_reports(make_params(models=CI_MODELS, profile="ci"), root=tmp_path)
    assert result["problems"] == []
    rows = read_csv(tmp_path / "reports" / "tables" / "table1.csv")
    assert len(rows) == 7 and all(r["fid_cxr_densenet"] == "" for r in rows)
    assert rows[0]["status"].startswith("missing metrics/fidkid/original.json: run `dvc repro evaluate_original`")
    for name in ("figure3_qualitative.png", "figure4_segmentation.png", "figure5_masks.png", "figure6_lesions.png",
                 "training_curves.png", "training_mask_diagnostics.png"):
        assert Image.open(tmp_path / "reports" / "figures" / name).format == "PNG"
    assert "missing" in (tmp_path / "reports" / "README.md").read_text()


# --------------------------------------------------------------------------------------------------------------------
# Figures and index
# --------------------------------------------------------------------------------------------------------------------
def test_figures_are_nontrivial_pngs_and_indexed(project):
    root, result = project
    index = (root / "reports" / "README.md").read_text()
    for name in ("figure3_qualitative.png", "figure4_segmentation.png", "figure5_masks.png", "figure6_lesions.png",
                 "training_curves.png", "training_mask_diagnostics.png"):
        path = root / "reports" / "figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000, name
        img = Image.open(path)
        assert img.width >= 600 and img.height >= 250, (name, img.size)
        assert np.asarray(img.convert("L")).std() > 10, name  # not a blank canvas
        assert f"figures/{name}" in index
    for t in ("table1", "table2", "table3", "table_segmenters", "table_paired", "table_lesions", "training"):
        assert f"tables/{t}.md" in index and (root / "reports" / "tables" / f"{t}.csv").is_file()
    assert "127.0.0.1:5000" in index and "tags.stage = 'summary'" in index


def test_figure5_shows_the_named_variants_masks_beside_ours(project, tmp_path):
    """Figure 5: ours, then the named variants of ours with masks (not the Table 3 ablation rows), each with a mask and
    a result column; with the variant left out of the profile the figure is narrower (one model's columns)."""
    from reports.figures import figure5, figure5_models
    from reports.inputs import Inputs

    root, _ = project
    assert figure5_models(Inputs(make_params(), root)) == ["ours", "ours_mil"]
    wide = Image.open(root / "reports" / "figures" / "figure5_masks.png").size
    models = tuple(m for m in ALL_MODELS if m != "ours_mil")
    narrow_inp = Inputs(make_params(models=models), root)
    assert figure5_models(narrow_inp) == ["ours"]
    narrow = Image.open(figure5(narrow_inp, tmp_path / "figure5_masks.png")).size
    assert narrow[0] < 0.75 * wide[0] and narrow[1] == pytest.approx(wide[1], abs=40)


def test_figure_examples_are_largest_opacity_first(project):
    """Figures 3-5 show the evaluated rsna_like opacity images with the largest true opacity (deterministic)."""
    from reports.figures import examples
    from reports.inputs import Inputs

    root, _ = project
    ds, rows = examples(Inputs(make_params(), root))
    assert ds is not None and len(rows) == 3
    areas = [int((np.asarray(Image.open(ds / p)) > 127).sum()) for p in rows["opacity_mask"]]
    assert areas == sorted(areas, reverse=True)  # largest true opacity first


def test_figures_are_deterministic(project, tmp_path):
    """The same inputs give byte-identical PNGs (so an unchanged `dvc repro` leaves reports/ untouched)."""
    from reports.figures import figure5, figure6
    from reports.inputs import Inputs

    root, _ = project
    for fn, name in ((figure6, "figure6_lesions.png"), (figure5, "figure5_masks.png")):
        again = fn(Inputs(make_params(), root), tmp_path / name)
        assert again.read_bytes() == (root / "reports" / "figures" / name).read_bytes(), name


# --------------------------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------------------------
def test_mlflow_summary_runs_carry_table1_metrics(ci_project):
    root, _, client = ci_project
    exp = client.get_experiment_by_name("cxrbench")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'summary'")
    keys = sorted((r.data.tags["model"], r.data.tags["seed"]) for r in runs)
    assert keys == sorted([("original", "")] + [(m, str(s)) for m in CI_MODELS for s in SEEDS])
    run = [r for r in runs if r.data.tags["model"] == "ours" and r.data.tags["seed"] == "1"][0]
    m = run.data.metrics
    table1 = {r["model"]: r for r in read_csv(root / "reports" / "tables" / "table1.csv")}
    for col in ("fid_cxr_densenet", "kid_cxr_densenet") + tuple(f"{s}_{k}" for s in SETS
                                                                  for k in ("miou", "miou_delta", "sensitivity")):
        assert col in table1["ours"] and col in m, col  # names line up with Table 1's columns
    fk = metric(root, "fidkid", "ours")["extractors"]["cxr-densenet"]["per_seed"]["1"]
    assert m["fid_cxr_densenet"] == pytest.approx(fk["fid"]) and m["kid_cxr_densenet"] == pytest.approx(fk["kid_mean"])
    mean1 = metric(root, "segment", "ours")["sets"]["rsna_like"]["mean"]["translated"]["1"]
    assert m["rsna_like_miou"] == pytest.approx(100 * mean1["miou"])
    assert m["rsna_like_miou_delta"] == pytest.approx(100 * mean1["delta_miou"])
    assert "fid_inception" not in m  # unavailable: no number
    cyc = [r for r in runs if r.data.tags["model"] == "cyclegan" and r.data.tags["seed"] == "0"][0]
    assert "fid_cxr_densenet" not in cyc.data.metrics and "rsna_like_miou" in cyc.data.metrics  # fidkid deleted
    assert {r.data.tags["profile"] for r in runs} == {"ci"}
    # the compare page shows parameters: profile, method and its whole config (flattened), seed
    p = run.data.params
    assert p["profile"] == "ci" and p["method"] == "ours" and p["seed"] == "1" and p["cfg.lambda_bam"] == "0.1", p
    assert [r for r in runs if r.data.tags["model"] == "original"][0].data.params["method"] == "original"
    orig = [r for r in runs if r.data.tags["model"] == "original"][0].data.metrics
    assert orig["rsna_like_miou"] == pytest.approx(num(table1["original"]["rsna_like_miou"]))
    report = client.search_runs([exp.experiment_id], "tags.stage = 'report'")
    assert len(report) == 1
    arts = {a.path for a in client.list_artifacts(report[0].info.run_id, "tables")}
    assert {"tables/table1.md", "tables/table1.csv", "tables/table3.csv"} <= arts
    figs = {a.path for a in client.list_artifacts(report[0].info.run_id, "figures")}
    assert "figures/figure3_qualitative.png" in figs
    assert not (root / "mlruns").exists()


@pytest.mark.slow
def test_ui_serves_the_summary_runs_over_rest_on_loopback(ci_project, tmp_path):
    """`make ui` runs `cxrbench ui`: start it on the report's store and read the summary runs back through REST."""
    import json
    import os
    import select
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import cli_env

    from reports.inputs import Inputs
    from reports.mlflow_summary import log_summary_runs

    root, _, client = ci_project
    # the report's store, copied, then the summary logged a second time with the same inputs (a rerun)
    db = tmp_path / "copy.db"
    shutil.copy2(client.tracking_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    log_summary_runs(Inputs(make_params(models=CI_MODELS, profile="ci", tracking=True, uri=uri), root))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env({"MLFLOW_TRACKING_URI": uri, "CXRBENCH_ROOT": str(tmp_path)})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        # `cxrbench ui` says "ready" only when the server answers: the first request right after it must succeed
        lines, deadline = [], time.monotonic() + 420  # a loaded 2-core machine took 180 s to answer /health
        while not any("MLflow UI ready" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, ("cxrbench ui never said ready", lines)
            if select.select([proc.stdout], [], [], 1.0)[0]:
                lines.append(proc.stdout.readline())
        assert "starting" in lines[0] and url in lines[-1], lines
        assert urllib.request.urlopen(f"{url}/health", timeout=5).status == 200
        exp = json.loads(urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cxrbench", timeout=10).read())
        body = json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]],
                           "filter": "tags.stage = 'summary'", "max_results": 100}).encode()
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        keys = sorted((t["model"], t["seed"]) for t in tags)
        expected = sorted([("original", "")] + [(m, str(s)) for m in CI_MODELS for s in SEEDS])
        assert keys == sorted(expected * 2)  # the rerun logged a second set ...
        current = [(r, t) for r, t in zip(runs, tags) if "cxrbench.superseded_by" not in t]
        assert sorted((t["model"], t["seed"]) for _, t in current) == expected  # ... and superseded the first
        superseded = [(r, t) for r, t in zip(runs, tags) if "cxrbench.superseded_by" in t]
        assert all(r["info"]["run_name"].endswith("(superseded)") for r, _ in superseded)
        assert {t["cxrbench.superseded_by"] for _, t in superseded} == {r["info"]["run_id"] for r, _ in current}
        # every run is a child of the one pipeline run of this execution, which REST returns as such
        parents = {t["mlflow.parentRunId"] for t in tags}
        assert len(parents) == 1
        parent = json.loads(urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?run_id={parents.pop()}",
                                                   timeout=10).read())["run"]
        ptags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
        assert ptags["stage"] == "pipeline" and parent["info"]["run_name"].startswith("pipeline-ci-")
        ours, ours_tags = [(r, t) for r, t in current if t["model"] == "ours" and t["seed"] == "1"][0]
        assert {"fid_cxr_densenet", "rsna_like_miou", "wall_s"} <= {m["key"] for m in ours["data"]["metrics"]}
        p = {x["key"]: x["value"] for x in ours["data"]["params"]}
        assert p["profile"] == "ci" and p["method"] == "ours" and p["cfg.lambda_bam"] == "0.1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_floor_and_ceiling_rows_and_the_competence_gate(project, tmp_path):
    """Identity / Blur / Oracle rows come right after Original with numbers and intervals; when an evaluator falls
    below its floor its numbers are replaced by "evaluator not competent (value < floor)" and the CSV keeps them."""
    from pipeline.app import evaluate as stages
    from reports import tables
    from reports.inputs import Inputs

    root = tmp_path / "refs"
    shutil.copytree(project[0], root)
    params = make_params(references=("identity", "blur", "oracle"))
    stages.run_references(params, root=root)
    with pytest.MonkeyPatch.context() as mp:
        fake_networks(mp, root)
        for ref in ("identity", "blur", "oracle"):
            for stage in ("fidkid", "segment", "paired"):
                getattr(stages, f"run_{stage}")(params, ref, root=root)
    t1 = tables.table1(Inputs(params, root))
    t1.write(root / "reports" / "tables")
    rows = read_csv(root / "reports" / "tables" / "table1.csv")
    assert [r["model"] for r in rows[:4]] == ["original", "identity", "blur", "oracle"]
    assert all(r["status"] == "ok" and num(r["rsna_like_miou"]) is not None for r in rows[:4])
    assert num(rows[1]["rsna_like_miou_lo"]) <= num(rows[1]["rsna_like_miou"]) <= num(rows[1]["rsna_like_miou_hi"])
    paired = metric(root, "paired", "oracle")["sets"]["rsna_like"]["opacity"]
    assert paired["vs_identity"]["beats_identity"] is True and paired["avg"]["residual_opacity_after"]["mean"] == 0
    ident = metric(root, "paired", "identity")["sets"]["rsna_like"]["opacity"]
    assert ident["vs_identity"]["beats_identity"] is False
    assert any("Oracle: clean twin (ceiling) beats Identity" in n for n in t1.notes)
    write_competence(root, 0.5)  # every evaluator below its floor
    tables.table1(Inputs(params, root)).write(root / "reports" / "tables")
    md = (root / "reports" / "tables" / "table1.md").read_text()
    assert "evaluator not competent (0.50 < 0.85)" in md and "evaluator not competent (0.50 < 0.80)" in md
    assert num(read_csv(root / "reports" / "tables" / "table1.csv")[0]["rsna_like_miou"]) is not None
    comp = {r["evaluator"]: r for r in read_csv_all(tables.table_competence(Inputs(params, root)), root)}
    assert comp["evaluator"]["passed"] == "False" and comp["detector"]["value"] == "0.5"


def read_csv_all(table, root: Path) -> list[dict[str, str]]:
    table.write(root / "reports" / "tables")
    return read_csv(root / "reports" / "tables" / f"{table.name}.csv")


def test_headline_metrics_are_table1s_competent_fids(project):
    """metrics/headline.json (the one file `dvc metrics show` reads): Table 1's headline FID per row, rounded."""
    root, _ = project
    head = json.loads((root / "metrics" / "headline.json").read_text())["fid"]
    rows = {r["model"]: r for r in read_csv(root / "reports" / "tables" / "table1.csv")}
    assert set(head) == set(rows) and len(head) >= 3
    for model, value in head.items():
        cell = rows[model]["fid_cxr_evaluator"]
        assert (value is None and cell == "") or value == pytest.approx(float(cell), abs=0.051), (model, value)
    assert any(v is not None for v in head.values())


def test_index_html_is_one_self_contained_page_with_every_table_and_figure(project):
    """reports/index.html: no external resource, every table (as an HTML table) and every figure (inline PNG)."""
    root, result = project
    page = (root / "reports" / "index.html").read_text(encoding="utf8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    tables = sorted(p.stem for p in (root / "reports" / "tables").glob("*.md"))
    for name in tables:
        assert f'id="{name}"' in page, name
    assert page.count("<table") >= len(tables)
    figures = sorted(p.name for p in (root / "reports" / "figures").glob("*.png"))
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    t1 = read_csv(root / "reports" / "tables" / "table1.csv")
    assert all(r["model"] in page for r in t1 if r.get("model"))


def test_index_html_renders_in_headless_chromium(project, tmp_path):
    """The page in a real browser (Debian's chromium, headless, network off): the screenshot is not blank and the
    DOM has the tables and the images. `make test` installs chromium where it is missing (see the Makefile)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: `apt-get install chromium` (make test does this as root)"
    root, _ = project
    page = (root / "reports" / "index.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--proxy-server=127.0.0.1:9",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", "--hide-scrollbars"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html_out = dom.stdout
    assert html_out.count("<table") >= 5 and html_out.count("<img") >= 3 and "cxrbench report" in html_out
    shot = tmp_path / "page.png"
    r = subprocess.run([chromium, *flags, f"--screenshot={shot}", page], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape[1] >= 1000 and pixels.std() > 10  # text and tables drawn, not a blank page
    assert (pixels < 128).mean() > 0.01


def test_evaluate_images_scores_a_folder_made_elsewhere_exactly_like_the_same_images_made_here(project, tmp_path):
    """`cxrbench evaluate --images DIR --name NAME`: Identity's images written out as a plain folder (DIR/<set>/<id>.png,
    as another repository would) and scored from there give Identity's numbers exactly, and NAME is a row of the
    tables and the page. A folder with a file missing and one too many is refused in one line naming both."""
    from pipeline.app import evaluate as stages
    from pipeline.app import external
    from reports import tables
    from reports.inputs import Inputs

    root = tmp_path / "ext"
    shutil.copytree(project[0], root)
    params = make_params(references=("identity",))
    stages.run_references(params, root=root, names=["identity"])
    elsewhere = tmp_path / "elsewhere"
    for set_dir in sorted(p for p in (root / "outputs" / "identity" / "seed0").iterdir() if p.is_dir()):
        shutil.copytree(set_dir / "a2b", elsewhere / set_dir.name)
    evaluators = ("fidkid", "segment", "lesions", "paired")
    with pytest.MonkeyPatch.context() as mp:
        fake_networks(mp, root)
        for stage in evaluators:
            getattr(stages, f"run_{stage}")(params, "identity", root=root)
        summary = external.evaluate_folder(params, "elsewhere", elsewhere, root=root)
    assert summary["images"] == sum(len(list(p.glob("*.png"))) for p in elsewhere.iterdir()) > 0
    assert summary["resized"] == 0 and summary["converted_to_grey"] == 0

    def same(name: str, stage: str) -> str:  # the metric file with its row name taken out
        text = json.dumps(metric(root, stage, name), sort_keys=True)
        return text.replace(f'"{name}"', '"ROW"').replace(f"/{name}/", "/ROW/")

    for stage in evaluators:
        assert same("elsewhere", stage) == same("identity", stage), stage
    rows = {r["model"]: r for r in read_csv_all(tables.table1(Inputs(params, root)), root)}
    ident, ext = rows["identity"], rows["elsewhere"]
    assert ext["row"] == "elsewhere (external)" and ext["seeds"] == "external" and ext["status"] == "ok"
    assert {k: v for k, v in ext.items() if k not in ("row", "model", "seeds")} == \
        {k: v for k, v in ident.items() if k not in ("row", "model", "seeds")}
    assert "elsewhere (external)" in (root / "reports" / "index.html").read_text()

    some_set = sorted(p for p in elsewhere.iterdir())[0]
    victim = sorted(some_set.glob("*.png"))[0]
    victim.rename(some_set / "not-an-id.png")
    with pytest.raises(Exception) as err:
        external.import_folder(params, "elsewhere", elsewhere, layout=stages.Layout(root))
    msg = str(err.value)
    assert "\n" not in msg and f"1 translation(s) missing ({some_set.name}/{victim.name})" in msg
    assert f"1 unexpected file(s) ({some_set.name}/not-an-id.png)" in msg
    assert (root / "outputs" / "elsewhere" / "seed0" / "index.csv").is_file()  # the earlier import is untouched
    for name, why in (("identity", "a model or reference row"), ("ours", "a model or reference row"),
                      ("original", "starting with a letter")):
        with pytest.raises(Exception, match=why):
            external.import_folder(params, name, elsewhere, layout=stages.Layout(root))


def test_mlflow_summary_has_the_floor_rows_beside_the_methods(project, tmp_path):
    """The compare page shows Identity (the do-nothing floor) next to the methods, with the same metric names."""
    from mlflow.tracking import MlflowClient

    from pipeline.app import evaluate as stages
    from reports.inputs import Inputs
    from reports.mlflow_summary import log_summary_runs

    root = tmp_path / "floor"
    shutil.copytree(project[0], root)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    params = make_params(references=("identity",), tracking=True, uri=uri)
    stages.run_references(params, root=root, names=["identity"])
    with pytest.MonkeyPatch.context() as mp:
        fake_networks(mp, root)
        for stage in ("fidkid", "segment", "paired"):
            getattr(stages, f"run_{stage}")(make_params(references=("identity",)), "identity", root=root)
    logged = log_summary_runs(Inputs(params, root))
    assert logged[:2] == [{"model": "original", "seed": None, "n_metrics": logged[0]["n_metrics"]},
                          {"model": "identity", "seed": 0, "n_metrics": logged[1]["n_metrics"]}]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cxrbench").experiment_id], "tags.model = 'identity'")
    (run,) = runs
    ours = [r for r in client.search_runs([client.get_experiment_by_name("cxrbench").experiment_id],
                                          "tags.model = 'ours'")][0]
    assert run.data.params["method"] == "identity" and "rsna_like_miou" in run.data.metrics
    assert set(run.data.metrics) - {"wall_s"} <= set(ours.data.metrics)  # the same names: they line up
    # the residual's two parts: Identity leaves all the brightness (ratio 1) and the input's anatomy r
    experiment = client.get_experiment_by_name("cxrbench").experiment_id
    original = client.search_runs([experiment], "tags.model = 'original'")[0]
    assert run.data.metrics["paired_rsna_like_opacity_excess_ratio"] == pytest.approx(1.0)
    assert run.data.metrics["paired_rsna_like_anatomy_corr"] == pytest.approx(
        original.data.metrics["paired_rsna_like_anatomy_corr_before"])
    # Eq. 4's target per run: the mask on normals over the mask on opacity images (ours has masks, Identity none)
    om, nm = (ours.data.metrics[f"paired_rsna_like_{k}"] for k in ("mean_mask", "normal_mean_mask"))
    assert ours.data.metrics["paired_rsna_like_mask_normal_to_opacity"] == pytest.approx(nm / om)
    assert "paired_rsna_like_mask_normal_to_opacity" not in run.data.metrics
