"""selective_scan (chunked kernel, hand-written adjoint) against its reference twin.

Symbols: T time, B batch, E channels, N state size, K chunk length.
Every test builds fresh seeded inputs; forward outputs and all gradients are compared.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bimsnn.ssm import chunked_scan
from bimsnn.ssm.scan import selective_scan, selective_scan_ref, selective_step

NAMES = ("u", "delta", "A", "B", "C", "D", "h0")


def make(T, Bt, E, N, dtype=torch.float64, seed=0, d_range=(0.01, 1.0), a_range=(0.1, 2.0),
         with_D=True, with_h0=True):
    """Fresh leaf inputs (u, delta, A, B, C, D, h0); Δ ~ U(d_range), A ~ −U(a_range)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    def uni(lo, hi, *s):
        return lo + (hi - lo) * torch.rand(*s, generator=g, dtype=dtype)

    xs = [r(T, Bt, E), uni(*d_range, T, Bt, E), -uni(*a_range, E, N), r(T, Bt, N), r(T, Bt, N),
          r(E) if with_D else None, r(Bt, E, N) if with_h0 else None]
    return [None if x is None else x.requires_grad_() for x in xs]


def run(fn, xs, seed=1):
    """y, h_T and the gradients of a random linear functional of (y, h_T) w.r.t. all inputs."""
    y, h = fn(*xs, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=y.dtype)
    gh = torch.randn(h.shape, generator=g, dtype=h.dtype)
    leaves = [x for x in xs if x is not None]
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), leaves)
    return y, h, grads


def assert_match(xs, rtol, atol, fast=selective_scan):
    """fast vs ref on y, h_T and every input gradient; tolerance atol is relative to max |ref|."""
    y1, h1, g1 = run(fast, xs)
    y2, h2, g2 = run(selective_scan_ref, xs)
    names = [n for n, x in zip(NAMES, xs) if x is not None]
    for name, a, b in zip(["y", "h_T", *(f"grad {n}" for n in names)], [y1, h1, *g1],
                          [y2, h2, *g2]):
        assert torch.isfinite(a).all(), name
        scale = b.abs().max().item() or 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture
def chunk(monkeypatch):
    """Force the kernel's chunk length K, to exercise chunk boundaries at small T."""
    def set_chunk(K):
        monkeypatch.setattr(chunked_scan, "default_chunk", lambda *shape: K)
    return set_chunk


def test_gradcheck_all_inputs_multi_chunk(chunk):
    chunk(3)  # T = 7 -> chunks of 3, 3, 1
    xs = make(7, 2, 3, 4)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan(*a, return_last_state=True), xs)


def test_gradcheck_without_D_h0():
    xs = [x for x in make(5, 2, 3, 2, with_D=False, with_h0=False) if x is not None]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a), xs)


@pytest.mark.parametrize("T,K", [(13, 1), (13, 4), (13, 5), (13, 13), (13, 64), (1, 4), (1, 1)])
def test_float64_matches_ref_any_chunk(chunk, T, K):
    chunk(K)
    assert_match(make(T, 3, 5, 4, seed=T * 100 + K), rtol=1e-10, atol=1e-12)


def test_float32_realistic_default_chunk():
    T, Bt, E, N = 300, 4, 32, 16
    K = chunked_scan.default_chunk(T, Bt, E, N)
    assert 1 < K < T and T % K != 0  # several chunks, the last one partial
    xs = [x.float().detach().requires_grad_() for x in make(T, Bt, E, N, seed=3)]
    # float32: the two paths sum in different orders; errors measured ~1e-6 relative.
    assert_match(xs, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_delta_strong_decay(chunk, dtype):
    """Δ up to 20, |A| up to 10: exp(ΔA) down to e^-200 (underflows to 0 in float32)."""
    chunk(8)
    xs = make(40, 2, 6, 5, dtype=dtype, seed=5, d_range=(0.5, 20.0), a_range=(0.1, 10.0))
    assert_match(xs, rtol=1e-4 if dtype == torch.float32 else 1e-10,
                 atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_delta(chunk, dtype):
    """Δ ~ 1e-6: almost no decay and almost no input; the state is carried by h0."""
    chunk(8)
    xs = make(40, 2, 6, 5, dtype=dtype, seed=6, d_range=(1e-7, 1e-6))
    assert_match(xs, rtol=1e-4 if dtype == torch.float32 else 1e-10,
                 atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_streaming_step_loop_equals_scan():
    u, delta, A, B, C, D, h0 = make(20, 2, 4, 3, seed=7)
    y, hT = selective_scan(u, delta, A, B, C, D, h0, return_last_state=True)
    h = h0
    for t in range(u.shape[0]):
        y_t, h = selective_step(u[t], delta[t], A, B[t], C[t], D, h)
        torch.testing.assert_close(y_t, y[t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, hT, rtol=1e-12, atol=1e-12)


def test_split_in_two_halves_with_h0(chunk):
    """Scanning [0, 9) then [9, 20) from the carried state equals one scan, gradients too."""
    chunk(4)
    u, delta, A, B, C, D, h0 = xs = make(20, 2, 4, 3, seed=8)
    y, hT, g_full = run(selective_scan, xs)

    def two_halves(u, delta, A, B, C, D, h0, return_last_state):
        s = slice(0, 9), slice(9, None)
        y1, h1 = selective_scan(u[s[0]], delta[s[0]], A, B[s[0]], C[s[0]], D, h0, True)
        y2, h2 = selective_scan(u[s[1]], delta[s[1]], A, B[s[1]], C[s[1]], D, h1, True)
        return torch.cat([y1, y2]), h2

    y_s, hT_s, g_split = run(two_halves, xs)
    for a, b in zip([y_s, hT_s, *g_split], [y, hT, *g_full]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_loss_on_last_state_only_and_expanded_grad():
    """Backward with no gradient for y (only h_T used), and with an expanded gy (y.sum())."""
    xs = make(9, 2, 3, 4, seed=9)
    for fn_loss in (lambda y, h: h.pow(2).sum(), lambda y, h: y.sum()):
        g = [torch.autograd.grad(fn_loss(*f(*xs, return_last_state=True)), xs,
                                 allow_unused=True, materialize_grads=True)   # D unused by h_T
             for f in (selective_scan, selective_scan_ref)]
        for a, b in zip(*g):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_partial_requires_grad_and_no_grad_and_noncontiguous():
    """Only some leaves need grad; inference under no_grad; batch-major inputs transposed in."""
    u, delta, A, B, C, D, h0 = (x.detach() for x in make(11, 3, 4, 2, seed=10))
    A.requires_grad_()
    u_bm = u.transpose(0, 1).contiguous().requires_grad_()       # (B, T, E) as a model may hold it
    args = (u_bm.transpose(0, 1), delta, A, B, C, D, h0)
    g1 = torch.autograd.grad(selective_scan(*args).sum(), (u_bm, A))
    g2 = torch.autograd.grad(selective_scan_ref(*args).sum(), (u_bm, A))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(selective_scan(*args), selective_scan_ref(*args),
                                   rtol=1e-10, atol=1e-12)


def test_mixed_dtypes_promote_like_ref_and_half_computes_in_float32():
    u, delta, A, B, C, D, h0 = xs = [x.detach() for x in make(6, 2, 3, 2, seed=11)]
    args = (u.float(), delta.float(), A, B.float(), C.float(), D.float(), h0.float())
    y1, y2 = selective_scan(*args), selective_scan_ref(*args)
    assert y1.dtype == y2.dtype == torch.float64
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-6)
    y_half = selective_scan(*(x.half() for x in xs))
    assert y_half.dtype == torch.float16
    y_ref = selective_scan_ref(*(x.half().float() for x in xs)).half()
    torch.testing.assert_close(y_half, y_ref, rtol=1e-3, atol=1e-3)


def test_docstring_examples():
    import doctest

    import bimsnn.ssm.scan as scan
    res = doctest.testmod(scan, extraglobs={"torch": torch})
    assert res.attempted > 0 and res.failed == 0


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), Bt=st.integers(1, 3), E=st.integers(1, 4), N=st.integers(1, 4),
       K=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_property_random_shapes_and_chunks(T, Bt, E, N, K, seed):
    orig = chunked_scan.default_chunk
    chunked_scan.default_chunk = lambda *shape: K   # hypothesis forbids function-scoped fixtures
    try:
        assert_match(make(T, Bt, E, N, seed=seed), rtol=1e-10, atol=1e-12)
    finally:
        chunked_scan.default_chunk = orig


@pytest.mark.parametrize("which,bad,expect", [
    ("u", lambda x: x[0], "u: expected shape (T, B, E), got (2, 3)"),
    ("delta", lambda x: x[:, :1], "delta: expected shape (4, 2, 3), got (4, 1, 3)"),
    ("A", lambda x: x[:2], "A: expected shape (3, N), got (2, 5)"),
    ("B", lambda x: x[..., :4], "B: expected shape (4, 2, 5), got (4, 2, 4)"),
    ("C", lambda x: x[:3], "C: expected shape (4, 2, 5), got (3, 2, 5)"),
    ("D", lambda x: x[:2], "D: expected shape (3,), got (2,)"),
    ("h0", lambda x: x[0], "h0: expected shape (2, 3, 5), got (3, 5)"),
])
@pytest.mark.parametrize("fn", [selective_scan, selective_scan_ref])
def test_wrong_shapes_raise_with_expected_and_given(fn, which, bad, expect):
    xs = [x.detach() for x in make(4, 2, 3, 5)]
    i = NAMES.index(which)
    xs[i] = bad(xs[i])
    with pytest.raises(ValueError) as err:
        fn(*xs)
    assert str(err.value) == expect
