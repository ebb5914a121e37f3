"""Exactness of the chunked online rules (bimsnn.rules.chunked), float64: chunk=1 against
the per-step rules, chunk=T against BPTT, 1<K<T against an independently written objective.
Nets and drivers: tests/chunked_nets.py; trace functions: test_rules_chunked_traces.py;
hooks, memory and options: test_rules_chunked_api.py.

Symbols: T time, K chunk, B batch. Relative error ‖a − b‖ / ‖b‖ per parameter tensor,
tolerance 1e-6 unless stated (measured ~1e-15).

The intermediate-K reference (``_direct``): a plain autograd run of the chunks of the same
model, where the state carried into chunk c is re-expressed, per layer, as
``value.detach() + f(θ) − f(θ).detach()``, f re-running *that layer's own recurrence* from
the sequence start over its recorded (detached) inputs. Its θ-derivative is therefore the
exact own-recurrence eligibility ∂s_c/∂θ with the layer's inputs held fixed, and nothing
else crosses a boundary: the objective the chunked rule claims to differentiate. The conv
buffer and the readout's out_sum are carried as values only.
"""

from __future__ import annotations

import pytest
import torch
from chunked_nets import (
    NETS,
    T,
    TwoState,
    assert_close,
    bptt,
    chunked,
    grads,
    loss_fn,
    make_data,
    per_step,
    rel,
)

from bimsnn.neurons import lif_multi_step_ref
from bimsnn.rules import RTRL, STDP, Hybrid
from bimsnn.rules.chunked import ChunkedHybrid, ChunkedRTRL, ChunkedSTDP
from bimsnn.ssm.mamba import MambaNetState, SpikingMambaNet
from bimsnn.ssm.scan import selective_scan_ref


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------- chunk = 1 vs per step
@pytest.mark.parametrize("name", list(NETS))
def test_chunk1_rtrl_equals_step_rule(name):
    x, tgt = make_data(NETS[name]())
    net = NETS[name]()
    with RTRL(net) as rule:
        ref = per_step(net, rule, x, loss_fn(tgt))
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=1) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
    print(name, "chunk=1 RTRL rel err", assert_close(got, ref))


@pytest.mark.parametrize("name", ["mamba2", "leaky_subtract"])
@pytest.mark.parametrize("bound", ["additive", "soft"])
def test_chunk1_and_chunkT_stdp_equal_step_rule(name, bound):
    kw = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0, bound=bound)
    x, _ = make_data(NETS[name]())
    net = NETS[name]()
    with STDP(net, **kw) as rule:
        ref = per_step(net, rule, x, None, with_loss=False)
        omegas_ref = [o.clone() for o in rule.omegas]
    for K in (1, 5, T):
        net = NETS[name]()
        with ChunkedSTDP(net, chunk=K, **kw) as rule:
            got = chunked(net, rule, x, None, with_loss=False)
            for o, r in zip(rule.omegas, omegas_ref):
                assert rel(o, r) <= 1e-10 and r.norm() > 0
        assert_close(got, ref, 1e-10)


HYBRID_CASES = {"float": dict(lam=0.3), "per_pair": "per_pair",
                "balance": dict(lam=0.6, balance=True),
                "element": dict(lam=0.6, balance="element")}


@pytest.mark.parametrize("name", ["mamba2", "leaky_subtract"])
@pytest.mark.parametrize("case", list(HYBRID_CASES))
def test_chunk1_hybrid_equals_step_rule(name, case):
    x, tgt = make_data(NETS[name]())

    def kwargs(net):
        kw = HYBRID_CASES[case]
        if kw == "per_pair":
            n_pairs = 4 if name == "mamba2" else 2
            return dict(lam=[0.2, 0.7, 0.5, 0.9][:n_pairs])
        return dict(kw)
    stdp = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    net = NETS[name]()
    with Hybrid(net, stdp=STDP(**stdp), **kwargs(net)) as rule:
        ref = per_step(net, rule, x, loss_fn(tgt))
        omegas_ref = [o.clone() for o in rule.omegas]
        assert all(a is b for a, b in zip(rule.omegas, rule.stdp.omegas))
    net = NETS[name]()
    with ChunkedHybrid(net, chunk=1, stdp=STDP(**stdp), **kwargs(net)) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
        assert len(rule.omegas) == len(omegas_ref) > 0
        for o, r in zip(rule.omegas, omegas_ref):       # the same Ω under the same name
            assert r.norm() > 0 and rel(o, r) <= 1e-10
    print(name, case, "chunk=1 Hybrid rel err", assert_close(got, ref))


# ------------------------------------------------------------------ chunk = T vs BPTT
@pytest.mark.parametrize("name", list(NETS))
def test_chunkT_equals_bptt(name):
    x, tgt = make_data(NETS[name]())
    net = NETS[name]()
    ref = bptt(net, x, loss_fn(tgt))
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=T) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
    assert_close(got, ref, 1e-12)
    # Hybrid at K = T: λ·BPTT − (1 − λ)·Ω, Ω from the per-step STDP rule.
    stdp = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    net = NETS[name]()
    with STDP(net, **stdp) as rule:
        omega = per_step(net, rule, x, None, with_loss=False)
    net = NETS[name]()
    with ChunkedHybrid(net, chunk=T, lam=0.4, stdp=STDP(**stdp)) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
    want = {k: 0.4 * v + (0.6 * omega[k] if k in omega else 0) for k, v in ref.items()}
    assert_close(got, want, 1e-10)


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
    return grads(net)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("K", [3, 5])
def test_intermediate_chunk_equals_direct_objective(name, K):
    x, tgt = make_data(NETS[name]())
    net = NETS[name]()
    ref = _direct(net, x, loss_fn(tgt), K)
    net = NETS[name]()
    with ChunkedRTRL(net, chunk=K) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
    print(name, K, "intermediate-K rel err", assert_close(got, ref))
    # The test can fail: without the re-expression (truncated credit) the gradients differ.
    net = NETS[name]()
    trunc = _direct(net, x, loss_fn(tgt), K, inject=False)
    assert max(rel(trunc[k], ref[k]) for k in ref) > 1e-3
