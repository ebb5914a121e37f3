"""Export to, and import from, the Neuromorphic Intermediate Representation (NIR).

Symbols: T time, B batch, C inputs, H neurons, β membrane decay, α synaptic decay,
θ threshold, dt the NIR time step (``DT`` = 1e-4 s, as snnTorch's exporter uses).

Mapping (snnTorch's ``export_nir.py`` is the reference). NIR states continuous-time ODEs;
forward Euler with step dt gives back snnTorch's discrete update exactly when::

    Leaky     U ← βU + I          nir.LIF:  τ dv/dt = (v_leak − v) + r I
              τ = dt / (1 − β),  r = τ / dt = 1 / (1 − β),  v_leak = 0,  v_reset = 0
              (β = 1: nir.IF, dv/dt = r I, r = 1 / dt)
    Synaptic  I_s ← αI_s + I,  U ← βU + I_s      nir.CubaLIF:  τ_syn dI/dt = −I + w_in S,
              τ_syn = dt/(1 − α), w_in = τ_syn/dt,  τ_mem dv/dt = (v_leak − v) + r I
              τ_mem = dt/(1 − β), r = τ_mem/dt        (I_s[t] drives U[t], snnTorch's order)
    nn.Linear nir.Affine (with bias) or nir.Linear;  nn.Flatten nir.Flatten.

Reset. NIR's LIF/CubaLIF reset the membrane *to* v_reset right after a spike. snnTorch's
Leaky with reset "zero" (reset signal from the previous step) emits the same spikes, so
"zero" is exported exactly; "subtract" (the snnTorch default) and "none" have no NIR
equivalent. Every neuron node carries ``metadata`` {"bimsnn_reset": ..., "bimsnn_beta":
..., "bimsnn_alpha": ...} from which :func:`import_from_nir` rebuilds the exact module (so
a round trip is bit-exact); other NIR consumers see a zero reset, and export warns once.

Scope: feed-forward chains, i.e. models whose forward calls Linear / Leaky / Synaptic /
Flatten modules one after another, each consuming the previous one's output (checked by
tensor identity while ``sample_input`` runs through a copy of the model). Residuals,
recurrence and any other module raise NotImplementedError. In particular the selective
SSM of :mod:`bimsnn.ssm` is not exportable: its Δ_t, B_t and C_t are functions of the
input (that is what "selective" means), whereas every NIR node has fixed parameters. A
frozen (Δ, B, C) version would be an LTI leaky-integrator bank (nir.LI per state) but
discards exactly the input dependence that defines the block, so we raise rather than
export a different model.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import nir
import numpy as np
import snntorch as snn
import torch
from torch import Tensor, nn

from bimsnn.neurons import Leaky, Synaptic

__all__ = ["DT", "export_to_nir", "import_from_nir", "NIRChain"]

DT = 1e-4   # NIR time step, as snnTorch's exporter


def _np(v, n: int) -> np.ndarray:
    """A parameter (float or tensor) as a float64 array of shape (n,)."""
    a = v.detach().cpu().double().numpy() if isinstance(v, Tensor) else np.asarray(v, float)
    return np.broadcast_to(a.reshape(-1) if a.size > 1 else a, (n,)).astype(float).copy()


def _meta(m: nn.Module) -> dict:
    meta = {"bimsnn_reset": str(m.reset_mechanism)}
    for p in ("beta", "alpha"):
        if hasattr(m, p):
            meta[f"bimsnn_{p}"] = np.atleast_1d(getattr(m, p).detach().cpu().double().numpy())
    return meta


def _node(m: nn.Module, width: int) -> nir.NIRNode:
    """The NIR node of one supported module (``width``: its output size H)."""
    if isinstance(m, nn.Linear):
        w = m.weight.detach().cpu().numpy()
        if m.bias is None:
            return nir.Linear(weight=w)
        return nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy())
    if isinstance(m, nn.Flatten):
        return nir.Flatten(input_type=None, start_dim=m.start_dim - 1 if m.start_dim > 0
                           else m.start_dim, end_dim=m.end_dim - 1 if m.end_dim > 0 else m.end_dim)
    thr = _np(m.threshold, width)
    zeros = np.zeros(width)
    if isinstance(m, snn.Synaptic):
        alpha, beta = _np(m.alpha, width).clip(0, 1), _np(m.beta, width).clip(0, 1)
        if (alpha >= 1).any() or (beta >= 1).any():
            raise NotImplementedError("Synaptic with α = 1 or β = 1 (no leak) has no CubaLIF form")
        tau_syn, tau_mem = DT / (1 - alpha), DT / (1 - beta)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / DT, v_leak=zeros,
                           v_threshold=thr, v_reset=zeros, w_in=tau_syn / DT, metadata=_meta(m))
    beta = _np(m.beta, width).clip(0, 1)
    if (beta >= 1).all():
        return nir.IF(r=np.full(width, 1 / DT), v_threshold=thr, v_reset=zeros,
                      metadata=_meta(m))
    if (beta >= 1).any():
        raise NotImplementedError("Leaky with β = 1 for some neurons only: mixes LIF and IF")
    tau = DT / (1 - beta)
    return nir.LIF(tau=tau, r=tau / DT, v_leak=zeros, v_threshold=thr, v_reset=zeros,
                   metadata=_meta(m))


_SUPPORTED = (nn.Linear, nn.Flatten, snn.Leaky, snn.Synaptic)


def _check_exportable(model: nn.Module) -> None:
    from bimsnn.ssm.mamba import SelectiveSSM, SpikingMamba

    for name, m in model.named_modules():
        if isinstance(m, (SelectiveSSM, SpikingMamba)):
            raise NotImplementedError(
                f"{name or type(m).__name__} ({type(m).__name__}): the selective SSM's Δ_t, "
                "B_t and C_t depend on the input, and NIR nodes have fixed parameters; a "
                "frozen-Δ leaky-integrator version would be a different (non-selective) model")
        if isinstance(m, snn.SpikingNeuron) and not isinstance(m, (snn.Leaky, snn.Synaptic)):
            raise NotImplementedError(f"{name}: {type(m).__name__} is not exported (Leaky, "
                                      "Synaptic only)")
        if isinstance(m, snn.SpikingNeuron) and (m.inhibition or m.state_quant
                                                  or float(m.graded_spikes_factor) != 1.0):
            raise NotImplementedError(f"{name}: inhibition / state_quant / graded spikes "
                                      "have no NIR form")


def _trace(model: nn.Module, sample_input: Tensor, forward: Callable | None):
    """Run a copy of ``model`` on ``sample_input``; return [(name, module, in, out)] of the
    leaf modules in call order (names refer to ``model``)."""
    twin = copy.deepcopy(model)
    names = {id(m): n for n, m in twin.named_modules()}
    calls: list = []

    def hook(m, args, out):
        calls.append((names[id(m)], m, args[0] if args else None, out))

    hooks = [m.register_forward_hook(hook) for m in twin.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            (forward or (lambda mod, x: mod(x)))(twin, sample_input)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def export_to_nir(model: nn.Module, sample_input: Tensor,
                  forward: Callable[[nn.Module, Tensor], object] | None = None
                  ) -> nir.NIRGraph:
    """Export a feed-forward Linear / Leaky / Synaptic (/ Flatten) chain to a NIR graph.

    Args:
        model: e.g. ``nn.Sequential(nn.Linear, snn.Leaky(init_hidden=True), ...)`` or any
            module whose forward calls such layers in a chain (bimsnn or snnTorch neurons).
        sample_input: one time step's input (B, C) (for shapes and the call order).
        forward: ``forward(model, x)`` for models that need explicit state, e.g.
            ``lambda m, x: m(x, m.lif1.init_leaky(), ...)``; default ``model(x)``. It runs
            on a deep copy, so ``model``'s state is untouched.
    Returns:
        nir.NIRGraph with nodes "input", one per layer (named as in ``model``), "output".
    Raises:
        NotImplementedError: unsupported module, non-chain dataflow, or a selective SSM.
    """
    _check_exportable(model)
    calls = _trace(model, sample_input, forward)
    if not calls:
        raise NotImplementedError("no module call was recorded: nothing to export")
    prev, nodes, edges, last, odd = sample_input, {}, [], "input", []
    for name, m, x, out in calls:
        if not isinstance(m, _SUPPORTED):
            raise NotImplementedError(f"{name}: {type(m).__name__} has no NIR export here "
                                      "(Linear, Leaky, Synaptic, Flatten)")
        if name in nodes:
            raise NotImplementedError(f"{name} is called twice in one step: not a chain")
        if x is not prev and not (x is not None and prev is not None and x.data_ptr() ==
                                  prev.data_ptr() and x.shape == prev.shape):
            raise NotImplementedError(f"{name}: its input is not the previous layer's output; "
                                      "only feed-forward chains are exported")
        y = _first(out)
        nodes[name] = _node(m, y.shape[-1])
        if isinstance(m, snn.SpikingNeuron) and m.reset_mechanism != "zero":
            odd.append(f"{name} ({m.reset_mechanism})")
        edges.append((last, name))
        prev, last = y, name
    nodes["input"] = nir.Input(input_type={"input": np.array(sample_input.shape[1:])})
    nodes["output"] = nir.Output(output_type={"output": np.array(prev.shape[1:])})
    edges.append((last, "output"))
    if odd:
        warnings.warn(f"NIR resets to v_reset; {', '.join(odd)} exported as zero reset for "
                      "other NIR tools (the exact mechanism is in node.metadata, used by "
                      "bimsnn.export.import_from_nir)", stacklevel=2)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"producer": "bimsnn"})


# ------------------------------------------------------------------------------ import
def _meta_get(node: nir.NIRNode, key: str):
    v = (node.metadata or {}).get(key)
    if isinstance(v, bytes):            # h5py gives strings back as bytes
        v = v.decode()
    elif isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.size == 1:
        v = v.reshape(-1)[0]
        v = v.decode() if isinstance(v, bytes) else v
    return v


def _param(a) -> float | Tensor:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(a[0]) if np.allclose(a, a[0], rtol=0, atol=0) else torch.tensor(a, dtype=torch.float32)


def _module(node: nir.NIRNode) -> nn.Module:
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        fc = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        with torch.no_grad():
            fc.weight.copy_(w)
            if fc.bias is not None:
                fc.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return fc
    if isinstance(node, nir.Flatten):
        s, e = node.start_dim, node.end_dim
        return nn.Flatten(s + 1 if s >= 0 else s, e + 1 if e >= 0 else e)
    reset = _meta_get(node, "bimsnn_reset") or "zero"
    if isinstance(node, (nir.LIF, nir.IF)):
        if isinstance(node, nir.LIF):
            if not np.allclose(node.v_leak, 0) or not np.allclose(node.v_reset, 0):
                raise NotImplementedError("LIF with v_leak ≠ 0 or v_reset ≠ 0")
            gain = np.asarray(node.r) * DT / np.asarray(node.tau)   # input scale per step
            beta = 1 - DT / np.asarray(node.tau)
        else:
            gain, beta = np.asarray(node.r) * DT, np.ones_like(node.r)
        meta_beta = _meta_get(node, "bimsnn_beta")
        beta = meta_beta if meta_beta is not None else beta        # exact, not 1 − dt/τ
        # U' = U/gain obeys snnTorch's update with threshold θ/gain: same spikes (the reset
        # is linear in U too), membrane in units of 1/gain.
        return Leaky(beta=_param(beta), threshold=_param(np.asarray(node.v_threshold) / gain),
                     reset_mechanism=reset)
    if isinstance(node, nir.CubaLIF):
        if not np.allclose(node.v_leak, 0) or not np.allclose(node.v_reset, 0):
            raise NotImplementedError("CubaLIF with v_leak ≠ 0 or v_reset ≠ 0")
        gain = (np.asarray(node.w_in) * DT / np.asarray(node.tau_syn)
                * np.asarray(node.r) * DT / np.asarray(node.tau_mem))
        alpha = _meta_get(node, "bimsnn_alpha")
        beta = _meta_get(node, "bimsnn_beta")
        alpha = 1 - DT / np.asarray(node.tau_syn) if alpha is None else alpha
        beta = 1 - DT / np.asarray(node.tau_mem) if beta is None else beta
        # Without our metadata: NIR's immediate reset is snnTorch's reset_delay=False.
        delay = _meta_get(node, "bimsnn_reset") is not None
        return Synaptic(alpha=_param(alpha), beta=_param(beta),
                        threshold=_param(np.asarray(node.v_threshold) / gain),
                        reset_mechanism=reset, reset_delay=delay)
    raise NotImplementedError(f"NIR node {type(node).__name__} is not imported (Affine, "
                              "Linear, Flatten, LIF, IF, CubaLIF)")


class NIRChain(nn.Module):
    """An imported chain: ``layers`` in order; runs a whole sequence with explicit state.

    ``forward(x (T, B, C)) -> (spk (T, B, H), mem (T, B, H))`` of the last neuron layer
    (its output if the chain ends with a Linear, mem then None).
    """

    def __init__(self, names: list[str], layers: list[nn.Module]):
        super().__init__()
        self.names = names
        self.layers = nn.ModuleList(layers)

    def init_state(self) -> list:
        return [None] * len(self.layers)

    def step(self, x_t: Tensor, state: list) -> tuple[Tensor, Tensor | None, list]:
        """One step: x_t (B, C) → (out (B, H), mem (B, H) or None, new state)."""
        new, mem = [], None
        for layer, s in zip(self.layers, state):
            if isinstance(layer, snn.Synaptic):
                syn, mem = s if s is not None else (None, None)
                x_t, syn, mem = layer(x_t, syn, mem)
                new.append((syn, mem))
            elif isinstance(layer, snn.Leaky):
                x_t, mem = layer(x_t, s)
                new.append(mem)
            else:
                x_t, mem = layer(x_t), None
                new.append(None)
        return x_t, mem, new

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        state, outs, mems = self.init_state(), [], []
        for x_t in x:
            out, mem, state = self.step(x_t, state)
            outs.append(out)
            mems.append(mem)
        return torch.stack(outs), (torch.stack(mems) if mems[-1] is not None else None)


def import_from_nir(graph: nir.NIRGraph) -> NIRChain:
    """Rebuild a chain exported by :func:`export_to_nir` (or any NIR chain of Affine /
    Linear / Flatten / LIF / IF / CubaLIF nodes) as bimsnn modules.

    Nodes carrying bimsnn metadata come back exactly (reset mechanism, β, α). Foreign LIF
    nodes become ``Leaky(reset_mechanism="zero")`` (same spikes as NIR's reset-to-zero),
    foreign CubaLIF ``Synaptic(reset "zero", reset_delay=False)``; r·dt/τ ≠ 1 is folded
    into the threshold (same spikes; membrane scaled). v_leak / v_reset ≠ 0 raise.
    """
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    starts = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise NotImplementedError("only single-input chains are imported")
    names, node = [], starts[0]
    while True:
        nxt = succ.get(node, [])
        if len(nxt) != 1:
            raise NotImplementedError(f"node {node!r} has {len(nxt)} successors: not a chain")
        node = nxt[0]
        if isinstance(graph.nodes[node], nir.Output):
            break
        if node in names:
            raise NotImplementedError("recurrent NIR graphs are not imported")
        names.append(node)
    return NIRChain(names, [_module(graph.nodes[n]) for n in names])
