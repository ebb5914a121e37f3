"""Trace-advance functions of bimsnn.rules.scan_traces against their per-step ``_ref``
twins, the boundary contractions against autograd of their tangent models, ChunkInject.

Symbols: K chunk, B batch, N inputs, H hidden, E SSM channels, Ns state size, R dt rank.
Float64; relative error ‖a − b‖ / ‖b‖ ≤ 1e-12 (measured ~1e-16).
"""

from __future__ import annotations

import pytest
import torch

from bimsnn.rules import chunked_ssm as cs
from bimsnn.rules import scan_traces as st
from bimsnn.rules.chunked_layers import ChunkInject, chunk_inject_ref

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


def _leaky_inputs(seed, mode, per_neuron):
    g = torch.Generator().manual_seed(seed)
    K, Bn, N, H = 9, 3, 5, 4
    x = torch.rand(K, Bn, N, generator=g, dtype=F64)
    mem = torch.randn(K, Bn, H, generator=g, dtype=F64) + 0.8
    m0 = torch.randn(Bn, H, generator=g, dtype=F64) + 0.8
    beta = (torch.tensor([0.5, 0.9, 1.2, 0.7], dtype=F64) if per_neuron
            else torch.tensor(0.85, dtype=F64))
    thr = torch.tensor(1.0, dtype=F64)
    shared = not per_neuron and mode != st.ZERO
    e = {"weight": torch.randn(Bn, N, generator=g, dtype=F64) if shared
         else torch.randn(Bn, H, N, generator=g, dtype=F64),
         "bias": torch.randn(Bn, H, generator=g, dtype=F64),
         "beta": torch.randn(Bn, H, generator=g, dtype=F64),
         "threshold": None}
    return e, x, m0, mem, beta, thr


@pytest.mark.parametrize("mode", [st.SUBTRACT, st.ZERO, st.NONE])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_leaky_advance_equals_ref(mode, per_neuron):
    e, x, m0, mem, beta, thr = _leaky_inputs(0, mode, per_neuron)
    fast = st.leaky_advance(e, x, m0, mem, beta, thr, mode)
    ref = st.leaky_advance_ref(e, x, m0, mem, beta, thr, mode)
    for k in e:
        assert fast[k].shape == ref[k].shape
        assert _rel(fast[k], ref[k]) <= 1e-12, k


def test_leaky_contract_equals_tangent_autograd():
    e, *_ = _leaky_inputs(1, st.ZERO, True)
    e["threshold"] = torch.randn(3, 4, dtype=F64)
    params = {"weight": torch.randn(4, 5, dtype=F64), "bias": torch.randn(4, dtype=F64),
              "beta": torch.randn(4, dtype=F64), "threshold": torch.randn((), dtype=F64)}
    d = {k: v.requires_grad_() for k, v in params.items()}
    g = torch.randn(3, 4, dtype=F64)
    want = torch.autograd.grad((st.leaky_tangent(e, d) * g).sum(), list(d.values()))
    got = st.leaky_contract(g, e, {k: v.shape for k, v in params.items()})
    for (k, v), w in zip(got.items(), want):
        assert v.shape == w.shape and _rel(v, w) <= 1e-12, k


def _ssm_inputs(seed, K=7, Bn=2, E=5, Ns=3, R=2):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=F64)
    u, delta = r(K, Bn, E), torch.rand(K, Bn, E, generator=g, dtype=F64) * 0.8
    A = -torch.rand(E, Ns, generator=g, dtype=F64) * 2 - 0.1
    e = {"e_A": r(Bn, Ns, E), "PR": r(Bn, E + R + 1, Ns, E),
         "WB": r(Bn, E, Ns, E)}                          # layouts of chunked_ssm.ssm_advance
    return e, u, delta, A, r(K, Bn, Ns), r(K, Bn, R), r(Bn, E, Ns)


@pytest.mark.parametrize("with_e0", [False, True])
@pytest.mark.parametrize("block", [None, 1, 3, 7])
@pytest.mark.parametrize("proj", [True, False])
def test_ssm_advance_equals_ref(with_e0, block, proj):
    e, *args = _ssm_inputs(2)
    if not proj:                                        # only the [r | 1] rows, no WB
        e = {"e_A": e["e_A"], "PR": e["PR"][:, -3:].contiguous()}
    e = e if with_e0 else None
    e_copy = None if e is None else {k: v.clone() for k, v in e.items()}
    ws = {}                                             # scratch reused across calls
    cs.ssm_advance(e, *args, block=block, ws=ws, proj=proj)
    fast = cs.ssm_advance(e, *args, block=block, ws=ws, proj=proj)
    ref = cs.ssm_advance_ref(e, *args, proj=proj)
    assert set(fast) == set(ref) == ({"e_A", "PR", "WB"} if proj else {"e_A", "PR"})
    for k in ref:
        assert _rel(fast[k], ref[k]) <= 1e-12, k
    if e is not None:                                   # inputs untouched (out of place)
        assert all(torch.equal(e[k], e_copy[k]) for k in e)
        fast = cs.ssm_advance(e, *args, block=block, inplace=True, proj=proj)
        for k in ref:                                   # in place: same values, e's storage
            assert _rel(fast[k], ref[k]) <= 1e-12 and fast[k].data_ptr() == e[k].data_ptr()
    if proj and e is not None:                          # proj=False: the same shared rows
        small = cs.ssm_advance({"e_A": e_copy["e_A"], "PR": e_copy["PR"][:, -3:]}, *args,
                               proj=False)
        assert _rel(small["PR"], ref["PR"][:, -3:]) <= 1e-12
        assert _rel(small["e_A"], ref["e_A"]) <= 1e-12


def test_ssm_inputs_match_discretize():
    from bimsnn.ssm.mamba import SelectiveSSM
    torch.manual_seed(0)
    ssm = SelectiveSSM(6, 4, 2).double()
    u = torch.randn(5, 3, 6, dtype=F64)
    with torch.no_grad():
        delta, A, Bm, r, sig = cs.ssm_inputs(ssm, u)
        d2, A2, B2, _ = ssm.discretize(u)
    for a, b in ((delta, d2), (A, A2), (Bm, B2)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert torch.allclose(sig, -torch.expm1(-delta), rtol=1e-12)


def test_ssm_contract_equals_tangent_autograd():
    e, *_ = _ssm_inputs(3)
    E, Ns, R = 5, 3, 2
    params = [torch.randn(E, Ns, dtype=F64, requires_grad=True),
              torch.randn(E, R, dtype=F64, requires_grad=True),
              torch.randn(E, dtype=F64, requires_grad=True),
              torch.randn(R + 2 * Ns, E, dtype=F64, requires_grad=True)]
    W_dt = torch.randn(E, R, dtype=F64)
    g = torch.randn(2, E, Ns, dtype=F64)
    want = torch.autograd.grad((cs.ssm_tangent(e, W_dt, R, *params) * g).sum(), params)
    got = cs.ssm_contract(g, e, W_dt, R, (True,) * 4)
    for a, b in zip(got, want):
        assert a.shape == b.shape and _rel(a, b) <= 1e-12
    assert got[3][R + Ns:].abs().max() == 0                      # W_C: no trace
    small = {"e_A": e["e_A"], "PR": e["PR"][:, -3:]}             # proj=False layout
    want = torch.autograd.grad((cs.ssm_tangent(small, W_dt, R, *params) * g).sum(), params[:3])
    got = cs.ssm_contract(g, small, W_dt, R, (True,) * 4)
    assert got[3] is None
    for a, b in zip(got[:3], want):
        assert _rel(a, b) <= 1e-12


def test_chunk_inject_matches_ref_and_gradcheck():
    e, *_ = _leaky_inputs(4, st.SUBTRACT, True)
    del e["threshold"]
    names = list(e)
    params = [torch.randn(4, 5, dtype=F64, requires_grad=True),
              torch.randn(4, dtype=F64, requires_grad=True),
              torch.randn(4, dtype=F64, requires_grad=True)]
    shapes = {k: p.shape for k, p in zip(names, params)}

    def contract(g, need):
        res = st.leaky_contract(g, e, shapes)
        return tuple(res[k] if n else None for k, n in zip(names, need))

    def tangent(*d):
        return st.leaky_tangent(e, dict(zip(names, d)))
    s = torch.randn(3, 4, dtype=F64, requires_grad=True)
    up = torch.randn(3, 4, dtype=F64)
    out, out_ref = ChunkInject.apply(s, contract, *params), chunk_inject_ref(s, tangent, *params)
    assert torch.equal(out, s.detach()) and torch.allclose(out_ref, s, atol=1e-15)
    got = torch.autograd.grad((out * up).sum(), [s, *params])
    want = torch.autograd.grad((out_ref * up).sum(), [s, *params])
    for a, b in zip(got, want):
        assert _rel(a, b) <= 1e-12
    # gradcheck w.r.t. the state (the params' backward is, by design, the tangent model's).
    frozen = [p.detach() for p in params]
    assert torch.autograd.gradcheck(lambda s_: ChunkInject.apply(s_, contract, *frozen), (s,))


def test_exp_filter_and_stdp_chunk_equal_refs():
    g = torch.Generator().manual_seed(5)
    for K in (1, 7, 150):                                         # 150: several Toeplitz blocks
        x = (torch.rand(K, 3, 4, generator=g) < 0.3).to(F64)
        s = (torch.rand(K, 3, 2, generator=g) < 0.3).to(F64)
        x0, y0 = torch.rand(3, 4, dtype=F64, generator=g), torch.rand(3, 2, dtype=F64, generator=g)
        assert _rel(st.exp_filter(x, 0.9, x0), st.exp_filter_ref(x, 0.9, x0)) <= 1e-12
        for a, b in zip(st.stdp_chunk(x, s, x0, y0, 0.8, 0.9),
                        st.stdp_chunk_ref(x, s, x0, y0, 0.8, 0.9)):
            assert _rel(a, b) <= 1e-12
    for K in (1, 5, 150):                                           # 150: several blocks
        d = torch.rand(K, 2, 3, generator=g, dtype=F64)
        for a, b in zip(st.suffix_sums(d), st.suffix_sums_ref(d)):
            assert torch.allclose(a, b, rtol=1e-13, atol=1e-13)
        assert torch.allclose(st.suffix_sums(d)[0], d.flip(0).cumsum(0).flip(0) - d,
                              rtol=1e-13, atol=1e-13)
    a = torch.rand(6, 2, 3, generator=g, dtype=F64)
    a[2, 0, 1] = 0.0                                                # a "zero" reset
    w, tot = st.suffix_products(a)
    w_ref, tot_ref = st.suffix_products_ref(a)
    for t in range(6):
        assert torch.allclose(w[t], a[t + 1:].prod(0), rtol=1e-14)
    assert torch.allclose(w, w_ref, rtol=1e-14) and torch.allclose(tot, tot_ref, rtol=1e-14)
    assert torch.allclose(tot, a.prod(0), rtol=1e-14)
