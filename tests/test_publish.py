"""`cxrbench publish`: per-stage wall times from a timestamped `dvc repro` log, provenance, nothing overwritten."""
from __future__ import annotations

import json

import pytest

from pipeline.app.publish import publish, stage_times


def test_stage_times_from_a_timestamped_log():
    log = "\n".join(["100 Running stage 'data':", "100 > cxrbench data", "150 data: wrote ...",
                     "160 Running stage 'prior':", "161 > cxrbench prior", "400 Updating lock file 'dvc.lock'"])
    assert stage_times(log) == {"data": 60.0, "prior": 240.0}
    assert stage_times("no stages here") == {}


def test_publish_copies_the_report_with_provenance_and_keeps_a_previous_one(tmp_path):
    from test_reports import make_params

    reports = tmp_path / "reports"
    (reports / "tables").mkdir(parents=True)
    (reports / "figures").mkdir()
    (reports / "tables" / "table1.md").write_text("# Table 1\n")
    (reports / "figures" / "figure3.png").write_bytes(b"png")
    (reports / "README.md").write_text("# cxrbench reports\n")
    log = tmp_path / "run.log"
    log.write_text("10 Running stage 'data':\n70 Running stage 'report':\n75 done\n")
    params = make_params(profile="cpu")
    dest = publish(tmp_path, "run", log, "make x", 65.0, params)
    prov = json.loads((dest / "provenance.json").read_text())
    assert prov["wall_seconds_per_stage"] == {"data": 60.0, "report": 5.0} and prov["wall_seconds_total"] == 65.0
    assert prov["command"] == "make x" and prov["profile"] == "cpu" and (dest / "tables" / "table1.md").is_file()
    (reports / "README.md").write_text("# second run\n")
    publish(tmp_path, "run", log, "make x", 65.0, params)
    assert (dest / "README.md").read_text() == "# second run\n"
    assert len(list((reports / "published").glob("run.previous-*"))) == 1  # the first one is kept, not deleted


def test_publish_without_a_report_is_one_line(tmp_path):
    from pipeline.errors import CxrbenchError
    from test_reports import make_params

    with pytest.raises(CxrbenchError, match="no report to publish"):
        publish(tmp_path, "run", None, "dvc repro", None, make_params())
