"""Online, biologically plausible learning rules that write ``.grad`` (paper eq. 4-10).

Rule interface (:mod:`bimsnn.rules.base`): ``Rule(model, ...)``, ``reset(batch_size)`` per
sequence, ``backward(loss_t)`` per step, ``remove()``. Rules: :class:`RTRL` (eq. 7-8),
:class:`STDP` (eq. 5-6), :class:`Hybrid` (eq. 4); :class:`AdaptivePruning` (eq. 9-10).
Traces live in :mod:`bimsnn.rules.traces`.

Symbols (all modules): T time, B batch, N Linear in_features, H Leaky width, λ mixing weight,
Ω STDP update, ρ target sparsity. Tensors are time-major (T, B, ...).
"""

from bimsnn.rules.base import Handler, LayerTap, Rule, find_pairs
from bimsnn.rules.chunked import ChunkedHybrid, ChunkedRTRL, ChunkedSTDP
from bimsnn.rules.hybrid import Hybrid
from bimsnn.rules.pruning import AdaptivePruning
from bimsnn.rules.rtrl import RTRL, TraceInject, trace_inject_ref
from bimsnn.rules.stdp import STDP
from bimsnn.rules.traces import Trace, decay_from_tau

__all__ = ["AdaptivePruning", "ChunkedHybrid", "ChunkedRTRL", "ChunkedSTDP", "Handler", "Hybrid", "LayerTap", "RTRL", "Rule", "STDP",
           "Trace", "TraceInject", "decay_from_tau", "find_pairs", "trace_inject_ref"]
