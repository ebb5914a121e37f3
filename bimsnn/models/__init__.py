"""Every model that recipes, benchmarks and notebooks use, built by name from a spec.

Symbols: T time, B batch, C input channels, K classes, V vocabulary size.

::

    spec(name, **kwargs)        {"name", "kwargs"} of primitives (JSON / weights_only safe)
    build(spec)                 the model, freshly initialised from torch's RNG
    save(path, model, spec, preprocessing=..., **extra) / load(path) -> (model, checkpoint)
    register(name)              decorator adding a model class or factory

Registered names::

    =================  =========================================  ===========================
    name               class                                      input → output
    =================  =========================================  ===========================
    spiking_mamba      :class:`SpikingMambaClassifier`            spikes (T, B, C) → (B, K)
    snn                :class:`SpikingMLP`                        spikes (T, B, C) → (B, K)
    cnn                :class:`CNN1d`                             (T, B, C) → (B, K)
    lstm               :class:`LSTMClassifier`                    (T, B, C) → (B, K)
    spiking_mamba_lm   :class:`SpikingMambaLM`                    ids (T, B) → (T, B, V)
    lstm_lm            :class:`LSTMLM`                            ids (T, B) → (T, B, V)
    =================  =========================================  ===========================

Example:
    >>> import torch
    >>> from bimsnn import models
    >>> s = models.spec("snn", n_inputs=3, n_classes=2, hidden=8)
    >>> models.build(s)(torch.zeros(5, 4, 3)).shape
    torch.Size([4, 2])
"""

from bimsnn.models.baselines import LSTMCTC, CNN1d, LSTMClassifier
from bimsnn.models.lm import LSTMLM, SpikingMambaLM
from bimsnn.models.registry import FORMAT, build, load, names, register, save, spec, spec_from_v1
from bimsnn.models.spiking import MLPState, SpikingMambaClassifier, SpikingMLP, hidden_spikes

__all__ = [
    "CNN1d",
    "FORMAT",
    "LSTMClassifier",
    "LSTMCTC",
    "LSTMLM",
    "MLPState",
    "SpikingMLP",
    "SpikingMambaClassifier",
    "SpikingMambaLM",
    "build",
    "hidden_spikes",
    "load",
    "names",
    "register",
    "save",
    "spec",
    "spec_from_v1",
]
