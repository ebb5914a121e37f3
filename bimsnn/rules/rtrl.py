"""RTRL for connection→neuron layers (paper eq. 7-8), online, by gradient injection.

Symbols: B batch, S per-sample state shape, k, l carried states (``mem``; ``syn``, ``mem``;
...), W a connection weight, x_t its presynaptic input, O output units, P neuron
positions per unit, F fan-in, r_t snnTorch's detached reset, J, c as in
:mod:`bimsnn.rules.dynamics`.

With J^{kl}(t) = ∂state^k_t/∂state^l_{t−1} and c^k = ∂state^k_t/∂I_t, eq. 7's eligibility
e^k_W(t) = ∂state^k_t/∂W obeys (:func:`bimsnn.rules.traces.filter_step`)::

    e^k_W(t) = Σ_l J^{kl}(t) e^l_W(t−1) + c^k(t) ∂I_t/∂W

Leaky: e_W(t) = β̂ e_W(t−1) + x_t (the STDP pre-trace); Synaptic: the two-stage α then β
filter. Two layouts:

* "pre" (J, c one scalar, route constant): e^k lives in presynaptic space, the shape of
  x_t: (B, N), or ``(B, C, *in)`` for a conv, the filtered input whose patches are the
  eligibility. Memory per state: one input.
* "post" (a per-channel β, reset "zero", Alpha's reset, or max pooling before the
  neuron): e^k[o, b, p, f] per output unit, stored (O, B, P, F); the drive is the patch
  that unit read at step t (through the pooling selection). Memory per state B·O·P·F.

Biases and neuron parameters (β, α, ϑ, V) get per-neuron traces ``(B, *S)`` with their
immediate terms. Eq. 8 by injection: the neuron's pre-hook replaces each carried state
s^k_{t−1} by ``NeuronTraceInject(s_{t−1}, e(t−1), θ)``, an identity whose backward adds
Σ_k g_k · e^k(t−1) into each θ's gradient, g_k = ∂L_t/∂s^k_{t−1} being computed by
autograd through the step; within-step autograd adds the immediate term, so a step's
backward yields ∂L_t/∂θ exactly (eq. 8 for that step). For a conv the contraction
Σ_k g_k · e^k is one ``conv2d_weight`` call ("pre") or an einsum ("post").

What it computes:

* One feed-forward layer (Leaky, Synaptic, Alpha; Linear or Conv1d/2d; with or without
  pooling before the neuron): exactly BPTT's gradient for any loss on its outputs at any
  steps.
* RLeaky / RSynaptic: e-prop (Bellec et al. 2020). The incoming spikes s_{t−1} are
  detached, so recurrent weights get e-prop's trace (filtered previous spikes) and every
  gradient is exact *apart from the spike-to-membrane recurrent Jacobian*
  ∂I_t/∂s_{t−1}·∂s_{t−1}/∂m_{t−1}, which e-prop drops.
* Stacked layers: the error is back-propagated spatially within the current step only;
  paths through later layers' *past* states are dropped. Each layer's own recurrence is
  exact and the last layer is exact; earlier layers' gradients keep their direction
  (per-tensor cosine to BPTT ≥ 0.95 in tests/test_rules_rtrl.py) but shrink by about
  (1 − β) per later leaky layer, which per-parameter optimizers (Adam) absorb.
  Other parameters (a readout with no neuron after it) get within-step gradients;
  SelectiveSSMs get the exact traces of :mod:`bimsnn.rules.ssm_rtrl`.

``pool_traces="input"`` keeps "pre" traces when max pooling sits before the neuron and
routes the error through the previous step's selection: memory of one input instead of
B·O·P·F, approximate when the pooling winner moves. Not supported (TypeError at attach):
``reset_delay=False``, ``inhibition=True``, ``state_quant``, Alpha with learnable α or β.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bimsnn.rules.base import Pair, Rule
from bimsnn.rules.connections import Connection, Route
from bimsnn.rules.dynamics import check_traceable, learnable_params, linearize
from bimsnn.rules.taps import LayerTap
from bimsnn.rules.traces import filter_step


def _contract(kind: str, es: tuple, meta, gs: tuple, shape: torch.Size) -> Tensor:
    """Σ_k g_k · e^k reduced to a parameter's shape (see :class:`NeuronTraceInject`)."""
    pairs = [(g, e) for g, e in zip(gs, es) if e is not None]
    if kind == "diag":
        return sum((g * e).sum(0) for g, e in pairs).sum_to_size(shape)
    conn, route = meta
    if kind == "bias":
        return sum((conn.canon(g) * e).sum((0, 2)) for g, e in pairs)
    if kind == "post":                 # one bmm over units o: (1, B·P) @ (B·P, F)
        out = 0
        for g, e in pairs:
            O, F = e.shape[0], e.shape[-1]
            gt = conn.canon(g).transpose(0, 1).reshape(O, 1, -1)                 # (O, 1, B·P)
            out = out + torch.bmm(gt, e.to(g.dtype).reshape(O, -1, F))[:, 0]
        return out.reshape(shape)
    post = torch.cat([route.T(conn.canon(g)) for g, _ in pairs])             # "pre"
    return conn.outer(torch.cat([e for _, e in pairs]), post).reshape(shape)


class NeuronTraceInject(torch.autograd.Function):
    """Identity on the carried states whose backward also adds Σ_k g_k · e^k(t−1) to θ.

    ``apply(spec, n, *states, *params)``: ``states`` n tensors ``(B, *S)``; ``spec`` one entry
    ``(kind, (e^1, ..., e^n), meta)`` per param, kind

    * "pre": e^k presynaptic ``(B, *in)``, meta (Connection, Route): ``conn.outer(e, route.T(g))``;
    * "post": e^k (O, B, P, F), meta (Connection, None): Σ_{b,p} g[b,o,p] e[o,b,p,f];
    * "bias": e^k (B, O, P), meta (Connection, None): Σ_{b,p} g e per output unit;
    * "diag": e^k ``(B, *S)``, meta None: Σ_b g e, summed to the parameter's shape.

    (e^k may be None: zero.) Its backward is deliberately *not* the derivative of its
    forward (the forward does not depend on the params), so gradcheck does not apply; the
    tests compare it with :func:`neuron_trace_inject_ref`, the same with plain autograd.
    """

    @staticmethod
    def forward(ctx, spec: tuple, n: int, *tensors: Tensor):
        ctx.spec, ctx.n = spec, n
        ctx.shapes = [p.shape for p in tensors[n:]]
        return tuple(s.clone() for s in tensors[:n])

    @staticmethod
    @once_differentiable
    def backward(ctx, *gs: Tensor):
        grads = [_contract(kind, es, meta, gs, shape)
                 for (kind, es, meta), shape in zip(ctx.spec, ctx.shapes)]
        states = [g if ctx.needs_input_grad[2 + i] else None for i, g in enumerate(gs)]
        return (None, None, *states, *grads)


def neuron_trace_inject_ref(spec: tuple, n: int, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Reference twin of :class:`NeuronTraceInject`: s_k + Σ_θ e^k ⋆ (θ − θ.detach()).

    Each term is the linear map whose adjoint the fast path contracts with (the connection
    itself for "pre", through the route), so plain autograd gives the same gradients.
    """
    states, params = list(tensors[:n]), tensors[n:]
    out = []
    for k, s in enumerate(states):
        acc = s
        for (kind, es, meta), p in zip(spec, params):
            e = es[k]
            if e is None:
                continue
            d = p - p.detach()                             # zero, but carries ∂/∂p = I
            if kind == "diag":
                term = e * d
            elif kind == "bias":
                term = e * d[None, :, None]
            elif kind == "post":
                term = torch.einsum("obpf,of->bop", e.to(d.dtype), d.reshape(d.shape[0], -1))
            else:
                conn, route = meta
                term = route.fwd(conn.canon(conn.apply(e, d)))
            acc = acc + term.reshape(s.shape)
        out.append(acc)
    return tuple(out)


@dataclass
class _Item:
    """One traced parameter of a layer."""

    name: str
    param: Tensor
    kind: str                          # "w" (weight), "bias", "diag"
    conn: Connection | None = None
    recurrent: bool = False
    rep: str = ""                      # "pre" | "post" for weights, set per sequence


class LayerRTRL:
    """Eligibility traces of one connection→neuron layer (a Handler; see module docstring).

    Attributes: ``traces`` {item name: {state: tensor | None}}; ``items`` the traced
    parameters ("ff.weight", "ff.bias", "rec.weight", "rec.bias", "beta", "alpha",
    "threshold", "V").
    """

    def __init__(self, tap: LayerTap, pool_traces: str = "exact"):
        if pool_traces not in ("exact", "input"):
            raise ValueError(f"pool_traces must be 'exact' or 'input', got {pool_traces!r}")
        check_traceable(tap.lif, tap.spec, tap.name)
        self.tap, self.spec, self.pool_traces = tap, tap.spec, pool_traces
        items = []
        for prefix, conn, rec in (("ff", tap.conn, False), ("rec", tap.rec, True)):
            if conn is None:
                continue
            if conn.weight.requires_grad:
                items.append(_Item(f"{prefix}.weight", conn.weight, "w", conn, rec))
            if conn.bias is not None and conn.bias.requires_grad:
                items.append(_Item(f"{prefix}.bias", conn.bias, "bias", conn, rec))
        self.nparams = learnable_params(tap.lif, tap.spec)
        items += [_Item(k, v, "diag") for k, v in self.nparams.items()]
        self.items = items
        self.traces: dict[str, dict[str, Tensor | None]] = {}
        self._route_prev: Route | None = None
        tap.injector = self.inject
        tap.listeners.append(self)

    # -- eq. 8: injection ------------------------------------------------------------
    def inject(self, carried: dict[str, Tensor | None]) -> dict[str, Tensor]:
        states = [s for s in self.spec.states if carried[s] is not None]
        spec, params = [], []
        for it in self.items:
            tr = self.traces.get(it.name)
            es = tuple(None if tr is None else tr.get(s) for s in states)
            if all(e is None for e in es):
                continue
            if it.kind == "w":
                route = self._route_prev if not it.recurrent else None
                if route is None:
                    route = Route("id", it.conn.O, 0)
                spec.append((it.rep, es, (it.conn, route)))
            else:
                spec.append((it.kind, es, (it.conn, None) if it.kind == "bias" else None))
            params.append(it.param)
        if not params:
            return {}
        out = NeuronTraceInject.apply(tuple(spec), len(states),
                                      *(carried[s] for s in states), *params)
        return dict(zip(states, out))

    # -- eq. 7: trace update ---------------------------------------------------------
    @torch.no_grad()
    def on_step(self, tap: LayerTap) -> None:
        """Advance e(t−1) → e(t) with this step's input, states and reset."""
        spec, cur = self.spec, tap.cur
        if all(tap.prev.get(s) is None for s in spec.states):
            self.traces = {}                       # the neuron starts fresh: a new sequence
        prev = {s: tap.state(s) for s in spec.slots}
        r = tap.reset_sig
        r = ((prev["mem"] - tap.lif.threshold.detach() > 0) if r is None else r).to(cur.dtype)
        lin = linearize(tap.lif, spec, prev, r, self.nparams)
        route = tap.route
        new = {}
        for it in self.items:
            old = self.traces.get(it.name, {s: None for s in spec.states})
            if it.kind == "diag":
                drive = lin.imm.get(it.name, {})
                new[it.name] = filter_step(old, lin.J, drive)
                continue
            conn = it.conn
            rt = Route("id", conn.O, conn.canon(cur).shape[2]) if it.recurrent else route
            pre = (prev["spk"] if it.recurrent else tap.x).to(cur.dtype)
            if it.kind == "bias":
                ones = conn.canon(torch.ones_like(cur))
                if rt.kind == "avg":
                    ones = ones * rt.fwd(ones.new_ones(1, conn.O, rt.grid[0] * rt.grid[1]))
                J = {k: self._canon(v, conn, cur) for k, v in lin.J.items()}
                drive = {k: self._canon(v, conn, cur) * ones for k, v in lin.c.items()}
                new[it.name] = filter_step(old, J, drive)
                continue
            if not it.rep or all(v is None for v in old.values()):
                it.rep = ("pre" if spec.uniform and (rt.const or self.pool_traces == "input")
                          else "post")
            if it.rep == "pre":
                drive = {k: v * pre for k, v in lin.c.items()}
                new[it.name] = filter_step(old, lin.J, drive)
            else:
                pat = conn.patches(pre, rt)                                   # (O|1, B, P, F)
                pat = pat.expand(conn.O, *pat.shape[1:])
                J = {k: self._canon(v, conn, cur, 1) for k, v in lin.J.items()}
                drive = {k: (self._canon(v, conn, cur, 1), pat) for k, v in lin.c.items()}
                new[it.name] = filter_step(old, J, drive)
        self.traces = new
        self._route_prev = route

    @staticmethod
    def _canon(v, conn: Connection, cur: Tensor, post: int = 0):
        """A coefficient (scalar or (B, *S)-broadcastable) in canonical (B, O, P), or, for
        "post" traces, (O, B, P, 1)."""
        if not isinstance(v, Tensor) or v.numel() == 1:
            return v if not isinstance(v, Tensor) else v.reshape(())
        v = conn.canon(v.expand(cur.shape))
        return v.transpose(0, 1).contiguous()[..., None] if post else v

    def reset(self, batch_size: int) -> None:
        self.traces = {}
        self._route_prev = None
        for it in self.items:
            it.rep = ""

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        if self.tap.injector == self.inject:
            self.tap.injector = None
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)


def _ssm_handlers(rule: Rule, model: nn.Module) -> list:
    from bimsnn.rules.ssm_rtrl import ssm_handlers  # lazy: ssm_rtrl may import us
    return list(ssm_handlers(rule, model))


class RTRL(Rule):
    """Online RTRL (eq. 7-8): writes ∂L/∂w into ``.grad`` one step at a time.

    Args:
        model: any module with connection→neuron layers (snnTorch tutorial nets unmodified,
            bimsnn neuron nets, SpikingMamba nets: their SSMs get ``ssm_handlers``).
        layers: explicit [(fc, lif), ...] pairing (default: registration order).
        check: structural check that each neuron's input is its connection's output.
        pool_traces: "exact" (per-unit traces when max pooling precedes a neuron) or
            "input" (presynaptic traces, approximate there); see module docstring.
        chunk: K steps per chunk: returns a :class:`~bimsnn.rules.chunked.ChunkedRTRL`
            (fused kernels inside a chunk, traces across chunks; the model is driven by
            ``forward_seq`` chunk by chunk). None (default): the per-step rule.

    Example:
        >>> import snntorch as snn
        >>> fc, lif = nn.Linear(3, 2), snn.Leaky(beta=0.9)
        >>> net = nn.Sequential(fc, lif)
        >>> rule = RTRL(net); rule.reset(4)
        >>> mem = torch.zeros(4, 2)
        >>> for t in range(5):
        ...     spk, mem = lif(fc(torch.rand(4, 3)), mem)
        ...     rule.backward((mem ** 2).sum())
        >>> fc.weight.grad.shape
        torch.Size([2, 3])
        >>> rule.remove()
    """

    def __new__(cls, model: nn.Module, *args, chunk: int | None = None, **kw):
        if chunk is not None:
            from bimsnn.rules.chunked import ChunkedRTRL

            return ChunkedRTRL(model, chunk, *args, **kw)
        return super().__new__(cls)

    def __init__(self, model: nn.Module, layers: Sequence[Pair] | None = None,
                 check: bool = True, pool_traces: str = "exact", chunk: None = None):
        super().__init__(model)
        taps = self._attach_taps(layers, check)
        try:
            self.layer_handlers = [LayerRTRL(t, pool_traces) for t in taps
                                   if t.fc is not None]
            self.ssm_handlers = _ssm_handlers(self, model)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.layer_handlers, *self.ssm_handlers, *taps]
