"""Selective state-space model: scan kernels and the spiking Mamba block."""

from bimsnn.ssm.mamba import (
    MambaBlockState,
    MambaConfig,
    MambaNetState,
    SelectiveSSM,
    SpikingMamba,
    SpikingMambaNet,
)
from bimsnn.ssm.scan import selective_scan, selective_scan_ref, selective_step

__all__ = [
    "MambaBlockState",
    "MambaConfig",
    "MambaNetState",
    "SelectiveSSM",
    "SpikingMamba",
    "SpikingMambaNet",
    "selective_scan",
    "selective_scan_ref",
    "selective_step",
]
