"""Spiking classifiers of the recipes and benchmarks, and a hidden-spike recorder.

Symbols: T time, B batch, C input channels (afferents), H hidden width, D model width,
K classes, W readout window (steps), L hidden layers.

Both classifiers read out through a non-spiking leaky integrator ``out_li`` (a Leaky
with ``reset_mechanism="none"``) fed by ``out_fc``; its membrane is the logit. Because that
integrator sums the bias over ~1/(1−β) steps, a random ``out_fc.bias`` starts the logits
±2 apart and online training takes epochs to undo it, so the bias starts at zero
(``zero_readout_bias=True``). The zeroing happens last in ``__init__`` and draws no random
numbers: the RNG stream (and so every later draw) is the same as without it.

Registered as "snn" (:class:`SpikingMLP`) and "spiking_mamba" (:class:`SpikingMambaClassifier`).
"""

from __future__ import annotations

from typing import NamedTuple

import snntorch as snn
import torch
from torch import Tensor, nn

from bimsnn.models.registry import register
from bimsnn.neurons import Leaky
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet


class MLPState(NamedTuple):
    """State of :class:`SpikingMLP` between steps."""

    mems: tuple[Tensor, ...]     # one (B, H) membrane per hidden layer
    out: Tensor                  # (B, K) readout membrane = logits


@register("snn")
class SpikingMLP(nn.Module):
    """(Linear → bimsnn.Leaky) × L → Linear → non-spiking leaky integrator (the logits).

    Same streaming interface as :class:`~bimsnn.ssm.mamba.SpikingMambaNet`: ``init_state(B)``,
    ``step(x_t, state) -> (logits_t, state)`` (per-step Leaky calls, which the online rules
    hook), ``forward_seq(x, state) -> (logits (T, B, K), state)`` through the fused
    multi-step LIF (BPTT), ``forward(x) -> logits (B, K)`` at the last step.

    Args:
        n_inputs: C. n_classes: K. hidden: H. n_layers: L. beta: hidden LIF decay.
        readout_beta: decay of the readout integrator. zero_readout_bias: see module doc.

    Example:
        >>> net = SpikingMLP(3, 2, hidden=8)
        >>> net(torch.zeros(5, 4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 32, n_layers: int = 1,
                 beta: float = 0.9, readout_beta: float = 0.9, zero_readout_bias: bool = True):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(n_layers):  # registration order fc, lif: the rules pair them
            self.layers.append(nn.ModuleDict({"fc": nn.Linear(n_inputs if i == 0 else hidden, hidden),
                                              "lif": Leaky(beta=beta)}))
        self.out_fc = nn.Linear(hidden, n_classes)
        self.out_li = Leaky(beta=readout_beta, reset_mechanism="none")
        self.hidden, self.n_classes = hidden, n_classes
        if zero_readout_bias:
            nn.init.zeros_(self.out_fc.bias)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MLPState:
        """Zero membranes for ``batch_size`` sequences."""
        p = self.out_fc.weight
        kw = {"device": device or p.device, "dtype": dtype or p.dtype}
        return MLPState(tuple(torch.zeros(batch_size, self.hidden, **kw) for _ in self.layers),
                        torch.zeros(batch_size, self.n_classes, **kw))

    def step(self, x_t: Tensor, state: MLPState | None = None) -> tuple[Tensor, MLPState]:
        """x_t (B, C) → logits_t (B, K), new state."""
        state = self.init_state(x_t.shape[0]) if state is None else state
        s, mems = x_t, []
        for layer, mem in zip(self.layers, state.mems):
            s, mem = layer["lif"](layer["fc"](s), mem)
            mems.append(mem)
        _, out = self.out_li(self.out_fc(s), state.out)
        return out, MLPState(tuple(mems), out)

    def forward_seq(self, x: Tensor, state: MLPState | None = None) -> tuple[Tensor, MLPState]:
        """x (T, B, C) → per-step logits (T, B, K) and the state after the last step."""
        state = self.init_state(x.shape[1]) if state is None else state
        s, mems = x, []
        for layer, mem0 in zip(self.layers, state.mems):
            s, mem = layer["lif"].multi_step(layer["fc"](s), mem0)  # (T, B, H) each
            mems.append(mem[-1])
        _, out = self.out_li.multi_step(self.out_fc(s), state.out)  # (T, B, K)
        return out, MLPState(tuple(mems), out[-1])

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last step: x (T, B, C) → (B, K)."""
        return self.forward_seq(x)[0][-1]


class SpikingMambaClassifier(SpikingMambaNet):
    """:class:`~bimsnn.ssm.mamba.SpikingMambaNet` as recipes and benchmarks build it.

    Same modules, state_dict and ``step``/``forward_seq``; two options:

    * ``zero_readout_bias`` (module docstring);
    * ``window``: when set, ``forward(x)`` (BPTT loss, evaluation) is the mean of the
      per-step logits over the last W steps, the quantity that the online rules' per-step
      loss trains (``loss_window``) and their "window" readout scores. None: last step.

    Registered as "spiking_mamba" with MambaConfig's primitive fields as kwargs plus
    ``window`` and ``zero_readout_bias``.

    Example:
        >>> from bimsnn.models import build, spec
        >>> net = build(spec("spiking_mamba", d_model=8, n_inputs=3, n_classes=2, window=2))
        >>> x = torch.rand(5, 4, 3).round()
        >>> torch.allclose(net(x), net.forward_seq(x)[0][-2:].mean(0))
        True
    """

    def __init__(self, cfg: MambaConfig, window: int | None = None,
                 zero_readout_bias: bool = True):
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be None or a positive int, got {window!r}")
        super().__init__(cfg)
        self.window = window
        if zero_readout_bias:
            nn.init.zeros_(self.out_fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, C) → logits (B, K): the last step, or the mean over the last W steps."""
        if self.window is None:
            return super().forward(x)
        return self.forward_seq(x)[0][-self.window:].mean(0)


@register("spiking_mamba")
def _spiking_mamba(window: int | None = None, zero_readout_bias: bool = True,
                   **config) -> SpikingMambaClassifier:
    """Spec factory: ``config`` are :class:`MambaConfig` fields (primitives)."""
    return SpikingMambaClassifier(MambaConfig(**config), window, zero_readout_bias)


@torch.no_grad()
def hidden_spikes(model: nn.Module, x: Tensor) -> Tensor | None:
    """Spikes of every spiking Leaky (readouts with no reset excluded) for one window.

    Args:
        model: with ``init_state`` and ``step`` (else None is returned).
        x: (T, C), streamed through ``model.step`` one step at a time (batch of one).
    Returns:
        (T, H_total): the hidden layers' spikes side by side, in module order; or None.
    """
    if not callable(getattr(model, "step", None)):
        return None
    lifs = [m for m in model.modules() if isinstance(m, snn.Leaky) and m.reset_mechanism != "none"]
    rec: dict[int, list[Tensor]] = {id(m): [] for m in lifs}
    hooks = [m.register_forward_hook(lambda m, a, out: rec[id(m)].append(out[0][0].float()))
             for m in lifs]
    was = model.training
    try:
        model.eval()
        state = model.init_state(1)
        for t in range(x.shape[0]):
            _, state = model.step(x[t:t + 1].float(), state)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return torch.cat([torch.stack(rec[id(m)]) for m in lifs], dim=-1)
