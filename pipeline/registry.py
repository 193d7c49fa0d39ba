"""One registry of translators (timm-style): `ours` plus every package directory under `baselines/`.

Discovery is by convention (a directory is a method): each package's `__init__.py` exposes exactly one subclass of
`pipeline.contract.Translator` whose `name` equals the directory name. Adding a baseline = adding a directory.
Duplicate names raise; a directory that does not implement the contract raises a ContractError naming the file.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from functools import lru_cache
from pathlib import Path

from pipeline.config import METHOD_PROFILE, deep_merge, read_yaml
from pipeline.contract import PRETRAINING_METHODS, ContractError, Translator
from pipeline.errors import suggest
from pipeline.offline import PROJECT_ROOT
from pipeline.schema import build_dataclass

BASELINES_DIR = PROJECT_ROOT / "baselines"


def _package_dirs() -> list[tuple[str, Path]]:
    found = [("ours", PROJECT_ROOT / "ours")]
    if BASELINES_DIR.is_dir():
        for d in sorted(BASELINES_DIR.iterdir()):
            if d.is_dir() and (d / "__init__.py").exists() and not d.name.startswith(("_", ".")):
                found.append((f"baselines.{d.name}", d))
    return found


def _translator_class(module_name: str, path: Path) -> type[Translator]:
    module = importlib.import_module(module_name)
    classes = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and issubclass(obj, Translator) and obj is not Translator]
    init = path / "__init__.py"
    if len(classes) != 1:
        raise ContractError(f"{init}: must expose exactly one Translator subclass, found "
                            f"{[c.__name__ for c in classes] or 'none'}; see pipeline/contract.py")
    cls = classes[0]
    expected = path.name
    if cls.name != expected:
        raise ContractError(f"{init}: {cls.__name__}.name is {cls.name!r} but the directory is {expected!r}; "
                            "set name to the directory name")
    if not dataclasses.is_dataclass(cls.Config):
        raise ContractError(f"{init}: {cls.__name__}.Config must be a dataclass of the method's defaults")
    for method in ("configure_optimizers", "train_step", "translate", "translate_b2a"):
        if getattr(cls, method) is getattr(Translator, method):
            raise ContractError(f"{init}: {cls.__name__} does not implement {method}(); see pipeline/contract.py")
    if cls.has_pretraining:
        missing = [m for m in PRETRAINING_METHODS if not callable(getattr(cls, m, None))]
        if missing:
            raise ContractError(f"{init}: {cls.__name__} sets has_pretraining but does not implement {missing[0]}() "
                                f"({PRETRAINING_METHODS[missing[0]]}); see pipeline/contract.py")
    return cls


@lru_cache(maxsize=1)
def _registry() -> dict[str, type[Translator]]:
    registry: dict[str, type[Translator]] = {}
    for module_name, path in _package_dirs():
        cls = _translator_class(module_name, path)
        if cls.name in registry:
            raise ContractError(f"duplicate translator name {cls.name!r}: {registry[cls.name].__module__} and "
                                f"{cls.__module__}")
        registry[cls.name] = cls
    return registry


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> type[Translator]:
    reg = _registry()
    if name not in reg:
        raise KeyError(f"unknown translator {name!r}{suggest(name, reg)}; registered: {', '.join(reg)}")
    return reg[name]


def package_dir(name: str) -> Path:
    """The directory of a registered method (where its README.md and profiles.yaml live)."""
    return Path(sys.modules[get(name).__module__].__file__).resolve().parent


def package_path(name: str) -> str:
    """The method's directory relative to the project root, as DVC stages name it (ours, baselines/cyclegan)."""
    module = get(name).__module__
    return f"baselines/{package_dir(name).name}" if module.startswith("baselines.") else package_dir(name).name


def profile_config(name: str, profile: str, overrides: dict | None = None, where: str | None = None, **optional):
    """The one place that computes a method's Config for a profile, validated. Precedence: the Config defaults (the
    official values) < `<method dir>/profiles.yaml[profile]` < `overrides` (e.g. params.yaml methods.<name>; an
    unknown key is an error) < `optional` (applied only where the Config has the field: prior_weights).
    Used by `cxrbench profile`, `cxrbench new-baseline`, the bench and the contract tests."""
    cls = get(name)
    prof_file = package_dir(name) / "profiles.yaml"
    values = (read_yaml(prof_file).get(METHOD_PROFILE.get(profile, profile)) or {}) if prof_file.exists() else {}
    values = deep_merge(values, overrides or {})
    values.update({k: v for k, v in optional.items() if k in cls.Config.__dataclass_fields__})
    return build_dataclass(cls.Config, values, where or f"{prof_file}[{profile}]")


def refresh() -> None:
    """Forget the cached registry (tests that add a directory call this)."""
    _registry.cache_clear()
