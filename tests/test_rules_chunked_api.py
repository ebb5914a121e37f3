"""Chunked online rules: hooks and remove(), memory O(K), reuse across sequences, one
backward over all chunks, options (x_proj_traces, grad="autograd", pure STDP under no_grad).

Symbols: T time, B batch. Float64; tolerances stated per test (measured ~1e-15).
"""

from __future__ import annotations

import pytest
import torch
from chunked_nets import (
    B,
    T,
    assert_close,
    chunked,
    grads,
    loss_fn,
    make_data,
    mamba_net,
    per_step,
    rel,
)

from bimsnn.rules import STDP
from bimsnn.rules.chunked import ChunkedHybrid, ChunkedRTRL, ChunkedSTDP
from bimsnn.state import detach_tree


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_without_x_proj_traces_only_x_proj_changes():
    """x_proj_traces=False drops only x_proj's boundary term: every other gradient is the
    same; x_proj's differs (the test can fail)."""
    x, tgt = make_data(mamba_net())
    grads = []
    for flag in (True, False):
        net = mamba_net()
        with ChunkedRTRL(net, chunk=4, x_proj_traces=flag) as rule:
            grads.append(chunked(net, rule, x, loss_fn(tgt)))
    for k in grads[0]:
        err = rel(grads[1][k], grads[0][k])
        assert (err > 1e-3) if k.endswith("ssm.x_proj.weight") else (err <= 1e-12), (k, err)


def test_chunked_stdp_learns_under_no_grad():
    """Pure STDP needs no graph: the same Ω under torch.no_grad()."""
    kw = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    x, _ = make_data(mamba_net())
    omegas = []
    for no_grad in (False, True):
        net = mamba_net()
        with ChunkedSTDP(net, chunk=5, **kw) as rule, torch.set_grad_enabled(not no_grad):
            rule.run(x, lambda out, t0: None)
            omegas.append([o.clone() for o in rule.omegas])
    for a, b in zip(*omegas):
        assert b.norm() > 0 and rel(a, b) <= 1e-12


def test_hybrid_autograd_is_truncated_gradient_plus_stdp():
    """grad="autograd": within-chunk gradient only (no traces), λ-mixed with −Ω."""
    stdp = dict(A_plus=0.02, A_minus=0.025, tau_plus=5.0, tau_minus=8.0)
    x, tgt = make_data(mamba_net())
    net = mamba_net()                                    # truncated reference, by hand
    state = net.init_state(B)
    for t0 in range(0, T, 5):
        out, state = net.forward_seq(x[t0:t0 + 5], detach_tree(state))
        loss_fn(tgt)(out, t0).backward()
    trunc = grads(net)
    net = mamba_net()
    with STDP(net, **stdp) as rule:
        omega = per_step(net, rule, x, None, with_loss=False)
    net = mamba_net()
    with ChunkedHybrid(net, chunk=5, lam=0.3, grad="autograd", stdp=STDP(**stdp)) as rule:
        got = chunked(net, rule, x, loss_fn(tgt))
    want = {k: 0.3 * v + (0.7 * omega[k] if k in omega else 0) for k, v in trunc.items()}
    assert_close(got, want, 1e-10)


# ------------------------------------------------------------ memory, hooks, misc
def test_trace_memory_independent_of_T():
    sizes = []
    for Tn in (8, 40):
        net = mamba_net()
        x, tgt = make_data(net, Tn=Tn)
        with ChunkedHybrid(net, chunk=4, lam=0.5) as rule:
            rule.run(x, loss_fn(tgt))
            sizes.append(rule.trace_numel())
            held = [h for h in rule.handlers if hasattr(h, "traces")]
            assert all(isinstance(h.traces, dict) for h in held)
    assert sizes[0] == sizes[1] > 0


def test_second_sequence_equals_fresh_rule():
    """A rule reused for a new sequence (reset) gives what a fresh rule gives: no state
    (traces, reused buffers) leaks from the first sequence; also with a new batch size."""
    net = mamba_net()
    x, tgt = make_data(net)
    x2, tgt2 = make_data(net, seed=7)
    with ChunkedHybrid(net, chunk=5, lam=0.7) as rule:
        rule.run(x, loss_fn(tgt))
        net.zero_grad()
        got = chunked(net, rule, x2, loss_fn(tgt2))
        net.zero_grad()
        got_small = chunked(net, rule, x2[:, :2], loss_fn(tgt2[:, :2]))
    for xs, ts, g in ((x2, tgt2, got), (x2[:, :2], tgt2[:, :2], got_small)):
        net = mamba_net()
        with ChunkedHybrid(net, chunk=5, lam=0.7) as rule:
            ref = chunked(net, rule, xs, loss_fn(ts))
        assert_close(g, ref, 1e-12)


def test_one_backward_after_all_chunks_equals_per_chunk():
    """rule.backward(Σ_c L_c) once at the end (every chunk's graph alive): the traces are
    then advanced out of place, and the gradient equals per-chunk backward calls."""
    x, tgt = make_data(mamba_net())
    net = mamba_net()
    with ChunkedRTRL(net, chunk=5) as rule:
        ref = chunked(net, rule, x, loss_fn(tgt))
    net = mamba_net()
    with ChunkedRTRL(net, chunk=5) as rule:
        rule.reset(B)
        state, total = net.init_state(B), 0.0
        for t0 in range(0, T, 5):
            out, state = net.forward_seq(x[t0:t0 + 5], state)
            total = total + loss_fn(tgt)(out, t0)
        rule.backward(total)
    assert_close(grads(net), ref, 1e-12)


def _snapshot(net):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {n: (set(m.__dict__), dict(m._forward_hooks), dict(m._forward_pre_hooks))
             for n, m in net.named_modules()})


@pytest.mark.parametrize("rule_cls", [ChunkedRTRL, ChunkedSTDP, ChunkedHybrid])
def test_remove_restores_model_exactly(rule_cls):
    net = mamba_net()
    x, tgt = make_data(net)
    with torch.no_grad():
        before_out = net.forward_seq(x)[0]
    params0, mods0 = _snapshot(net)
    rule = rule_cls(net, chunk=4)
    assert "forward_seq" in net.__dict__ and "multi_step" in net.in_lif.__dict__
    rule.run(x, (lambda out, t0: None) if rule_cls is ChunkedSTDP else loss_fn(tgt))
    rule.remove()
    params1, mods1 = _snapshot(net)
    assert mods1 == mods0
    assert all(torch.equal(params0[k], params1[k]) for k in params0)
    with torch.no_grad():
        assert torch.equal(net.forward_seq(x)[0], before_out)
    rule_cls(net, chunk=2).remove()                       # can attach again


def test_guards_and_warnings():
    net = mamba_net(n_layers=1)
    rule = ChunkedRTRL(net, chunk=4)
    with pytest.raises(RuntimeError, match="already has a chunked rule"):
        ChunkedRTRL(net, chunk=4)
    x, tgt = make_data(net)
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
