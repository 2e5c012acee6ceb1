"""Build the notebooks at the repository root from their sources in notebooks/.

A source is a jupytext py:percent file: `# %%` starts a code cell, `# %% [markdown]` a markdown
cell. notebooks/upscale.py makes two notebooks: a cell tagged "unet" or "resnet"
(`# %% tags=["unet"]`) goes into that one only, an untagged cell into both.

    python tools/build_notebooks.py
    jupyter execute --inplace upscale_unet.ipynb upscale_resnet.ipynb upscale_realworld.ipynb

Edit the sources, not the .ipynb (tests/test_notebooks.py fails when they differ). A notebook
whose cells already match its source is left as it is, outputs included; one that changed is
written without outputs: run it again to refresh them.
"""

import hashlib
from collections import Counter
from pathlib import Path

import jupytext
import nbformat
from nbformat import v4

ROOT = Path(__file__).resolve().parent.parent
# notebook -> (its source, the tag of its variant; None: every cell)
NOTEBOOKS = {
    "upscale_unet.ipynb": ("notebooks/upscale.py", "unet"),
    "upscale_resnet.ipynb": ("notebooks/upscale.py", "resnet"),
    "upscale_realworld.ipynb": ("notebooks/realworld.py", None),
}
VARIANTS = {variant for _, variant in NOTEBOOKS.values() if variant}
NEW_CELL = {"code": v4.new_code_cell, "markdown": v4.new_markdown_cell, "raw": v4.new_raw_cell}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook `name` (a key of NOTEBOOKS) as its source has it, without outputs."""
    source, variant = NOTEBOOKS[name]
    cells, ids = [], Counter()
    for cell in jupytext.read(ROOT / source, fmt="py:percent").cells:
        tags = cell.metadata.get("tags", [])
        if variant not in tags and VARIANTS.intersection(tags):
            continue  # the other variant's cell
        # Ids from the content: a rebuild gives the same file, an edit changes that cell's id.
        digest = hashlib.sha1(cell.source.encode()).hexdigest()[:8]
        ids[digest] += 1
        cells.append(NEW_CELL[cell.cell_type](cell.source, id=f"{digest}-{ids[digest]}"))
        kept = [t for t in tags if t not in VARIANTS]  # e.g. "look-inside"
        if kept:
            cells[-1].metadata["tags"] = kept
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return v4.new_notebook(
        cells=cells, metadata={"kernelspec": kernel, "language_info": {"name": "python"}}
    )


def cell_sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(cell type, source) of every cell: what a notebook must share with its source."""
    return [(c.cell_type, c.source) for c in nb.cells]


def main() -> None:
    for name in NOTEBOOKS:
        path, nb = ROOT / name, build(name)
        if path.exists() and cell_sources(nbformat.read(path, as_version=4)) == cell_sources(nb):
            print(f"{name}: up to date")
            continue
        nbformat.write(nb, path)
        print(f"{name}: written from {NOTEBOOKS[name][0]}; run it to refresh its outputs")


if __name__ == "__main__":
    main()
