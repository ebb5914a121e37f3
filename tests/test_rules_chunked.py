"""Chunked online rules (bimsnn.rules.chunked) against the per-step rules, BPTT, and an
independently written objective; trace-advance functions against their per-step twins.

Symbols: T time, K chunk, B batch, C inputs, H hidden, D model width, E SSM channels,
Ns state size, R dt rank. Float64 throughout; relative error ‖a − b‖ / ‖b‖ per parameter
tensor, tolerance 1e-6 (measured ~1e-15 unless stated).

The intermediate-K reference (``_direct_*``): a plain autograd run of the chunks of the same
model, where the state carried into chunk c is re-expressed, per layer, as
``value.detach() + f(θ) − f(θ).detach()``, f re-running *that layer's own recurrence* from
the sequence start over its recorded (detached) inputs. Its θ-derivative is therefore the
exact own-recurrence eligibility ∂s_c/∂θ with the layer's inputs held fixed, and nothing
else crosses a boundary: the objective the chunked rule claims to differentiate. The conv
buffer and the readout's out_sum are carried as values only.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from bimsnn.neurons import Leaky, lif_multi_step_ref
from bimsnn.rules import RTRL, STDP, Hybrid
from bimsnn.rules.chunked import ChunkedHybrid, ChunkedRTRL, ChunkedSTDP, detach_tree
from bimsnn.ssm.mamba import MambaConfig, MambaNetState, SpikingMambaNet
from bimsnn.ssm.scan import selective_scan_ref

F64 = torch.float64
T, B = 16, 3


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


# ------------------------------------------------------------------------ models
class TwoState(NamedTuple):
    m1: torch.Tensor
    m2: torch.Tensor


class TwoLayer(nn.Module):
    """Linear → Leaky → Linear → Leaky; ``forward_seq`` (fused) and ``step`` (per step)."""

    def __init__(self, sizes=(5, 7, 4), **kw):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(sizes[0], sizes[1]), Leaky(**kw)
        self.fc2, self.lif2 = nn.Linear(sizes[1], sizes[2]), Leaky(**kw)

    def init_state(self, b):
        p = self.fc1.weight
        return TwoState(p.new_zeros(b, self.fc1.out_features),
                        p.new_zeros(b, self.fc2.out_features))

    def forward_seq(self, x, state):
        s1, m1 = self.lif1.multi_step(self.fc1(x), state.m1)
        s2, m2 = self.lif2.multi_step(self.fc2(s1), state.m2)
        return (s2, m2), TwoState(m1[-1], m2[-1])

    def step(self, x_t, state):
        s1, m1 = self.lif1(self.fc1(x_t), state.m1)
        s2, m2 = self.lif2(self.fc2(s1), state.m2)
        return (s2, m2), TwoState(m1, m2)


LEAKY_CFG = {
    "subtract_learn": dict(beta=0.85, learn_beta=True, learn_threshold=True),
    "zero_per_neuron": dict(beta=torch.linspace(0.5, 0.95, 7), reset_mechanism="zero",
                            learn_beta=True),
}


def _leaky_net(cfg="subtract_learn", seed=0):
    torch.manual_seed(seed)
    kw = dict(LEAKY_CFG[cfg])
    if cfg == "zero_per_neuron":        # per-neuron β needs equal widths in both layers
        net = TwoLayer((5, 7, 7), **kw)
    else:
        net = TwoLayer(**kw)
    with torch.no_grad():
        net.fc1.weight.mul_(2.5)
        net.fc2.weight.mul_(2.5)
    return net.double()


def _mamba_net(seed=0, n_layers=2):
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=8, n_inputs=5, n_classes=3, n_layers=n_layers, d_state=4,
                      dt_min=0.05, dt_max=0.5)
    net = SpikingMambaNet(cfg).double()
    with torch.no_grad():                     # more spikes: every path carries credit
        net.in_fc.weight.mul_(3.0)
        for blk in net.blocks:
            blk.out_proj.weight.mul_(3.0)
    return net


def _data(net, seed=1, Tn=T):
    g = torch.Generator().manual_seed(seed)
    C = net.fc1.in_features if isinstance(net, TwoLayer) else net.cfg.n_inputs
    x = (torch.rand(Tn, B, C, generator=g) < 0.5).to(F64) * 1.5
    tgt = torch.rand(Tn, B, 7 if isinstance(net, TwoLayer) else 3, generator=g, dtype=F64)
    return x, tgt


def _loss_fn(tgt):
    """Per-chunk loss on out (k, B, ...): spikes + membrane (TwoLayer) or logits (Mamba)."""
    def fn(out, t0):
        if isinstance(out, tuple):
            s, m = out
            tg = tgt[t0:t0 + s.shape[0], :, :s.shape[-1]]
            return ((s - tg) ** 2).sum() + 0.3 * ((m - 0.5) ** 2).sum()
        return (out * tgt[t0:t0 + out.shape[0]]).sum() + 0.1 * (out ** 2).sum()
    return fn


def _grads(net):
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def _per_step(net, rule, x, loss_fn, with_loss=True):
    """The per-step rules' loop: ``net.step``, detached state, ``rule.backward`` each step."""
    rule.reset(x.shape[1])
    state = net.init_state(x.shape[1])
    for t in range(x.shape[0]):
        out, state = net.step(x[t], state)
        state = detach_tree(state)
        seq = tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]
        rule.backward(loss_fn(seq, t) if with_loss else None)
    return _grads(net)


def _chunked(net, rule, x, loss_fn, with_loss=True):
    rule.run(x, loss_fn if with_loss else (lambda out, t0: None))
    return _grads(net)


def _bptt(net, x, loss_fn):
    out, _ = net.forward_seq(x, net.init_state(x.shape[1]))
    loss_fn(out, 0).backward()
    return _grads(net)


def _assert_close(got, ref, tol=1e-6):
    assert set(got) == set(ref), set(got) ^ set(ref)
    errs = {k: _rel(got[k], ref[k]) for k in ref}
    assert max(errs.values()) <= tol, sorted(errs.items(), key=lambda kv: -kv[1])[:4]
    return max(errs.values())


NETS = {"mamba2": lambda: _mamba_net(), "leaky_subtract": lambda: _leaky_net("subtract_learn"),
        "leaky_zero": lambda: _leaky_net("zero_per_neuron")}


# ------------------------------------------------------------- chunk = 1 vs per step
@pytest.mark.parametrize("name", list(NETS))
def test_chunk1_rtrl_equals_step_rule(name):
    x, tgt = _data(NETS[name]())
    net = NETS[name]()
    with RTRL(net) as rule:
        ref = _per_step(net, rule, x, _loss_fn(tgt))
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=1) as rule:
        got = _chunked(net, rule, x, _loss_fn(tgt))
    print(name, "chunk=1 RTRL rel err", _assert_close(got, ref))


@pytest.mark.parametrize("name", ["mamba2", "leaky_subtract"])
@pytest.mark.parametrize("bound", ["additive", "soft"])
def test_chunk1_and_chunkT_stdp_equal_step_rule(name, bound):
    kw = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0, bound=bound)
    x, _ = _data(NETS[name]())
    net = NETS[name]()
    with STDP(net, **kw) as rule:
        ref = _per_step(net, rule, x, None, with_loss=False)
        omegas_ref = [o.clone() for o in rule.omegas]
    for K in (1, 5, T):
        net = NETS[name]()
        with ChunkedSTDP(net, chunk=K, **kw) as rule:
            got = _chunked(net, rule, x, None, with_loss=False)
            for o, r in zip(rule.omegas, omegas_ref):
                assert _rel(o, r) <= 1e-10 and r.norm() > 0
        _assert_close(got, ref, 1e-10)


HYBRID_CASES = {"float": dict(lam=0.3), "per_pair": "per_pair",
                "balance": dict(lam=0.6, balance=True)}


@pytest.mark.parametrize("name", ["mamba2", "leaky_subtract"])
@pytest.mark.parametrize("case", list(HYBRID_CASES))
def test_chunk1_hybrid_equals_step_rule(name, case):
    x, tgt = _data(NETS[name]())

    def kwargs(net):
        kw = HYBRID_CASES[case]
        if kw == "per_pair":
            n_pairs = 4 if name == "mamba2" else 2
            return dict(lam=[0.2, 0.7, 0.5, 0.9][:n_pairs])
        return dict(kw)
    stdp = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    net = NETS[name]()
    with Hybrid(net, stdp=STDP(**stdp), **kwargs(net)) as rule:
        ref = _per_step(net, rule, x, _loss_fn(tgt))
    net = NETS[name]()
    with ChunkedHybrid(net, chunk=1, stdp=STDP(**stdp), **kwargs(net)) as rule:
        got = _chunked(net, rule, x, _loss_fn(tgt))
    print(name, case, "chunk=1 Hybrid rel err", _assert_close(got, ref))


# ------------------------------------------------------------------ chunk = T vs BPTT
@pytest.mark.parametrize("name", list(NETS))
def test_chunkT_equals_bptt(name):
    x, tgt = _data(NETS[name]())
    net = NETS[name]()
    ref = _bptt(net, x, _loss_fn(tgt))
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=T) as rule:
        got = _chunked(net, rule, x, _loss_fn(tgt))
    _assert_close(got, ref, 1e-12)
    # Hybrid at K = T: λ·BPTT − (1 − λ)·Ω, Ω from the per-step STDP rule.
    stdp = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    net = NETS[name]()
    with STDP(net, **stdp) as rule:
        omega = _per_step(net, rule, x, None, with_loss=False)
    net = NETS[name]()
    with ChunkedHybrid(net, chunk=T, lam=0.4, stdp=STDP(**stdp)) as rule:
        got = _chunked(net, rule, x, _loss_fn(tgt))
    want = {k: 0.4 * v + (0.6 * omega[k] if k in omega else 0) for k, v in ref.items()}
    _assert_close(got, want, 1e-10)


def test_without_x_proj_traces_only_x_proj_changes():
    """x_proj_traces=False drops only x_proj's boundary term: every other gradient is the
    same; x_proj's differs (the test can fail)."""
    x, tgt = _data(_mamba_net())
    grads = []
    for flag in (True, False):
        net = _mamba_net()
        with ChunkedRTRL(net, chunk=4, x_proj_traces=flag) as rule:
            grads.append(_chunked(net, rule, x, _loss_fn(tgt)))
    for k in grads[0]:
        err = _rel(grads[1][k], grads[0][k])
        assert (err > 1e-3) if k.endswith("ssm.x_proj.weight") else (err <= 1e-12), (k, err)


# ------------------------------------------------- intermediate K vs the direct objective
def _reexpress(value, f):
    return value.detach() + f - f.detach()


def _lif_last(lif, cur, m0):
    return lif_multi_step_ref(cur, m0, lif.beta, lif.threshold, lif.spike_grad,
                              lif.reset_mechanism)[1][-1]


def _direct(net, x, loss_fn, K, inject=True):
    """Σ_c L_c with every chunk started from re-expressed states (module docstring)."""
    rec: dict[str, list] = {}
    recording = [True]            # off while re-expressing (those calls hit the hooks too)

    def pre(key):
        def hook(module, args):
            if recording[0]:
                rec.setdefault(key, []).append(args[0].detach())
        return hook
    mamba = isinstance(net, SpikingMambaNet)
    named = ([("in", net.in_fc), ("out", net.out_fc)] if mamba
             else [("in", net.fc1), ("out", net.fc2)])
    if mamba:
        for i, blk in enumerate(net.blocks):
            named += [(f"res{i}", blk), (f"g{i}", blk.out_proj), (f"u{i}", blk.ssm)]
    hooks = [m.register_forward_pre_hook(pre(k)) for k, m in named]
    s0 = net.init_state(x.shape[1])
    state, total = s0, 0.0
    for t0 in range(0, x.shape[0], K):
        recording[0] = True
        out, new = net.forward_seq(x[t0:t0 + K], state)
        total = total + loss_fn(out, t0)
        recording[0] = False

        def cat(k):
            return torch.cat(rec[k])

        def rx(value, f):
            return _reexpress(value, f) if inject else value.detach()
        if not mamba:
            state = TwoState(rx(new.m1, _lif_last(net.lif1, net.fc1(cat("in")), s0.m1)),
                             rx(new.m2, _lif_last(net.lif2, net.fc2(cat("out")), s0.m2)))
            continue
        blocks = []
        for i, (blk, bs) in enumerate(zip(net.blocks, new.blocks)):
            u = cat(f"u{i}")
            delta, A, Bm, Cm = blk.ssm.discretize(u)
            h = selective_scan_ref(u, delta, A, Bm, Cm, blk.ssm.D, s0.blocks[i].h, True)[1]
            mem = _lif_last(blk.lif, blk.out_proj(cat(f"g{i}")) + cat(f"res{i}"),
                            s0.blocks[i].mem)
            blocks.append(bs._replace(conv=bs.conv.detach(), h=rx(bs.h, h), mem=rx(bs.mem, mem)))
        state = MambaNetState(rx(new.in_mem, _lif_last(net.in_lif, net.in_fc(cat("in")),
                                                       s0.in_mem)),
                              tuple(blocks),
                              rx(new.out_mem, _lif_last(net.out_li, net.out_fc(cat("out")),
                                                        s0.out_mem)),
                              new.out_sum.detach(), new.steps)
    for h in hooks:
        h.remove()
    total.backward()
    return _grads(net)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("K", [3, 5])
def test_intermediate_chunk_equals_direct_objective(name, K):
    x, tgt = _data(NETS[name]())
    net = NETS[name]()
    ref = _direct(net, x, _loss_fn(tgt), K)
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=K) as rule:
        got = _chunked(net, rule, x, _loss_fn(tgt))
    print(name, K, "intermediate-K rel err", _assert_close(got, ref))
    # The test can fail: without the re-expression (truncated credit) the gradients differ.
    net = NETS[name]()
    trunc = _direct(net, x, _loss_fn(tgt), K, inject=False)
    assert max(_rel(trunc[k], ref[k]) for k in ref) > 1e-3


# ------------------------------------------------------------ memory, hooks, misc
def test_trace_memory_independent_of_T():
    sizes = []
    for Tn in (8, 40):
        net = _mamba_net()
        x, tgt = _data(net, Tn=Tn)
        with ChunkedHybrid(net, chunk=4, lam=0.5) as rule:
            rule.run(x, _loss_fn(tgt))
            sizes.append(rule.trace_numel())
            held = [h for h in rule.handlers if hasattr(h, "traces")]
            assert all(isinstance(h.traces, dict) for h in held)
    assert sizes[0] == sizes[1] > 0


def test_second_sequence_equals_fresh_rule():
    """A rule reused for a new sequence (reset) gives what a fresh rule gives: no state
    (traces, reused buffers) leaks from the first sequence; also with a new batch size."""
    net = _mamba_net()
    x, tgt = _data(net)
    x2, tgt2 = _data(net, seed=7)
    with ChunkedHybrid(net, chunk=5, lam=0.7) as rule:
        rule.run(x, _loss_fn(tgt))
        net.zero_grad()
        got = _chunked(net, rule, x2, _loss_fn(tgt2))
        net.zero_grad()
        got_small = _chunked(net, rule, x2[:, :2], _loss_fn(tgt2[:, :2]))
    for xs, ts, g in ((x2, tgt2, got), (x2[:, :2], tgt2[:, :2], got_small)):
        net = _mamba_net()
        with ChunkedHybrid(net, chunk=5, lam=0.7) as rule:
            ref = _chunked(net, rule, xs, _loss_fn(ts))
        _assert_close(g, ref, 1e-12)


def test_one_backward_after_all_chunks_equals_per_chunk():
    """rule.backward(Σ_c L_c) once at the end (every chunk's graph alive): the traces are
    then advanced out of place, and the gradient equals per-chunk backward calls."""
    x, tgt = _data(_mamba_net())
    net = _mamba_net()
    with ChunkedRTRL(net, chunk=5) as rule:
        ref = _chunked(net, rule, x, _loss_fn(tgt))
    net = _mamba_net()
    with ChunkedRTRL(net, chunk=5) as rule:
        rule.reset(B)
        state, total = net.init_state(B), 0.0
        for t0 in range(0, T, 5):
            out, state = net.forward_seq(x[t0:t0 + 5], state)
            total = total + _loss_fn(tgt)(out, t0)
        rule.backward(total)
    _assert_close(_grads(net), ref, 1e-12)


def _snapshot(net):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {n: (set(m.__dict__), dict(m._forward_hooks), dict(m._forward_pre_hooks))
             for n, m in net.named_modules()})


@pytest.mark.parametrize("rule_cls", [ChunkedRTRL, ChunkedSTDP, ChunkedHybrid])
def test_remove_restores_model_exactly(rule_cls):
    net = _mamba_net()
    x, tgt = _data(net)
    with torch.no_grad():
        before_out = net.forward_seq(x)[0]
    params0, mods0 = _snapshot(net)
    rule = rule_cls(net, chunk=4)
    assert "forward_seq" in net.__dict__ and "multi_step" in net.in_lif.__dict__
    rule.run(x, (lambda out, t0: None) if rule_cls is ChunkedSTDP else _loss_fn(tgt))
    rule.remove()
    params1, mods1 = _snapshot(net)
    assert mods1 == mods0
    assert all(torch.equal(params0[k], params1[k]) for k in params0)
    with torch.no_grad():
        assert torch.equal(net.forward_seq(x)[0], before_out)
    rule_cls(net, chunk=2).remove()                       # can attach again


def test_guards_and_warnings():
    net = _mamba_net(n_layers=1)
    rule = ChunkedRTRL(net, chunk=4)
    with pytest.raises(RuntimeError, match="already has a chunked rule"):
        ChunkedRTRL(net, chunk=4)
    x, tgt = _data(net)
    rule.reset(B)
    st_ = net.init_state(B)
    out, st_ = net.step(x[0], st_)                     # per-step calls are not seen
    with pytest.warns(UserWarning, match="no multi_step chunk"):
        rule.backward(out.sum())
    rule.remove()
    with pytest.raises(ValueError, match="chunk"):
        ChunkedRTRL(net, chunk=0)
    with ChunkedSTDP(net, chunk=4) as rule, pytest.raises(ValueError, match="no loss"):
        rule.backward(torch.zeros(()))
