"""Sphinx configuration for the bimsnn documentation.

Build (from the repository root; warnings are errors, as in CI)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks in ``examples/`` are staged into ``docs/notebooks/`` (git-ignored) with their
outputs by ``_ext/notebooks.py``: copied from ``$BIMSNN_EXECUTED_NB_DIR`` when pytest left
executed copies there, executed here otherwise. See docs/about_docs.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "bimsnn"
author = "bimsnn contributors"
copyright = "bimsnn contributors, MIT licence"  # noqa: A001 (Sphinx's name)
from bimsnn import __version__ as release  # noqa: E402

version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "notebooks",       # docs/_ext: stage executed notebooks into docs/notebooks/
    "recipe_flags",    # docs/_ext: the recipes' flag tables, from their argparse parsers
    "readme_sections", # docs/_ext: sections of README.md included by heading
]

exclude_patterns = ["_build", "_ext", "notebooks/.ipynb_checkpoints", "**/.ipynb_checkpoints",
                    "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# -- autodoc / napoleon (Google-style "Args:" / "Returns:" sections) ------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Methods without a docstring (e.g. an autograd.Function's forward) do not borrow torch's or
# snnTorch's, whose cross-references point into those projects' docs.
autodoc_inherit_docstrings = False
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False
python_display_short_literal_types = True

# -- MyST / notebooks --------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"          # _ext/notebooks.py hands over notebooks with outputs
nb_merge_streams = True
nb_output_stderr = "show"       # as a student running the notebook would see it

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"bimsnn {release}"
html_static_path: list[str] = []


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant without a ``#:`` comment would show its type's docstring (dict's, str's)."""
    doc = getattr(type(obj), "__doc__", None)
    type_doc = doc.strip().splitlines() if isinstance(doc, str) else []
    if what in ("data", "attribute") and lines and type_doc and lines[0].strip() == type_doc[0]:
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
