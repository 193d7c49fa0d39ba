"""Deliberate copies stay copies (diffusers' `# Copied from`): each method folder is self-contained, so code that
two official implementations share (MUNIT's networks are UNIT's; UVCGAN uses CycleGAN's image pool) is copied,
marked on the line above the class or function with `# Copied from <module>.<name>`, and must equal its source
(decorators included). Edit the source, then copy it again."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.offline import PROJECT_ROOT

MARK = re.compile(r"^# Copied from ((?:baselines\.\w+|ours)(?:\.\w+)+)\.(\w+)\s*$")


def top_level(path: Path) -> dict[str, tuple[int, str]]:
    """name -> (first line incl. decorators, exact source incl. decorators) of each top-level class/function."""
    text = path.read_text()
    lines = text.splitlines()
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[node.name] = (first, "\n".join(lines[first - 1:node.end_lineno]))
    return out


def marked_copies(root: Path) -> list[tuple[Path, str, str, str]]:
    """(file, name, source module, source name) for every `# Copied from` mark directly above a definition."""
    found = []
    for path in sorted(list((root / "baselines").rglob("*.py")) + list((root / "ours").rglob("*.py"))):
        lines = path.read_text().splitlines()
        defs = {first: name for name, (first, _) in top_level(path).items()}
        for i, line in enumerate(lines, start=1):
            m = MARK.match(line)
            if m:
                if i + 1 not in defs:
                    raise AssertionError(f"{path.relative_to(root)}:{i}: '# Copied from' must sit on the line "
                                         "directly above a top-level class or function (or its decorators)")
                found.append((path, defs[i + 1], m.group(1), m.group(2)))
    return found


def copy_errors(root: Path) -> list[str]:
    errors = []
    for path, name, module, source_name in marked_copies(root):
        source_file = root / Path(*module.split(".")).with_suffix(".py")
        where = f"{path.relative_to(root)}: {name}"
        if not source_file.is_file():
            errors.append(f"{where}: source module {module} not found")
            continue
        source = top_level(source_file).get(source_name)
        if source is None:
            errors.append(f"{where}: {module} has no top-level {source_name}")
        elif top_level(path)[name][1] != source[1].replace(f"def {source_name}(", f"def {name}(")\
                .replace(f"class {source_name}(", f"class {name}("):
            errors.append(f"{where} differs from {module}.{source_name}; copy it again")
    return errors


def test_the_marked_copies_match_their_sources():
    assert len(marked_copies(PROJECT_ROOT)) >= 10  # MUNIT <- UNIT (9), UVCGAN <- CycleGAN (1)
    assert copy_errors(PROJECT_ROOT) == []


def test_a_drifted_copy_is_reported(tmp_path):
    (tmp_path / "ours").mkdir()
    for name in ("a", "b"):
        (tmp_path / "baselines" / name).mkdir(parents=True)
    (tmp_path / "baselines" / "a" / "pool.py").write_text("def pool(x):\n    return x + 1\n")
    (tmp_path / "baselines" / "b" / "pool.py").write_text("# Copied from baselines.a.pool.pool\n"
                                                          "def pool(x):\n    return x + 2\n")
    assert copy_errors(tmp_path) == ["baselines/b/pool.py: pool differs from baselines.a.pool.pool; copy it again"]
    (tmp_path / "baselines" / "b" / "pool.py").write_text("# Copied from baselines.a.pool.pool\n\n"
                                                          "def pool(x):\n    return x + 1\n")
    with pytest.raises(AssertionError, match="directly above"):
        marked_copies(tmp_path)
