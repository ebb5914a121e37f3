"""Leaky integrate-and-fire neurons (paper eq. 3), snnTorch-compatible.

Modules: :mod:`.functional` (charge → fire → reset, ``lif_step``, the fused
``lif_multi_step`` with its ``_ref`` twin, the Synaptic steps) and :mod:`.modules` (the
drop-in ``Leaky`` and ``Synaptic``).
"""

from bimsnn.neurons.functional import (
    lif_charge,
    lif_fire,
    lif_multi_step,
    lif_multi_step_ref,
    lif_step,
    reset_signal,
    synaptic_multi_step,
    synaptic_step,
)
from bimsnn.neurons.modules import Leaky, Synaptic

__all__ = ["lif_charge", "lif_fire", "reset_signal", "lif_step", "lif_multi_step",
           "lif_multi_step_ref", "synaptic_step", "synaptic_multi_step", "Leaky", "Synaptic"]
