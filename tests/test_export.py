"""bimsnn.export: NIR export / import round trips and the documented mapping."""

import warnings

import nir
import numpy as np
import pytest
import snntorch as snn
import snntorch.utils
import torch
from torch import nn

from bimsnn import Leaky, Synaptic
from bimsnn.export import DT, export_to_nir, import_from_nir
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), snn.Leaky(beta=0.9, init_hidden=True),                # subtract
        nn.Linear(8, 6, bias=False),
        Synaptic(alpha=0.8, beta=torch.linspace(0.5, 0.95, 6), init_hidden=True,
                 reset_mechanism="zero"),
        nn.Linear(6, 3), Leaky(beta=0.7, threshold=0.5, init_hidden=True, reset_mechanism="zero"))


def _inputs(T=40, B=2, C=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * (torch.rand(T, B, C, generator=g) < 0.4).float()


def _run_sequential(net, x):
    snntorch.utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x_t) for x_t in x])


def _export(net, x0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # the subtract-reset notice
        return export_to_nir(net, x0, **kw)


@pytest.mark.parametrize("via_file", [False, True])
def test_round_trip_spikes_identical(tmp_path, via_file):
    net, x = _chain(), _inputs()
    graph = _export(net, x[0])
    assert [type(graph.nodes[k]).__name__ for k in "012345"] == [
        "Affine", "LIF", "Linear", "CubaLIF", "Affine", "LIF"]
    if via_file:
        nir.write(tmp_path / "net.nir", graph)
        graph = nir.read(tmp_path / "net.nir")
    imported = import_from_nir(graph)
    ref = _run_sequential(net, x)
    with torch.no_grad():
        spk, mem = imported(x)
    assert ref.sum() > 0 and torch.equal(spk, ref)
    assert imported.layers[1].reset_mechanism == "subtract"
    assert imported.layers[3].reset_mechanism == "zero"


def test_tutorial_net_with_explicit_state():
    class Net(nn.Module):                        # snnTorch tutorial 5 style
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(4, 7), snn.Leaky(beta=0.85)
            self.fc2, self.lif2 = nn.Linear(7, 2), snn.Leaky(beta=0.95)

        def forward(self, x, mem1, mem2):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            return spk2, mem1, mem2

    torch.manual_seed(2)
    net, x = Net(), _inputs(T=30, C=4, seed=4)
    graph = _export(net, x[0], forward=lambda m, x: m(x, None, None))
    assert graph.edges == [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                           ("lif2", "output")]
    outs, m1, m2 = [], None, None
    with torch.no_grad():
        for x_t in x:
            s, m1, m2 = net(x_t, m1, m2)
            outs.append(s)
        spk, mem = import_from_nir(graph)(x)
    assert torch.equal(spk, torch.stack(outs))


def test_documented_discretisation_mapping():
    net = nn.Sequential(nn.Linear(2, 3), Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"),
                        nn.Linear(3, 3), Synaptic(alpha=0.6, beta=0.8, init_hidden=True,
                                                  reset_mechanism="zero"))
    g = export_to_nir(net, torch.zeros(1, 2))
    lif, cuba = g.nodes["1"], g.nodes["3"]
    np.testing.assert_allclose(lif.tau, DT / (1 - 0.9), rtol=1e-6)
    np.testing.assert_allclose(lif.r, 1 / (1 - 0.9), rtol=1e-6)       # r·dt/τ = 1
    np.testing.assert_allclose(cuba.tau_syn, DT / (1 - 0.6), rtol=1e-6)
    np.testing.assert_allclose(cuba.w_in * DT / cuba.tau_syn, 1.0, rtol=1e-6)
    np.testing.assert_allclose(cuba.r * DT / cuba.tau_mem, 1.0, rtol=1e-6)
    assert lif.v_threshold.shape == (3,)


def test_foreign_lif_graph_matches_nir_euler_semantics():
    # A NIR LIF without bimsnn metadata, r·dt/τ = 2: v ← (1 − dt/τ) v + 2 I, reset to 0.
    rng = np.random.default_rng(5)
    W = rng.normal(0, 1, (4, 3))
    tau = np.full(4, DT / (1 - 0.8))
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Linear(weight=W),
        "lif": nir.LIF(tau=tau, r=2 * tau / DT, v_leak=np.zeros(4), v_threshold=np.full(4, 1.5)),
        "output": nir.Output(output_type={"output": np.array([4])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    x = rng.random((25, 2, 3))
    v, ref = np.zeros((2, 4)), []
    for x_t in x:
        v = 0.8 * v + 2 * x_t @ W.T
        z = v > 1.5
        v = np.where(z, 0.0, v)
        ref.append(z)
    with torch.no_grad():
        spk, _ = import_from_nir(graph)(torch.tensor(x, dtype=torch.float32))
    assert np.array(ref).sum() > 0
    np.testing.assert_array_equal(spk.numpy().astype(bool), np.array(ref))


def test_unsupported_models_raise_clearly():
    net = SpikingMambaNet(MambaConfig(d_model=8, n_inputs=3, n_classes=2))
    with pytest.raises(NotImplementedError, match="Δ"):
        export_to_nir(net, torch.zeros(1, 3))
    with pytest.raises(NotImplementedError, match="ReLU"):
        export_to_nir(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.zeros(1, 3))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(3, 3), snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x):
            return self.lif(self.fc(x) + x)

    with pytest.raises(NotImplementedError, match="chain"):
        export_to_nir(Residual(), torch.zeros(1, 3))


def test_subtract_reset_warns_and_keeps_model_state():
    net = _chain()
    with pytest.warns(UserWarning, match="subtract"):
        export_to_nir(net, torch.ones(2, 5))
    assert net[1].mem.numel() == 0 or not net[1].mem.any()    # ran on a copy


def test_foreign_cubalif_graph_matches_nir_euler_semantics():
    # No metadata: I ← αI + x W^T, v ← βv + I (snnTorch's order), reset to 0 at once.
    rng = np.random.default_rng(0)
    W, a, b = rng.normal(0, 1, (4, 3)), 0.7, 0.8
    ts, tm = np.full(4, DT / (1 - a)), np.full(4, DT / (1 - b))
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Linear(weight=W),
        "cuba": nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / DT, v_leak=np.zeros(4),
                            v_threshold=np.full(4, 1.0), w_in=ts / DT),
        "output": nir.Output(output_type={"output": np.array([4])})},
        edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")])
    x = rng.random((30, 2, 3))
    cur, v, ref = np.zeros((2, 4)), np.zeros((2, 4)), []
    for x_t in x:
        cur = a * cur + x_t @ W.T
        v = b * v + cur
        z = v > 1.0
        v = np.where(z, 0.0, v)
        ref.append(z)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spk, _ = import_from_nir(graph)(torch.tensor(x, dtype=torch.float32))
    assert np.array(ref).sum() > 0
    np.testing.assert_array_equal(spk.numpy().astype(bool), np.array(ref))
