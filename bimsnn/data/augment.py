"""SpecAugment-style masking of normalised log-mel features (training-time augmentation).

Symbols: T frames, F mel bands.

Park et al. (2019, "SpecAugment") mask random blocks of consecutive frames and of
consecutive mel bands. Here the masked cells take a ``fill`` value in the normalised
feature scale: the default, :data:`SILENCE`-like values below every thermometer level,
turns a masked block into a block with no spikes (a dropped-out stretch of input).
Draws come from ``generator`` (else torch's global RNG), so a seeded run is reproducible.

    >>> g = torch.Generator().manual_seed(0)
    >>> z = spec_mask(torch.zeros(20, 8), time_masks=1, time_width=5, freq_masks=1,
    ...               freq_width=2, fill=-1.0, generator=g)
    >>> z.shape, bool((z == -1).any()), bool((z == 0).any())
    (torch.Size([20, 8]), True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["spec_mask"]


def spec_mask(z: Tensor, time_masks: int = 2, time_width: int = 8, freq_masks: int = 2,
              freq_width: int = 6, fill: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """Mask ``time_masks`` blocks of frames and ``freq_masks`` blocks of bands of z.

    Each block's width is drawn uniformly in [0, width] and its start uniformly where
    it fits (as torchaudio's ``TimeMasking`` / ``FrequencyMasking``).

    Args:
        z: (T, F) features; not modified (a masked copy is returned).
        time_masks, freq_masks: number of blocks along time / mel (0: none).
        time_width, freq_width: largest block width in frames / bands.
        fill: value of masked cells.
        generator: RNG for the draws (None: torch's global RNG).
    Returns:
        (T, F) masked copy.
    """
    if z.dim() != 2:
        raise ValueError(f"spec_mask expects (T, F) features, got shape {tuple(z.shape)}")
    z = z.clone()
    for dim, n, width in ((0, time_masks, time_width), (1, freq_masks, freq_width)):
        size = z.shape[dim]
        for _ in range(int(n)):
            w = int(torch.randint(0, min(width, size) + 1, (1,), generator=generator))
            if w == 0:
                continue
            s = int(torch.randint(0, size - w + 1, (1,), generator=generator))
            z.narrow(dim, s, w).fill_(fill)
    return z
