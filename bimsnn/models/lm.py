"""Language models over token ids: a spiking Mamba and an LSTM baseline.

Symbols: T window length, B batch, V vocabulary size, E embedding width, D model width,
H LSTM hidden width.

Both map ids (T, B) to per-step next-token logits (T, B, V) through ``forward_seq``
(:func:`bimsnn.training.fit` with ``per_step=True`` trains them). Registered as "spiking_mamba_lm" and "lstm_lm".
"""

from __future__ import annotations

from torch import Tensor, nn

from bimsnn.models.registry import register
from bimsnn.ssm.mamba import MambaConfig, MambaNetState, SpikingMambaNet


@register("spiking_mamba_lm")
class SpikingMambaLM(nn.Module):
    """ids (T, B) → Embedding (E) → :class:`SpikingMambaNet` (E → D → V) → logits (T, B, V).

    The readout integrator is off (``readout_beta=0``): the logit at t is the readout of
    the spikes at t. ``step`` exposes the per-step path that the online rules hook into.

    Args:
        vocab_size: V. d_embed: E. zero_readout_bias: start ``net.out_fc.bias`` at zero
            (as every spiking classifier in :mod:`bimsnn.models`; no RNG drawn).
        mamba: :class:`MambaConfig` fields (d_model, n_layers, d_state, beta, ...).

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
