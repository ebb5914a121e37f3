"""Eligibility and STDP traces advanced over a whole chunk of K steps at once (eq. 5, 7-8).

Symbols: K chunk length, B batch, N Linear in_features, H Leaky width, t = 1..K the steps
of a chunk (index 0..K-1). The SelectiveSSM's traces are in :mod:`bimsnn.rules.chunked_ssm`.

Every trace here is a diagonal linear recurrence e_t = a_t ⊙ e_{t-1} + imm_t, so over a
chunk it has the closed form

    e_K = (Π_{t=1..K} a_t) ⊙ e_0 + Σ_t w_t ⊙ imm_t,     w_t = Π_{s=t+1..K} a_s ∈ [0, 1]

(products of decays ≤ 1 only: never a division, never exp(+ΣΔA)). For outer-product traces
the Σ_t is one einsum / matmul over the chunk, so no Python loop runs per step.

Functions (each fast one has a ``_ref`` twin, a per-step loop with the same signature,
that the tests compare against):

    exp_filter          x̄_t = d x̄_{t-1} + x_t for every t of the chunk (STDP's pre/post traces)
    stdp_chunk          Σ_t s_tᵀ x̄_t (LTP) and Σ_t (d− ȳ_{t-1})ᵀ x_t (LTD) of eq. 5
    leaky_advance       RTRL traces of a Linear→Leaky pair (see bimsnn.rules.rtrl)
    suffix_sums         Σ_{s>t} x_s by blocked triangular matmuls (used by chunked_ssm)

and the two halves of a trace injection (eq. 8 at a chunk boundary): ``*_contract(g, e)``
returns Σ g·e per parameter (what backward adds), ``*_tangent(e, dθ)`` returns e·dθ, whose
autograd is the reference for the contraction.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

SUBTRACT, ZERO, NONE = 0, 1, 2          # snnTorch's reset_mechanism_val
_BLOCK = 64                             # block of suffix_sums' triangular matmuls
_TOEPLITZ = 16                          # block of exp_filter (k·K work: small k is cheaper)


# ------------------------------------------------------------------ generic helpers
def _workspace(ws: dict | None, name: str, shape: tuple, dtype, device) -> Tensor:
    """Scratch buffer ``name`` from ``ws`` (reused while shape and dtype match), or fresh."""
    t = None if ws is None else ws.get(name)
    if t is None or t.shape != shape or t.dtype != dtype or t.device != device:
        t = torch.empty(shape, dtype=dtype, device=device)
        if ws is not None:
            ws[name] = t
    return t


def suffix_sums(x: Tensor, ws: dict | None = None) -> tuple[Tensor, Tensor]:
    """Exclusive suffix sums S_t = Σ_{s>t} x_s (K, ...) and the total Σ_t x_t (...).

    Blocks of ≤ 64 steps, each a (k × k) upper-triangular matmul plus the carry from later
    blocks: no subtraction, so S ≥ 0 stays exact to rounding for x ≥ 0 (Δ), in any dtype.
    """
    K = x.shape[0]
    flat = x.reshape(K, -1)
    out = _workspace(ws, "suffix", (K, flat.shape[1]), x.dtype, x.device)
    carry = torch.zeros_like(flat[0])
    for t0 in reversed(range(0, K, _BLOCK)):
        k = min(_BLOCK, K - t0)
        U = torch.ones(k, k, dtype=x.dtype, device=x.device).triu_(1)
        torch.addmm(carry, U, flat[t0:t0 + k], out=out[t0:t0 + k])
        carry = out[t0] + flat[t0]
    return out.view(x.shape), carry.view(x.shape[1:])


def suffix_sums_ref(x: Tensor, ws: dict | None = None) -> tuple[Tensor, Tensor]:
    """Reference twin of :func:`suffix_sums`: the backward loop S_t = S_{t+1} + x_{t+1}."""
    S = [torch.zeros_like(x[0])]
    for t in range(x.shape[0] - 1, 0, -1):
        S.append(S[-1] + x[t])
    return torch.stack(S[::-1]), S[-1] + x[0]


# ------------------------------------------------------------------ generic decays
def suffix_products(a: Tensor) -> tuple[Tensor, Tensor]:
    """w_t = Π_{s>t} a_s and the total Π_t a_t, for per-step decays a (K, ...) in [0, 1].

    Returns w (K, ...) (w_{K} = 1) and tot (...). Reverse cumprod: no division, so a_t = 0
    (a "zero" reset) is exact.
    """
    rc = a.flip(0).cumprod(0).flip(0)                       # Π_{s≥t} a_s, (K, ...)
    return torch.cat([rc[1:], torch.ones_like(rc[:1])]), rc[0]


def suffix_products_ref(a: Tensor) -> tuple[Tensor, Tensor]:
    """Reference twin of :func:`suffix_products`: the backward loop w_t = a_{t+1} w_{t+1}."""
    w = [torch.ones_like(a[0])]
    for t in range(a.shape[0] - 1, 0, -1):
        w.append(a[t] * w[-1])
    return torch.stack(w[::-1]), a[0] * w[-1]


def exp_filter(x: Tensor, d: float, x0: Tensor | None = None) -> Tensor:
    """x̄_t = d·x̄_{t-1} + x_t for t = 1..K, x̄_0 = x0 (None: zeros). x (K, ...) → (K, ...).

    Computed in blocks of ≤ 16 steps as a lower-triangular Toeplitz matmul
    x̄ = M x + d^{t} x̄_0 with M[t, s] = d^{t-s} (s ≤ t), carrying x̄ between blocks.
    """
    K = x.shape[0]
    flat = x.reshape(K, -1)
    out = torch.empty_like(flat)
    carry = None if x0 is None else x0.reshape(-1).to(x.dtype)
    for t0 in range(0, K, _TOEPLITZ):
        k = min(_TOEPLITZ, K - t0)
        M, pw = _toeplitz(k, float(d), x.dtype, x.device)
        blk = torch.mm(M, flat[t0:t0 + k], out=out[t0:t0 + k])
        if carry is not None:
            blk.addmm_(pw, carry[None])                                   # + d^{t} x̄_0
        carry = blk[-1]
    return out.reshape(x.shape)


@functools.lru_cache(maxsize=64)
def _toeplitz(k: int, d: float, dtype, device) -> tuple[Tensor, Tensor]:
    """M (k, k) with M[t, s] = d^{t-s} (s ≤ t) and the column d^{t+1} (k, 1) (memoised
    constants: rebuilding them per call cost more than the matmul)."""
    i = torch.arange(k, dtype=torch.float64)
    lag = i[:, None] - i[None, :]
    M = torch.where(lag >= 0, d ** lag.clamp_min(0), torch.zeros((), dtype=torch.float64))
    return M.to(dtype=dtype, device=device), (d ** (i + 1))[:, None].to(dtype=dtype, device=device)


def exp_filter_ref(x: Tensor, d: float, x0: Tensor | None = None) -> Tensor:
    """Reference twin of :func:`exp_filter`: the per-step loop."""
    prev = torch.zeros_like(x[0]) if x0 is None else x0.to(x.dtype)
    out = []
    for x_t in x:
        prev = d * prev + x_t
        out.append(prev)
    return torch.stack(out)


# -------------------------------------------------------------------------- STDP (eq. 5)
def stdp_chunk(x: Tensor, s: Tensor, pre0: Tensor | None, post0: Tensor | None,
               d_plus: float, d_minus: float, fast: bool = True):
    """Pair-based STDP sums of one chunk, exactly the per-step rule of :mod:`bimsnn.rules.stdp`.

    x̄_t = d+ x̄_{t-1} + x_t (includes t), ȳ_t = d− ȳ_{t-1} + s_t; then
    LTP = Σ_t s_tᵀ x̄_t and LTD = Σ_t (d− ȳ_{t-1})ᵀ x_t, each one (K·B)-long matmul.

    Args:
        x: (K, B, N) pre activity. s: (K, B, H) post spikes. pre0 (B, N), post0 (B, H): the
            traces after the previous chunk (None: zeros). d_plus, d_minus: decays exp(−1/τ±).
    Returns:
        ltp (H, N), ltd (H, N) (batch *sums*; the rule divides by B and applies A±),
        pre_K (B, N), post_K (B, H).
    """
    filt = exp_filter if fast else exp_filter_ref
    xbar = filt(x, d_plus, pre0)                                          # (K, B, N)
    ybar = filt(s, d_minus, post0)                                        # (K, B, H)
    y0 = torch.zeros_like(s[0]) if post0 is None else post0.to(s.dtype)
    yprev = torch.cat([y0[None], ybar[:-1]])                              # ȳ_{t-1}
    H, N = s.shape[-1], x.shape[-1]
    ltp = s.reshape(-1, H).t() @ xbar.reshape(-1, N)
    ltd = (d_minus * yprev).reshape(-1, H).t() @ x.reshape(-1, N)
    return ltp, ltd, xbar[-1], ybar[-1]


def stdp_chunk_ref(x, s, pre0, post0, d_plus, d_minus):
    """Reference twin of :func:`stdp_chunk`: per-step outer products, as rules/stdp.py."""
    pre = torch.zeros_like(x[0]) if pre0 is None else pre0.to(x.dtype)
    post = torch.zeros_like(s[0]) if post0 is None else post0.to(s.dtype)
    ltp = ltd = 0.0
    for x_t, s_t in zip(x, s):
        pre = d_plus * pre + x_t
        ltp = ltp + s_t.t() @ pre
        ltd = ltd + (d_minus * post).t() @ x_t
        post = d_minus * post + s_t
    return ltp, ltd, pre, post


# ------------------------------------------------------------- Linear→Leaky RTRL traces
def _leaky_terms(m0, mem, beta, threshold, mode, need_r=True):
    """Per-step decays a_t (() / (H,) if constant, else (K, B, H)), reset r_t = H(m_{t-1} − ϑ)
    and the β trace's immediate term [0≤β≤1] m_{t-1} (1 − r_t)^{zero} (both (K, B, H))."""
    a = beta.clamp(0, 1).to(mem.dtype)                                    # () or (H,)
    if not need_r:
        return a, None, None
    m_prev = torch.cat([m0[None], mem[:-1]])                              # m_{t-1}, (K, B, H)
    r = (m_prev > threshold).to(mem.dtype)                                # snnTorch H(m − ϑ)
    if mode == ZERO:
        a = a * (1 - r)
    in_range = ((beta >= 0) & (beta <= 1)).to(mem.dtype)                  # clamp's grad mask
    imm_beta = m_prev * in_range * ((1 - r) if mode == ZERO else 1)
    return a, r, imm_beta


def leaky_advance(e: dict, x: Tensor, m0: Tensor, mem: Tensor, beta: Tensor,
                  threshold: Tensor, mode: int) -> dict:
    """Advance Linear→Leaky RTRL traces over one chunk (eq. 7 in closed form).

    Per step (rules/rtrl.py): e^W_t = a_t e^W_{t-1} + x_t, e^b_t = a_t e^b_{t-1} + 1,
    e^β_t = a_t e^β_{t-1} + [0≤β≤1] m_{t-1}(1 − r_t)^{zero}, e^ϑ_t = a_t e^ϑ_{t-1} − r_t, with
    a_t = β̂ ("subtract"/"none") or β̂(1 − r_t) ("zero"), r_t = H(m_{t-1} − ϑ). For a constant
    a the weights are powers, w_t = a^{K−t}; otherwise suffix products.

    Args:
        e: {"weight", "bias", "beta", "threshold"} → trace or None (zeros); only the keys
            present are advanced. Layouts: weight (B, N) when a is one scalar for all
            neurons and steps (the shared STDP pre-trace), else (B, H, N); others (B, H).
        x: (K, B, N) the Linear's input. m0: (B, H) membrane entering the chunk.
        mem: (K, B, H) membranes of the chunk. beta, threshold: the Leaky's (detached).
        mode: SUBTRACT, ZERO or NONE.
    Returns:
        a new dict (inputs are not modified: a pending backward may still read them).
    """
    K, B, H = mem.shape
    need_r = mode == ZERO or "beta" in e or "threshold" in e
    a, r, imm_beta = _leaky_terms(m0, mem, beta, threshold, mode, need_r)
    shared = a.numel() == 1
    if a.dim() < 3:                     # constant over the chunk: w_t = a^{K-t}
        p = torch.arange(K - 1, -1, -1, dtype=mem.dtype, device=mem.device)
        if shared:
            a = a.reshape(())
            w3 = (a ** p).reshape(K, 1, 1)
        else:
            a = a.expand(H)
            w3 = (a[None, :] ** p[:, None])[:, None, :]                   # (K, 1, H)
        tot = a ** K                                                      # () / (H,)
    else:
        w3, tot = suffix_products(a)                                      # (K, B, H), (B, H)
    xs = x.to(mem.dtype)
    out = {}
    for name, e0 in e.items():
        if name == "weight":
            if shared:
                new = torch.einsum("t,tbn->bn", w3.reshape(K), xs)        # (B, N)
                out[name] = new if e0 is None else tot * e0 + new
            else:
                new = torch.einsum("tbh,tbn->bhn", w3.expand(K, B, H), xs)   # (B, H, N)
                out[name] = new if e0 is None else tot.expand(B, H)[..., None] * e0 + new
            continue
        if name == "bias":                                                # imm = 1
            new = w3.sum(0).expand(B, H)
        else:
            new = (w3 * (imm_beta if name == "beta" else -r)).sum(0)      # (B, H)
        out[name] = new.clone() if e0 is None else tot * e0 + new
    return out


def leaky_advance_ref(e, x, m0, mem, beta, threshold, mode):
    """Reference twin of :func:`leaky_advance`: the per-step recursion of rules/rtrl.py."""
    K, B, H = mem.shape
    a_all, r_all, imm_beta = _leaky_terms(m0, mem, beta, threshold, mode)
    shared = a_all.numel() == 1
    out = dict(e)
    for t in range(K):
        a = a_all[t] if a_all.dim() == 3 else a_all
        a2 = a.expand(B, H) if not shared else a.reshape(())
        imms = {"bias": torch.ones(B, H, dtype=mem.dtype), "beta": imm_beta[t],
                "threshold": -r_all[t]}
        for name, v in out.items():
            if name == "weight":
                s = x[t] if shared else x[t][:, None, :].expand(B, H, x.shape[-1])
                dec = a2 if shared else a2[..., None]
            else:
                s, dec = imms[name], a2
            out[name] = s.to(mem.dtype).clone() if v is None else dec * v + s
    return out


def leaky_contract(g: Tensor, e: dict, shapes: dict) -> dict:
    """Σ_b g ⊗ e per parameter (eq. 8's boundary term): g (B, H) = ∂L/∂m_0."""
    out = {}
    for name, tr in e.items():
        if name == "weight":
            out[name] = (g.t() @ tr if tr.dim() == 2
                         else torch.einsum("bh,bhn->hn", g, tr))                 # (H, N)
        else:
            out[name] = (g * tr).sum(0).sum_to_size(shapes[name])
    return out


def leaky_tangent(e: dict, d: dict) -> Tensor:
    """Σ_θ e_θ·dθ (B, H): the state's first-order change; autograd of it is the reference
    for :func:`leaky_contract`."""
    out = 0.0
    for name, tr in e.items():
        if name == "weight":
            out = out + (tr @ d[name].t() if tr.dim() == 2
                         else torch.einsum("bhn,hn->bh", tr, d[name]))
        else:
            out = out + tr * d[name]
    return out
