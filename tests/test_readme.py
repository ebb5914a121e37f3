"""The README's Python snippet runs as printed, its rule trains the net it builds, and every
file, function and test its paper map names exists."""

from __future__ import annotations

import ast
import re

import torch

from bimsnn.paths import repo_root


def test_readme_python_snippet_runs_and_writes_grads():
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no ```python block"
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), ns)
    net, rule, opt = ns["net"], ns["rule"], ns["opt"]
    torch.manual_seed(0)
    x = (torch.rand(30, 4, 20) < 0.4).float()            # (T, B, inputs) spikes
    y = torch.tensor([0, 1, 0, 1])
    before = net.fc1.weight.detach().clone()
    rule.reset(4)
    mem1, mem2 = net.lif1.init_leaky(), net.lif2.init_leaky()
    for t in range(30):
        spk2, mem1, mem2 = net(x[t], mem1, mem2)
        rule.backward(torch.nn.functional.cross_entropy(mem2, y))
        mem1, mem2 = mem1.detach(), mem2.detach()       # online: no graph across steps
    g = net.fc1.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, net.fc1.weight)
    rule.remove()


def _defined_names(path) -> set[str]:
    """Module-level functions, classes and assignments of a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_paper_map_names_exist():
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    section = text.split("## Paper map", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "`" in r]
    eqs = set()
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        eq, _, file_cell, funcs, tests = cells
        eqs |= {int(n) for n in re.findall(r"\d+", eq)}
        path = repo_root() / file_cell.strip("`")
        assert path.is_file(), row
        missing = set(re.findall(r"`(\w+)`", funcs)) - _defined_names(path)
        assert not missing, f"{path.name} lacks {missing}"
        for test_file, names in re.findall(r"`(tests/[\w/]+\.py)`: ([^;]+)", tests):
            tpath = repo_root() / test_file
            assert tpath.is_file(), test_file
            missing = set(re.findall(r"`(\w+)`", names)) - _defined_names(tpath)
            assert not missing, f"{test_file} lacks {missing}"
    assert eqs >= set(range(1, 11)), f"equations without a row: {set(range(1, 11)) - eqs}"
