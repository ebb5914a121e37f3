"""bimsnn: Bio-Inspired Mamba, online and biologically plausible learning for spiking SSMs."""

from bimsnn.ssm import selective_scan, selective_scan_ref, selective_step

__version__ = "0.1.0"
__all__ = ["selective_scan", "selective_scan_ref", "selective_step"]
