"""The notebook course in examples/ (01–11): structure, no committed outputs, and execution.

Structure (fast): eleven notebooks numbered 01–11; each is committed without outputs and has a
title, a "## Learning objectives" cell right after it, two to four "### Exercise N" cells each
followed by a code cell that leaves ``answer_N = None`` and a call to its check from
:mod:`bimsnn.course` (the checks of ``bimsnn.course.EXERCISES["NN"]``, in order), equation
numbers within the paper's eq. 1–10, and a final "## Summary" cell. ``tests/test_course.py``
runs the worked solutions in ``examples/solutions/`` through the same checks.

Execution (``slow``): each notebook runs top to bottom in a fresh ``python3`` kernel
(jupyter_client starts it with this interpreter), ``OMP_NUM_THREADS=1``, with matplotlib's
inline backend (headless; it embeds every figure as PNG in the outputs), the exercise cells
unfilled: every check must then print "not answered yet", no cell may fail, at least two
figures must be drawn, and it must finish in under two minutes. CI runs it (``pytest -q``
selects every marker). Notebook 07 runs a second time with ``BIMSNN_SHARED_DATA`` pointing
nowhere: it must fall back to the generated demo EEG/ECG and say so in its output.

Executed copies: when the environment variable ``BIMSNN_EXECUTED_NB_DIR`` is set, each
executed notebook (with its outputs and figures) is also written to that directory under its
own file name (``<that dir>/01_lif_neuron.ipynb``, ...), so that a documentation build can
render those copies instead of executing the notebooks again. The directory is created if
needed; the notebooks in examples/ are never modified.
"""

import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from bimsnn import course

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
EXERCISE = re.compile(r"^### Exercise (\d+)\b")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def test_there_are_eleven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 12)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3      # teaching prose


def exercises(nb) -> list[tuple[int, list]]:
    """(N, the code cells up to the next markdown cell) for every "### Exercise N" cell."""
    found = []
    for i, c in enumerate(nb.cells):
        m = EXERCISE.match(c.source) if c.cell_type == "markdown" else None
        if m:
            code = []
            for d in nb.cells[i + 1:]:
                if d.cell_type != "code":
                    break
                code.append(d)
            found.append((int(m.group(1)), code))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure_objectives_exercises_summary(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.name[:2]} ")
    assert cells[1].cell_type == "markdown" and cells[1].source.startswith("## Learning objectives")
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## Summary")

    checks = course.EXERCISES[path.name[:2]]
    found = exercises(nb)
    assert [n for n, _ in found] == list(range(1, len(checks) + 1))
    assert 2 <= len(found) <= 4
    for (n, code), check in zip(found, checks):
        text = "\n".join(c.source for c in code)
        assert re.search(rf"^answer_{n} = None\b", text, re.M), f"exercise {n}: no placeholder"
        assert f"{check.__name__}(answer_{n})" in text, f"exercise {n}: no {check.__name__} call"
    imports = "\n".join(c.source for c in cells if c.cell_type == "code")
    for check in checks:
        assert re.search(rf"from bimsnn\.course import .*\b{check.__name__}\b", imports)

    prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    numbers = [int(n) for ref in re.findall(r"eq\. (\d+(?:\s*[–-]\s*\d+)?)", prose)
               for n in re.split(r"\s*[–-]\s*", ref)]
    assert all(1 <= n <= 10 for n in numbers), numbers                # the paper's numbering
    assert "plt." in imports                                          # figures


def test_every_notebook_has_a_solutions_file():
    names = {p.name for p in (EXAMPLES / "solutions").glob("*_solutions.py")}
    assert names == {f"{p.stem}_solutions.py" for p in NOTEBOOKS}


def execute(path: Path, monkeypatch, tmp_path) -> tuple:
    """Run one notebook headless (see the module docstring); return it and the seconds taken."""
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", INLINE_BACKEND)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()                      # raises CellExecutionError on any failing cell
    return nb, time.perf_counter() - t0


def stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch, tmp_path):
    nb, elapsed = execute(path, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{path.name}: {len(images)} figures"
    assert stream_text(nb).count("not answered yet") == len(course.EXERCISES[path.name[:2]])

    out_dir = os.environ.get("BIMSNN_EXECUTED_NB_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, Path(out_dir) / path.name)
    assert elapsed < 120, f"{path.name} took {elapsed:.0f} s (budget: < 2 min on a laptop)"


@pytest.mark.slow
def test_encoders_notebook_falls_back_to_demo_data_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("BIMSNN_SHARED_DATA", str(tmp_path / "no_shared_data"))
    nb, _ = execute(EXAMPLES / "07_spike_encoders.ipynb", monkeypatch, tmp_path)
    text = stream_text(nb)
    assert "SIMULATED demo EEG" in text and "SIMULATED demo ECG" in text
    assert "shared data folder absent" in text
