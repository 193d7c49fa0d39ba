"""Config validation: each failure kind stops with one line naming the key; profiles resolve to valid params."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from pipeline.config import ConfigError, Params, load_params, resolve_profile, write_profile
from pipeline.schema import build_dataclass, param


@dataclass
class Inner:
    lr: float = param(1e-4, min=0.0, max=1.0)
    mode: str = param("a", choices=("a", "b"))


@dataclass
class Outer:
    steps: int = param(10, min=1)
    flag: bool = False
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        build_dataclass(Outer, {"inner": {"lrr": 0.1}}, "params.yaml")
    assert _one_line(exc) == "params.yaml.inner.lrr: unknown key (did you mean 'lr'?) (known keys: lr, mode)"


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError) as exc:
        build_dataclass(Outer, {"steps": "ten"}, "params.yaml")
    assert _one_line(exc) == "params.yaml.steps: expected int, got str 'ten'"
    with pytest.raises(ConfigError, match=r"flag: expected true or false, got int 1"):
        build_dataclass(Outer, {"flag": 1}, "p")
    with pytest.raises(ConfigError, match=r"steps: expected int, got bool True"):
        build_dataclass(Outer, {"steps": True}, "p")
    with pytest.raises(ConfigError, match=r"names\[1\]: expected str, got int 3"):
        build_dataclass(Outer, {"names": ["a", 3]}, "p")


def test_out_of_range_names_the_bound():
    with pytest.raises(ConfigError) as exc:
        build_dataclass(Outer, {"steps": 0}, "params.yaml")
    assert _one_line(exc) == "params.yaml.steps: must be >= 1, got 0"
    with pytest.raises(ConfigError, match=r"inner.lr: must be <= 1.0, got 2.0"):
        build_dataclass(Outer, {"inner": {"lr": 2.0}}, "p")
    with pytest.raises(ConfigError, match=r"inner.mode: must be one of a, b, got 'c'"):
        build_dataclass(Outer, {"inner": {"mode": "c"}}, "p")


def test_ints_widen_to_floats_and_defaults_fill_in():
    obj = build_dataclass(Outer, {"inner": {"lr": 1}}, "p")
    assert obj.inner.lr == 1.0 and isinstance(obj.inner.lr, float) and obj.steps == 10


@pytest.mark.parametrize("profile", ["ci", "cpu", "gpu-quick", "paper"])
def test_every_profile_resolves_to_valid_params(tmp_path, profile):
    path = write_profile(profile, tmp_path / "params.yaml")
    params = load_params(path)
    assert params.profile == profile
    for model in params.models:
        params.method_config(model)  # every model's config validates
    # every method in use has its full Config written out (DVC tracks each value)
    assert set(params.methods) == {m.method for m in params.models.values()}


def test_paper_profile_has_the_paper_settings():
    plain = resolve_profile("paper")
    assert plain["data"]["resolution"] == 512
    assert plain["train"]["iterations"] == 250_000
    assert len(plain["models"]) == 13  # six methods + five Table 3 ablation rows + the named variants ours_mil(_res)
    assert plain["models"]["ours_mil"]["overrides"] == {"lambda_mil": 200.0, "gen_init": "pytorch"}
    assert plain["models"]["ours_mil_res"]["overrides"] == {"lambda_mil": 200.0, "gen_init": "pytorch",
                                                            "gen_output": "residual", "dis_dim": 64}


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown profile 'cpuu' \(did you mean 'cpu'\?\)"):
        resolve_profile("cpuu")


def test_params_file_errors_through_the_cli_are_one_line_exit_2(tmp_path):
    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    data["train"]["iterations"] = 0
    path.write_text(yaml.safe_dump(data))
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "--params", str(path), "check"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"cxrbench: error: {path}.train.iterations: must be >= 1, got 0"]


def test_unknown_method_override_is_an_error(tmp_path):
    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    data["models"]["ours_none"]["overrides"]["not_a_field"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models.ours_none.overrides.not_a_field: unknown key"):
        load_params(path)


def test_committed_params_yaml_is_the_cpu_profile():
    from pipeline.offline import PROJECT_ROOT

    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.profile == "cpu"
    assert yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()) == resolve_profile("cpu")


def test_schema_defaults_build_once_a_model_is_listed():
    """Every section has defaults; an empty model list is refused (an empty params.yaml used to pass check as
    "profile paper, 0 models")."""
    one = {"models": {"cyclegan": {"method": "cyclegan", "package": "baselines/cyclegan"}}}
    assert isinstance(build_dataclass(Params, one, "p"), Params)
    with pytest.raises(ConfigError, match=r"p\.models: empty"):
        build_dataclass(Params, {}, "p")


def test_registry_is_the_model_list(monkeypatch):
    """Every registered method is a model of every profile unless the profile excludes it by name."""
    from pipeline import config, registry

    monkeypatch.setattr(registry, "names", lambda: ["ours", "cyclegan", "mine"])
    shipped = {"cyclegan": {"method": "cyclegan", "description": "CycleGAN"}}
    models = config.registry_models({"ours_none": {"method": "ours"}}, shipped, ["ours"], "profiles/x.yaml")
    assert models == {"ours_none": {"method": "ours"}, "cyclegan": shipped["cyclegan"],
                      "mine": {"method": "mine", "description": "mine"}}
    with pytest.raises(ConfigError, match=r"profiles/x.yaml: exclude_methods names 'munit'"):
        config.registry_models({}, shipped, ["munit"], "profiles/x.yaml")


def test_exclude_models_drops_a_base_model_and_refuses_an_unknown_name(monkeypatch, tmp_path):
    """A profile may leave out a model of base.yaml by name (the cpu smoke run leaves out the named variant
    ours_mil); a name base.yaml does not have is one line naming the file."""
    from pipeline import config

    for variant in ("ours_mil", "ours_mil_res"):
        assert variant in resolve_profile("gpu-quick")["models"] and variant not in resolve_profile("cpu")["models"]
    # cpu-rank runs the variant that localises (ours_mil_res), with its own 1,200-step budget (ours/README item 14)
    assert "ours_mil_res" in resolve_profile("cpu-rank")["models"]
    rank = build_dataclass(Params, resolve_profile("cpu-rank"), "cpu-rank")
    assert rank.models["ours_mil_res"].train_iterations(rank.train) == 2 * rank.train.iterations
    # ours_mil_res keeps the official discriminator width where cpu-rank shrinks the method's (ours/README item 13)
    assert rank.method_config("ours").dis_dim == 16 and rank.method_config("ours_mil_res").dis_dim == 64
    (tmp_path / "base.yaml").write_text((config.PROFILES_DIR / "base.yaml").read_text())
    (tmp_path / "cpu.yaml").write_text("exclude_models: [ours_none, ours_typo]\n")
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"profiles/cpu.yaml: exclude_models names 'ours_typo'"):
        resolve_profile("cpu")
    (tmp_path / "cpu.yaml").write_text("exclude_models: [ours_none]\n")
    models = resolve_profile("cpu")["models"]
    assert "ours_none" not in models and {"ours", "ours_fa", "ours_mil", "cyclegan"} <= set(models)


def test_oracle_reference_is_refused_without_twins():
    values = resolve_profile("ci")
    values["data"].update(source="rsna", rsna_dir="/data/rsna")
    with pytest.raises(ConfigError, match=r"params.yaml.eval.references: 'oracle' needs the clean twin .*'rsna'"):
        build_dataclass(Params, values, "params.yaml")
    values["eval"]["references"] = ["identity", "blur"]
    assert build_dataclass(Params, values, "params.yaml").eval.references == ["identity", "blur"]


def test_a_models_own_iteration_budget_trains_that_many_steps_and_is_flagged_in_the_tables(tmp_path):
    """models.<name>.iterations replaces train.iterations for that model alone (engine, summary, resume fingerprint),
    and every table note says the budgets are unequal; 0 keeps the suite's budget, a negative value is refused."""
    from helpers_data import write_tiny_dataset

    from pipeline.app.train import run_train
    from reports.tables import Inputs, common_notes

    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    data["models"]["cyclegan"]["iterations"] = -1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models.cyclegan.iterations: must be >= 0"):
        load_params(path)
    data["models"]["cyclegan"]["iterations"] = 7  # the ci profile trains 4
    path.write_text(yaml.safe_dump(data))
    params = load_params(path)
    params.tracking.enabled = False
    params.seeds = [0]
    assert params.train.iterations == 4 and params.models["ours"].train_iterations(params.train) == 4
    write_tiny_dataset(tmp_path)
    summary = run_train(params, "cyclegan", root=tmp_path)
    assert summary["iterations"] == 7 and summary["seeds"]["0"]["steps"] == 7
    note = [n for n in common_notes(Inputs(params, tmp_path)) if "Unequal training budgets" in n]
    assert len(note) == 1 and "`cyclegan` 7 iterations" in note[0] and "every other model 4" in note[0]
    params.models["cyclegan"].iterations = 0
    assert not [n for n in common_notes(Inputs(params, tmp_path)) if "Unequal" in n]
