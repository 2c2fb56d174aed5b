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


def _execute_tiny(notebook, tmp_path, monkeypatch):
    """Runs ``notebook`` (in place) in a fresh kernel in ``tmp_path`` with tiny sizes; fails on a
    cell's error or on a file left in the working directory."""
    from nbclient import NotebookClient

    monkeypatch.setenv("SYNPRUNE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv(
        "JAX_COMPILATION_CACHE_DIR",
        os.environ.get("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache")),
    )
    monkeypatch.setenv("MPLBACKEND", "Agg")
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


# Every notebook runs as written with `-m slow` (tens of seconds each, compile-bound at their tiny
# sizes: the quickstart compiles three Brax hopper programs, 60-76 s on 2 cores). By default the
# quickstart's cells run on a cheap task (the test below) and its Brax MAP-Elites run end to end
# in tests/test_cli.py (test_cli_uses_every_core_and_prints_no_noise: me-prune on Brax, split over
# every core); the method notebooks' code paths are tested in their modules' tests.
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_executes_at_tiny_size(path, tmp_path, monkeypatch):
    _execute_tiny(nbformat.read(path, as_version=4), tmp_path, monkeypatch)


# The quickstart's BraxTask(...) call, answered by the reach-and-avoid arm (same sizes,
# descriptors and episode length): its cells then compile in seconds instead of a minute.
CHEAP_TASK = """
import synprune_jax
from synprune_jax.tasks import ReachAvoidArm

def _reach_arm(env_name, backend, **settings):  # the quickstart's hopper, on a cheap task
    return ReachAvoidArm(num_joints=2, num_episodes=1, **settings)

synprune_jax.BraxTask = _reach_arm
"""


def test_quickstart_cells_run_on_a_cheap_task(tmp_path, monkeypatch):
    """Every cell of the quickstart as written (run, archive plots and summary, inspect, export,
    replay, costs), in a kernel at tiny size, with its Brax task swapped for the reach arm by an
    extra cell after the setup cell; the replay of the run (split over the kernel's CPU devices, one
    per core, where the batch divides evenly) repeats the archived return exactly."""
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    code = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    assert "BraxTask(" in notebook.cells[code[1]].source  # the task the extra cell stands in for
    notebook.cells.insert(code[0] + 1, nbformat.v4.new_code_cell(CHEAP_TASK))
    _execute_tiny(notebook, tmp_path, monkeypatch)
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )
    assert "QD-score" in printed and "exported:" in printed
    assert "equal: True" in printed, printed[-2000:]
