"""Stage ``examples/*.ipynb`` with outputs into ``docs/notebooks/`` before Sphinx reads.

For each notebook, in this order:

1. ``$BIMSNN_EXECUTED_NB_DIR/<name>.ipynb`` when that folder is set and holds an executed
   copy of the *same* notebook (same cell sources, every code cell run, no error output):
   ``pytest`` (tests/test_notebooks.py) writes these, so CI executes each notebook once;
2. ``docs/notebooks/<name>.ipynb`` from a previous build, on the same conditions;
3. otherwise the notebook is executed here with nbclient, as tests/test_notebooks.py does
   (fresh ``python3`` kernel, ``MPLBACKEND=Agg``, ``OMP_NUM_THREADS=1``, a temporary
   working folder), two at a time.

Notebooks that no longer exist in ``examples/`` are removed from ``docs/notebooks/``. An
execution error stops the build (``SphinxError``).

The ``notebook-table`` directive lists the staged notebooks: title, number of exercises
(``bimsnn.course.EXERCISES``) and the time their cells took in the run that produced the
outputs (nbclient's per-cell timing metadata).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from docutils import nodes
from recipe_flags import parse_rst
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

ENV_DIR = "BIMSNN_EXECUTED_NB_DIR"
TIMEOUT_S = 600


def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def executed_copy_ok(source: Path, candidate: Path) -> bool:
    """True when ``candidate`` is ``source`` run top to bottom: same cells, all executed,
    no error outputs."""
    if not candidate.is_file():
        return False
    try:
        src = nbformat.read(source, as_version=4)
        done = nbformat.read(candidate, as_version=4)
    except Exception:  # unreadable or half-written copy: execute instead
        return False
    if _sources(src) != _sources(done):
        return False
    code = [c for c in done.cells if c.cell_type == "code"]
    return all(c.execution_count is not None for c in code) and not any(
        o.output_type == "error" for c in code for o in c.outputs)


def execute(source: str, target: str) -> float:
    """Run ``source`` in a fresh kernel and write it, with outputs, to ``target``."""
    import time

    from nbclient import NotebookClient

    os.environ["MPLBACKEND"] = "Agg"
    os.environ["OMP_NUM_THREADS"] = "1"
    nb = nbformat.read(source, as_version=4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": tmp}}).execute()
    nbformat.write(nb, target)
    return time.perf_counter() - t0


def stage(examples: Path, staged: Path, executed_dir: Path | None, jobs: int = 2) -> dict:
    """Fill ``staged`` with executed copies of ``examples/*.ipynb``; returns {name: how}."""
    staged.mkdir(parents=True, exist_ok=True)
    sources = sorted(examples.glob("*.ipynb"))
    names = {p.name for p in sources}
    for old in staged.glob("*.ipynb"):
        if old.name not in names:
            old.unlink()
    how, todo = {}, []
    for src in sources:
        dst = staged / src.name
        if executed_dir is not None and executed_copy_ok(src, executed_dir / src.name):
            shutil.copyfile(executed_dir / src.name, dst)
            how[src.name] = f"copied from ${ENV_DIR}"
        elif executed_copy_ok(src, dst):
            how[src.name] = "reused from the previous build"
        else:
            dst.unlink(missing_ok=True)
            todo.append(src)
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as pool:
            futures = {src: pool.submit(execute, str(src), str(staged / src.name))
                       for src in todo}
            for src, fut in futures.items():
                try:
                    how[src.name] = f"executed in {fut.result():.0f} s"
                except Exception as e:
                    raise ExtensionError(f"examples/{src.name} failed to execute: {e}") from e
    return how


def _on_builder_inited(app) -> None:
    docs = Path(app.srcdir)
    env_dir = os.environ.get(ENV_DIR)
    how = stage(docs.parent / "examples", docs / "notebooks", Path(env_dir) if env_dir else None,
                jobs=app.config.bimsnn_notebook_jobs)
    for name, what in sorted(how.items()):
        logger.info(f"[notebooks] {name}: {what}")


def _run_seconds(nb) -> float | None:
    from datetime import datetime

    total = 0.0
    for c in nb.cells:
        t = c.get("metadata", {}).get("execution", {})
        a, b = t.get("iopub.execute_input"), t.get("shell.execute_reply")
        if c.cell_type == "code" and not (a and b):
            return None
        if a and b:
            total += (datetime.fromisoformat(b.replace("Z", "+00:00"))
                      - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
    return total


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*`|_\\" else ch for ch in text)


class NotebookTable(SphinxDirective):
    """Table of ``docs/notebooks/*.ipynb``: link, title, exercises, cell time of its run."""

    def run(self):
        from bimsnn.course import EXERCISES

        rows = []
        for path in sorted((Path(self.env.srcdir) / "notebooks").glob("*.ipynb")):
            self.env.note_dependency(str(path))
            nb = nbformat.read(path, as_version=4)
            title = next((line[2:].strip() for c in nb.cells if c.cell_type == "markdown"
                          for line in c.source.splitlines() if line.startswith("# ")), path.stem)
            title = title.split("·", 1)[-1].strip()
            secs = _run_seconds(nb)
            rows += [f"   * - :doc:`{path.stem[:2]} <notebooks/{path.stem}>`",
                     f"     - {_escape(title)}",
                     f"     - {len(EXERCISES.get(path.stem[:2], ()))}",
                     f"     - {'?' if secs is None else f'{secs:.0f} s'}"]
        text = [".. list-table::", "   :header-rows: 1", "   :widths: 8 62 12 18", "",
                "   * - notebook", "     - title", "     - exercises",
                "     - cells ran in (this build)", *rows]
        container = nodes.container(classes=["notebook-table"])
        container.extend(parse_rst(self, "\n".join(text)))
        return [container]


def setup(app):
    app.add_config_value("bimsnn_notebook_jobs", 2, "env")
    app.add_directive("notebook-table", NotebookTable)
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
