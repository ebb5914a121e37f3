"""Spiking Mamba: a selective SSM (paper eq. 1-2) wrapped in spiking in/out layers.

Symbols: T time, B batch, C input channels, D model width, E expanded width (expand·D),
N state size, R rank of the Δ projection, K classes.

A selective SSM channel is a leaky integrator whose leak depends on the input::

    x_t = A(θ_t) x_{t-1} + B(θ_t) u_t,   y_t = C(θ_t) x_t + D u_t        (eq. 1-2)
    θ_t = u_t:  Δ_t = softplus(W_Δ W_R u_t + b_Δ),  B_t = W_B u_t,  C_t = W_C u_t
    A(θ_t) = exp(Δ_t ⊙ A),  B(θ_t) u_t = (Δ_t ⊙ u_t) ⊗ B_t               (Mamba's S6)

Public tensors are time-major ``(T, B, ...)`` as in snnTorch; all recurrent state is
passed explicitly in NamedTuples. ``forward`` uses the parallel scan and the LIF
multi-step path; ``step`` is the streaming twin that the online rules hook into.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bimsnn.neurons import Leaky
from bimsnn.ssm.scan import selective_scan, selective_step

_READOUTS = ("li", "mean_mem")
_READOUT_INPUTS = ("spikes", "membrane", "current")
_NORMS = ("none", "rms", "layer")


def _shape_error(where: str, expected: str, x: Tensor) -> ValueError:
    return ValueError(f"{where}: expected shape {expected}, got {tuple(x.shape)}")


@dataclass
class MambaConfig:
    """Configuration of :class:`SpikingMambaNet` (and of its :class:`SpikingMamba` blocks).

    ``d_inner = expand·d_model`` and ``dt_rank`` ("auto" → ⌈d_model/16⌉, as in Mamba) are
    derived in ``__post_init__``.

    Residual and norm choices (documented defaults):
        residual=True: the block input spikes are added to the LIF *input current*
            (a membrane shortcut, as in MS-ResNet), ``cur_t = out_proj(g_t) + x_t``, so the
            block output stays binary (a spike-domain sum x + s could reach 2) and deep
            stacks keep an identity path for activity and gradients.
        norm="none": inputs are binary spikes, already bounded, and a per-step norm would
            couple all channels (non-local for the online rules). "rms"/"layer" put an
            RMSNorm/LayerNorm before ``in_proj`` (Mamba's pre-norm); they act per step, so
            streaming still equals the full forward.
    Readout ("li" or "mean_mem"): per-step logits are the membrane of a non-spiking leaky
        integrator ``m_t = readout_beta·m_{t-1} + W s_t + b`` ("li"), or its running mean
        over time ``(1/t)·Σ_{s≤t} m_s`` ("mean_mem"). ``forward`` returns the last step.
    readout_input: what the last block hands to the readout ``W``: its spikes s_t
        ("spikes", the default), its LIF membrane U_t ("membrane") or its pre-LIF current
        cur_t ("current"). The last two leave the block's final spike nonlinearity off the
        path to the logits; the language model needs that (benchmarks/RESULTS.md).
    """

    d_model: int
    n_inputs: int
    n_classes: int
    n_layers: int = 1
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | str = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    beta: float = 0.9
    threshold: float = 1.0
    spike_grad: Callable | None = None  # surrogate (bimsnn.surrogate / snnTorch); None → ATan(2)
    readout: str = "li"
    readout_beta: float = 0.9
    readout_input: str = "spikes"
    residual: bool = True
    norm: str = "none"
    d_inner: int = field(init=False)  # derived: expand·d_model

    def __post_init__(self):
        for name in ("d_model", "n_inputs", "n_classes", "n_layers", "d_state", "expand",
                     "d_conv"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {v!r}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if not isinstance(self.dt_rank, int) or isinstance(self.dt_rank, bool) or self.dt_rank < 1:
            raise ValueError(f"MambaConfig.dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"MambaConfig needs 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0 < self.dt_init_floor:
            raise ValueError(f"MambaConfig.dt_init_floor must be > 0, got {self.dt_init_floor}")
        for name in ("beta", "readout_beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"MambaConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not self.threshold > 0:
            raise ValueError(f"MambaConfig.threshold must be > 0, got {self.threshold}")
        if self.readout not in _READOUTS:
            raise ValueError(f"MambaConfig.readout must be one of {_READOUTS}, got {self.readout!r}")
        if self.readout_input not in _READOUT_INPUTS:
            raise ValueError(f"MambaConfig.readout_input must be one of {_READOUT_INPUTS}, "
                             f"got {self.readout_input!r}")
        if self.norm not in _NORMS:
            raise ValueError(f"MambaConfig.norm must be one of {_NORMS}, got {self.norm!r}")
        self.d_inner = self.expand * self.d_model


def _spiking_lif(cfg: MambaConfig) -> Leaky:
    """A fresh spiking LIF (subtract reset) with the config's beta, threshold and surrogate."""
    return Leaky(beta=cfg.beta, threshold=cfg.threshold, spike_grad=cfg.spike_grad,
                 reset_mechanism="subtract")


def _norm(cfg: MambaConfig) -> nn.Module:
    if cfg.norm == "rms":
        return nn.RMSNorm(cfg.d_model)
    return nn.LayerNorm(cfg.d_model) if cfg.norm == "layer" else nn.Identity()


class SelectiveSSM(nn.Module):
    """Mamba's selective SSM (S6) on E channels with N states each (eq. 1-2).

    Parameters: ``x_proj`` (E → R + 2N, split as Δ_low, B, C), ``dt_proj`` (R → E),
    ``A_log`` (E, N) with A = -exp(A_log) (S4D-real init A_log = log(1..N)), ``D`` (E,).
    ``dt_proj.bias`` is the inverse softplus of Δ sampled log-uniformly in [dt_min, dt_max],
    so that Δ starts in that range (Mamba's init).
    """

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4):
        super().__init__()
        E, N = d_inner, d_state
        R = math.ceil(E / 32) if dt_rank is None else dt_rank  # = ⌈d_model/16⌉ for expand 2
        self.d_inner, self.d_state, self.dt_rank = E, N, R
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        with torch.no_grad():
            bound = R ** -0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))

    def discretize(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Input-dependent parameters θ(u).

        Args:
            u: (..., E)
        Returns:
            delta (..., E) > 0, A (E, N) < 0, B (..., N), C (..., N)
        """
        if u.shape[-1] != self.d_inner:
            raise _shape_error("SelectiveSSM", f"(..., {self.d_inner})", u)
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_low))
        return delta, -torch.exp(self.A_log), B, C

    def forward(self, u: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Parallel scan over a sequence.

        Args:
            u: (T, B, E). h0: (B, E, N) or None (zeros).
        Returns:
            y: (T, B, E), h_T: (B, E, N)
        """
        if u.dim() != 3 or u.shape[-1] != self.d_inner:
            raise _shape_error("SelectiveSSM.forward", f"(T, B, {self.d_inner})", u)
        delta, A, B, C = self.discretize(u)
        return selective_scan(u, delta, A, B, C, self.D, h0, return_last_state=True)

    def step(self, u_t: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One streaming step.

        Args:
            u_t: (B, E). h: (B, E, N) or None (zeros).
        Returns:
            y_t: (B, E), h: (B, E, N)
        """
        if u_t.dim() != 2 or u_t.shape[-1] != self.d_inner:
            raise _shape_error("SelectiveSSM.step", f"(B, {self.d_inner})", u_t)
        delta, A, B, C = self.discretize(u_t)
        return selective_step(u_t, delta, A, B, C, self.D, h)


def causal_conv(seq: Tensor, conv: nn.Conv1d) -> Tensor:
    """Mamba's causal depthwise convolution, time-major, as d_conv shifted multiply-adds.

    out_t = b + Σ_k w_k ⊙ seq_{t+k}, the same sums as ``conv(seq.permute(1, 2, 0))``.
    ``nn.Conv1d`` keeps the parameters (so checkpoints are unchanged); the taps are done
    here because a depthwise conv's backward costs ~8 ms per call on CPU at these sizes
    whatever T is, which dominated short chunks of online learning.

    Args:
        seq: (d_conv - 1 + T, B, E). conv: depthwise ``nn.Conv1d(E, E, d_conv, groups=E)``.
    Returns:
        (T, B, E).
    """
    w = conv.weight[:, 0, :]                                        # (E, d_conv)
    K = w.shape[-1]
    T = seq.shape[0] - K + 1
    out = torch.addcmul(conv.bias, seq[:T], w[:, 0]) if conv.bias is not None \
        else seq[:T] * w[:, 0]
    for k in range(1, K):
        out = torch.addcmul(out, seq[k:k + T], w[:, k])
    return out


class MambaBlockState(NamedTuple):
    """State of one :class:`SpikingMamba` block between steps."""

    conv: Tensor  # (B, E, d_conv - 1): last inputs to the causal conv
    h: Tensor     # (B, E, N): SSM state
    mem: Tensor   # (B, D): LIF membrane


class SpikingMamba(nn.Module):
    """Spiking Mamba block: spikes (T, B, D) in → spikes (T, B, D) out.

    Path per step (x_t spikes in)::

        (x̃, z) = in_proj(norm(x_t))                       # (B, E) each
        u_t   = SiLU(causal depthwise conv(x̃)_t)           # kernel d_conv
        y_t   = SelectiveSSM(u_t)                           # eq. 1-2
        cur_t = out_proj(y_t ⊙ SiLU(z_t)) [+ x_t]           # residual into the membrane
        s_t, mem_t = lif(cur_t, mem_{t-1})                  # binary out
    """

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        D, E = cfg.d_model, cfg.d_inner
        self.norm = _norm(cfg)
        self.in_proj = nn.Linear(D, 2 * E)
        # Padding is explicit (the carried buffer), so chunked and streaming runs agree.
        self.conv1d = nn.Conv1d(E, E, cfg.d_conv, groups=E, padding=0)
        self.ssm = SelectiveSSM(E, cfg.d_state, cfg.dt_rank, cfg.dt_min, cfg.dt_max,
                                cfg.dt_init_floor)
        self.out_proj = nn.Linear(E, D)
        self.lif = _spiking_lif(cfg)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaBlockState:
        """Zero state: conv (B, E, d_conv-1), h (B, E, N), mem (B, D)."""
        p = self.in_proj.weight
        kw = {"device": device or p.device, "dtype": dtype or p.dtype}
        E, N, D = self.cfg.d_inner, self.cfg.d_state, self.cfg.d_model
        return MambaBlockState(torch.zeros(batch_size, E, self.cfg.d_conv - 1, **kw),
                               torch.zeros(batch_size, E, N, **kw),
                               torch.zeros(batch_size, D, **kw))

    def _check_state(self, state: MambaBlockState, batch: int) -> None:
        E, N, D, K = self.cfg.d_inner, self.cfg.d_state, self.cfg.d_model, self.cfg.d_conv
        for name, t, shape in (("conv", state.conv, (batch, E, K - 1)),
                               ("h", state.h, (batch, E, N)), ("mem", state.mem, (batch, D))):
            if tuple(t.shape) != shape:
                raise _shape_error(f"SpikingMamba state.{name}", str(shape), t)

    def forward(self, x: Tensor, state: MambaBlockState | None = None
                ) -> tuple[Tensor, MambaBlockState]:
        """Whole sequence: parallel scan + LIF multi-step.

        Args:
            x: (T, B, D) spikes. state: MambaBlockState or None (zeros).
        Returns:
            spk: (T, B, D), state after the last step.
        """
        spk, _, _, state = self.forward_full(x, state)
        return spk, state

    def forward_full(self, x: Tensor, state: MambaBlockState | None = None
                     ) -> tuple[Tensor, Tensor, Tensor, MambaBlockState]:
        """:meth:`forward` that also returns the LIF membrane and its input current.

        Returns:
            spk, mem, cur: (T, B, D) each; state after the last step.
        """
        D = self.cfg.d_model
        if x.dim() != 3 or x.shape[-1] != D:
            raise _shape_error("SpikingMamba.forward", f"(T, B, {D})", x)
        state = self.init_state(x.shape[1]) if state is None else state
        self._check_state(state, x.shape[1])
        xi, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)             # (T, B, E) each
        seq = torch.cat([state.conv.permute(2, 0, 1), xi])              # (d_conv-1+T, B, E)
        u = F.silu(causal_conv(seq, self.conv1d))                       # (T, B, E)
        y, h = self.ssm(u, state.h)
        cur = self.out_proj(y * F.silu(z))                              # (T, B, D)
        if self.cfg.residual:
            cur = cur + x
        spk, mem = self.lif.multi_step(cur, state.mem)
        conv = seq[seq.shape[0] - (self.cfg.d_conv - 1):].permute(1, 2, 0)
        return spk, mem, cur, MambaBlockState(conv, h, mem[-1])

    def step(self, x_t: Tensor, state: MambaBlockState | None = None
             ) -> tuple[Tensor, MambaBlockState]:
        """One streaming step (calls ``self.ssm.step`` and ``self.lif(cur, mem)``).

        Args:
            x_t: (B, D) spikes. state: MambaBlockState or None (zeros).
        Returns:
            spk_t: (B, D), new state.
        """
        spk, _, state = self.step_full(x_t, state)
        return spk, state

    def step_full(self, x_t: Tensor, state: MambaBlockState | None = None
                  ) -> tuple[Tensor, Tensor, MambaBlockState]:
        """:meth:`step` that also returns the LIF's input current: spk_t, cur_t (B, D), state
        (whose ``mem`` is the membrane U_t)."""
        D = self.cfg.d_model
        if x_t.dim() != 2 or x_t.shape[-1] != D:
            raise _shape_error("SpikingMamba.step", f"(B, {D})", x_t)
        state = self.init_state(x_t.shape[0]) if state is None else state
        self._check_state(state, x_t.shape[0])
        xi, z = self.in_proj(self.norm(x_t)).chunk(2, dim=-1)           # (B, E) each
        window = torch.cat([state.conv, xi.unsqueeze(-1)], dim=-1)      # (B, E, d_conv)
        u = F.silu(causal_conv(window.permute(2, 0, 1), self.conv1d)[0])  # (B, E)
        y, h = self.ssm.step(u, state.h)
        cur = self.out_proj(y * F.silu(z))
        if self.cfg.residual:
            cur = cur + x_t
        spk, mem = self.lif(cur, state.mem)
        return spk, cur, MambaBlockState(window[..., 1:], h, mem)


class MambaNetState(NamedTuple):
    """State of :class:`SpikingMambaNet` between steps."""

    in_mem: Tensor                       # (B, D): input LIF membrane
    blocks: tuple[MambaBlockState, ...]  # one per layer
    out_mem: Tensor                      # (B, K): readout leaky-integrator membrane
    out_sum: Tensor                      # (B, K): Σ out_mem so far ("mean_mem" readout)
    steps: int                           # steps taken so far


class SpikingMambaNet(nn.Module):
    """Classifier: spikes (T, B, C) → Linear + Leaky (C → D) → n_layers SpikingMamba →
    Linear (D → K) into a non-spiking leaky integrator ``out_li`` (an ``reset="none"``
    Leaky whose membrane is the logit; its spikes are ignored). The Linear reads the last
    block's spikes, or its membrane or current (``cfg.readout_input``).

    Example:
        >>> net = SpikingMambaNet(MambaConfig(d_model=8, n_inputs=3, n_classes=2))
        >>> net(torch.zeros(5, 4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        self.in_fc = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.in_lif = _spiking_lif(cfg)
        self.blocks = nn.ModuleList(SpikingMamba(cfg) for _ in range(cfg.n_layers))
        self.out_fc = nn.Linear(cfg.d_model, cfg.n_classes)
        self.out_li = Leaky(beta=cfg.readout_beta, threshold=1.0, reset_mechanism="none")

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaNetState:
        """Zero state for ``batch_size`` sequences."""
        p = self.in_fc.weight
        kw = {"device": device or p.device, "dtype": dtype or p.dtype}
        zk = torch.zeros(batch_size, self.cfg.n_classes, **kw)
        return MambaNetState(torch.zeros(batch_size, self.cfg.d_model, **kw),
                             tuple(b.init_state(batch_size, **kw) for b in self.blocks),
                             zk, zk.clone(), 0)

    def _check_input(self, where: str, x: Tensor, dim: int) -> None:
        C = self.cfg.n_inputs
        if x.dim() != dim or x.shape[-1] != C:
            raise _shape_error(where, f"(T, B, {C})" if dim == 3 else f"(B, {C})", x)

    def _check_state(self, state: MambaNetState, batch: int) -> None:
        if len(state.blocks) != len(self.blocks):
            raise ValueError(f"SpikingMambaNet state: expected {len(self.blocks)} block states, "
                             f"got {len(state.blocks)}")
        D, K = self.cfg.d_model, self.cfg.n_classes
        for name, t, shape in (("in_mem", state.in_mem, (batch, D)),
                               ("out_mem", state.out_mem, (batch, K)),
                               ("out_sum", state.out_sum, (batch, K))):
            if tuple(t.shape) != shape:
                raise _shape_error(f"SpikingMambaNet state.{name}", str(shape), t)

    def _readout_input(self, spk: Tensor, mem: Tensor, cur: Tensor) -> Tensor:
        """The last block's spikes, membrane or current (``cfg.readout_input``), any shape."""
        return {"spikes": spk, "membrane": mem, "current": cur}[self.cfg.readout_input]

    def _logits(self, mem: Tensor, state: MambaNetState, steps: int) -> tuple[Tensor, Tensor]:
        """Readout from the LI membrane mem (T, B, K); returns (logits (T, B, K), Σ mem)."""
        if self.cfg.readout == "li":
            return mem, state.out_sum
        csum = state.out_sum + mem.cumsum(0)                            # (T, B, K)
        t = torch.arange(state.steps + 1, state.steps + steps + 1, device=mem.device)
        return csum / t.to(mem.dtype).view(-1, 1, 1), csum[-1]

    def forward_seq(self, x: Tensor, state: MambaNetState | None = None
                    ) -> tuple[Tensor, MambaNetState]:
        """Per-step logits for online / per-step losses.

        Args:
            x: (T, B, C) spikes. state: MambaNetState or None (zeros).
        Returns:
            logits: (T, B, K), state after the last step.
        """
        self._check_input("SpikingMambaNet.forward", x, 3)
        state = self.init_state(x.shape[1]) if state is None else state
        self._check_state(state, x.shape[1])
        s, in_mem = self.in_lif.multi_step(self.in_fc(x), state.in_mem)
        new_blocks, last = [], len(self.blocks) - 1
        feat = None
        for i, (block, bs) in enumerate(zip(self.blocks, state.blocks)):
            if i == last and self.cfg.readout_input != "spikes":
                s, mem_b, cur_b, bs = block.forward_full(s, bs)         # (T, B, D) each
                feat = self._readout_input(s, mem_b, cur_b)
            else:   # through __call__: forward (pre-)hooks on the blocks fire (rules, taps)
                s, bs = block(s, bs)
            new_blocks.append(bs)
        feat = s if feat is None else feat
        _, mem = self.out_li.multi_step(self.out_fc(feat), state.out_mem)  # (T, B, K)
        logits, out_sum = self._logits(mem, state, x.shape[0])
        return logits, MambaNetState(in_mem[-1], tuple(new_blocks), mem[-1], out_sum,
                                     state.steps + x.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last step: x (T, B, C) → (B, K)."""
        return self.forward_seq(x)[0][-1]

    def step(self, x_t: Tensor, state: MambaNetState | None = None
             ) -> tuple[Tensor, MambaNetState]:
        """One streaming step: x_t (B, C) → logits_t (B, K), new state."""
        self._check_input("SpikingMambaNet.step", x_t, 2)
        state = self.init_state(x_t.shape[0]) if state is None else state
        self._check_state(state, x_t.shape[0])
        s, in_mem = self.in_lif(self.in_fc(x_t), state.in_mem)
        new_blocks, last = [], len(self.blocks) - 1
        feat = None
        for i, (block, bs) in enumerate(zip(self.blocks, state.blocks)):
            if i == last and self.cfg.readout_input != "spikes":
                s, cur_b, bs = block.step_full(s, bs)                   # (B, D) each
                feat = self._readout_input(s, bs.mem, cur_b)
            else:
                s, bs = block.step(s, bs)
            new_blocks.append(bs)
        feat = s if feat is None else feat
        _, mem = self.out_li(self.out_fc(feat), state.out_mem)
        logits, out_sum = self._logits(mem.unsqueeze(0), state, 1)
        return logits[0], MambaNetState(in_mem, tuple(new_blocks), mem, out_sum, state.steps + 1)
