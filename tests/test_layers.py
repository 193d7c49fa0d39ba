"""The layers and their allowed import directions, parsed from the sources (function-level imports included).

    core     pipeline/ but pipeline/app/ (schema, config, contract, registry, engine, io, layout, data, prior, ...)
                                            imports core only
    methods  ours/, baselines/<name>/       core, and their own package (never another method: copies carry
                                            `# Copied from`, see tests/test_copies.py)
    eval     eval/ (metrics, evaluators)    core, eval
    reports  reports/ (tables, figures)     core, eval, reports
    app      pipeline/app/: the CLI and every DVC stage entry, the only layer that may import everything

The registry finds methods by directory (importlib), so the core never names a method in an import.
"""
from __future__ import annotations

import ast
from pathlib import Path

from pipeline.offline import PROJECT_ROOT

PACKAGES = ("pipeline", "ours", "baselines", "eval", "reports")
APP = ("pipeline.app",)  # the CLI and every DVC stage entry: one package, one module per stage family
ALLOWED = {"core": {"core"}, "methods": {"core"}, "eval": {"core", "eval"}, "reports": {"core", "eval", "reports"},
           "app": {"core", "methods", "eval", "reports", "app"}}


def layer(module: str) -> str | None:
    if any(module == a or module.startswith(a + ".") for a in APP):
        return "app"
    return {"pipeline": "core", "ours": "methods", "baselines": "methods", "eval": "eval",
            "reports": "reports"}.get(module.split(".")[0])


def method_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "baselines" else parts[0]


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def imported_names(tree: ast.AST):
    """(line, module) for every absolute import; `from a.b import c` yields a.b and a.b.c (c may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(root: Path) -> list[str]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            src = module_name(path, root)
            src_layer = layer(src)
            for line, name in imported_names(ast.parse(path.read_text(), str(path))):
                dst_layer = layer(name)
                if dst_layer is None:
                    continue  # stdlib or a third-party package
                if src_layer == dst_layer == "methods":
                    ok = method_package(src) == method_package(name)
                else:
                    ok = dst_layer in ALLOWED[src_layer]
                if not ok:
                    found.append(f"{path.relative_to(root)}:{line}: {src_layer} module {src} imports {name} "
                                 f"({dst_layer})")
    return sorted(set(found))


def test_the_tree_respects_the_layers():
    assert violations(PROJECT_ROOT) == []


def test_a_planted_violation_is_reported_with_file_and_name(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "pipeline" / "engine.py").write_text("import torch\nfrom eval.fid_kid import fid_fast\n")
    (tmp_path / "eval" / "fid_kid.py").write_text("from pipeline.engine import Engine\n")
    (tmp_path / "baselines" / "unit").mkdir()
    (tmp_path / "baselines" / "unit" / "model.py").write_text("from baselines.munit.networks import Decoder\n"
                                                              "from baselines.unit import losses\n")
    (tmp_path / "pipeline" / "app").mkdir()  # the app may import everything: no violation
    (tmp_path / "pipeline" / "app" / "cli.py").write_text("from pipeline.app.report import main\n"
                                                          "from ours import Ours\n")
    assert violations(tmp_path) == [
        "baselines/unit/model.py:1: methods module baselines.unit.model imports baselines.munit.networks (methods)",
        "baselines/unit/model.py:1: methods module baselines.unit.model imports baselines.munit.networks.Decoder "
        "(methods)",
        "pipeline/engine.py:2: core module pipeline.engine imports eval.fid_kid (eval)",
        "pipeline/engine.py:2: core module pipeline.engine imports eval.fid_kid.fid_fast (eval)",
    ]


def test_no_file_points_outside_the_project():
    """Docs and comments say things in the project's own words: no pointer to notes outside the checkout."""
    import re

    outside = re.compile(r"\.\./shared|shared/reference|reference/\w+\.md|\b(offline|baselines|suite-anchors|DESIGN|"
                         r"paper)\.md\b|\bDESIGN\b")
    offenders = []
    for pattern in ("*.py", "*.md", "*.toml", "*.yaml", "Makefile"):
        for path in PROJECT_ROOT.rglob(pattern):
            rel = path.relative_to(PROJECT_ROOT)
            if rel.parts[0] in (".venv", ".git", "data", "outputs", "models", "checkpoints", "cache") or \
                    rel.parts[:2] == ("reports", "published") or "egg-info" in rel.parts[0]:
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if outside.search(line) and "test_no_file_points_outside" not in line and "outside = re" not in line:
                    offenders.append(f"{rel}:{n}: {line.strip()[:80]}")
    assert offenders == []


def private_imports(root: Path) -> list[str]:
    """`from a.b import _name` where the importing module is not in package a.b's folder: a private helper used
    across packages (make it public, or move it where both can use it)."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            src = module_name(path, root)
            src_pkg = src if path.name == "__init__.py" else src.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                        and node.module.split(".")[0] in PACKAGES:
                    dst_pkg = node.module.rpartition(".")[0] or node.module
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__") and dst_pkg != src_pkg:
                            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.module}.{alias.name}")
    return found


def test_no_private_helper_is_imported_across_packages(tmp_path):
    assert private_imports(PROJECT_ROOT) == []
    (tmp_path / "pipeline" / "app").mkdir(parents=True)
    (tmp_path / "pipeline" / "data").mkdir()
    (tmp_path / "pipeline" / "app" / "cli.py").write_text("from pipeline.data.adapters import _resize\n")
    (tmp_path / "pipeline" / "data" / "drr.py").write_text("from pipeline.data.adapters import _resize\n")
    assert private_imports(tmp_path) == ["pipeline/app/cli.py:1: pipeline.data.adapters._resize"]
