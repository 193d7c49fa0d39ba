"""Configuration: one schema, validated on load; profiles are sets of values written into params.yaml.

params.yaml is the single home of every value DVC tracks. Its schema is the tree of dataclasses below (plus each
method's own `Config` dataclass, found through the registry). Validation is strict: an unknown key, a wrong type or an
out-of-range value stops with one line naming the key, e.g.

    params.yaml: train.iterations: must be >= 1, got 0

Profiles (`pipeline/profiles/<name>.yaml`) are partial overrides of the schema defaults. `cxrbench profile NAME`
resolves one and writes the full result into params.yaml, so DVC sees every value that changed and reruns exactly the
stages that read it. Defaults follow the paper (or the official baseline code); values the paper leaves open carry
`source="assumed"` and a reason in their metadata.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.data.params import PAPER_EVAL_SETS, DataParams  # the data package owns its section
from pipeline.eval_params import EvalParams  # eval/ owns its section
from pipeline.errors import suggest
from pipeline.offline import PROJECT_ROOT
from pipeline.prior_params import PriorParams
from pipeline.schema import ConfigError, build_dataclass, deep_merge, param, to_plain  # noqa: F401

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PROFILES = ("cpu", "cpu-rank", "ci", "gpu-quick", "paper", "paper-real")
# Profiles that train every method at another profile's widths (<method dir>/profiles.yaml lists only the others).
METHOD_PROFILE = {"cpu-rank": "cpu", "paper-real": "paper"}


# --------------------------------------------------------------------------------------------------------------------
# The schema.
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class TrainParams:
    """Generic training settings owned by the engine (per-method settings live under `methods`)."""

    iterations: int = param(250_000, min=1, source="paper", doc="training iterations per model (paper: 2.5e5)")
    pretrain_iterations: int = param(0, min=0, doc="pre-training iterations for methods that have one (UVCGAN)",
                                     source="assumed")
    crop_scale: float = param(0.9, min=0.1, max=1.0, source="assumed",
                              doc="random crop side as a fraction of the image side, then resize (paper: 'randomly "
                                  "cropped then resized', fraction not stated)")
    hflip: bool = param(False, source="assumed", doc="horizontal flips; off because a CXR is not left-right symmetric")
    checkpoint_every: int = param(5_000, min=1, doc="iterations between checkpoints (and one at the end)", result=False)
    keep_checkpoints: int = param(2, min=1, doc="how many of the newest checkpoints to keep", result=False)
    log_every: int = param(100, min=1, doc="iterations between logged loss rows", result=False)
    device: Literal["auto", "cpu", "cuda"] = param("auto", result=False,
                                                   doc="a run may resume on another device")
    precision: Literal["auto", "fp32", "bf16"] = param("auto", doc="auto = bf16 autocast on CUDA, fp32 on CPU (same numbers on "
                                                                        "every CPU; bf16 there only with AVX512-BF16/AMX, else ~30x slower)")
    channels_last: bool = param(True, doc="channels_last memory format on CUDA")
    compile: bool = param(False, doc="torch.compile each trainable network in place (forward calls; CPU and CUDA; "
                                     "the first steps pay the compile time)")
    activation_checkpointing: bool = param(
        False, result=False, doc="recompute the generators' block activations in the backward pass instead of "
                                 "keeping them (less memory, ~1/3 more compute there; same results: tested)")
    optimizer_impl: Literal["auto", "loop", "foreach", "fused"] = param(
        "auto", result=False, doc="kernels of every method's optimizer update (Adam): loop = per tensor, foreach = "
                                  "multi-tensor, fused = one pass; auto = fused (2.3-4.2x faster than loop on CPU; "
                                  "torch's fastest on CUDA). "
                                  "The same update: weights agree to float rounding (tested)")
    deterministic: bool = param(False, doc="torch deterministic algorithms (slower; used by the resume tests)")
    num_workers: int = param(0, min=0, max=64, doc="data loader worker processes (stateless sampling)", result=False)
    threads: int = param(0, min=0, max=256, result=False,
                         doc="torch CPU threads of every stage; 0 = a fair share: the usable cores divided by the "
                             "cxrbench stages running at that moment (`dvc queue start -j N`, other runs), "
                             "rebalanced at each log step; OMP_NUM_THREADS in the environment wins over 0")


@dataclass
class ModelEntry:
    """One trained model: a registered method plus overrides of its Config (the Table 3 ablation variants)."""

    method: str = param(doc="registry name of the method (ours, cyclegan, ...)")
    package: str = param("", doc="the method's directory (ours or baselines/<name>): a DVC dependency of its stages; "
                                 "`cxrbench profile` fills it in")
    overrides: dict[str, Any] = param(default_factory=dict, doc="values that replace methods.<method> for this model")
    description: str = param("", doc="one line for tables")
    iterations: int = param(0, min=0, doc="training iterations of this model; 0 = train.iterations. A model with "
                                          "its own budget is flagged in every table note that ranks it (unequal "
                                          "budgets): use it for variants that show a mechanism, not to rank")

    def train_iterations(self, train: "TrainParams") -> int:
        """The iterations this model trains for: its own budget when set, else the suite's."""
        return self.iterations or train.iterations


@dataclass
class TrackingParams:
    enabled: bool = param(True, doc="log to MLflow (DVC metric files stay the source of truth either way)")
    experiment: str = param("cxrbench")
    uri: str = param("", doc="MLflow tracking URI; empty = $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db")


@dataclass
class Params:
    profile: str = param("paper", choices=PROFILES, doc="name of the profile these values came from")
    seeds: list[int] = param(default_factory=lambda: [0, 1, 2], min=0, doc="one trained model per seed and model")
    data: DataParams = param(default_factory=DataParams)
    prior: PriorParams = param(default_factory=PriorParams)
    train: TrainParams = param(default_factory=TrainParams)
    models: dict[str, ModelEntry] = param(default_factory=dict)
    methods: dict[str, dict[str, Any]] = param(default_factory=dict, doc="per-method Config values (see registry)")
    eval: EvalParams = param(default_factory=EvalParams)
    tracking: TrackingParams = param(default_factory=TrackingParams)

    def validate(self, where: str) -> None:
        from pipeline import registry  # lazy, here and below: registry imports this module (a cycle), and it
                                        # costs torch + every method (~5 s), paid only where the model list is needed

        if not self.seeds:
            raise ConfigError(f"{where}.seeds: must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{where}.seeds: duplicate seeds {self.seeds}; list each seed once")
        for name, entry in self.models.items():
            if not name.replace("_", "").isalnum() or not name[0].isalpha() or name.lower() != name:
                raise ConfigError(f"{where}.models.{name}: model names are lower-case letters, digits and '_'")
            if entry.method not in registry.names():
                raise ConfigError(f"{where}.models.{name}.method: unknown method {entry.method!r} "
                                  f"(registered: {', '.join(registry.names())})")
            package = registry.package_path(entry.method)
            if entry.package != package:
                raise ConfigError(f"{where}.models.{name}.package: must be {package!r} (the directory of method "
                                  f"{entry.method!r}), got {entry.package!r}")
        for method, values in self.methods.items():
            if method not in registry.names():
                raise ConfigError(f"{where}.methods.{method}: unknown method (registered: "
                                  f"{', '.join(registry.names())})")
            build_dataclass(registry.get(method).Config, values, f"{where}.methods.{method}")
        for name, entry in self.models.items():
            self.method_config(name, where=where)
        if not self.models:
            raise ConfigError(f"{where}.models: empty; list at least one model (`cxrbench models` shows the methods)")
        unknown = [a for a in self.eval.classifiers if not _timm_has(a)]
        if unknown:
            raise ConfigError(f"{where}.eval.classifiers: {unknown[0]!r} is not a timm architecture; use names "
                              "like resnet50, densenet121, efficientnet_b0 (timm.list_models())")
        if not _detector_cfg_known(self.eval.detector_cfg):
            raise ConfigError(f"{where}.eval.detector_cfg: {self.eval.detector_cfg!r} is neither a file nor an "
                              "ultralytics model yaml; use yolov5n.yaml, yolov5s.yaml, ... or point to your yaml")
        if self.data.source == "drr":  # the DRR counts are known before the data stage runs
            smallest = min(self.data.train_opacity, self.data.train_normal)
            for name in self.models:
                batch = getattr(self.method_config(name, where=where), "batch_size", 1)
                if batch > smallest:
                    raise ConfigError(f"{where}.methods.{self.models[name].method}.batch_size: {batch} images per "
                                      f"domain but data.train_opacity / train_normal give {smallest}; lower the "
                                      "batch or raise the counts")
        sets = (*PAPER_EVAL_SETS, *self.data.extra_eval_sets)
        for entry in self.eval.switched_off:
            if entry != "lesions" and not (entry.startswith("segment:") and entry.split(":", 1)[1] in sets):
                raise ConfigError(f"{where}.eval.switched_off: unknown entry {entry!r}; use 'lesions' or "
                                  f"'segment:<set>' with a set of {', '.join(sets)}")
        if "oracle" in self.eval.references and self.data.source != "drr":
            raise ConfigError(f"{where}.eval.references: 'oracle' needs the clean twin of every opacity image, which "
                              f"only the DRR benchmark has (data.source is {self.data.source!r}); remove 'oracle'")

    def method_config(self, model: str, where: str = "params.yaml") -> Any:
        """The validated Config of `model`: method defaults < methods.<method> < models.<model>.overrides."""
        from pipeline import registry

        if model not in self.models:
            raise ConfigError(f"{where}.models: unknown model {model!r} (configured: {', '.join(self.models)})")
        entry = self.models[model]
        values = deep_merge(self.methods.get(entry.method, {}), entry.overrides)
        return build_dataclass(registry.get(entry.method).Config, values, f"{where}.models.{model}.overrides")


# --------------------------------------------------------------------------------------------------------------------
# Loading, profiles.
# --------------------------------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML silently keeps the last one)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; remove one of them")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run `cxrbench profile cpu` to write one)") from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 (byte 0x{exc.object[exc.start]:02x}); fix that byte or "
                          "re-save the file as UTF-8") from None
    try:
        loader = _UniqueKeyLoader(text)  # what yaml.load does, with the SafeLoader subclass above
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{path}:{line}: not valid YAML ({problem}); fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_params(path: str | Path | None = None) -> Params:
    path = Path(path) if path else PROJECT_ROOT / "params.yaml"
    label = path.name if path.parent.resolve() in (PROJECT_ROOT, Path.cwd().resolve()) else str(path)
    return build_dataclass(Params, read_yaml(path), label)


def registry_models(models: dict, shipped: dict, excluded: list, where: str) -> dict:
    """The registry is the model list: every registered method has its default entry `models.<method>` in every
    profile (the entry of base.yaml when it has one, e.g. its description), unless the profile names it under
    `exclude_methods` (the ci profile keeps three models for speed). A profile's own `models` add ablation
    variants and per-profile values. So a baseline directory added by `cxrbench new-baseline` survives every
    `cxrbench profile X`."""
    from pipeline import registry

    names = registry.names()
    unknown = [m for m in excluded if m not in names]
    if unknown:
        raise ConfigError(f"{where}: exclude_methods names {unknown[0]!r}, which is not a registered method "
                          f"({', '.join(names)})")
    out = dict(models)
    for method in names:
        if method not in excluded and method not in out:
            out[method] = dict(shipped.get(method) or {"method": method, "description": method})
    return out


def resolve_profile(name: str) -> dict:
    """Schema defaults + the profile's overrides, with every model's method section filled in: plain data."""
    from pipeline import registry

    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}{suggest(name, PROFILES)}; available: {', '.join(PROFILES)}")
    overrides = read_yaml(PROFILES_DIR / f"{name}.yaml")
    base = read_yaml(PROFILES_DIR / "base.yaml")
    excluded = overrides.pop("exclude_methods", None) or []
    dropped = overrides.pop("exclude_models", None) or []  # base.yaml models this profile does not run
    unknown = [m for m in dropped if m not in (base.get("models") or {})]
    if unknown:
        raise ConfigError(f"profiles/{name}.yaml: exclude_models names {unknown[0]!r}, which is not a model of "
                          f"profiles/base.yaml ({', '.join(base.get('models') or {})})")
    replaced = {k: overrides.pop(k) for k in ("models", "seeds") if k in overrides}  # lists of runs: replaced whole
    shipped = dict(base.get("models") or {})
    base["models"] = {m: v for m, v in (base.get("models") or {}).items() if m not in dropped}
    base = {**deep_merge(base, overrides), **replaced}
    base["profile"] = name
    base["models"] = registry_models(base.get("models") or {}, shipped, excluded, f"profiles/{name}.yaml")
    for entry in (base.get("models") or {}).values():
        if isinstance(entry, dict) and entry.get("method") in registry.names():
            entry.setdefault("package", registry.package_path(entry["method"]))
    params = build_dataclass(Params, base, f"profiles/{name}.yaml")
    plain = to_plain(params)
    # methods.<m>: the full Config of every method in use, defaults made explicit so DVC tracks each value.
    # Precedence: the method's Config defaults (official values) < <method dir>/profiles.yaml[<profile>]
    # < pipeline/profiles/<profile>.yaml methods.<m>.
    methods = {}
    for entry in params.models.values():
        if entry.method not in methods:
            methods[entry.method] = to_plain(registry.profile_config(entry.method, name,
                                                                     params.methods.get(entry.method, {})))
    plain["methods"] = methods
    return plain


def write_profile(name: str, path: str | Path | None = None) -> Path:
    path = Path(path) if path else PROJECT_ROOT / "params.yaml"
    plain = resolve_profile(name)
    header = (f"# Active parameters, written by `cxrbench profile {name}` from pipeline/profiles/{name}.yaml.\n"
              "# Edit values here (DVC reruns exactly the stages that read them) or switch profile with\n"
              "# `cxrbench profile cpu|cpu-rank|ci|gpu-quick|paper`. Unknown keys and out-of-range values are errors.\n")
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + yaml.safe_dump(plain, sort_keys=False, width=120))
    build_dataclass(Params, read_yaml(tmp), str(path.name))  # never write a file that would not load
    tmp.replace(path)
    return path


def _timm_has(arch: str) -> bool:
    """Whether timm knows `arch`. Importing timm takes ~4 s on 2 cores and every stage validates params.yaml, so
    its model list is kept in cache/timm-<version>.json (rebuilt when the installed timm version changes)."""
    try:
        version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return False
    path = PROJECT_ROOT / "cache" / f"timm-{version}.json"
    try:
        names = set(json.loads(path.read_text()))
    except (OSError, ValueError):
        import timm  # lazy: config stays importable without torch

        names = set(timm.list_models())
        from pipeline.io import atomic_write

        try:
            atomic_write(path, json.dumps(sorted(names)))
        except OSError:
            pass  # a read-only checkout: validated without the cache
    return arch.split(".", 1)[0] in names  # resnet50.a1_in1k: the architecture before the pretrained tag


def _detector_cfg_known(cfg: str) -> bool:
    """A yaml file that exists, or a model yaml that ultralytics ships (yolov5n.yaml is yolov5.yaml at scale n)."""
    if Path(cfg).expanduser().is_file():
        return True
    spec = importlib.util.find_spec("ultralytics")  # locate the package without importing it (~3 s)
    if spec is None or not spec.submodule_search_locations:
        return True  # no ultralytics: the detector stage says so itself
    models = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"
    unscaled = re.sub(r"(\d+)([nslmx])(\.yaml)$", r"\1\3", cfg)
    return any(models.rglob(cfg)) or any(models.rglob(unscaled))
