"""bimsnn: Bio-Inspired Mamba, online and biologically plausible learning for spiking SSMs.

Public API: neurons (``Leaky``, ``Synaptic`` and their functional steps), the selective
scan, the spiking Mamba block and net, and the ``rules``, ``encoding`` and ``data``
subpackages.
"""

from bimsnn import encoding, rules, surrogate
from bimsnn.neurons import (
    Leaky,
    Synaptic,
    lif_multi_step,
    lif_multi_step_ref,
    lif_step,
    synaptic_multi_step,
    synaptic_step,
)
from bimsnn.ssm import (
    MambaConfig,
    SelectiveSSM,
    SpikingMamba,
    SpikingMambaNet,
    selective_scan,
    selective_scan_ref,
    selective_step,
)

__version__ = "0.1.0"
__all__ = [
    "Leaky",
    "MambaConfig",
    "SelectiveSSM",
    "SpikingMamba",
    "SpikingMambaNet",
    "Synaptic",
    "encoding",
    "rules",
    "lif_multi_step",
    "lif_multi_step_ref",
    "lif_step",
    "selective_scan",
    "selective_scan_ref",
    "selective_step",
    "surrogate",
    "synaptic_multi_step",
    "synaptic_step",
]
