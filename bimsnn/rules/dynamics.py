"""One step of each supported snnTorch neuron, linearised for the eligibility traces.

Symbols: B batch, S per-sample state shape, I_t the input current, s_{t−1} the incoming
spikes (recurrent neurons), r_t = H(m_{t−1} − ϑ) snnTorch's detached reset,
q_t = 1 − r_t, α̂ = clamp(α, 0, 1), β̂ = clamp(β, 0, 1), R the recurrent connection
(``recurrent``: Linear, Conv2d, or the one-to-one weight V).

snnTorch's state updates (reset "subtract" / "zero" / "none"; bimsnn's subclasses agree)::

    Leaky      m_t = β̂ m + I − r ϑ          | β̂ q m + I            | β̂ m + I
    Synaptic   y_t = α̂ y + I;  m_t = β̂ m + y_t − r ϑ  | q (β̂ m + y_t)  | β̂ m + y_t
    RLeaky     as Leaky with I + R(s_{t−1});  "zero": m_t = q (β̂ m + I + R(s))
    RSynaptic  as Synaptic with y_t = α̂ y + I + R(s_{t−1})
    Alpha      e_t = α̂ e + I − r ϑ,  i_t = q (β̂ i − I)  | q (α̂ e + I), q (β̂ i − I) | α̂ e + I, β̂ i − I
               (states syn_exc e, syn_inh i; m_t = τ_α (e + i)-part is not carried)

A step is linear in the carried states given r_t, so :func:`linearize` returns
``J[k, l] = ∂state^k_t/∂state^l_{t−1}`` (r detached), ``c[k] = ∂state^k_t/∂I_t`` and, per
neuron parameter θ, the immediate ``∂state^k_t/∂θ``. The recurrent spike s_{t−1} is
treated as an input (e-prop): its dependence on m_{t−1} (the spike-to-membrane recurrent
Jacobian) is dropped, so recurrent neurons get e-prop's gradient (Bellec et al. 2020),
exact apart from that term.

:func:`spec_of` accepts a neuron only if its class's ``forward`` and state functions are
snnTorch's (or bimsnn's) own, so a subclass with other dynamics (``snn.DeltaLeaky``) is
refused with a TypeError at attach time instead of getting wrong traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import snntorch as snn
import torch
from torch import Tensor, nn

_SUBTRACT, _ZERO, _NONE = 0, 1, 2      # snnTorch's reset_mechanism_val


def _bimsnn_classes() -> dict[type, type]:
    from bimsnn import neurons  # lazy: bimsnn/__init__ imports rules
    return {neurons.Leaky: snn.Leaky, neurons.Synaptic: snn.Synaptic}


# kind → (snnTorch class, forward slots after input_, carried trace states, recurrent)
_KINDS = {
    "rsynaptic": (snn.RSynaptic, ("spk", "syn", "mem"), ("syn", "mem"), True),
    "rleaky": (snn.RLeaky, ("spk", "mem"), ("mem",), True),
    "alpha": (snn.Alpha, ("syn_exc", "syn_inh", "mem"), ("syn_exc", "syn_inh"), False),
    "synaptic": (snn.Synaptic, ("syn", "mem"), ("syn", "mem"), False),
    "leaky": (snn.Leaky, ("mem",), ("mem",), False),
}
NEURONS = tuple(v[0] for v in _KINDS.values())
SUPPORTED_TEXT = ("snntorch Leaky, Synaptic, Alpha, RLeaky, RSynaptic (and bimsnn.Leaky, "
                  "bimsnn.Synaptic)")


@dataclass
class NeuronSpec:
    """What the rules need to know about one neuron module."""

    kind: str
    slots: tuple[str, ...]        # forward(input_, *slots) state arguments, in order
    states: tuple[str, ...]       # carried states that the traces follow
    recurrent: str | None         # None, "linear", "conv" or "one_to_one"
    mode: int                     # reset mechanism value
    uniform: bool                 # J and c are one scalar for every neuron and step


def _own_dynamics(m: nn.Module, base: type) -> bool:
    """True if m's class keeps ``base``'s forward and state functions (or bimsnn's)."""
    allowed = {base}
    allowed |= {k for k, v in _bimsnn_classes().items() if v is base}
    names = ("forward", "_base_state_function", "_base_sub", "_base_zero", "_base_int",
             "_base_state_reset_zero", "_base_state_reset_sub_function", "mem_reset", "fire")
    for name in names:
        impl = getattr(type(m), name, None)
        if impl is not None and not any(getattr(c, name, None) is impl for c in allowed):
            return False
    return True


def is_neuron(m: nn.Module) -> bool:
    """Any snnTorch spiking neuron (supported or not)."""
    return isinstance(m, snn.SpikingNeuron)


def spec_of(m: nn.Module, name: str = "") -> NeuronSpec:
    """The :class:`NeuronSpec` of a supported neuron; TypeError (naming it) otherwise."""
    label = f"{name} ({type(m).__name__})" if name else type(m).__name__
    found = [k for k, v in _KINDS.items() if isinstance(m, v[0]) and _own_dynamics(m, v[0])]
    if not found:
        raise TypeError(
            f"bimsnn.rules: {label} is not supported (its state cannot be detached or traced). "
            f"Supported neurons: {SUPPORTED_TEXT}. Replace it with one of these, or attach the "
            "rule to a submodule that does not contain it.")
    kind = found[0]
    _, slots, states, rec = _KINDS[kind]
    recurrent = None
    if rec:
        r = m.recurrent
        recurrent = ("linear" if isinstance(r, nn.Linear) else "conv" if isinstance(r, nn.Conv2d)
                     else "one_to_one")
    mode = int(m.reset_mechanism_val)
    coefs = [m.beta] + ([m.alpha] if kind in ("synaptic", "rsynaptic", "alpha") else [])
    scalar = all(torch.as_tensor(c).numel() == 1 for c in coefs)
    r_free = mode != _ZERO and not (kind == "alpha" and mode == _SUBTRACT)
    return NeuronSpec(kind, slots, states, recurrent, mode, scalar and r_free)


def check_traceable(m: nn.Module, spec: NeuronSpec, name: str) -> None:
    """TypeError for neuron options whose state Jacobian is not the one in the docstring."""
    bad = [k for k, ok in (("reset_delay=False", getattr(m, "reset_delay", True)),
                           ("inhibition=True", not m.inhibition),
                           ("state_quant", not m.state_quant)) if not ok]
    if spec.kind == "alpha":
        bad += [f"learnable {p} (τ_α depends on it)" for p in ("alpha", "beta")
                if isinstance(getattr(m, p), nn.Parameter)]
    if bad:
        raise TypeError(f"RTRL: {name} ({type(m).__name__}) uses {', '.join(bad)}, whose state "
                        "Jacobian bimsnn.rules does not model; use the defaults, or "
                        "Hybrid(grad='autograd') / STDP, which need no traces")


def learnable_params(m: nn.Module, spec: NeuronSpec) -> dict[str, Tensor]:
    """Neuron parameters with a trace: beta, alpha, threshold (subtract reset only), V."""
    out = {}
    for p in ("beta", "alpha", "threshold", "V"):
        v = getattr(m, p, None)
        if not (isinstance(v, Tensor) and v.requires_grad):
            continue
        if p == "threshold" and spec.mode != _SUBTRACT:
            continue                          # ϑ only enters through the detached reset
        if p == "V" and spec.recurrent != "one_to_one":
            continue
        out[p] = v
    return out


@dataclass
class Linearization:
    """One step: J[(k, l)], c[k] (scalars or ``(B, *S)``), imm[θ][k] ``(B, *S)``."""

    J: dict
    c: dict
    imm: dict


def _mask(p: Tensor) -> Tensor:
    """Gradient mask of clamp(p, 0, 1)."""
    return ((p >= 0) & (p <= 1)).to(p.dtype)


@torch.no_grad()
def linearize(m: nn.Module, spec: NeuronSpec, prev: dict[str, Tensor], r: Tensor,
              params: dict[str, Tensor]) -> Linearization:
    """Coefficients of one step (see module docstring).

    Args:
        m: the neuron; spec: its spec; prev: incoming states ``(B, *S)`` (zeros where fresh),
            including "spk" for recurrent neurons; r: this step's reset ``(B, *S)``;
        params: the learnable neuron parameters (:func:`learnable_params`).
    """
    kind, mode = spec.kind, spec.mode
    q = 1 - r
    zero = mode == _ZERO
    b = m.beta.detach().to(r.dtype)
    bh = b.clamp(0, 1)
    J, c, imm = {}, {}, {}
    if kind in ("leaky", "rleaky"):
        mm = prev["mem"]
        J[("mem", "mem")] = bh * q if zero else bh
        c["mem"] = q if (zero and kind == "rleaky") else 1.0
        if "beta" in params:
            imm["beta"] = {"mem": _mask(b) * mm * (q if zero else 1)}
        if "threshold" in params:
            imm["threshold"] = {"mem": -r}
    elif kind in ("synaptic", "rsynaptic"):
        a = m.alpha.detach().to(r.dtype)
        ah = a.clamp(0, 1)
        y, mm = prev["syn"], prev["mem"]
        J[("syn", "syn")] = ah
        J[("mem", "mem")] = bh * q if zero else bh
        J[("mem", "syn")] = ah * q if zero else ah
        c["syn"], c["mem"] = 1.0, (q if zero else 1.0)
        if "alpha" in params:
            d = _mask(a) * y
            imm["alpha"] = {"syn": d, "mem": d * q if zero else d}
        if "beta" in params:
            imm["beta"] = {"mem": _mask(b) * mm * (q if zero else 1)}
        if "threshold" in params:
            imm["threshold"] = {"mem": -r}
    elif kind == "alpha":
        ah = m.alpha.detach().to(r.dtype).clamp(0, 1)
        J[("syn_exc", "syn_exc")] = ah * q if zero else ah
        J[("syn_inh", "syn_inh")] = bh if mode == _NONE else bh * q
        c["syn_exc"] = q if zero else 1.0
        c["syn_inh"] = -1.0 if mode == _NONE else -q
        if "threshold" in params:
            imm["threshold"] = {"syn_exc": -r}
    else:
        raise AssertionError(kind)
    if "V" in params:                     # one-to-one recurrence: ∂I/∂V = s_{t−1}
        s = prev["spk"]
        imm["V"] = {k: c[k] * s for k in spec.states}
    return Linearization(J, c, imm)
