"""Spike sparsity, synaptic operations and an energy estimate (paper §4.5).

Symbols: T time, B batch, N fan-in (in_features), M fan-out (out_features), H neurons,
E SSM channels, N_s SSM state size, k kernel size, g groups.

One forward pass is observed through hooks (nothing in the model changes):

* spiking neurons (every ``snntorch.SpikingNeuron``: Leaky, Synaptic, ...): spikes and
  neuron-steps, per-step calls and :meth:`bimsnn.Leaky.multi_step` alike, giving the firing
  rate r = spikes / (H·T) and the sparsity 1 − r per layer;
* weight layers (``nn.Linear``, ``nn.Conv1d/2d``): whether each call's input is binary
  spikes (every value in {−1, 0, 1}) or dense, and how much of it is non-zero;
* :class:`bimsnn.ssm.mamba.SelectiveSSM`: the scan's element-wise work.

Operation counts, per sample (totals / B)::

    SynOps (spiking input)  = nnz(input) · M                 Linear: each spike is M adds
                            = nnz(input) · (C_out/g) · Πk     Conv (border effects ignored)
    MACs   (dense input)    = rows · N · M                    Linear; conv: numel(out)·(C_in/g)·Πk
    ANN-equivalent MACs     = the dense count for *every* layer: the same architecture
                              with non-spiking activations, run for the same T steps
    SSM scan MACs           = T·E·(4·N_s + 1): exp(Δ·A)·h, (Δ·u)·B, +, h·C per state, D·u
                              per channel; exp/softplus/SiLU and the neuron updates (β·U + I,
                              compare) are not counted, for the SNN or the ANN.

Graded spikes (values other than ±1) need a multiply, so they count as dense MACs. In a
SpikingMambaNet, ``in_fc``, ``in_proj`` (with norm="none") and ``out_fc`` see spikes
(SynOps); the conv, ``x_proj``, ``dt_proj``, ``out_proj`` (input y ⊙ SiLU(z)) and the scan
are non-spiking (MACs): the SSM core is a dense computation inside a spiking shell.

Energy per operation (Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, 45 nm CMOS, 32-bit float): an accumulate (add) 0.9 pJ; a multiply-
accumulate 4.6 pJ (3.7 pJ multiply + 0.9 pJ add). E_SNN = 0.9·SynOps + 4.6·MACs,
E_ANN = 4.6·MACs_ANN. Memory access, which often dominates on real hardware, is not
modelled: the numbers compare arithmetic only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import snntorch as snn
import torch
from torch import Tensor, nn

__all__ = ["E_AC_PJ", "E_MAC_PJ", "EnergyReport", "energy_report", "spike_sparsity",
           "synops", "is_spiking", "to_markdown"]

E_AC_PJ = 0.9    # Horowitz 2014, 45 nm: 32-bit float add (one synaptic accumulate)
E_MAC_PJ = 4.6   # Horowitz 2014, 45 nm: 32-bit float multiply (3.7) + add (0.9)


def is_spiking(x: Tensor) -> bool:
    """True if every value of x is −1, 0 or 1 (binary or signed on/off spikes)."""
    return bool(((x == 0) | (x.abs() == 1)).all())


def synops(spikes: Tensor, fan_out: int) -> int:
    """Synaptic operations of a layer: each non-zero input spike is ``fan_out`` accumulates."""
    return int(torch.count_nonzero(spikes)) * int(fan_out)


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-style markdown table (pandas' own needs the optional ``tabulate``)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


@dataclass
class _OpStats:
    type: str
    fan_out: int
    synops: int = 0
    macs: int = 0
    ann_macs: int = 0
    nnz: int = 0
    numel: int = 0
    kinds: set = field(default_factory=set)


@dataclass
class _SpikeStats:
    type: str
    spikes: float = 0.0
    numel: int = 0
    steps: int = 0
    width: int = 0


@dataclass
class EnergyReport:
    """Per-layer tables and totals, all per sample.

    Attributes:
        layers: one row per weight layer / SSM: layer, type, input ("spikes", "dense",
            "mixed"), in_rate (non-zero fraction of the input), fan_out, synops, macs,
            ann_macs, energy_nJ, ann_energy_nJ.
        neurons: one row per spiking layer: layer, type, neurons, steps, spikes, rate,
            sparsity.
        totals: synops, macs, ann_macs, energy_nJ, ann_energy_nJ, ann_over_snn.
    """

    layers: pd.DataFrame
    neurons: pd.DataFrame
    totals: dict

    def to_markdown(self) -> str:
        t = self.totals
        return (to_markdown(self.layers) + "\n\n" + to_markdown(self.neurons) + "\n\n"
                f"Total per sample: {t['synops']:.4g} SynOps + {t['macs']:.4g} MACs = "
                f"{t['energy_nJ']:.4g} nJ; ANN-equivalent {t['ann_macs']:.4g} MACs = "
                f"{t['ann_energy_nJ']:.4g} nJ (ratio ANN/SNN {t['ann_over_snn']:.3g}).")


class _Recorder:
    """Installs the hooks, accumulates the counts, and removes everything on close()."""

    def __init__(self, model: nn.Module):
        from bimsnn.ssm.mamba import SelectiveSSM  # lazy: keeps this module light

        self.ops: dict[str, _OpStats] = {}
        self.spk: dict[str, _SpikeStats] = {}
        self._hooks, self._patched = [], []
        for name, m in model.named_modules():
            name = name or type(m).__name__
            if isinstance(m, snn.SpikingNeuron):
                li = getattr(m, "reset_mechanism", "") == "none"   # e.g. a readout integrator
                self.spk[name] = _SpikeStats(type(m).__name__ + (" (reset=none)" if li else ""))
                self._hooks.append(m.register_forward_hook(self._neuron_hook(name)))
                if hasattr(m, "multi_step"):   # bimsnn's fused path bypasses module hooks
                    self._patch(m, "multi_step", self._neuron_hook(name, seq=True))
            elif isinstance(m, nn.Linear):
                self.ops[name] = _OpStats("Linear", m.out_features)
                self._hooks.append(m.register_forward_hook(self._linear_hook(name)))
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                fan = m.out_channels // m.groups * math.prod(m.kernel_size)
                self.ops[name] = _OpStats(type(m).__name__, fan)
                self._hooks.append(m.register_forward_hook(self._conv_hook(name)))
            elif isinstance(m, SelectiveSSM):
                self.ops[name] = _OpStats("SSM scan", 4 * m.d_state + 1)
                self._hooks.append(m.register_forward_hook(self._ssm_hook(name)))
                self._patch(m, "step", self._ssm_hook(name))     # streaming: not a forward

    # -- neurons --------------------------------------------------------------------
    def _count_spikes(self, name: str, spk: Tensor, steps: int) -> None:
        s = self.spk[name]
        s.spikes += float(spk.detach().ne(0).sum())
        s.numel += spk.numel()
        s.steps += steps
        s.width = spk.shape[-1] if spk.dim() else 1

    def _neuron_hook(self, name: str, seq: bool = False):
        def hook(m, args, out):
            spk = out[0] if isinstance(out, tuple) else out       # (B, ...) or (T, B, ...)
            self._count_spikes(name, spk, spk.shape[0] if seq else 1)
        return hook

    def _patch(self, m: nn.Module, method: str, hook: Callable) -> None:
        """Shadow ``m.<method>`` by an instance attribute that calls it, then ``hook``."""
        orig = getattr(m, method)                              # bound method of the class

        def wrapped(*args, **kwargs):
            with warnings.catch_warnings():                    # "bypasses forward hooks": ours
                warnings.filterwarnings("ignore", message=".*bypasses forward hooks.*")
                out = orig(*args, **kwargs)
            hook(m, args, out)
            return out

        setattr(m, method, wrapped)
        self._patched.append((m, method))

    # -- weight layers -----------------------------------------------------------------
    def _add(self, name: str, x: Tensor, dense: int, sparse_fan: int) -> None:
        st = self.ops[name]
        x = x.detach()
        nnz = int(torch.count_nonzero(x))
        st.nnz += nnz
        st.numel += x.numel()
        st.ann_macs += dense
        if is_spiking(x):
            st.synops += nnz * sparse_fan
            st.kinds.add("spikes")
        else:
            st.macs += dense
            st.kinds.add("dense")

    def _linear_hook(self, name: str):
        def hook(m, args, out):
            x = args[0]
            self._add(name, x, x.numel() * m.out_features, m.out_features)   # rows·N·M
        return hook

    def _conv_hook(self, name: str):
        def hook(m, args, out):
            dense = out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
            self._add(name, args[0], dense, self.ops[name].fan_out)
        return hook

    def _ssm_hook(self, name: str):
        def hook(m, args, out):
            u = args[0]                                       # (T, B, E) or (B, E)
            st = self.ops[name]
            macs = u.numel() * (4 * m.d_state + 1)
            st.macs += macs
            st.ann_macs += macs
            st.nnz += int(torch.count_nonzero(u))
            st.numel += u.numel()
            st.kinds.add("dense")
        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        for m, method in self._patched:
            delattr(m, method)                                 # back to the class method
        self._hooks, self._patched = [], []


def _default_forward(model: nn.Module, x: Tensor):
    return model(x)


def _record(model: nn.Module, x: Tensor, forward: Callable | None) -> _Recorder:
    rec = _Recorder(model)
    try:
        with torch.no_grad():
            (forward or _default_forward)(model, x)
    finally:
        rec.close()
    return rec


def _neuron_table(rec: _Recorder, batch: int) -> pd.DataFrame:
    rows = []
    for name, s in rec.spk.items():
        if s.numel == 0:
            continue
        rate = s.spikes / s.numel
        rows.append({"layer": name, "type": s.type, "neurons": s.numel // max(s.steps, 1) // batch,
                     "steps": s.steps, "spikes": s.spikes / batch, "rate": rate,
                     "sparsity": 1.0 - rate})
    return pd.DataFrame(rows, columns=["layer", "type", "neurons", "steps", "spikes", "rate",
                                       "sparsity"])


def spike_sparsity(model: nn.Module, x: Tensor, forward: Callable | None = None,
                   batch_dim: int = 1) -> pd.DataFrame:
    """Firing rate and sparsity of every spiking layer over one forward pass.

    Args:
        model: any module containing snnTorch spiking neurons.
        x: the input, e.g. (T, B, C) spikes (time-major: ``batch_dim=1``).
        forward: ``forward(model, x)`` running the whole sequence (default ``model(x)``);
            pass one for snnTorch nets whose forward takes one step and explicit state.
    Returns:
        DataFrame: layer, type, neurons, steps, spikes (per sample), rate, sparsity = 1 − rate.
    """
    return _neuron_table(_record(model, x, forward), x.shape[batch_dim])


def energy_report(model: nn.Module, x: Tensor, forward: Callable | None = None, *,
                  e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ,
                  batch_dim: int = 1) -> EnergyReport:
    """SynOps, MACs and the energy estimate of one forward pass, per layer and per sample.

    Args: as :func:`spike_sparsity`; ``e_ac`` / ``e_mac``: pJ per accumulate / MAC.
    Returns:
        :class:`EnergyReport` (see module docstring for what is counted).

    Example:
        >>> import snntorch as snn
        >>> net = nn.Sequential(nn.Linear(4, 3, bias=False), snn.Leaky(beta=0.9, init_hidden=True))
        >>> def run(net, x):
        ...     return torch.stack([net(x_t) for x_t in x])
        >>> x = torch.zeros(10, 2, 4); x[0, :, 0] = 1     # one spike per sample
        >>> rep = energy_report(net, x, run)
        >>> rep.totals["synops"], rep.totals["ann_macs"]   # 1 spike · 3 vs 10 steps · 4 · 3
        (3.0, 120.0)
    """
    rec = _record(model, x, forward)
    B = x.shape[batch_dim]
    rows = []
    for name, st in rec.ops.items():
        if st.numel == 0:
            continue
        kind = "mixed" if len(st.kinds) > 1 else next(iter(st.kinds))
        rows.append({"layer": name, "type": st.type, "input": kind,
                     "in_rate": st.nnz / st.numel, "fan_out": st.fan_out,
                     "synops": st.synops / B, "macs": st.macs / B, "ann_macs": st.ann_macs / B,
                     "energy_nJ": (e_ac * st.synops + e_mac * st.macs) / B / 1e3,
                     "ann_energy_nJ": e_mac * st.ann_macs / B / 1e3})
    layers = pd.DataFrame(rows, columns=["layer", "type", "input", "in_rate", "fan_out",
                                         "synops", "macs", "ann_macs", "energy_nJ",
                                         "ann_energy_nJ"])
    tot = {k: float(layers[k].sum()) for k in ("synops", "macs", "ann_macs", "energy_nJ",
                                                "ann_energy_nJ")}
    tot["ann_over_snn"] = tot["ann_energy_nJ"] / tot["energy_nJ"] if tot["energy_nJ"] else math.inf
    return EnergyReport(layers, _neuron_table(rec, B), tot)
