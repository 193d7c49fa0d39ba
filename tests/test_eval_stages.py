"""Every evaluation stage end to end on a tiny fixture project (32 px, 3 images per split and domain): the metric
files exist where dvc.yaml expects them, carry N / seeds / settings, and say something true about the fixture
(the fake translator returns the clean twin, its masks are the true opacity masks)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import ModelEntry, Params, TrackingParams, TrainParams
from pipeline.data.params import DataParams
from pipeline.eval_params import EvalParams


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from test_eval_support import write_eval_datasets, write_fake_outputs

    from pipeline.prior import PriorNet, save_prior

    root = write_eval_datasets(tmp_path_factory.mktemp("proj"), size=32, n=3)
    write_fake_outputs(root, "toy", 0)
    write_fake_outputs(root, "nomask", 0, with_masks=False, with_b2a=False)
    torch.manual_seed(0)
    save_prior(PriorNet(input_size=32).eval(), root / "models" / "prior" / "prior.pt")
    return root


def make_params() -> Params:
    ev = EvalParams(batch_size=8, kid_subsets=5, seg_iterations=1, seg_batch_size=2, detector_cfg="yolov5n.yaml",
                    det_epochs=1, det_batch_size=4, classifiers=["mobilenetv3_large_100"],
                    classify_models=["toy", "nomask"], cls_iterations=1, cls_batch_size=4)
    return Params(profile="ci", seeds=[0], data=DataParams(resolution=32), train=TrainParams(threads=0),
                  models={"toy": ModelEntry(method="toy"), "nomask": ModelEntry(method="toy")}, eval=ev,
                  tracking=TrackingParams(enabled=False))


def read(root, stage, name):
    return json.loads((root / "metrics" / stage / f"{name}.json").read_text())


def test_fidkid_stage(project, monkeypatch):
    from pipeline.app import evaluate as stages

    monkeypatch.setenv("TORCH_HOME", str(project / "no-torch-home"))  # no Inception weights anywhere
    params = make_params()
    ref = stages.run_fidref(params, root=project)
    assert ref["cxr-densenet"]["status"] == "ok" and ref["inception"]["status"] == "unavailable"
    assert (project / "cache" / "fid" / "cxr-densenet-rsna_like-normal.npz").is_file()
    assert json.loads((project / "cache" / "fid" / "index.json").read_text())["inception"]["status"] == "unavailable"
    for model in ("toy", "original"):
        res = stages.run_fidkid(params, model, root=project)
        assert res == read(project, "fidkid", model)
        assert res["n_generated"] == 3 and res["n_reference"] == 3
        cxr, inc = res["extractors"]["cxr-densenet"], res["extractors"]["inception"]
        assert inc["status"] == "unavailable" and "fid" not in json.dumps(inc.get("per_seed", {}))
        assert cxr["status"] == "ok" and cxr["reference_cache"] == "hit" and cxr["kid_subset_size"] == 2  # half the smaller set (3 images): subsets differ
        key = "0" if model == "toy" else "original"
        assert np.isfinite(cxr["per_seed"][key]["fid"]) and cxr["avg"]["fid"]["n"] == 1
        table = pd.read_csv(project / "metrics" / "fidkid" / f"{model}.csv")
        assert set(table["extractor"]) == {"inception", "cxr-evaluator", "cxr-densenet"}
        ev = res["extractors"]["cxr-evaluator"]  # no evaluator trained in this fixture: said, not invented
        assert ev["status"] == "unavailable" and "dvc repro evaluator" in ev["how_to_fix"]
        assert cxr["role"].startswith("diagnostic") and cxr["ci95"]["fid"]["mean"] == pytest.approx(cxr["avg"]["fid"]["mean"])


def test_segmentation_stages(project):
    from pipeline.app import evaluate as stages

    params = make_params()
    trained = stages.run_segmenters(params, root=project)
    assert set(trained["segmenters"]) == {"pspnet", "unet", "cenet", "vgg16bn_unet"} and trained["n_train"] == 3
    for name in trained["segmenters"]:
        assert (project / "models" / "segmenters" / f"{name}.pt").is_file()
    res = stages.run_segment(params, "toy", root=project)
    assert set(res["sets"]) == {"rsna_like", "ards_like", "jsrt_like"}
    rsna = res["sets"]["rsna_like"]
    assert rsna["n"] == 3 and rsna["domain"] == "opacity" and res["sets"]["jsrt_like"]["domain"] == "normal"
    unet = rsna["segmenters"]["unet"]
    t = unet["translated"]["0"]
    assert t["delta_miou"] == pytest.approx(t["miou"] - unet["original"]["miou"])
    means = [rsna["segmenters"][s]["translated"]["0"]["miou"] for s in trained["segmenters"]]
    assert rsna["mean"]["avg"]["miou"]["mean"] == pytest.approx(np.mean(means))
    assert rsna["original_scores"] == "computed"
    original = stages.run_segment(params, "original", root=project)
    assert original["sets"]["rsna_like"]["segmenters"]["unet"]["original"] == unet["original"]
    assert "translated" not in original["sets"]["rsna_like"]["segmenters"]["unet"]
    again = stages.run_segment(params, "toy", root=project)  # now the original scores are reused, same numbers
    assert again["sets"]["rsna_like"]["original_scores"].startswith("reused")
    assert again["sets"] == {k: {**v, "original_scores": again["sets"][k]["original_scores"]}
                             for k, v in res["sets"].items()}
    table = pd.read_csv(project / "metrics" / "segment" / "toy.csv")
    assert set(table["segmenter"]) == {"pspnet", "unet", "cenet", "vgg16bn_unet", "mean"}


def test_detection_stages(project):
    from pipeline.app import evaluate as stages

    params = make_params()
    log = stages.run_detector_training(params, root=project)
    assert log["image_size"] == 32 and (project / "models" / "detector" / "detector.pt").is_file()
    res = stages.run_lesions(params, "toy", root=project)
    rsna = res["sets"]["rsna_like"]
    assert len(rsna["counts"]["original"]) == 3 == len(rsna["counts"]["translated"]["0"])
    assert rsna["wilcoxon"]["0"]["n"] == 3
    per_image = pd.read_csv(project / "metrics" / "lesions" / "toy.csv")
    assert len(per_image) == sum(e["n"] for e in res["sets"].values())
    assert "wilcoxon" not in stages.run_lesions(params, "original", root=project)["sets"]["rsna_like"]
    from eval.plots import lesion_boxplot

    png = lesion_boxplot({"Toy": res}, "rsna_like", project / "reports" / "figures" / "lesions.png")
    assert png.is_file() and png.stat().st_size > 1000


def test_classifier_stage(project):
    from pipeline.app import evaluate as stages

    params = make_params()
    res = stages.run_classifiers(params, root=project)
    original = read(project, "classifiers", "original")
    s = original["results"]["mobilenetv3_large_100"]
    assert s["rsna_like"]["n"] == 6 and s["ards"]["n"] == 3 + 3  # ards_like opacity + rsna_like normals
    assert original["settings"]["test_sets"]["ards"] == {"n": 6, "n_positive": 3}
    toy = res["toy"]["seeds"]["0"]
    assert toy["Generated"]["status"] == "ok" and toy["Mask"]["status"] == "ok"
    assert toy["Mask"]["results"]["mobilenetv3_large_100"]["rsna_like"]["n"] == 6
    nomask = read(project, "classifiers", "nomask")
    assert nomask["seeds"]["0"]["Mask"]["status"] == "n/a" and nomask["avg"]["Mask"]["status"] == "n/a"
    assert nomask["seeds"]["0"]["Generated"]["status"] == "n/a"  # no B->A translations
    table = pd.read_csv(project / "metrics" / "classifiers" / "nomask.csv", keep_default_na=False)
    assert set(table["status"]) == {"n/a"} and "acc" not in table


def test_paired_stage(project):
    from pipeline.app import evaluate as stages

    params = make_params()
    res = stages.run_paired(params, "toy", root=project)
    assert set(res["sets"]) == {"rsna_like", "ards_like"}  # jsrt_like has no twins
    rsna = res["sets"]["rsna_like"]["opacity"]
    seed0 = rsna["per_seed"]["0"]
    assert seed0["mask_auroc"] == 1.0  # fake masks: 0.8 * truth + noise < 0.15
    assert seed0["residual_opacity_ratio"] < 0.2  # the fake translation returns the clean twin (+ noise)
    assert seed0["after"]["psnr"] > seed0["before"]["psnr"]
    assert res["sets"]["rsna_like"]["normal"]["per_seed"]["0"]["n"] == 3
    # the mask's area per image, so that normals / opacity images (Eq. 4) gets an interval
    nseed0 = res["sets"]["rsna_like"]["normal"]["per_seed"]["0"]
    assert np.mean(seed0["per_image"]["mean_mask"]) == pytest.approx(seed0["mean_mask"])
    assert len(nseed0["per_image"]["mean_mask"]) == 3
    area = res["sets"]["rsna_like"]["mask_area"]
    assert area["normal_to_opacity"]["value"] == pytest.approx(nseed0["mean_mask"] / seed0["mean_mask"])
    assert area["opacity"]["mean"] == pytest.approx(seed0["mean_mask"])
    nomask = stages.run_paired(params, "nomask", root=project)
    assert "mask_auroc" not in nomask["sets"]["rsna_like"]["opacity"]["per_seed"]["0"]
    assert "mask_area" not in nomask["sets"]["rsna_like"]
    original = stages.run_paired(params, "original", root=project)
    assert original["sets"]["rsna_like"]["opacity"]["before"] == seed0["before"]


def test_switched_off_evaluations_say_why_in_the_metrics_and_the_tables(project, tmp_path):
    """eval.switched_off: segment:<set> skips that set (the others are scored), lesions skips the detector and the
    counts; each metric file carries the reason and Table 1 / the lesion table print it instead of a number."""
    import shutil

    from pipeline.app import evaluate as stages
    from reports.inputs import Inputs
    from reports.tables import table1, table_lesions

    root = tmp_path / "proj"
    shutil.copytree(project, root, symlinks=True)
    for made in ("metrics", "models/detector", "models/segmenters"):  # what the other tests of this module wrote
        shutil.rmtree(root / made, ignore_errors=True)
    params = make_params()
    params.eval.switched_off = ["segment:jsrt_like", "lesions"]
    stages.run_segmenters(params, root=root)
    res = stages.run_segment(params, "toy", root=root)
    assert set(res["sets"]) == {"rsna_like", "ards_like"}
    assert res["not_evaluated"]["jsrt_like"].startswith("not evaluated: no lung masks for jsrt_like")
    det = stages.run_detector_training(params, root=root)
    assert "switched off" in det["not_evaluated"] and not (root / "models" / "detector" / "detector.pt").exists()
    les = stages.run_lesions(params, "toy", root=root)
    assert les["sets"] == {} and les["not_evaluated"].startswith("not evaluated: no detector")
    inp = Inputs(params, root)
    row = next(r for r in table1(inp).rows if r["model"] == "toy")
    assert row["_text"]["jsrt_like_miou"].startswith("not evaluated") and row.get("rsna_like_miou") is not None
    lesion_rows = [r for r in table_lesions(inp).rows if r["model"] == "toy"]
    assert lesion_rows and all(r["status"].startswith("not evaluated: no detector") for r in lesion_rows)
    from reports.tables import competence_rows

    detector = next(r for r in competence_rows(inp) if r["evaluator"] == "detector")
    assert detector["value"] is None and "switched off" in detector["status"] and not detector["passed"]
