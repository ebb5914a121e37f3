"""Moved to :mod:`bimsnn.models.baselines`; this shim keeps the old import path working."""

from bimsnn.models.baselines import CNN1d, LSTMClassifier

__all__ = ["CNN1d", "LSTMClassifier"]
