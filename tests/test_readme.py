"""The README's Python snippet runs as printed, and its rule trains the net it builds."""

from __future__ import annotations

import re

import torch

from bimsnn._paths import repo_root


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
