"""notebooks/quickstart.ipynb runs top to bottom, in the project's venv, on a fresh default store.

The notebook asserts its own numbers (the explanation adds up to the answer's log-odds, and the
waterfall ends there); here every cell must run without an error on a store that holds only a
champion trained on the synthetic default, and the waterfall picture must come out.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import REPO

from router_model import pipeline

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
KERNEL = "mushroom-router-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def champion_in_default_store(fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project home whose default store (no MLFLOW_TRACKING_URI) holds a synthetic champion."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the notebook must find the store `make run` makes
    assert pipeline.retrain(source="synthetic")["alias"] == "champion"
    return fresh_store


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running this venv's python, found first (no user or system kernel shadows it)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def outputs(cell: nbformat.NotebookNode, mime: str) -> list[str]:
    return [out["data"][mime] for out in cell.outputs if mime in out.get("data", {})]


@pytest.mark.timeout(900)
def test_quickstart_runs_top_to_bottom(champion_in_default_store, venv_kernel, tmp_path, monkeypatch):
    picture = tmp_path / "waterfall.png"
    monkeypatch.setenv("MUSHROOM_WATERFALL_PNG", str(picture))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\n\nsys.executable"))

    # Raises CellExecutionError, naming the cell, on the first cell that fails.
    NotebookClient(
        notebook,
        kernel_name=venv_kernel,
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    *cells, check = notebook.cells
    assert outputs(check, "text/plain") == [repr(sys.executable)]
    figures = [i for i, cell in enumerate(cells) if cell.cell_type == "code" and outputs(cell, "image/png")]
    assert len(figures) == 2, "expected the ROC trade-off and the waterfall"
    assert "fig, end = waterfall(explanation" in cells[figures[-1]].source
    assert picture.read_bytes().startswith(PNG_MAGIC)
    # What a user reads: no warnings or progress bars between the cells' results.
    stderr = [
        "".join(out.text)
        for cell in cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("name") == "stderr"
    ]
    assert stderr == []
