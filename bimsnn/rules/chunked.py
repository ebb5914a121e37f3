"""Chunked online learning: RTRL, STDP and Hybrid over chunks of K steps (eq. 4, 5, 7-8).

Symbols: T time, K chunk length, B batch, N Linear in_features, H Leaky width, θ a layer's
own parameters, e_θ its eligibility trace (eq. 7), g_0 = ∂L_chunk/∂s_0, λ mixing weight.

A sequence is processed in chunks of K steps with the model's fused multi-step path::

    rule = ChunkedRTRL(model, chunk=K)           # or ChunkedSTDP / ChunkedHybrid
    rule.reset(B); state = model.init_state(B)
    for c in range(0, T, K):
        out_c, state = model.forward_seq(x[c:c + K], state); state = detach_tree(state)
        rule.backward(loss_c)                     # loss over this chunk's steps (or None)
    opt.step(); opt.zero_grad()                   # or: loss = rule.run(x, loss_fn)

* Within a chunk, the fused kernels run (``Leaky.multi_step`` → ``lif_multi_step``,
  ``SelectiveSSM.forward`` → ``selective_scan``) and credit flows by back-propagation
  through every path (layers, time, conv buffer, readout).
* Across chunk boundaries credit flows only through each layer's own eligibility traces:
  every Linear→Leaky pair (W, b, learnable β, ϑ) and every SelectiveSSM (A_log, dt_proj,
  x_proj's Δ and B rows). At a chunk's start each layer's incoming state s_0 is detached and
  injected (:class:`~bimsnn.rules.chunked_layers.ChunkInject`), so the chunk's backward adds
  g_0·e_0 (eq. 8); then e_0 → e_K in closed form, e_K = (Π a_t) e_0 + Σ_t (Π_{s>t} a_s) imm_t
  (:mod:`bimsnn.rules.scan_traces`): a handful of batched matmuls and elementwise passes
  per chunk; the only loops are over cache-sized sub-blocks (and ≤ 16 in-place adds of a
  prefix sum inside each), not a per-step recursion with its own graph.
* Memory is O(K): traces have fixed size (B·N per pair for a scalar leak, B·E·Ns·(2E+R+2)
  per SSM), and each chunk's graph is freed by its backward.

Exact, and approximate::

    K = 1   equals the per-step rules (rules/rtrl.py, stdp.py, hybrid.py) driven by ``step``.
    K = T   equals BPTT of the whole sequence (one chunk, zero traces).
    1<K<T   the gradient of Σ_c L_c where, at each boundary, each layer's carried state is
            its value plus its own-recurrence dependence on its own θ (layer inputs held
            fixed). Dropped: paths that cross a boundary through *another* layer (layer l's
            past output → layer l+1's state → later loss), the conv buffer's dependence on
            in_proj, the readout's out_sum ("mean_mem"). Larger K keeps more of them; the
            last layer of a Linear→Leaky stack and a lone SSM are exact for any K.

STDP's Ω (eq. 5) is exact for every K. Hybrid (eq. 4) writes λ·∂L/∂w − (1 − λ)·Ω, with
``balance`` applied after every chunk (the per-step rule applies it after every step, so
K = 1 matches it; for K > 1 the formula holds after every chunk).

Measured (benchmarks/online_chunked.py, 1 CPU thread, CPU-time medians; 2-layer
SpikingMambaNet D=16, T=128, float64): cosine of the chunked RTRL gradient to BPTT (all
parameters) 0.165 at K=1 (the per-step rule), 0.268 at K=4, 0.783 at K=16, 0.998 at K=64,
1 at K=T. Time of one training pass over BPTT's (seizure size D=16, N=8, B=64, T=128):
RTRL 3.3× at K=8, 1.8× at K=32, 1.7× at K=64, 1.5× at K=T; with ``x_proj_traces=False``
1.4× at K=64. Keyword-spotting size (D=64, N=16, B=32, T=100): 2.5× at K=64, 1.6× without
x_proj traces. Memory at K=64 is flat in T (net peak 75 → 79 MB from T=1k to 20k).

Default chunk (:data:`DEFAULT_CHUNK` = 64): the gradient is within 0.2% of BPTT's direction
on the nets above (K=16 loses a fifth), the per-chunk costs (boundary contractions, trace
decays, one backward per chunk) are amortised (K=64 runs within ~15% of K=T, K≤16 at
2-3× that), and memory stays O(K) (≈80 MB for the seizure model at B=64). Sequences of
at most K steps run as one chunk, i.e. exactly BPTT.

Hooks: the rules wrap ``multi_step`` / ``forward`` / ``forward_seq`` on the instances and add
forward hooks to the paired Linears; ``remove()`` restores the model exactly. Per-step calls
(``model.step``, ``lif(cur, mem)``) are not seen: use the per-step rules for those.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import snntorch as snn
import torch
from torch import Tensor, nn

from bimsnn.rules.base import Pair, Rule, find_pairs
from bimsnn.rules.chunked_layers import (
    ChunkSTDPLayer,
    LeakyChunkRTRL,
    LeakyChunkTap,
    StateDetacher,
)
from bimsnn.rules.chunked_ssm import SSMChunkRTRL
from bimsnn.rules.hybrid import LambdaMix
from bimsnn.rules.ssm_rtrl import is_selective_ssm
from bimsnn.rules.stdp import STDP
from bimsnn.state import detach_tree

__all__ = ["DEFAULT_CHUNK", "ChunkedRule", "ChunkedRTRL", "ChunkedSTDP", "ChunkedHybrid"]

DEFAULT_CHUNK = 64     # default K (recipes, RTRL(model, chunk=...)): see the module docstring


class ChunkedRule(Rule):
    """Base class: chunk taps on every Linear→Leaky pair, state detachers, ``run``.

    Args:
        model: network with ``init_state(B)`` and ``forward_seq(x (K, B, C), state)``
            (SpikingMambaNet, or any net of bimsnn.Leaky driven by ``multi_step``).
        chunk: K ≥ 1, the number of steps per chunk (used by :meth:`run`).
        layers, check: pairing override and structural check (see :mod:`bimsnn.rules.base`).
        x_proj_traces (RTRL, Hybrid): keep the exact SSM traces of x_proj's Δ and B rows,
            B·Ns·E·(2E + R + 1) numbers per SSM and O(B·Ns·E²) work per step, the dominant
            cost for wide SSMs. False: those rows get within-chunk credit only (the other
            SSM traces, e_A, e_b, e_Wdt, stay exact).
    """

    def __init__(self, model: nn.Module, chunk: int, layers: Sequence[Pair] | None = None,
                 check: bool = True):
        super().__init__(model)
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        self.chunk = int(chunk)
        self.detachers: list[StateDetacher] = []

    def _attach(self, layers: Sequence[Pair] | None, check: bool) -> list[LeakyChunkTap]:
        pairs, unpaired = find_pairs(self.model, layers)
        names = {id(m): n for n, m in self.model.named_modules()}
        taps: list[LeakyChunkTap] = []
        try:
            for fc, lif in pairs:
                taps.append(LeakyChunkTap(fc, lif, check, f"{names.get(id(fc))}→"
                                          f"{names.get(id(lif))}", self.plastic_without_grad))
            for lif in unpaired:
                warnings.warn(f"Leaky {names.get(id(lif))} has no paired Linear: its state is "
                              "detached but it gets no trace", stacklevel=3)
                taps.append(LeakyChunkTap(None, lif, check, names.get(id(lif), ""),
                                          self.plastic_without_grad))
            self.taps = taps
            self._attach_detachers()
        except Exception:
            for t in taps:
                t.remove()
            self.taps = []
            raise
        for n, m in self.model.named_modules():
            if isinstance(m, snn.SpikingNeuron) and not isinstance(m, snn.Leaky):
                warnings.warn(f"{n} ({type(m).__name__}) is not supported by the chunked "
                              "rules: its state is not detached between chunks", stacklevel=3)
        return taps

    def _attach_detachers(self) -> None:
        """Detach the incoming state of every ``forward_seq`` and of stateful blocks."""
        for m in self.model.modules():
            if is_selective_ssm(m) or isinstance(m, snn.SpikingNeuron):
                continue
            if callable(getattr(m, "forward_seq", None)):
                self.detachers.append(StateDetacher(m, "forward_seq"))
            elif callable(getattr(m, "init_state", None)):
                self.detachers.append(StateDetacher(m, "forward"))

    def _ssm_handlers(self, x_proj_traces: bool = True) -> list[SSMChunkRTRL]:
        return [SSMChunkRTRL(m, x_proj_traces) for m in self.model.modules()
                if is_selective_ssm(m)]

    def trace_numel(self) -> int:
        """Elements held in eligibility traces (independent of T: memory is O(K))."""
        return sum(h.numel() for h in self.handlers if hasattr(h, "numel"))

    def _warn_if_blind(self) -> None:
        blind = [t.name for t in self.taps if t.fc is not None and t.steps == 0]
        if blind and not self._warned_blind:
            self._warned_blind = True
            warnings.warn(f"{type(self).__name__}: no multi_step chunk seen for {blind} since "
                          "reset(): drive the model with forward_seq (per-step calls and "
                          "eval mode bypass the chunked rules)", stacklevel=3)

    def remove(self) -> None:
        super().remove()
        for d in self.detachers:
            d.remove()
        self.detachers = []

    def run(self, x: Tensor, loss_fn: Callable[[Tensor, int], Tensor | None],
            state=None) -> Tensor:
        """One sequence, chunk by chunk: ``reset``, then per chunk ``forward_seq``, detach,
        ``backward(loss_fn(out_c, t0))``. Gradients accumulate in ``.grad`` (no zeroing).

        Args:
            x: (T, B, C) input. loss_fn: ``(out_c, t0) -> loss or None``, out_c what
                ``forward_seq`` returns for steps t0 .. t0 + K − 1 (e.g. logits (K, B, K')).
            state: initial state (default ``model.init_state(B)``).
        Returns:
            Σ of the chunk losses (detached scalar).
        """
        T, B = x.shape[:2]
        self.reset(B)
        state = self.model.init_state(B) if state is None else state
        total = x.new_zeros(())
        for t0 in range(0, T, self.chunk):
            out, state = self.model.forward_seq(x[t0:t0 + self.chunk], state)
            state = detach_tree(state)
            loss = loss_fn(out, t0)
            self.backward(loss)
            if loss is not None:
                total = total + loss.detach()
        return total


class ChunkedRTRL(ChunkedRule):
    """Chunked online RTRL (eq. 7-8); see the module docstring. ``chunk=1`` is
    :class:`bimsnn.rules.RTRL` step by step, ``chunk=T`` is BPTT.

    Example:
        >>> from bimsnn.ssm import MambaConfig, SpikingMambaNet
        >>> net = SpikingMambaNet(MambaConfig(d_model=8, n_inputs=3, n_classes=2))
        >>> x = (torch.rand(12, 4, 3) < 0.3).float()
        >>> with ChunkedRTRL(net, chunk=4) as rule:
        ...     loss = rule.run(x, lambda out, t0: out.pow(2).mean())
        >>> net.blocks[0].ssm.A_log.grad.shape          # (E, N), from traces + in-chunk BPTT
        torch.Size([16, 16])
    """

    def __init__(self, model: nn.Module, chunk: int, layers: Sequence[Pair] | None = None,
                 check: bool = True, x_proj_traces: bool = True):
        super().__init__(model, chunk)
        try:
            taps = self._attach(layers, check)
            self.layer_handlers = [LeakyChunkRTRL(t) for t in taps if t.fc is not None]
            self.ssm_handlers = self._ssm_handlers(x_proj_traces)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.layer_handlers, *self.ssm_handlers, *taps]


def _stdp_cfg(stdp: STDP | None, kw: dict) -> STDP:
    if stdp is not None and kw:
        raise ValueError("give either stdp=STDP(...) or STDP keyword arguments, not both")
    cfg = STDP(None, **kw) if stdp is None else stdp
    if cfg.model is not None:
        cfg.remove()                          # a configuration only: its hooks go away
    return cfg


class ChunkedSTDP(ChunkedRule):
    """Pair-based STDP (eq. 5-6) per chunk; exactly :class:`bimsnn.rules.STDP`'s Ω.

    Args:
        model, chunk, layers, check: as :class:`ChunkedRule`.
        stdp: an :class:`STDP` giving A±, τ±, bounds, normalize (or pass its keywords).
    ``omegas[k]`` (H, N) holds pair k's Ω since :meth:`reset`; ``backward(None)`` writes
    −Ω of the chunk into ``.grad``. Learns under ``no_grad`` too (not in eval mode).
    """

    plastic_without_grad = True

    def __init__(self, model: nn.Module, chunk: int, stdp: STDP | None = None,
                 layers: Sequence[Pair] | None = None, check: bool = True, **kw):
        super().__init__(model, chunk)
        self.cfg = _stdp_cfg(stdp, kw)
        try:
            taps = self._attach(layers, check)
            self.layers = [ChunkSTDPLayer(t, self.cfg) for t in taps if t.fc is not None]
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.layers, *taps]

    @property
    def omegas(self) -> list[Tensor]:
        return [h.omega for h in self.layers]

    def backward(self, loss: Tensor | None = None) -> None:
        if loss is not None:
            raise ValueError("STDP.backward takes no loss; combine a loss with STDP via Hybrid")
        super().backward(None)

    @torch.no_grad()
    def normalize_(self) -> None:
        """As :meth:`STDP.normalize_`: Σ_j ``|w_ij|`` = normalize per post neuron."""
        if self.cfg.normalize is None:
            return
        for h in self.layers:
            w = h.tap.fc.weight
            w.mul_(self.cfg.normalize / w.abs().sum(1, keepdim=True).clamp_min(1e-12))


class ChunkedHybrid(LambdaMix, ChunkedRule):
    """λ·gradient − (1 − λ)·STDP into ``.grad`` per chunk (eq. 4); see rules/hybrid.py.

    Args:
        model, chunk, layers, check: as :class:`ChunkedRule`.
        lam: λ, a float, per-pair sequence, or {module: λ} (semantics of ``Hybrid``).
        stdp: an :class:`STDP` configuration (default ``STDP()``).
        grad: "rtrl" (chunked traces) or "autograd" (within-chunk gradient, no traces).
        balance: as :class:`~bimsnn.rules.Hybrid` (False, True/"norm", "element"): e.g. the
            STDP term rescaled to (1 − λ)·‖G‖·Ω/‖Ω‖ per pair weight and sequence,
            G = Σ ∂L/∂W since reset, re-written after every chunk.
    """

    def __init__(self, model: nn.Module, chunk: int,
                 lam: float | Sequence[float] | Mapping = 0.5, stdp: STDP | None = None,
                 grad: str = "rtrl", balance: bool | str = False,
                 layers: Sequence[Pair] | None = None, check: bool = True,
                 x_proj_traces: bool = True):
        super().__init__(model, chunk)
        if grad not in ("rtrl", "autograd"):
            raise ValueError(f"grad must be 'rtrl' or 'autograd', got {grad!r}")
        self.stdp, self.grad = _stdp_cfg(STDP() if stdp is None else stdp, {}), grad
        try:
            taps = self._attach(layers, check)
            self.grad_handlers: list = []
            if grad == "rtrl":
                self.grad_handlers = [LeakyChunkRTRL(t) for t in taps if t.fc is not None]
                self.grad_handlers += self._ssm_handlers(x_proj_traces)
            self.stdp_layers = [ChunkSTDPLayer(t, self.stdp) for t in taps if t.fc is not None]
            self._set_lam(lam)
            self._init_balance(balance)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.grad_handlers, *self.stdp_layers, *taps]

    def backward(self, loss: Tensor | None) -> None:
        """Add λ·∂L_c/∂w − (1 − λ)·Ω_c to ``.grad`` for this chunk (balance: see class)."""
        self._mix_backward(loss)
