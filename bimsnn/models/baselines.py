"""Non-spiking baselines: a 1-D CNN and an LSTM, both time-major like the spiking models.

Symbols: T time, B batch, C input channels, H hidden width, K classes (or labels).

Both take ``x (T, B, C)`` (spikes or raw signal) and return logits ``(B, K)``. They have
no ``step``/``init_state``, so :func:`bimsnn.training.fit` trains them with ``rule="bptt"``
only (it raises a ``TypeError`` for an online rule). Registered as "cnn" and "lstm".
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bimsnn.models.registry import register


@register("cnn")
class CNN1d(nn.Module):
    """Conv1d stack → global average pool over time → Linear.

    Each block is Conv1d(kernel, dilation 2^i, 'same' padding) → GroupNorm(1) → ReLU →
    Dropout. GroupNorm, not BatchNorm: no running statistics, so results do not depend
    on batch composition and data-parallel ranks have no buffers to keep in sync.

    Args:
        n_inputs: C. n_classes: K. channels: width of each conv block (depth = its length;
            a list or a tuple, so that a spec's JSON list builds the same model).
        kernel_size: odd kernel length. dropout: after each block.

    Example:
        >>> import torch
        >>> CNN1d(3, 2, channels=(8, 8))(torch.zeros(50, 4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, n_inputs: int, n_classes: int, channels: Sequence[int] = (32, 32, 32),
                 kernel_size: int = 7, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"CNN1d: kernel_size must be odd, got {kernel_size}")
        layers: list[nn.Module] = []
        c_in = n_inputs
        for i, c in enumerate(channels):
            d = 2 ** i  # dilations 1, 2, 4, ...: receptive field grows exponentially
            layers += [nn.Conv1d(c_in, c, kernel_size, padding=d * (kernel_size - 1) // 2,
                                 dilation=d),
                       nn.GroupNorm(1, c), nn.ReLU(), nn.Dropout(dropout)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, C) → logits (B, K)."""
        h = self.features(x.permute(1, 2, 0))  # (B, H, T): Conv1d is channels-first
        return self.head(h.mean(-1))


@register("lstm")
class LSTMClassifier(nn.Module):
    """LSTM over time → Linear on the last step's hidden state.

    Args:
        n_inputs: C. n_classes: K. hidden: H. num_layers: stacked LSTM layers.
        dropout: between LSTM layers (only when num_layers > 1).

    Example:
        >>> import torch
        >>> LSTMClassifier(3, 2, hidden=8)(torch.zeros(50, 4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 64, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(n_inputs, hidden, num_layers=num_layers,
                            dropout=dropout if num_layers > 1 else 0.0)  # time-major
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, C) → logits (B, K)."""
        _, (h, _) = self.lstm(x)  # h: (num_layers, B, H)
        return self.head(h[-1])


@register("lstm_ctc")
class LSTMCTC(nn.Module):
    """Non-spiking CTC baseline: LSTM over time → Linear at every step.

    Example:
        >>> import torch
        >>> LSTMCTC(3, 5, hidden=8).forward_seq(torch.zeros(7, 2, 3)).shape
        torch.Size([7, 2, 5])
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 128, num_layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(n_inputs, hidden, num_layers=num_layers)  # time-major
        self.head = nn.Linear(hidden, n_classes)

    def forward_seq(self, x: Tensor) -> Tensor:
        """x (T, B, C) → logits (T, B, V)."""
        return self.head(self.lstm(x)[0])

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last step: x (T, B, C) → (B, V)."""
        return self.forward_seq(x)[-1]
