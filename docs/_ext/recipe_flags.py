"""Directives that read a recipe at build time, so its page cannot drift from the script.

``recipe-doc``: the recipe's module docstring (usage, pipeline, outputs) as reStructuredText,
with its indented command lines set as a bash code block.

``recipe-flags``: a table of every command-line flag, from the very argparse parser the
recipe builds (``bimsnn.training.parse_config``): the recipe's ``main(argv)`` is called with
``argparse.ArgumentParser.parse_args`` patched to hand over the parser and stop. Option
``:vary: NAME`` adds, for every other choice of ``--NAME``, the flags whose defaults change
with it (recipes pick per-dataset defaults with ``peek_flag``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import re
import sys
import textwrap
from pathlib import Path
from unittest import mock

from docutils import nodes
from docutils.parsers.rst import Parser, directives
from docutils.utils import new_document
from sphinx.util.docutils import SphinxDirective

_DEFAULT = re.compile(r"\s*\(default: ((?:(?!\(default: ).)*)\)\s*$", re.S)  # the last one


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def recipe_parser(path: Path, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser ``recipes/<name>.py``'s ``main(argv)`` builds (nothing else runs)."""
    name = "_bimsnn_docs_recipe_" + hashlib.md5(str(path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while decorating
    spec.loader.exec_module(module)

    def capture(parser, args=None, namespace=None):
        raise _Captured(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            module.main(list(argv or []))
        except _Captured as c:
            return c.parser
    raise RuntimeError(f"{path}: main() returned without parsing flags")


def flag_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str, str]]:
    """(flag, values, default, help) per option, in the parser's order; ``--help`` left out."""
    rows = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or not a.option_strings:
            continue
        spelled = [s for s in a.option_strings if "_" not in s and not s.startswith("--no-")]
        flag = spelled[0] if spelled else a.option_strings[0]
        m = _DEFAULT.search(a.help or "")
        text = (a.help or "")[: m.start()] if m else (a.help or "")
        default = m.group(1) if m else ""
        if isinstance(a, argparse.BooleanOptionalAction):
            values = f"{flag} / --no-{flag[2:]}"
            flag = ""
        else:
            if a.choices:
                values = " | ".join("none" if c is None else str(c) for c in a.choices)
            else:
                values = getattr(a.type, "__name__", "str") if a.type else "str"
            if a.nargs == "+":
                values += " ..."
        rows.append((flag, values, default, text.strip()))
    return rows


def _table(header: list[str], rows: list[list[str]], literal_cols=(0, 1, 2)) -> nodes.table:
    table = nodes.table(classes=["recipe-flags"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    thead, tbody = nodes.thead(), nodes.tbody()
    group += thead
    group += tbody

    def row(cells, literal):
        r = nodes.row()
        for i, text in enumerate(cells):
            entry = nodes.entry()
            para = nodes.paragraph()
            if text and literal and i in literal_cols:
                para += nodes.literal(text=text)
            else:
                para += nodes.Text(text)
            entry += para
            r += entry
        return r

    thead += row(header, literal=False)
    for cells in rows:
        tbody += row(cells, literal=True)
    return table


def parse_rst(directive: SphinxDirective, text: str) -> list[nodes.Node]:
    """reStructuredText → nodes, also from a MyST page (whose nested_parse reads Markdown),
    as MyST's ``eval-rst`` does."""
    document = directive.state.document
    newdoc = new_document(document["source"], document.settings)
    newdoc.reporter = document.reporter
    Parser().parse(text, newdoc)
    return list(newdoc.children)


def _recipe_path(directive: SphinxDirective) -> Path:
    path = (Path(directive.env.srcdir).parent / directive.arguments[0]).resolve()
    if not path.is_file():
        raise directive.error(f"no such recipe: {path}")
    directive.env.note_dependency(str(path))
    return path


class RecipeFlags(SphinxDirective):
    required_arguments = 1
    option_spec = {"vary": directives.unchanged}

    def run(self):
        path = _recipe_path(self)
        base = recipe_parser(path)
        rows = flag_rows(base)
        out = [_table(["flag", "values", "default", "meaning"],
                      [[f or v.split(" / ")[0], v if f else "on / off", d, h]
                       for f, v, d, h in rows])]
        vary = self.options.get("vary")
        if vary:
            action = next(a for a in base._actions if a.dest == vary)
            default = _DEFAULT.search(action.help).group(1)
            base_defaults = {r[0] or r[1]: r[2] for r in rows}
            diff_rows = []
            for choice in action.choices or ():
                if choice is None or str(choice) == default:
                    continue
                other = flag_rows(recipe_parser(path, [f"--{vary}", str(choice)]))
                for f, v, d, _ in other:
                    key = f or v
                    if base_defaults.get(key) != d and key != f"--{vary}":
                        diff_rows.append([f"--{vary} {choice}", (f or v.split(" / ")[0]), d])
            if diff_rows:
                para = nodes.paragraph()
                para += [nodes.Text("Defaults that change with "),
                         nodes.literal(text=f"--{vary}"), nodes.Text(" (the table above is for "),
                         nodes.literal(text=f"--{vary} {default}"), nodes.Text("):")]
                out += [para, _table([f"--{vary}", "flag", "default"], diff_rows)]
        return out


def _docstring_rst(doc: str) -> str:
    """Indented command lines (``python ...``, ``torchrun ...``) become a bash code block."""
    lines, out, in_code = doc.splitlines(), [], False
    for line in lines:
        is_cmd = line.startswith("    ") and (line.lstrip().startswith(("python ", "torchrun "))
                                             or (in_code and line.strip()))
        if is_cmd and not in_code:
            out += [".. code-block:: bash", ""]
            in_code = True
        elif not is_cmd and in_code:
            in_code = False
            if line.strip():
                out.append("")
        out.append(("    " + line.strip()) if in_code else line)
    return "\n".join(out)


class RecipeDoc(SphinxDirective):
    required_arguments = 1

    def run(self):
        path = _recipe_path(self)
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        container = nodes.container(classes=["recipe-doc"])
        container.extend(parse_rst(self, textwrap.dedent(_docstring_rst(doc or ""))))
        return [container]


def setup(app):
    app.add_directive("recipe-flags", RecipeFlags)
    app.add_directive("recipe-doc", RecipeDoc)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
