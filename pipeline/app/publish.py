"""`cxrbench publish NAME`: copy this run's report into reports/published/NAME/ with its provenance.

A result is "measured" only when a run produced it: the published folder holds the tables, figures and index that
`dvc repro` wrote, plus provenance.json (profile, command, git commit and dirty flag, seeds, N, wall time per stage
and in total, machine) so that a newcomer sees real numbers without running anything. The stage times come from a
log of `dvc repro` whose lines were prefixed with Unix timestamps (`make publish-cpu-rank` writes one).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import CxrbenchError
from pipeline.io import write_json

STAGE_LINE = re.compile(r"^(\d+(?:\.\d+)?) Running stage '([^']+)'")


def stage_times(log_text: str) -> dict[str, float]:
    """{stage: seconds} from a timestamped `dvc repro` log: each stage lasts until the next one starts (the last one
    until the log's last timestamped line)."""
    events = [(float(m.group(1)), m.group(2)) for m in map(STAGE_LINE.match, log_text.splitlines()) if m]
    stamps = [float(x.split(" ", 1)[0]) for x in log_text.splitlines() if re.match(r"^\d+(\.\d+)? ", x)]
    if not events:
        return {}
    end = max(stamps) if stamps else events[-1][0]
    out = {}
    for (t, name), nxt in zip(events, events[1:] + [(end, "")]):
        out[name] = round(nxt[0] - t, 1)
    return out


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def publish(root: Path, name: str, log: Path | None, command: str, wall_seconds: float | None,
            params: Any) -> Path:
    reports = root / "reports"
    if not (reports / "README.md").is_file():
        raise CxrbenchError(f"{reports / 'README.md'}: no report to publish; run `dvc repro` first")
    dest = reports / "published" / name
    tmp = dest.with_name(f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(reports / "tables", tmp / "tables")
    (tmp / "figures").mkdir()
    for f in sorted((reports / "figures").glob("*.png")):
        shutil.copy2(f, tmp / "figures" / f.name)
    shutil.copy2(reports / "README.md", tmp / "README.md")
    if (reports / "index.html").is_file():  # the self-contained page (figures inline)
        shutil.copy2(reports / "index.html", tmp / "index.html")
    times = stage_times(log.read_text()) if log and log.is_file() else {}
    prov = {"name": name, "profile": params.profile, "command": command,
            "commit": _git(root, "rev-parse", "HEAD"), "dirty": bool(_git(root, "status", "--porcelain")),
            "seeds": list(params.seeds), "models": list(params.models), "references": list(params.eval.references),
            "wall_seconds_total": wall_seconds, "wall_seconds_per_stage": times,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    write_json(tmp / "provenance.json", prov)
    if dest.exists():  # a previous publication of the same name is kept beside, never deleted
        dest.rename(dest.with_name(f"{name}.previous-{int(dest.stat().st_mtime)}"))
    tmp.rename(dest)
    print(f"published {name}: {dest} (commit {prov['commit'][:10]}, {len(times)} stages timed)")
    return dest


def load_wall(path: Path | None) -> float | None:
    try:
        return float(json.loads(path.read_text())["wall_seconds"]) if path and path.is_file() else None
    except (OSError, ValueError, KeyError):
        return None
