"""The downloader's place: srlib.datasets outside the core; srlib.commons, a shim, still works."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import srlib.commons
import srlib.datasets
from srlib.datasets import api, transfer

try:
    from tests.datasets._commons_server import make_image
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from datasets._commons_server import make_image

REPO = Path(__file__).resolve().parents[2]
SRLIB = REPO / "srlib"
CONTACT = "srlib-tests@example.invalid"
# Every public name of srlib/commons.py before it moved (its __all__ and the constants).
OLD_PUBLIC = {
    api: "API_URL BATCH COLUMNS DEFAULT_CATEGORY DEFAULT_LIST DEFAULT_MIMES MAX_RETRY_AFTER "
    "RETRY_STATUS CommonsError Item build_list iter_category parse_list resolve_titles "
    "strip_html write_list",
    transfer: "CHUNK DEFAULT_DEADLINE DEFAULT_FORMATS DEFAULT_MAX_BYTES DEFAULT_OUT LOCK_NAME "
    "MAX_NAME_BYTES SNIFF_BYTES Summary download safe_name",
}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _imports(path: Path) -> set[str]:
    """Modules a file imports, at module level or inside functions ("from srlib import x": both
    srlib and srlib.x, since x may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_old_module_keeps_every_public_name():
    for module, names in OLD_PUBLIC.items():
        for name in names.split():
            assert getattr(srlib.commons, name) is getattr(module, name), name
    assert srlib.commons.__all__ == srlib.datasets.__all__
    for name in srlib.datasets.__all__:
        assert hasattr(srlib.datasets, name) and hasattr(srlib.commons, name), name


def test_no_core_module_imports_the_downloader():
    core = [p for p in SRLIB.rglob("*.py") if "datasets" not in p.relative_to(SRLIB).parts]
    core.remove(SRLIB / "commons.py")  # the shim
    assert SRLIB / "io.py" in core and len(core) > 10
    for path in core:
        bad = {m for m in _imports(path) if m.startswith(("srlib.datasets", "srlib.commons"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
    # And the downloader never imports private names across modules.
    for path in (SRLIB / "datasets").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("srlib"):
                private = [a.name for a in node.names if a.name[:1] == "_" != a.name[1:2]]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_downloader_starts_without_torch():
    code = "import sys, srlib.datasets, srlib.commons; print('torch' in sys.modules)"
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_every_srlib_package_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = config["tool"]["setuptools"]["packages"]
    packages = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in SRLIB.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert "srlib.datasets" in packages
    assert packages <= set(listed), f"pyproject.toml lacks {sorted(packages - set(listed))}"


def test_python_m_srlib_commons_behaves_as_python_m_srlib_datasets(fake_commons, tmp_path):
    fake = fake_commons
    title = fake.add("File:Zoïsite.jpg", make_image(64, 48))
    data = fake.files[title]
    item = api.Item(title, fake.url(title), len(data), sha1=hashlib.sha1(data).hexdigest())
    listing = api.write_list([item], tmp_path / "list.tsv")
    common = ["--api", fake.api, "--contact", CONTACT, "--no-progress"]
    runs = {}
    for module in ("srlib.commons", "srlib.datasets"):
        out = tmp_path / module
        first = _run("-m", module, "download", str(listing), "--out", str(out), *common)
        missing = _run(
            "-m", module, "download", str(tmp_path / "no.tsv"), "--out", str(out), *common
        )
        usage = _run("-m", module, "download", "--workers", "x", str(listing))
        assert (out / "Zoïsite.jpg").read_bytes() == data
        # The old name is one letter shorter: usage lines wrap at other columns.
        runs[module] = [
            (r.returncode, r.stdout, " ".join(r.stderr.replace(module, "MODULE").split()))
            for r in (first, missing, usage)
        ]
    assert runs["srlib.commons"] == runs["srlib.datasets"]
    first, missing, usage = runs["srlib.commons"]
    assert first == (0, "downloaded 1 (0.0 MiB), already done 0, filtered out 0, failed 0\n", "")
    assert missing[0] == 2 and missing[2].startswith("error: [Errno 2] No such file")
    assert usage[0] == 2 and usage[2].startswith("usage: python -m MODULE download")
    assert "argument --workers: invalid int value: 'x'" in usage[2]
    help_ = _run("-m", "srlib.commons", "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("usage: python -m srlib.commons")
    assert "resumable, verified downloader (stdlib HTTP only)" in " ".join(help_.stdout.split())
