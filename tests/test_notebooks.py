"""Execute every notebook in notebooks/ top to bottom (nbclient); any cell error fails the test.

The kernel gets `RANKMIXER_NOTEBOOK_SMALL=1`, which the notebooks read in their first code
cell to shrink data, models and epochs, so each runs in seconds on a 2-core CPU. Each notebook
runs in its own kernel (notebook 3 switches the process to legacy Keras for TFRS). Files the
notebooks write go to a temporary directory (`RANKMIXER_NOTEBOOK_OUT`).

The committed notebooks must also be executed, with outputs kept and no error outputs, since
they are what people read on GitHub.
"""

from __future__ import annotations

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# Seconds per cell in the small-size mode; generous for a loaded 2-core CI machine.
CELL_TIMEOUT = 240


def _ids(paths):
    return [p.stem for p in paths]


def test_there_are_four_notebooks():
    assert len(NOTEBOOKS) == 4, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_is_executed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    not_run = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not not_run, f"{path.name}: code cells {not_run} were not executed"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not run top to bottom"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} contains error outputs: {errors[0].get('ename')}"
    assert sum(len(c.outputs) for c in code) >= len(code) // 2, f"{path.name}: outputs stripped"
    assert "RANKMIXER_NOTEBOOK_SMALL" in "".join(code[0].source), "first cell must read the switch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_small_mode(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)  # notebook 3 sets it itself, before TensorFlow loads
    env.update(
        RANKMIXER_NOTEBOOK_SMALL="1",
        RANKMIXER_NOTEBOOK_OUT=str(tmp_path),
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute(env=env)  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in errors if o.output_type == "error"]
