"""`dvc repro` end to end on the ci profile, in a clean copy of the project (as a fresh clone would be)."""
from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

from conftest import cli_env, copy_project, run_checked

pytestmark = pytest.mark.slow


_run = run_checked


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def ci_project(tmp_path_factory):
    dest = copy_project(tmp_path_factory.mktemp("project"))
    env = cli_env({"PYTHONPATH": str(dest)})  # the copy's packages, not the editable install's
    _run(["cxrbench", "profile", "ci"], dest, env)
    first = _run(["dvc", "repro"], dest, env)
    return dest, env, first.stdout + first.stderr


def test_dag_shows_the_graph(ci_project):
    dest, env, _ = ci_project
    out = _run(["dvc", "dag", "--md"], dest, env).stdout
    nodes = dict(re.findall(r'(node\d+)\["([^"]+)"\]', out))
    edges = {(nodes[a], nodes[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", out)}
    for stage in ("data", "prior", "train@ours", "train@cyclegan", "translate@ours", "evaluate@ours", "report"):
        assert stage in nodes.values()
    for edge in (("data", "prior"), ("prior", "train@ours"), ("train@ours", "translate@ours"),
                 ("translate@ours", "evaluate@ours"), ("evaluate@ours", "report"), ("segmenters", "evaluate@ours")):
        assert edge in edges, edge


def test_metrics_show_is_the_small_headline_table(ci_project):
    """One metrics file (the headline FID of each Table 1 row), not the 1,500 values of the stage files."""
    dest, env, _ = ci_project
    out = _run(["dvc", "metrics", "show"], dest, env).stdout
    assert "metrics/headline.json" in out and "metrics/fidkid" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 200, out
    headline = json.loads((dest / "metrics" / "headline.json").read_text())
    rows = {r["model"]: r for r in csv.DictReader(open(dest / "reports" / "tables" / "table1.csv"))
            if r.get("model") and r["source"] == "this run"}
    assert set(headline["fid"]) == set(rows) and {"original", "identity", "ours"} <= set(rows)
    for model, value in headline["fid"].items():
        cell, competent = rows[model]["fid_cxr_evaluator"], rows[model]["cxr_evaluator_competent"] == "True"
        if cell == "" or not competent:  # no number, or its evaluator is below its floor (ci trains it 2 steps)
            assert value is None, (model, value, cell)
        else:
            assert value == pytest.approx(float(cell), abs=0.051), (model, value, cell)


def test_plots_show_writes_one_offline_page_with_the_curves_and_the_headline(ci_project):
    """`dvc plots show` uses the vendored template (reports/vendor): no CDN script, the vega libraries inline, one
    vega spec per plot including the cross-model headline FID and the training curves."""
    dest, env, _ = ci_project
    _run(["dvc", "plots", "show", "-o", str(dest / "dvc_plots")], dest, env)
    page = (dest / "dvc_plots" / "index.html").read_text(encoding="utf8")
    assert "cdn.jsdelivr" not in page and "<script src=" not in page and "vegaEmbed(" in page
    assert "vegaEmbed('#ours_mask'" in page and "diag_mask_auroc" in page  # the mask diagnostics of ours
    # one loss plot per model, every term a line (not the last column of the curve, the learning rate)
    assert "vegaEmbed('#curves_losses_cyclegan_csv'" in page and re.search(r'"field":\s*"term"', page)
    terms = {r["term"] for r in csv.DictReader(open(dest / "curves" / "losses" / "cyclegan.csv"))}
    assert {"g_ab", "g_ba", "cycle_a", "cycle_b", "d_a", "d_b"} <= terms and not any(t.startswith("lr") for t in terms)
    rows = list(csv.DictReader(open(dest / "metrics" / "headline_plot.csv")))
    assert all(float(r["fid"]) >= 0 for r in rows)  # only competent headline FIDs (ci's evaluator may have none)
    assert "Headline FID per Table 1 row" in page or not rows


def test_first_repro_runs_every_stage_and_writes_outputs(ci_project):
    dest, env, log = ci_project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    stages = set(yaml.safe_load((dest / "dvc.yaml").read_text())["stages"])
    expected = {s for s in stages if "foreach" not in yaml.safe_load((dest / "dvc.yaml").read_text())["stages"][s]}
    for group in ("train", "translate"):
        expected |= {f"{group}@{m}" for m in params["models"]}
    assert expected <= _ran(log), expected - _ran(log)
    assert (dest / "data" / "drr" / "manifest.csv").exists()
    for model in params["models"]:
        assert (dest / "models" / model / "seed0.pt").exists()
        assert (dest / "outputs" / model / "seed0" / "index.csv").exists()
    assert (dest / "reports" / "README.md").exists()


def test_second_repro_has_nothing_to_do(ci_project):
    dest, env, _ = ci_project
    out = _run(["dvc", "repro"], dest, env)
    assert _ran(out.stdout + out.stderr) == set()
    assert "up to date" in (out.stdout + out.stderr).lower()


def test_changing_one_models_parameter_reruns_only_that_model(ci_project):
    dest, env, _ = ci_project
    path = dest / "params.yaml"
    params = yaml.safe_load(path.read_text())
    cfg = params["methods"]["cyclegan"]
    key = next(k for k in ("lr", "lambda_cycle", "lambda_identity") if k in cfg)
    cfg[key] = cfg[key] * 0.5
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], dest, env)
    ran = _ran(out.stdout + out.stderr)
    assert {"train@cyclegan", "translate@cyclegan"} <= ran
    assert not {s for s in ran if s.endswith("@ours") or s.endswith("@ours_none")}, ran
    assert not ran & {"data", "prior"}
