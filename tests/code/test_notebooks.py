"""Notebooks are committed without outputs: no stale results, no data from someone's run, small diffs."""

import subprocess

import nbformat
import pytest
from support import REPO

#: The notebooks git holds (not ``make notebook``'s executed copies, which git ignores).
NOTEBOOKS = [
    REPO / name
    for name in subprocess.run(
        ["git", "ls-files", "--", "notebooks/*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
]


def test_the_quickstart_is_there():
    assert REPO / "notebooks" / "quickstart.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_committed_notebook_holds_no_outputs(path):
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    ran = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.execution_count]
    shown = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.outputs]
    assert (ran, shown) == ([], []), (
        f"{path.name}: strip execution counts and outputs from cells {ran or shown}"
    )
