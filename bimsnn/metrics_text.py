"""Moved to :mod:`bimsnn.metrics`; this shim keeps the old import path working."""

from bimsnn.metrics import (
    bits_per_char,
    cer,
    ctc_beam_decode,
    ctc_collapse,
    ctc_greedy_decode,
    edit_distance,
    error_counts,
    perplexity,
    wer,
)

__all__ = ["bits_per_char", "cer", "ctc_beam_decode", "ctc_collapse", "ctc_greedy_decode",
           "edit_distance", "error_counts", "perplexity", "wer"]
