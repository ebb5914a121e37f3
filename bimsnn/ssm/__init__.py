"""Selective state-space model: scan kernels and the spiking Mamba block."""

from bimsnn.ssm.scan import selective_scan, selective_scan_ref, selective_step

__all__ = ["selective_scan", "selective_scan_ref", "selective_step"]
