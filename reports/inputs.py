"""What the report reads: the DVC metric files under metrics/ (never mlflow.db), with a reason for every gap.

A model's numbers are used only when the model is in this profile's `models` (a metric file left over from another
profile is not this run's result). Every gap has a one-line reason that the tables print instead of a number:
"not run in profile ci" (the model is not configured) or "missing metrics/fidkid/munit.json: run `dvc repro
evaluate@munit`" (configured, not evaluated yet).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.sets import external_models
from pipeline.config import Params
from pipeline.errors import CxrbenchError
from pipeline.layout import EVAL_SETS, Layout

ORIGINAL = "original"  # the untranslated rows (eval.sets.ORIGINAL)
# Profiles whose numbers rank nothing (too few images and iterations): their report says so in its first line.
SMOKE_PROFILES = ("cpu", "ci")
SMOKE_LINE = ("**Smoke run: this profile checks that every stage works; its numbers rank nothing** (too few images, "
              "iterations and seeds; evaluators below their competence floors). Rankings: the cpu-rank, gpu-quick or "
              "paper profile.")
STAGE_OF = {"fidkid": "evaluate", "segment": "evaluate", "lesions": "evaluate", "paired": "evaluate",
            "classifiers": "classifiers", "train": "train", "translate": "translate"}


class ReportError(CxrbenchError):
    """A metric file that exists but cannot be read (one line: the file and the fix)."""


def dig(d: Any, *keys: Any) -> Any:
    """d[k1][k2]... or None where any level is missing (metric files omit what was not measured)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def display_seeds(seeds: Any) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "-"


class Inputs:
    """Metric files of one project root, read once, with the profile's model list."""

    def __init__(self, params: Params, root: Path):
        self.params, self.root = params, Path(root)
        self.profile = params.profile
        self._cache: dict[tuple[str, str], dict | None] = {}
        self._externals: list[str] | None = None

    # --- files -----------------------------------------------------------------------------------------------------
    def path(self, stage: str, name: str) -> Path:
        return self.root / "metrics" / stage / f"{name}.json"

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def read(self, stage: str, name: str) -> dict | None:
        key = (stage, name)
        if key not in self._cache:
            p = self.path(stage, name)
            if not p.is_file():
                self._cache[key] = None
            else:
                try:
                    self._cache[key] = json.loads(p.read_text())
                except (OSError, ValueError) as exc:
                    raise ReportError(f"{self.rel(p)}: not readable JSON ({exc}); rerun `dvc repro "
                                      f"{self.repro_target(stage, name)}`") from None
        return self._cache[key]

    def repro_target(self, stage: str, name: str) -> str:
        dvc_stage = STAGE_OF.get(stage, stage)
        if dvc_stage == "evaluate":
            if name in self.references:
                return f"evaluate_reference@{name}"
            return "evaluate_original" if name == ORIGINAL else f"evaluate@{name}"
        if dvc_stage == "classifiers":
            return "classifiers"
        return f"{dvc_stage}@{name}"

    # --- models ----------------------------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return list(self.params.models)

    @property
    def references(self) -> list[str]:
        """The floor/ceiling rows of this profile (identity, blur, oracle)."""
        return list(self.params.eval.references)

    @property
    def externals(self) -> list[str]:
        """Rows scored from folders of translations made elsewhere (`cxrbench evaluate --images DIR --name N`)."""
        if self._externals is None:
            self._externals = external_models(Layout(self.root))
        return self._externals

    def extra_sets(self) -> list[str]:
        """The user-named evaluation sets (data.extra_eval_sets) the data stage wrote, in params order."""
        return [s for s in Layout(self.root).eval_sets() if s not in EVAL_SETS]

    def in_profile(self, model: str) -> bool:
        return model == ORIGINAL or model in self.params.models or model in self.references or model in self.externals

    def is_smoke(self) -> bool:
        return self.profile in SMOKE_PROFILES

    def model_json(self, relpath: str) -> dict | None:
        """A JSON written next to an evaluation model (models/evaluator/evaluator.json, ...), or None."""
        p = self.root / relpath
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    def not_run(self) -> str:
        return f"not run in profile {self.profile}"

    def get(self, stage: str, model: str) -> tuple[dict | None, str]:
        """(metric JSON, "ok") or (None, the reason it is absent)."""
        if model == "oracle" and model not in self.references and self.params.data.source != "drr":
            return None, (f"not evaluated: real data (data.source {self.params.data.source}) has no opacity-free "
                          "twin of an opacity image, the Oracle's truth")
        if not self.in_profile(model):
            return None, self.not_run()
        data = self.read(stage, model)
        if data is None:
            return None, (f"missing {self.rel(self.path(stage, model))}: run `dvc repro "
                          f"{self.repro_target(stage, model)}`")
        return data, "ok"

    def description(self, model: str) -> str:
        entry = self.params.models.get(model)
        return entry.description if entry is not None and entry.description else model

    # --- the settings every table states ---------------------------------------------------------------------------
    def seeds(self) -> list[int]:
        return list(self.params.seeds)

    def first_seed(self) -> int:
        return self.params.seeds[0]

    def fid_spaces(self) -> list[str]:
        return list(self.params.eval.fid_extractors)

    def fid_space_status(self) -> dict[str, dict[str, Any]]:
        """{space: {"status": ok|unavailable|unknown, "how_to_fix": ..., "n_generated", "n_reference"}} from the first
        fidkid file that mentions it (the reference set and weights are the same for every model)."""
        out: dict[str, dict[str, Any]] = {}
        names = [ORIGINAL] + self.models
        for space in self.fid_spaces():
            out[space] = {"status": "unknown", "how_to_fix": "no metrics/fidkid/*.json yet: run `dvc repro`"}
            for name in names:
                data, _ = self.get("fidkid", name)
                entry = dig(data, "extractors", space)
                if entry is None:
                    continue
                out[space] = {"status": entry.get("status", "unknown"), "how_to_fix": entry.get("how_to_fix", ""),
                              "n_generated": data.get("n_generated"), "n_reference": data.get("n_reference"),
                              "weights_sha256": entry.get("weights_sha256"),
                              "canonical_weights": entry.get("canonical_weights")}
                break
        return out
