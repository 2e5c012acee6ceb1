"""benchmarks/ as a package: every script runs as `python -m benchmarks.<name>` and as a file,
imports the others as `benchmarks.*`, and changes sys.path only in its one bootstrap."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "benchmarks"
MODULES = sorted(p for p in FOLDER.glob("*.py") if p.name != "__init__.py")
SCRIPTS = [p for p in MODULES if 'if __name__ == "__main__":' in p.read_text()]
# The one sys.path change a script may make: run as a file, it puts the repository root first.
BOOTSTRAP = "if not __package__:\n    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))"


def _top_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every absolute import anywhere in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_siblings_are_imported_through_the_package(path):
    siblings = {p.stem for p in MODULES} | {"_jobs"}
    tree = ast.parse(path.read_text())
    bad = [name for _, name in _top_imports(tree) if name.split(".")[0] in siblings]
    assert not bad, f"{path.name} imports {bad}: write `from benchmarks import ...`"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_the_bootstrap_is_the_only_sys_path_change(path):
    source = path.read_text()
    tree = ast.parse(source)
    changes = [ln for ln in source.splitlines() if "sys.path" in ln]
    if path not in SCRIPTS:  # imported only, never run: no path changes at all
        assert not changes, f"{path.name}: {changes}"
        return
    assert len(changes) == 1 and BOOTSTRAP in _without_comments(source), path.name
    boot = next(
        n.lineno for n in tree.body if isinstance(n, ast.If) and "__package__" in ast.unparse(n)
    )
    ours = [
        line for line, name in _top_imports(tree) if name.split(".")[0] in ("benchmarks", "srlib")
    ]
    assert ours and boot < min(ours), (
        f"{path.name}: the bootstrap must come before line {min(ours)}"
    )


def _without_comments(source: str) -> str:
    """The source with end-of-line comments removed (the bootstrap's comment may vary)."""
    return "\n".join(ln.split("  #", 1)[0] for ln in source.splitlines())


@pytest.mark.parametrize("how", ["file", "module"])
def test_a_script_that_imports_others_runs_both_ways(how, tmp_path):
    """x4_passes imports quality, which imports peers and common: `--help` loads them all.

    As a file, from another folder and without PYTHONPATH: only the bootstrap can make
    `benchmarks` importable there."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if how == "file":
        cmd, cwd = [sys.executable, str(FOLDER / "x4_passes.py"), "--help"], tmp_path
    else:
        cmd, cwd = [sys.executable, "-m", "benchmarks.x4_passes", "--help"], REPO
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Where x4 (two x2 passes) is won or lost" in done.stdout


def test_the_command_line_is_the_one_typed():
    code = "from benchmarks.common import command_line; print(command_line())"
    done = subprocess.run(
        [sys.executable, "-c", code, "a b"], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == f"python -c '{code}' 'a b'"
