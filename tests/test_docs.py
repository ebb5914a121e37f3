"""Every public name of bimsnn is in the API reference (docs/api/*.rst), with a docstring.

Public, precisely: a module or package under ``bimsnn`` none of whose dotted parts starts with
``_`` is public. Its public names are its ``__all__`` where it defines one, otherwise the
functions and classes it defines itself (``obj.__module__`` is the module) whose names do not
start with ``_``. A name is documented when an autodoc directive in docs/api/ names the same
object (under any public path: each object is documented once, where its package exports
it), or, for a module in some ``__all__``, when docs/api/ has ``automodule`` for it.

The docs build itself (``python -m sphinx -W docs docs/_build/html``) is CI's job; this test
needs only the sources, so a public name added without docs fails the fast lane.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types

import bimsnn
from bimsnn.paths import repo_root

API = repo_root() / "docs" / "api"
DIRECTIVE = re.compile(r"^\.\. (auto\w+):: *([\w.]+)", re.M)


def public_modules() -> list[str]:
    names = ["bimsnn"] + [m.name for m in pkgutil.walk_packages(bimsnn.__path__, "bimsnn.")]
    return sorted(n for n in names if not any(p.startswith("_") for p in n.split(".")))


def public_names(module: types.ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, o in vars(module).items() if not n.startswith("_")
            and (inspect.isclass(o) or inspect.isfunction(o))
            and o.__module__ == module.__name__]


def public_objects() -> list[tuple[str, str, object]]:
    """(module, name, object) for every public name of every public module."""
    out = []
    for m in public_modules():
        module = importlib.import_module(m)
        out += [(m, n, getattr(module, n)) for n in public_names(module)]
    return out


def _resolve(target: str):
    """The object an autodoc directive names: an attribute of the longest importable parent
    (``bimsnn.training.fit`` is the function the package exports, not the submodule)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(target)


def documented() -> tuple[set[str], list[tuple[str, object]]]:
    """Modules with ``automodule``, and (target, object) of every other autodoc directive."""
    modules, objects = set(), []
    for page in sorted(API.glob("*.rst")):
        for kind, target in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if kind == "automodule":
                modules.add(target)
            else:
                objects.append((target, _resolve(target)))
    return modules, objects


def _is_documented(name: str, obj, modules: set[str], objects) -> bool:
    if isinstance(obj, types.ModuleType):
        return obj.__name__ in modules
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return any(o is obj for _, o in objects)
    # constants: same name and the same object (small ints and strings are shared, so the
    # name must match too)
    return any(t.rsplit(".", 1)[-1] == name and o is obj for t, o in objects)


def _canonical(module: str, name: str, obj) -> str:
    home = getattr(obj, "__module__", module) or module
    return f"{module}.{name} (defined in {home})"


def test_every_public_name_is_in_the_api_reference(capsys):
    modules, objects = documented()
    items = public_objects()
    missing = [(m, n, o) for m, n, o in items if not _is_documented(n, o, modules, objects)]
    with capsys.disabled():
        print(f"\n{len(items) - len(missing)} documented of {len(items)} public names "
              f"({len({id(o) for _, _, o in items})} distinct objects, "
              f"{len(public_modules())} public modules)")
    assert not missing, (
        "public names missing from docs/api/*.rst (add an autofunction / autoclass / "
        "autodata line to the page of their package, or make them private):\n"
        + "\n".join(_canonical(m, n, o) for m, n, o in missing))


def test_every_public_module_has_a_page():
    modules, _ = documented()
    assert set(public_modules()) <= modules, set(public_modules()) - modules


def test_api_pages_name_only_existing_objects():
    # _resolve raises on a stale directive (a renamed or removed object)
    modules, objects = documented()
    assert objects and all(importlib.import_module(m) for m in modules)


def test_public_callables_have_docstrings():
    seen, bare = set(), []
    for m, n, o in public_objects():
        if (inspect.isclass(o) or inspect.isfunction(o)) and id(o) not in seen:
            seen.add(id(o))
            if not inspect.getdoc(o):
                bare.append(f"{m}.{n}")
    assert not bare, f"public functions/classes without a docstring: {bare}"


def test_getting_started_snippets_run():
    text = (repo_root() / "docs" / "getting_started.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "docs/getting_started.md", "exec"), ns)


def test_teachers_notes_cover_every_notebook():
    text = (repo_root() / "docs" / "teachers_notes.md").read_text(encoding="utf-8")
    missing = [p.stem for p in sorted((repo_root() / "examples").glob("*.ipynb"))
               if f"`{p.stem}`" not in text]
    assert not missing, f"docs/teachers_notes.md does not mention {missing}"
