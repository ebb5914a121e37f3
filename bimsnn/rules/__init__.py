"""Online, biologically plausible learning rules that write ``.grad`` (paper eq. 4-10).

Rule interface (:mod:`bimsnn.rules.base`): ``Rule(model, ...)``, ``reset(batch_size)`` per
sequence, ``backward(loss_t)`` per step, ``remove()``. Rules: :class:`RTRL` (eq. 7-8),
:class:`STDP` (eq. 5-6), :class:`Hybrid` (eq. 4); :class:`AdaptivePruning` (eq. 9-10).
``RTRL(model, chunk=K)`` (and Hybrid, STDP) runs the chunked rules of
:mod:`bimsnn.rules.chunked`: fused kernels inside a chunk of K steps, traces across chunks.
They attach to unmodified snnTorch models: nn.Linear / nn.Conv1d / nn.Conv2d connections
into Leaky, Synaptic, Alpha, RLeaky and RSynaptic neurons (and bimsnn's Leaky, Synaptic);
docs/rules_support.md tabulates what is exact. Traces live in :mod:`bimsnn.rules.traces`,
connection geometry in :mod:`bimsnn.rules.connections`, neuron dynamics in
:mod:`bimsnn.rules.dynamics`, the hooks in :mod:`bimsnn.rules.taps`.

Symbols (all modules): T time, B batch, N presynaptic width, H neuron width, O output units,
λ mixing weight, Ω STDP update, ρ target sparsity. Tensors are time-major (T, B, ...).
"""

from bimsnn.rules.base import Handler, Rule, find_pairs
from bimsnn.rules.chunked import ChunkedHybrid, ChunkedRTRL, ChunkedSTDP
from bimsnn.rules.hybrid import Hybrid
from bimsnn.rules.pruning import AdaptivePruning
from bimsnn.rules.rtrl import RTRL, LayerRTRL, NeuronTraceInject, neuron_trace_inject_ref
from bimsnn.rules.ssm_rtrl import SSMTraceInject, ssm_trace_inject_ref
from bimsnn.rules.stdp import STDP, STDPState, stdp_omega_ref, stdp_step, stdp_window
from bimsnn.rules.taps import LayerTap
from bimsnn.rules.traces import Trace, decay_from_tau, filter_step

__all__ = ["AdaptivePruning", "ChunkedHybrid", "ChunkedRTRL", "ChunkedSTDP", "Handler",
           "Hybrid", "LayerRTRL", "LayerTap", "NeuronTraceInject", "RTRL", "Rule",
           "SSMTraceInject", "STDP", "STDPState", "Trace", "decay_from_tau", "filter_step",
           "find_pairs", "neuron_trace_inject_ref", "ssm_trace_inject_ref", "stdp_omega_ref",
           "stdp_step", "stdp_window"]
