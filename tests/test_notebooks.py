"""Every ``notebooks/*.ipynb`` is stored without outputs, is Colab-ready and runs at tiny sizes.

Execution uses nbclient with ``SYNPRUNE_NOTEBOOK_TINY=1`` in the kernel's environment (each
notebook must shrink itself when it sees it) and the repository's compilation cache. Notebooks are
discovered with a glob, so a new notebook is tested without editing this file; none is skipped.
"""

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL_S = 600


def _ids(paths):
    return [path.stem for path in paths]


def test_notebooks_exist():
    names = {path.name for path in NOTEBOOKS}
    assert {"quickstart.ipynb", "sweep_tpu.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_without_outputs_and_colab_ready(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code cells"
    for index, cell in enumerate(code):
        assert cell.get("outputs") == [], f"code cell {index} has stored outputs"
        assert cell.get("execution_count") is None, f"code cell {index} has an execution count"
    first = code[0].source
    assert '"google.colab" in sys.modules' in first, "first code cell must install on Colab"
    assert "%pip install" in first
    assert "jax.default_backend()" in first, "first code cell must detect the accelerator"
    assert "SYNPRUNE_NOTEBOOK_TINY" in first, "first code cell must honour tiny mode"


# The quickstart runs in the default suite; the method notebooks (tens of seconds each, their
# code paths tested elsewhere) with `-m slow`.
@pytest.mark.parametrize(
    "path",
    [
        path if path.name == "quickstart.ipynb" else pytest.param(path, marks=pytest.mark.slow)
        for path in NOTEBOOKS
    ],
    ids=_ids(NOTEBOOKS),
)
def test_executes_at_tiny_size(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("SYNPRUNE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv(
        "JAX_COMPILATION_CACHE_DIR",
        os.environ.get("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache")),
    )
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_PER_CELL_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    # outputs go to temporary directories (notebooks/README.md), never into the working directory
    assert sorted(entry.name for entry in tmp_path.iterdir()) == []
