"""Spike encoders (signal → time-major spikes) and decoders (spikes → signal).

Symbols: T time steps, B batch, C channels, F mel bands, L threshold levels,
fs input sampling rate (steps per second), θ threshold.

Every encoder has a pure functional form and a transform (``nn.Module`` or callable
dataclass) that calls it, in the torchaudio style, so that datasets can take
``encoder=ADMEncoder(0.1)``. Time-major throughout: input (T, ..., C), output (T, ..., C').

==================  =========================  ==================================  ============
functional          transform                  encodes                             file
==================  =========================  ==================================  ============
rate                RateEncoder                intensity as firing probability     intensity.py
latency             LatencyEncoder             intensity as first-spike time       intensity.py
delta               DeltaEncoder               step-to-step changes ≥ θ            contrast.py
adm                 ADMEncoder                 level crossings of a tracked ref.   contrast.py
multi_adm           MultiADMEncoder            ADM at several θ side by side       contrast.py
filterbank_adm      FilterbankADMEncoder       band log-envelopes by ADM (EEG)     filterbank.py
thermometer         SpikeCode                  normalised log-mel levels (speech)  mel.py
mel_threshold       MelThresholdEncoder        log-mel level crossings             mel.py
log_mel             LogMelSpectrogram          waveform → log-mel (features)       mel.py
==================  =========================  ==================================  ============

Decoders: :func:`delta_decode`, :func:`adm_decode`. :func:`spike_rate` measures the spikes/s
that each encoder's docstring bounds.

    >>> x = torch.tensor([[0.0], [0.3], [0.6], [0.2]])        # (T, C) = (4, 1)
    >>> adm(x, 0.25).shape, multi_adm(x, [0.25, 0.5]).shape
    (torch.Size([4, 2]), torch.Size([4, 4]))
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctest above)

from bimsnn.encoding.contrast import (
    ADMEncoder,
    DeltaEncoder,
    MultiADMEncoder,
    adm,
    adm_decode,
    delta,
    delta_decode,
    multi_adm,
)
from bimsnn.encoding.filterbank import (
    EEG_BANDS,
    FilterbankADMEncoder,
    filterbank_adm,
    filterbank_envelope,
)
from bimsnn.encoding.intensity import LatencyEncoder, RateEncoder, latency, rate, spike_rate
from bimsnn.encoding.mel import (
    SCALES,
    LogMelSpectrogram,
    MelThresholdEncoder,
    SpikeCode,
    log_mel,
    mel_threshold,
    thermometer,
)

__all__ = [
    "rate", "latency", "delta", "delta_decode", "adm", "adm_decode", "multi_adm",
    "filterbank_envelope", "filterbank_adm", "thermometer", "mel_threshold", "log_mel",
    "spike_rate", "EEG_BANDS", "SCALES",
    "RateEncoder", "LatencyEncoder", "DeltaEncoder", "ADMEncoder", "MultiADMEncoder",
    "FilterbankADMEncoder", "SpikeCode", "MelThresholdEncoder", "LogMelSpectrogram",
]
