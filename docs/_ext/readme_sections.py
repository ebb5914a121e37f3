"""``readme-section``: one ``## Section`` of a Markdown file of the repository, parsed here.

Usage in a MyST page (the path is relative to the repository root)::

    ```{readme-section} README.md
    :section: Paper map
    ```

The section runs from its ``## `` heading (excluded) to the next ``## `` heading, so adding or
reordering sections in the README cannot cut or extend it; ``:section:`` left out takes the
text between the ``# `` title and the first ``## ``. A missing section is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def section_text(text: str, section: str | None) -> str:
    """The body of ``## section`` in ``text`` (or the preamble after ``# title``)."""
    parts = re.split(r"^## +(.+?) *$", text, flags=re.M)   # [preamble, title1, body1, ...]
    if not section:
        return re.sub(r"\A\s*# .*\n", "", parts[0]).strip("\n")
    for title, body in zip(parts[1::2], parts[2::2]):
        if title.strip() == section:
            return body.strip("\n")
    raise KeyError(section)


class ReadmeSection(SphinxDirective):
    required_arguments = 1
    option_spec = {"section": directives.unchanged}

    def run(self):
        path = Path(self.env.srcdir).parent / self.arguments[0]
        self.env.note_dependency(str(path))
        section = self.options.get("section")
        try:
            body = section_text(path.read_text(encoding="utf-8"), section)
        except (OSError, KeyError) as e:
            raise self.error(f"{self.arguments[0]}: no section {section!r} ({e})") from None
        container = nodes.container(classes=["readme-section"])
        self.state.nested_parse(StringList(body.splitlines(), source=str(path)),
                                self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive("readme-section", ReadmeSection)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
