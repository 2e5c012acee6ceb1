"""The notebooks run end to end with the `smoke` preset and show figures, without errors."""

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _sources(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


def _code_cells(name: str) -> list[str]:
    return [src for kind, src in _sources(ROOT / name) if kind == "code"]


NOTEBOOKS = ["upscale_unet.ipynb", "upscale_resnet.ipynb", "upscale_realworld.ipynb"]


def _build_tool():
    """tools/build_notebooks.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "tools/build_notebooks.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_notebooks_match_their_sources_and_each_other():
    """Edits belong in notebooks/*.py (jupytext): a notebook edited by hand fails here."""
    tool = _build_tool()
    assert list(tool.NOTEBOOKS) == NOTEBOOKS
    for name in NOTEBOOKS:
        built = tool.build(name)
        nbformat.validate(built)
        assert tool.build(name) == built  # the same file every time (cell ids included)
        assert _sources(ROOT / name) == tool.cell_sources(built), (
            f"{name} differs from {tool.NOTEBOOKS[name][0]}: edit the source, run "
            "`python tools/build_notebooks.py`, and re-execute the notebook"
        )
    unet, resnet = (_code_cells(name) for name in ("upscale_unet.ipynb", "upscale_resnet.ipynb"))
    assert len(unet) == len(resnet) and unet[1] != resnet[1]
    assert unet[:1] + unet[2:] == resnet[:1] + resnet[2:]  # only the configuration cell differs
    # ... and in it only the model and the names: the rest of the two copies must not drift.
    diff = difflib.ndiff(unet[1].splitlines(), resnet[1].splitlines())
    changed = [line[2:] for line in diff if line[0] in "+-"]
    starts = ("from srlib.models import ", "KIND, LABEL, SHIPPED = ", "OTHER = ")
    assert len(changed) == 6 and all(line.startswith(starts) for line in changed), changed
    # The realistic notebook has the Colab cell, the split and the model cell of the other two.
    real = _code_cells("upscale_realworld.ipynb")
    split = unet[2].split("\n\ncrop_args")[0]
    model_cell = next(c for c in unet if "make_model = partial(" in c)
    assert real[0] == unet[0] and real[2].startswith(split + "\n\n") and model_cell in real


def test_build_tool_rewrites_only_the_notebooks_whose_source_changed(tmp_path, monkeypatch):
    """A notebook that matches its source keeps its outputs; an edited source rewrites its own."""
    import shutil

    tool = _build_tool()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    tool.main()
    for name in NOTEBOOKS:
        assert _sources(tmp_path / name) == tool.cell_sources(tool.build(name))
    executed = {}  # each notebook with an output in its first code cell, as after a run
    for name in NOTEBOOKS:
        nb = nbformat.read(tmp_path / name, as_version=4)
        next(c for c in nb.cells if c.cell_type == "code").outputs = [
            nbformat.v4.new_output("stream", text="ran\n")
        ]
        nbformat.write(nb, tmp_path / name)
        executed[name] = (tmp_path / name).read_text()
    with open(tmp_path / "notebooks/realworld.py", "a") as source:
        source.write('\n# %%\nprint("one more cell")\n')
    tool.main()
    assert _sources(tmp_path / "upscale_realworld.ipynb")[-1] == ("code", 'print("one more cell")')
    assert (tmp_path / "upscale_realworld.ipynb").read_text() != executed["upscale_realworld.ipynb"]
    for name in ("upscale_unet.ipynb", "upscale_resnet.ipynb"):  # untouched, outputs and all
        assert (tmp_path / name).read_text() == executed[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["upscale_unet.ipynb", "upscale_resnet.ipynb"])
def test_look_inside_cells_change_nothing_the_training_uses(
    name, tmp_path, monkeypatch, fake_imagenet_weights, one_thread
):
    """The notebook's cells up to training, run in this process with the look-inside cells
    and without them: the RNG states training starts from and the trained models and histories
    (every loss part of every step, every validation) are identical to the last bit."""
    import random

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path / "no_photos"))  # the embedded photos
    code = [c for c in nbformat.read(ROOT / name, as_version=4).cells if c.cell_type == "code"]
    look_inside = [c for c in code if "look-inside" in c.metadata.get("tags", [])]
    assert len(look_inside) == 3
    train = next(i for i, c in enumerate(code) if "h = fit(" in c.source)  # the training cell
    assert all(code.index(c) < train for c in look_inside)
    runs = []
    for looking in (True, False):
        monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / f"runs_{looking}"))
        torch.manual_seed(0), np.random.seed(0), random.seed(0)  # each pass from the same state
        namespace: dict = {}
        for cell in code[:train]:
            if looking or cell not in look_inside:
                exec(cell.source, namespace)
        rng = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
        exec(code[train].source, namespace)
        plt.close("all")
        runs.append((namespace, rng))
    (looked, rng_looked), (plain, rng_plain) = runs
    assert torch.equal(rng_looked[0], rng_plain[0])
    assert np.array_equal(rng_looked[1], rng_plain[1]) and rng_looked[2] == rng_plain[2]
    assert list(looked["models"]) == ["l1", "perceptual"]
    timing = ("train_seconds", "samples_per_s")
    for loss in ("l1", "perceptual"):
        a, b = looked["models"][loss].state_dict(), plain["models"][loss].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        a, b = looked["histories"][loss], plain["histories"][loss]
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def _committed_outputs() -> dict[Path, float]:
    """mtime of every file in images/ and checkpoints/: a run without SRLIB_SAVE changes none."""
    return {p: p.stat().st_mtime for d in ("images", "checkpoints") for p in ROOT.glob(f"{d}/*")}


def _git_status() -> str | None:
    """`git status --porcelain` of the repository (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch) -> str:
    """A 'python3' kernel spec for this interpreter, first on JUPYTER_PATH: no registration step."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "python3"


def _execute(name: str, kernel: str) -> list:
    """Run a notebook of the repository (a copy in memory) from the repository root; its outputs."""
    nb = nbformat.read(ROOT / name, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name=kernel, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["upscale_unet.ipynb", "upscale_resnet.ipynb"])
def test_notebook_runs_with_smoke_preset(name, tmp_path, monkeypatch, this_python_kernel):
    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("SRLIB_BENCHMARK", raising=False)
    monkeypatch.delenv("SRLIB_SAVE", raising=False)
    before = _committed_outputs()
    status = _git_status()
    outputs = _execute(name, this_python_kernel)
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # preview, curves, grids
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "| bicubic" in text  # the comparison table...
    for loss in ("l1", "perceptual"):  # ...and a verdict against bicubic for every model
        assert f"({loss}): " in text and "over bicubic" in text
    assert "NOT LEARNING" in text  # 4 smoke steps learn nothing, and the notebook says so
    # The look-inside cells: the head's shapes at x2 (3 * 2^2 = 12 channels at LR, 16 px lq
    # crops), the perceptual loss's parts, and the first step's gradients (zero-init head).
    assert re.search(r"conv: \(1, 12, 16, 16\)\n +PixelShuffle: \(1, 3, 32, 32\)", text)
    assert "sr == model(lq): True" in text
    for part in ("feat3", "feat6", "pixel"):
        assert re.search(rf"^{part}: L1 [\d.]+ x [\d.]+ = [\d.]+% of the loss", text, re.M)
    assert "non-zero gradients: ['head.up.0.weight', 'head.up.0.bias']\n" in text
    # The smoke run must not overwrite the committed figures and checkpoints.
    assert _committed_outputs() == before
    assert _git_status() == status  # nothing else in the repository changed either
    assert (tmp_path / "runs").is_dir() and os.listdir(tmp_path / "runs")


@pytest.mark.slow
def test_realworld_notebook_runs_with_smoke_preset(tmp_path, monkeypatch, this_python_kernel):
    """Realistic lq, a GAN fine-tune, a real JPEG and the degraded-benchmark table, in runs/."""
    from PIL import Image

    from srlib.metrics import CONDITIONS
    from srlib.training import load_model

    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path / "no_photos"))  # the embedded photos, always
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("SRLIB_SAVE", raising=False)
    before = _committed_outputs()
    status = _git_status()
    outputs = _execute("upscale_realworld.ipynb", this_python_kernel)
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # previews, curves, JPEG
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "x an L1 step" in text  # the GAN run ran after the L1 run, and says what a step costs
    # No run of the UNet notebook under this out_dir: the shipped clean model, and it says so.
    assert "UNet clean (L1) from checkpoints/unet_x2.pt: the shipped checkpoint" in text
    assert re.search(r"^\| condition +\| method +\| psnr_y +\|", text, re.M)  # the table...
    methods = ["bicubic (MATLAB)", "UNet clean (L1)", "UNet realistic (L1)", "UNet realistic + GAN"]
    for cond in CONDITIONS:  # ...with a row per condition and method
        for method in methods:
            assert re.search(rf"^\| {cond} +\| {re.escape(method)} +\|", text, re.M)
    assert "does NOT beat bicubic at " in text or "every model beats bicubic" in text
    real = tmp_path / "runs" / "real"
    with Image.open(real / "chelsea_x2_q50.jpg") as jpeg:  # the hero photo as a real JPEG
        assert jpeg.format == "JPEG"
    assert {p.name for p in (real / "figures").iterdir()} >= {
        "real_loss_curves.png",
        "real_jpeg_hero.png",
    }
    exported = {
        n: load_model(real / "export" / f"{n}_x2.pt")[1] for n in ("unet_real", "unet_real_gan")
    }
    assert {n: (c["config"]["degradation"], c["config"]["gan"]) for n, c in exported.items()} == {
        "unet_real": ("realistic", "none"),
        "unet_real_gan": ("realistic", "patch"),
    }
    assert _committed_outputs() == before  # images/ and checkpoints/ untouched without SAVE
    assert _git_status() == status


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["upscale_unet.ipynb", "upscale_resnet.ipynb", "upscale_realworld.ipynb"]
)
def test_notebook_runs_on_downloaded_photos(name, tmp_path, monkeypatch, this_python_kernel):
    """A folder of photos (as `python -m srlib.datasets download` leaves it), without the
    embedded photos the notebooks name (chelsea, moon): every cell must still run."""
    import numpy as np
    from PIL import Image

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        coarse = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((88, 72), Image.BICUBIC)  # smooth, 88x72
        photo.save(images / f"File_{i}.{'jpg' if i % 2 else 'png'}")
    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("SRLIB_BENCHMARK", raising=False)
    monkeypatch.delenv("SRLIB_SAVE", raising=False)
    outputs = _execute(name, this_python_kernel)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "8 downloaded photos" in text and "held out:   File_" in text
    assert re.search(r"beats? bicubic", text)  # every notebook ends with verdicts against bicubic


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_cell_does_nothing_outside_colab(name, monkeypatch, tmp_path):
    """The first cell installs srlib in Colab only; here (no google.colab) it runs nothing."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(("chdir", path)))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(_code_cells(name)[0], {})
    assert calls == []


def test_colab_cell_clones_installs_and_enters_the_repository(monkeypatch, tmp_path):
    import types

    from srlib.hub import GITHUB_REPO

    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[0] == "git":  # the clone makes the folder, with the repository's marker file
            (tmp_path / "srlib").mkdir()
            (tmp_path / "srlib" / "pyproject.toml").write_text("")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    cell = _code_cells("upscale_unet.ipynb")[0]
    exec(cell, {})
    assert calls == [
        ["git", "clone", "--depth", "1", f"https://github.com/{GITHUB_REPO}"],
        [sys.executable, "-m", "pip", "install", "-q", "-e", "srlib"],
    ]
    assert Path.cwd() == tmp_path / "srlib"
    exec(cell, {})  # run again (or after a runtime restart in the folder): nothing more to do
    assert len(calls) == 2 and Path.cwd() == tmp_path / "srlib"
    monkeypatch.chdir(tmp_path)  # a new kernel starts in /content again: enter, no new clone
    exec(cell, {})
    assert len(calls) == 2 and Path.cwd() == tmp_path / "srlib"
    # Every notebook has the same cell and a badge that opens it in Colab.
    for name in NOTEBOOKS:
        assert _code_cells(name)[0] == cell
        badge = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/{name}"
        assert badge in _sources(ROOT / name)[0][1]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_pick_the_gpu_preset_when_cuda_is_available(name, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("SRLIB_PRESET", raising=False)
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    config = _code_cells(name)[1]
    namespace: dict = {}
    exec(config, namespace)
    assert namespace["PRESET"] == "gpu" and namespace["cfg"].batch_size == 32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    exec(config, namespace)
    assert namespace["PRESET"] == "quick"
    monkeypatch.setenv("SRLIB_PRESET", "smoke")  # the environment still decides when set
    exec(config, namespace)
    assert namespace["PRESET"] == "smoke"
