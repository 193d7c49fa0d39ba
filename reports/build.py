"""The `report` stage: tables (markdown + CSV) and figures in reports/, built only from DVC metric files."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.config import Params
from pipeline.offline import PROJECT_ROOT


def _read_metrics(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def training_table(params: Params, root: Path) -> pd.DataFrame:
    train = _read_metrics(root / "metrics" / "train")
    rows = []
    for model, entry in params.models.items():
        summary = train.get(model)
        if summary is None:
            continue
        for seed, result in summary["seeds"].items():
            rows.append({"model": model, "method": entry.method, "seed": int(seed), "steps": result["steps"],
                         "wall_s": result["wall_s"], "parameters": result["parameters"],
                         **{f"loss_{k}": round(v, 4) for k, v in sorted(result["final_losses"].items())}})
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, out: Path, title: str, note: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    body = df.to_markdown(index=False) if len(df) else "_no rows_"
    out.with_suffix(".md").write_text(f"# {title}\n\n{note}\n\n{body}\n")


def build_reports(params: Params, root: Path | None = None) -> None:
    root = Path(root) if root else PROJECT_ROOT
    reports = root / "reports"
    note = f"Profile `{params.profile}`, seeds {params.seeds}, training dataset `data/drr`."
    write_table(training_table(params, root), reports / "tables" / "training.md", "Training summary", note)
    index = ["# cxrbench reports", "", note, "", "- [Training summary](tables/training.md)", ""]
    (reports / "README.md").write_text("\n".join(index))
