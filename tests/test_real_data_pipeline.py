"""The paper's real-data setup end to end: `dvc repro` to the report on real-format fixtures (RSNA DICOMs + both
CSVs, a MIMIC-CXR-JPG tree with an ARDS study list and lung masks, JSRT .IMG + SCR GIFs, Montgomery PNG + masks),
with the roles of the `paper-real` profile: translation trained and tested on RSNA, segmentation measured on RSNA (its
optional lung masks), MIMIC ARDS and JSRT, segmenters trained on Montgomery, the detector on the RSNA boxes; plus a
user-named evaluation set (data.extra_eval_sets: another Montgomery-layout folder) scored beside them."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from conftest import cli_env, copy_project, run_checked
from helpers_realdata import write_all, write_montgomery_set

pytestmark = pytest.mark.slow


_run = run_checked


@pytest.fixture(scope="module")
def real_project(tmp_path_factory):
    dest = copy_project(tmp_path_factory.mktemp("project"))
    sources = write_all(tmp_path_factory.mktemp("sources"))
    clinic = tmp_path_factory.mktemp("tb_clinic")
    write_montgomery_set(clinic, 8, seed=7, first=9001)  # other patients than the segmenters' Montgomery set
    env = cli_env({"PYTHONPATH": str(dest)})
    _run(["cxrbench", "profile", "ci"], dest, env)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # the paper-real roles on the ci sizes; one method and no MLflow (tested elsewhere), to keep it short
    params["models"] = {k: v for k, v in params["models"].items() if k == "ours"}  # Table 2's classifiers train on ours
    params["tracking"]["enabled"] = False
    params["data"].update(source="rsna", segmenter_sources=["montgomery"], detector_sources=["train"],
                          test_fraction=0.25, **sources,
                          extra_eval_sets={"tb_clinic": {"source": "montgomery", "dir": str(clinic),
                                                         "description": "a second TB clinic"}})
    params["eval"]["references"] = ["identity", "blur"]  # no clean twins in real data: no Oracle
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    check = _run(["cxrbench", "check"], dest, env)
    repro = _run(["dvc", "repro"], dest, env)
    return dest, env, check.stdout, repro.stdout + repro.stderr


def test_check_prints_the_plan_of_every_role(real_project):
    _, _, out, _ = real_project
    assert "data plan OK" in out, out
    lines = [line.split() for line in out.splitlines()]
    origin = {row[0]: row[1] for row in lines if len(row) == 7 and row[0] in
              ("drr", "ards-like", "jsrt-like", "seg-train", "det-train")}
    assert origin == {"drr": "rsna", "ards-like": "mimic", "jsrt-like": "jsrt", "seg-train": "montgomery",
                      "det-train": "train"}, out


def test_every_table_row_has_a_number_or_says_why_not(real_project):
    dest, _, _, _ = real_project
    summary = json.loads((dest / "data" / "summary.json").read_text())
    assert {k: v["origin"] for k, v in summary["datasets"].items()} == {
        "drr": "rsna", "ards-like": "mimic", "jsrt-like": "jsrt", "seg-train": "montgomery", "det-train": "train",
        "extra/tb_clinic": "montgomery"}
    # Table 1: every row of this run has its numbers (FID/KID, segmentation on the three sets, RSNA through its
    # optional lung masks) or a status that says why not
    rows = [r for r in csv.DictReader(open(dest / "reports" / "tables" / "table1.csv")) if r["source"] == "this run"]
    status = {r["model"]: r["status"] for r in rows}
    assert {m for m, st in status.items() if st == "ok"} == {"original", "identity", "blur", "ours"}, status
    assert status["oracle"].startswith("not evaluated: real data"), status["oracle"]
    assert all(st == "not run in profile ci" for m, st in status.items() if m in ("cyclegan", "munit", "drit")), status
    for r in rows:
        if r["status"] != "ok":
            continue
        assert r["fid_cxr_evaluator"] != "" and r["kid_cxr_evaluator"] != "", r["model"]
        for s in ("rsna_like", "ards_like", "jsrt_like"):
            assert r[f"{s}_miou"] != "" and r[f"{s}_sensitivity"] != "" and int(r[f"{s}_n"]) > 0, (r["model"], s)
    # the paired DRR metrics say why they are absent; the segmenters' competence is measured on Montgomery's
    # held-out images (not on the RSNA test set)
    paired = [r for r in csv.DictReader(open(dest / "reports" / "tables" / "table_paired.csv"))
              if r["source"] == "this run" and r["model"] in ("ours", "identity")]
    assert paired and all(r["status"].startswith("not evaluated: ") for r in paired), paired
    comp = json.loads((dest / "models" / "segmenters" / "segmenters.json").read_text())["competence"]
    assert comp and all("data/seg-train test" in c["measure"] for c in comp.values()), comp
    lesions = [r for r in csv.DictReader(open(dest / "reports" / "tables" / "table_lesions.csv"))
               if r["source"] == "this run" and r["model"] == "ours"]
    assert {r["eval_set"] for r in lesions if r["n"]} == {"rsna_like", "ards_like", "jsrt_like", "tb_clinic"}, lesions
    report = (dest / "reports" / "README.md").read_text()
    assert "real data from adapter `rsna`" in report and "`data/seg-train` = montgomery" in (
        dest / "reports" / "tables" / "table1.md").read_text()


def test_a_user_named_evaluation_set_is_translated_and_scored_beside_the_paper_sets(real_project):
    """data.extra_eval_sets: data/extra/tb_clinic is written with its index, every model translates it, and the
    per-segmenter and lesion tables score it (8 images, 2 TB = opacity: the opacity images are the scored ones)."""
    dest, _, out, _ = real_project
    assert any(line.split()[:1] == ["extra/tb_clinic"] for line in out.splitlines() if line.startswith("  ")), out
    index = json.loads((dest / "data" / "extra" / "sets.json").read_text())["sets"]
    assert index["tb_clinic"]["source"] == "montgomery" and index["tb_clinic"]["images"] == 8, index
    translated = [r for r in csv.DictReader(open(dest / "outputs" / "ours" / "seed0" / "index.csv"))
                  if r["eval_set"] == "tb_clinic"]
    assert len(translated) == 8 and all((dest / "outputs" / "ours" / "seed0" / r["image"]).is_file()
                                        for r in translated)
    seg = {(r["model"], r["segmenter_key"]): r for r in csv.DictReader(open(dest / "reports" / "tables" /
                                                                        "table_segmenters.csv"))
           if r["source"] == "this run"}
    for model in ("original", "identity", "ours"):
        row = seg[(model, "mean")]
        assert row["tb_clinic_miou"] != "" and int(row["tb_clinic_n"]) == 2, row
    assert seg[("ours", "mean")]["tb_clinic_miou_delta"] != ""
    # identity changes nothing: the same mIoU as the original images
    assert float(seg[("identity", "mean")]["tb_clinic_miou"]) == pytest.approx(
        float(seg[("original", "mean")]["tb_clinic_miou"]), abs=1e-6)
    table = (dest / "reports" / "tables" / "table_segmenters.md").read_text()
    assert "tb_clinic = 8 images of montgomery" in table and "a second TB clinic" in table, table
