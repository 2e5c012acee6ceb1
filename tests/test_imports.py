"""srlib's imports: no cycle, no private name across modules, a lazy front door, old paths kept.

The graph is read from the source (ast), not from a run: every `import` and `from ... import`
of an srlib module, at module level and inside functions and methods. Left out, because they are
not what the module needs: `if TYPE_CHECKING:` blocks (annotations only), `if __name__ ==
"__main__":` blocks (the module run as a program), and a module-level `__getattr__` (PEP 562),
which imports the new home of a moved name only when the old name is used. Importing a.b.c also
runs the packages a and a.b first: an edge to each that the importer is not itself inside.

    python -m tests.test_imports      # the graph, one module a line
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# srlib.commons moves to srlib.datasets on another branch of issue 26 (with io.pixel_limit made
# public there): its `_pixel_limit` import is that branch's to remove.
PRIVATE_LEFT_TO_OTHERS = {"srlib.commons"}


def module_names() -> dict[str, Path]:
    """{dotted name: file} of every module and package in srlib."""
    names = {}
    for path in sorted((ROOT / "srlib").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


PACKAGES = {name for name, path in module_names().items() if path.name == "__init__.py"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module but those the module docstring says are left out."""
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and (_is_type_checking(node.test) or _is_main_guard(node.test)):
            for child in node.orelse:
                visit(child, top)
            return
        if top and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, False)

    for node in tree.body:
        visit(node, True)
    return found


def targets(module: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The srlib modules an import statement in `module` names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:  # relative: from . import x, from .a import y
        package = module if module in PACKAGES else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    if base in known and len(found) < len(node.names):  # names from the module itself
        found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """{srlib module: the srlib modules importing it imports (see the module docstring)}."""
    files = module_names()
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        if module in PACKAGES:
            inside.add(module)
        for node in imports(tree):
            for target in targets(module, node, known):
                parts = target.split(".")
                ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
                edges |= {target, *(a for a in ancestors if a not in inside)}
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_walk_sees_imports_inside_functions_and_leaves_out_the_rest():
    tree = ast.parse(
        "import srlib.io\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from srlib.models import Upscaler\n"
        "def f():\n    from srlib import data\n"
        "class C:\n    def m(self):\n        from srlib.resize import upsample\n"
        "def __getattr__(name):\n    from srlib import registry\n"
        "if __name__ == '__main__':\n    from srlib.cli import main\n"
    )
    known = set(module_names())
    found = set().union(*(targets("srlib.x", n, known) for n in imports(tree)))
    assert found == {"srlib.io", "srlib.data", "srlib.resize"}


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_srlib_imports_have_no_cycle():
    graph = import_graph()
    assert {"srlib.cli", "srlib.cli.train", "srlib.training.loop", "srlib.registry"} <= set(graph)
    assert "srlib.training.checkpoint" in graph["srlib.cli.train"]  # inside a function
    assert cycles(graph) == []


def test_no_private_name_is_imported_from_another_srlib_module():
    files = module_names()
    private = []
    for module, path in files.items():
        if module in PRIVATE_LEFT_TO_OTHERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("srlib"):
                private += [
                    f"{module}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert private == []


def test_import_srlib_imports_no_torch_and_its_names_load_on_use():
    code = (
        "import sys, srlib\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('srlib.')))\n"
        "print(srlib.TrainConfig.__module__, srlib.build_model.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "srlib.training.config srlib.registry"]


def test_every_name_of_the_front_door_resolves():
    import srlib
    import srlib.training

    for package in (srlib, srlib.training):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        srlib.no_such_name  # noqa: B018


# The public names of srlib/train.py and srlib/train_cli.py before issue 26.
OLD_TRAIN = """
ADDED_FIELDS DEEP_UNET GAN_KINDS LOCATION_FIELDS MIN_GAIN_DB NotLearningWarning PRESETS
PRESET_MODEL_ARGS RUNTIME_FIELDS RunWriteError STOP_SIGNALS STUCK_AFTER_VALIDATIONS TrainConfig
base_psnr check_config check_writable cpu_has_bf16 data_change default_preset distributed_setup
fit is_main_process learning_problem load_checkpoint load_model loss_for lr_at model_args
nonfinite_tensors phase_validations pick_device preset psnr restore_best run_definition
run_or_shipped save_checkpoint seed_everything to_device upgrade_config use_autocast validate
""".split()
OLD_TRAIN_CLI = """EVENT_FILE EXIT_DIVERGED EXIT_INTERRUPTED EXIT_NOT_LEARNING EXIT_WRITE_FAILED
RUN_FILES RUN_LOCK RUN_MANIFEST RunLog STALE_TEMP TRAIN_CHOICES TRAIN_EPILOG TRAIN_MODELS
VAL_CROPS_PER_IMAGE add_train_parser check_device check_resume cmd_train config_flags
data_record read_manifest train_config train_sources train_summary write_manifest""".split()


def test_old_import_paths_still_work():
    import srlib.__main__
    import srlib.cli
    import srlib.data
    import srlib.models
    import srlib.registry
    import srlib.train
    import srlib.train_cli
    from srlib.cli import cache, train
    from srlib.training import loop

    assert [n for n in OLD_TRAIN if not hasattr(srlib.train, n)] == []
    assert [n for n in OLD_TRAIN_CLI if not hasattr(srlib.train_cli, n)] == []
    assert srlib.train.fit is loop.fit and srlib.train_cli.cmd_train is train.run
    assert srlib.train_cli.add_train_parser is train.add_parser
    assert srlib.train_cli.TRAIN_MODELS == {
        "unet": "UNetUpscaler",
        "resnet": "ResNetUNetUpscaler",
        "compact": "Compact",
        "span": "SPAN",
    }
    assert srlib.train_cli.TRAIN_CHOICES == {
        "loss": ("l1", "l2", "perceptual"),
        "downscale": ("bilinear", "bicubic"),
        "degradation": ("clean", "realistic", "realesrgan"),
        "sharpness_kind": ("gradient", "fft"),
        "gan": ("none", "unet", "patch"),
    }
    for name in ("CliError", "build_parser", "main"):
        assert getattr(srlib.__main__, name) is getattr(srlib.cli, name)
    for name in ("build_model", "check_model_config", "MODELS", "parse_model_spec"):
        assert getattr(srlib.models, name) is getattr(srlib.registry, name)
    assert srlib.data.main is cache.main
    with pytest.raises(AttributeError):
        srlib.models.no_such_name  # noqa: B018


def test_one_registry_for_build_model_the_cli_and_the_benchmarks(fake_imagenet_weights):
    import importlib.util

    from srlib.cli import build_parser
    from srlib.registry import ARCHS, MODELS, build_model

    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    (model_flag,) = [a for a in train._actions if "--model" in a.option_strings]
    assert model_flag.choices == list(MODELS) == ["unet", "resnet", "compact", "span"]
    for name, cls in MODELS.items():
        model = build_model({"arch": cls.__name__, "scale": 2})
        assert type(model) is cls is ARCHS[cls.__name__]
        assert type(peers.build(name, 2)) is cls
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_model({"arch": "nope"})


def test_train_flags_take_help_and_choices_from_the_field_metadata():
    from srlib.cli.train import config_flags
    from srlib.training.config import PRESETS, TrainConfig

    flags = config_flags(TrainConfig, PRESETS)
    for f in dataclasses.fields(TrainConfig):
        assert flags[f.name]["help"].startswith(f.metadata.get("help", ""))
        assert flags[f.name].get("choices") == f.metadata.get("choices")
    assert flags["lr"]["help"].startswith("peak; 1e-3 and 4e-3 were 0.1-0.6 dB worse")
    assert "help" not in dataclasses.fields(TrainConfig)[1].metadata  # scale: the default only


if __name__ == "__main__":
    for module, edges in import_graph().items():
        print(f"{module} -> {', '.join(sorted(edges)) or '(nothing in srlib)'}")
    print("cycles:", cycles(import_graph()) or "none")
