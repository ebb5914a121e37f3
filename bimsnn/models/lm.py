"""Language models over token ids: a spiking Mamba, its non-spiking twin, an LSTM baseline.

Symbols: T window length, B batch, V vocabulary size, E embedding width, D model width,
H LSTM hidden width.

All map ids (T, B) to per-step next-token logits (T, B, V) through ``forward_seq``
(:func:`bimsnn.training.fit` with ``per_step=True`` trains them). Registered as
"spiking_mamba_lm", "smooth_mamba_lm" and "lstm_lm".
"""

from __future__ import annotations

from torch import Tensor, nn

from bimsnn.models.registry import register
from bimsnn.neurons import Leaky
from bimsnn.neurons.functional import fused_lif
from bimsnn.ssm.mamba import MambaConfig, MambaNetState, SpikingMambaNet


@register("spiking_mamba_lm")
class SpikingMambaLM(nn.Module):
    """ids (T, B) → Embedding (E) → :class:`SpikingMambaNet` (E → D → V) → logits (T, B, V).

    The readout integrator is off (``readout_beta=0``): the logit at t is ``W f_t + b``,
    f_t the last block's spikes at t, or its membrane / pre-LIF current
    (``readout_input``; every other layer still passes spikes). ``step`` exposes the
    per-step path that the online rules hook into.

    Args:
        vocab_size: V. d_embed: E. zero_readout_bias: start ``net.out_fc.bias`` at zero
            (as every spiking classifier in :mod:`bimsnn.models`; no RNG drawn).
        mamba: :class:`MambaConfig` fields (d_model, n_layers, d_state, beta,
            readout_input, ...).

    Example:
        >>> import torch
        >>> lm = SpikingMambaLM(11, 4, d_model=8)
        >>> lm.forward_seq(torch.zeros(5, 2, dtype=torch.long))[0].shape
        torch.Size([5, 2, 11])
    """

    def __init__(self, vocab_size: int, d_embed: int, zero_readout_bias: bool = True, **mamba):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.net = SpikingMambaNet(MambaConfig(n_inputs=d_embed, n_classes=vocab_size,
                                               readout_beta=0.0, **mamba))
        if zero_readout_bias:
            nn.init.zeros_(self.net.out_fc.bias)

    def forward_seq(self, ids: Tensor, state: MambaNetState | None = None
                    ) -> tuple[Tensor, MambaNetState]:
        """ids (T, B) int → logits (T, B, V) and the state after the last step (chunked
        online rules carry it to the next chunk)."""
        return self.net.forward_seq(self.embed(ids), state)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaNetState:
        return self.net.init_state(batch_size, device, dtype)

    def step(self, ids_t: Tensor, state: MambaNetState) -> tuple[Tensor, MambaNetState]:
        """ids_t (B,) → logits_t (B, V), new state."""
        return self.net.step(self.embed(ids_t), state)


class SmoothLeaky(Leaky):
    """A :class:`~bimsnn.neurons.Leaky` whose output is the surrogate's smooth primitive
    σ(U[t] − U_thr) instead of the spike H(U[t] − U_thr); same membrane, same (detached,
    binary) reset, same parameters. Its backward is therefore the spiking neuron's
    surrogate gradient, now exact.

    Returns (out, mem), (B, ...) per step or (T, B, ...) from :meth:`multi_step`.
    """

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        _, mem = super().forward(input_, mem)
        return self.spike_grad.primitive(mem - self.threshold), mem

    def multi_step(self, cur_seq: Tensor, mem0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, mem = fused_lif(cur_seq, mem0, self.beta, self.threshold, self.spike_grad,
                             self.reset_mechanism, smooth=True)
        self.mem = mem[-1]
        return out, mem


@register("smooth_mamba_lm")
class SmoothMambaLM(SpikingMambaLM):
    """Non-spiking twin of :class:`SpikingMambaLM`: every spiking LIF (``net.in_lif``,
    each block's ``lif``) becomes a :class:`SmoothLeaky`, so the layers pass
    σ(U − U_thr) ∈ (0, 1) (atan: ½ + atan(πα(U − U_thr)/2)/π) instead of spikes. Same
    modules, same parameters and parameter count; same arguments.

    Example:
        >>> import torch
        >>> lm = SmoothMambaLM(11, 4, d_model=8)
        >>> lm.forward_seq(torch.zeros(5, 2, dtype=torch.long))[0].shape
        torch.Size([5, 2, 11])
    """

    def __init__(self, vocab_size: int, d_embed: int, zero_readout_bias: bool = True, **mamba):
        super().__init__(vocab_size, d_embed, zero_readout_bias, **mamba)
        for owner in (self.net, *self.net.blocks):
            name = "in_lif" if owner is self.net else "lif"
            old = getattr(owner, name)
            setattr(owner, name, SmoothLeaky(beta=old.beta.item(), threshold=old.threshold.item(),
                                             spike_grad=old.spike_grad,
                                             reset_mechanism=old.reset_mechanism))


@register("lstm_lm")
class LSTMLM(nn.Module):
    """Baseline: ids (T, B) → Embedding (E) → LSTM (H) → Linear → logits (T, B, V). BPTT only.

    Example:
        >>> import torch
        >>> LSTMLM(11, 4, hidden=8).forward_seq(torch.zeros(5, 2, dtype=torch.long)).shape
        torch.Size([5, 2, 11])
    """

    def __init__(self, vocab_size: int, d_embed: int, hidden: int, num_layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, num_layers=num_layers)  # time-major
        self.head = nn.Linear(hidden, vocab_size)

    def forward_seq(self, ids: Tensor) -> Tensor:
        """ids (T, B) int → logits (T, B, V)."""
        return self.head(self.lstm(self.embed(ids))[0])
