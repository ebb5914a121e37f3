"""Eligibility and STDP traces advanced over a whole chunk of K steps at once (eq. 5, 7-8).

Symbols: K chunk length, B batch, N Linear in_features, H Leaky width, E SSM channels,
N_s SSM state size (``Ns`` in code), R dt rank, t = 1..K the steps of a chunk (index 0..K-1).

Every trace here is a diagonal linear recurrence e_t = a_t ⊙ e_{t-1} + imm_t, so over a
chunk it has the closed form

    e_K = (Π_{t=1..K} a_t) ⊙ e_0 + Σ_t w_t ⊙ imm_t,     w_t = Π_{s=t+1..K} a_s ∈ [0, 1]

(products of decays ≤ 1 only: never a division, never exp(+ΣΔA)). For outer-product traces
the Σ_t is one einsum / batched matmul over the chunk, so no Python loop runs per step.

Functions (each fast one has a ``_ref`` twin, a per-step loop with the same signature,
that the tests compare against):

    exp_filter          x̄_t = d x̄_{t-1} + x_t for every t of the chunk (STDP's pre/post traces)
    stdp_chunk          Σ_t s_tᵀ x̄_t (LTP) and Σ_t (d− ȳ_{t-1})ᵀ x_t (LTD) of eq. 5
    leaky_advance       RTRL traces of a Linear→Leaky pair (see bimsnn.rules.rtrl)
    ssm_advance         RTRL traces of a SelectiveSSM (see bimsnn.rules.ssm_rtrl)

and the two halves of a trace injection (eq. 8 at a chunk boundary): ``*_contract(g, e)``
returns Σ g·e per parameter (what backward adds), ``*_tangent(e, dθ)`` returns e·dθ, whose
autograd is the reference for the contraction.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from bimsnn.ssm._chunked import _chunk_states

SUBTRACT, ZERO, NONE = 0, 1, 2          # snnTorch's reset_mechanism_val
_BLOCK = 64                             # Toeplitz block of exp_filter (K² work per block)


# ------------------------------------------------------------------ generic decays
def suffix_products(a: Tensor) -> tuple[Tensor, Tensor]:
    """w_t = Π_{s>t} a_s and the total Π_t a_t, for per-step decays a (K, ...) in [0, 1].

    Returns w (K, ...) (w_{K} = 1) and tot (...). Reverse cumprod: no division, so a_t = 0
    (a "zero" reset) is exact.
    """
    rc = a.flip(0).cumprod(0).flip(0)                       # Π_{s≥t} a_s, (K, ...)
    return torch.cat([rc[1:], torch.ones_like(rc[:1])]), rc[0]


def exp_filter(x: Tensor, d: float, x0: Tensor | None = None) -> Tensor:
    """x̄_t = d·x̄_{t-1} + x_t for t = 1..K, x̄_0 = x0 (None: zeros). x (K, ...) → (K, ...).

    Computed in blocks of ≤ 64 steps as a lower-triangular Toeplitz matmul
    x̄ = M x + d^{t} x̄_0 with M[t, s] = d^{t-s} (s ≤ t).
    """
    K = x.shape[0]
    flat = x.reshape(K, -1)
    out = torch.empty_like(flat)
    carry = None if x0 is None else x0.reshape(-1).to(x.dtype)
    for t0 in range(0, K, _BLOCK):
        k = min(_BLOCK, K - t0)
        i = torch.arange(k, device=x.device, dtype=x.dtype)
        lag = i[:, None] - i[None, :]
        M = torch.where(lag >= 0, d ** lag.clamp_min(0), torch.zeros((), dtype=x.dtype))
        blk = M @ flat[t0:t0 + k]
        if carry is not None:
            blk += (d ** (i + 1))[:, None] * carry
        out[t0:t0 + k] = blk
        carry = blk[-1]
    return out.reshape(x.shape)


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
def _leaky_terms(x, m0, mem, beta, threshold, mode):
    """Per-step decays a_t, reset r_t, and immediate terms; shapes (K, B, H) / broadcast."""
    m_prev = torch.cat([m0[None], mem[:-1]])                              # m_{t-1}, (K, B, H)
    r = (m_prev > threshold).to(mem.dtype)                                # snnTorch H(m − ϑ)
    a = beta.clamp(0, 1).to(mem.dtype)                                    # () or (H,)
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
    a_t = β̂ ("subtract"/"none") or β̂(1 − r_t) ("zero"), r_t = H(m_{t-1} − ϑ).

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
    a, r, imm_beta = _leaky_terms(x, m0, mem, beta, threshold, mode)
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
        imm = {"bias": torch.ones_like(mem), "beta": imm_beta, "threshold": -r}[name]
        new = (w3 * imm).sum(0)                                           # (B, H)
        out[name] = new if e0 is None else tot * e0 + new
    return out


def leaky_advance_ref(e, x, m0, mem, beta, threshold, mode):
    """Reference twin of :func:`leaky_advance`: the per-step recursion of rules/rtrl.py."""
    K, B, H = mem.shape
    a_all, r_all, imm_beta = _leaky_terms(x, m0, mem, beta, threshold, mode)
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


# ------------------------------------------------------------- SelectiveSSM RTRL traces
def ssm_chunk_states(h0: Tensor, dA: Tensor, du: Tensor, Bm: Tensor) -> Tensor:
    """States [h_0, h_1, ..., h_K] (K+1, B, E, Ns) of a chunk, no grad, with the in-place
    loop of the scan kernel. dA (K, B, E, Ns) = exp(Δ A), du (K, B, E) = Δ⊙u, Bm (K, B, Ns)."""
    hbuf = dA.new_empty((dA.shape[0] + 1,) + tuple(dA.shape[1:]))
    _chunk_states(hbuf, h0, dA, du, Bm)
    return hbuf


def _ssm_imm(u, delta, A, Bm, h_prev):
    """Immediate terms of rules/ssm_rtrl.py for all steps: Δ⊙A⊙Ā⊙h_{t-1} and q = ∂h_t/∂z|imm."""
    dA = torch.exp(delta[..., None] * A)                                  # (K, B, E, Ns)
    AdAh = A * dA * h_prev
    sig = -torch.expm1(-delta)                                            # softplus'(z)
    q = (AdAh + u[..., None] * Bm[..., None, :]) * sig[..., None]         # (K, B, E, Ns)
    return dA, delta[..., None] * AdAh, q


def ssm_advance(e: dict | None, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, r: Tensor,
                h_prev: Tensor) -> dict:
    """Advance SelectiveSSM RTRL traces over one chunk (eq. 7 in closed form).

    Traces (this module's layouts; per-step definitions in rules/ssm_rtrl.py):
        e_A (B, E, Ns), e_b (B, E, Ns),
        PR (B, E, Ns, E + R) = [P | e_Wdt]: P_t = Ā P + q ⊗ u, e_Wdt_t = Ā e_Wdt + q ⊗ r,
        WB (B, E, Ns, E): e_WB_t = Ā e_WB + (Δ⊙u) ⊗ u.
    Closed form with w_t = Π_{s>t} Ā_s = exp(A ⊙ Σ_{s>t} Δ_s) ≤ 1: e_K = (Π Ā) ⊙ e_0 +
    Σ_t w_t ⊙ imm_t; the outer-product sums are two batched matmuls over the chunk,
    (B, E·Ns, K) @ (B, K, E + R) and (B, E·Ns, K) @ (B, K, E).

    Args:
        e: traces after the previous chunk, or None (zeros).
        u, delta: (K, B, E). A: (E, Ns). Bm: (K, B, Ns). r: (K, B, R) = W_Δ u.
        h_prev: (K, B, E, Ns) the state before each step (h_0 .. h_{K-1}).
    Returns:
        a new dict (the old tensors may still be read by a pending backward).
    """
    K, B, E = u.shape
    Ns = A.shape[1]
    _, imm_A, q = _ssm_imm(u, delta, A, Bm, h_prev)
    S = delta.flip(0).cumsum(0).flip(0)                                   # Σ_{s≥t} Δ_s
    w = torch.exp(torch.cat([S[1:], torch.zeros_like(S[:1])])[..., None] * A)  # (K, B, E, Ns)
    tot = torch.exp(S[0][..., None] * A)                                  # (B, E, Ns)
    wq = w * q
    zq = wq.permute(1, 2, 3, 0).reshape(B, E * Ns, K)
    zb = (w * (delta * u)[..., None]).permute(1, 2, 3, 0).reshape(B, E * Ns, K)
    ub = u.transpose(0, 1)                                                # (B, K, E)
    ur = torch.cat([ub, r.transpose(0, 1)], -1)                           # (B, K, E + R)
    out = {"e_A": (w * imm_A).sum(0), "e_b": wq.sum(0)}
    if e is None:
        out["PR"] = torch.bmm(zq, ur).reshape(B, E, Ns, -1)
        out["WB"] = torch.bmm(zb, ub).reshape(B, E, Ns, E)
        return out
    out["e_A"] += tot * e["e_A"]
    out["e_b"] += tot * e["e_b"]
    t4 = tot[..., None]
    out["PR"] = (e["PR"] * t4).reshape(B, E * Ns, -1).baddbmm_(zq, ur).reshape(e["PR"].shape)
    out["WB"] = (e["WB"] * t4).reshape(B, E * Ns, E).baddbmm_(zb, ub).reshape(e["WB"].shape)
    return out


def ssm_advance_ref(e, u, delta, A, Bm, r, h_prev):
    """Reference twin of :func:`ssm_advance`: the per-step updates of rules/ssm_rtrl.py."""
    K, B, E = u.shape
    Ns, R = A.shape[1], r.shape[-1]
    dA, imm_A, q = _ssm_imm(u, delta, A, Bm, h_prev)
    z = u.new_zeros
    e = dict(e) if e is not None else {"e_A": z(B, E, Ns), "e_b": z(B, E, Ns),
                                       "PR": z(B, E, Ns, E + R), "WB": z(B, E, Ns, E)}
    for t in range(K):
        a = dA[t]
        ur = torch.cat([u[t], r[t]], -1)                                  # (B, E + R)
        e["e_A"] = a * e["e_A"] + imm_A[t]
        e["e_b"] = a * e["e_b"] + q[t]
        e["PR"] = a[..., None] * e["PR"] + q[t][..., None] * ur[:, None, None, :]
        du = (delta[t] * u[t])[:, :, None, None]                          # (B, E, 1, 1)
        e["WB"] = a[..., None] * e["WB"] + du * u[t][:, None, None, :]
    return e


def ssm_inputs(ssm, u: Tensor, h0: Tensor) -> tuple:
    """(delta, A, Bm, r, h_prev) for :func:`ssm_advance`, recomputed without grad from the
    SSM's own ``discretize`` and a no-grad scan of the chunk. u (K, B, E), h0 (B, E, Ns)."""
    R = ssm.dt_rank
    delta, A, Bm, _ = ssm.discretize(u)
    r = F.linear(u, ssm.x_proj.weight[:R])                                # (K, B, R)
    dA = torch.exp(delta[..., None] * A)
    h = ssm_chunk_states(h0.to(dA.dtype).contiguous(), dA, (delta * u).contiguous(),
                         Bm.contiguous())
    return delta, A, Bm, r, h[:-1]


def ssm_contract(g: Tensor, e: dict, W_dt: Tensor, R: int, need: tuple) -> tuple:
    """Σ g·e for (A_log, dt_proj.weight, dt_proj.bias, x_proj.weight); g (B, E, Ns) = ∂L/∂h_0.

    x_proj rows: [W_Δ (R) | W_B (Ns) | W_C (Ns)]; ∂h/∂W_Δ[r, j] = Σ_e W_dt[e, r] P[.., e, .., j]
    (W_Δ's trace factors through the current W_dt, as in rules/ssm_rtrl.py); W_C gets zero.
    """
    B, E, Ns = g.shape
    gA = (g * e["e_A"]).sum(0) if need[0] else None                       # (E, Ns)
    gb = (g * e["e_b"]).sum((0, 2)) if need[2] else None                  # (E,)
    gWdt = gx = None
    if need[1] or need[3]:
        PR = e["PR"]
        M = torch.bmm(g.reshape(B * E, 1, Ns), PR.reshape(B * E, Ns, -1))  # (B·E, 1, E + R)
        M = M.reshape(B, E, -1).sum(0)                                    # (E, E + R)
        gWdt = M[:, E:].clone() if need[1] else None                      # (E, R)
        if need[3]:
            gB = torch.einsum("ben,benj->nj", g, e["WB"])                 # (Ns, E)
            gx = torch.cat([W_dt.t() @ M[:, :E], gB, torch.zeros_like(gB)], 0)
    return gA, gWdt, gb, gx


def ssm_tangent(e: dict, W_dt: Tensor, R: int, dA_log, dW_dt, db, dW_x) -> Tensor:
    """Σ_θ e_θ·dθ (B, E, Ns); autograd of it is the reference for :func:`ssm_contract`."""
    E = e["e_A"].shape[1]
    Ns = e["e_A"].shape[2]
    P, eWdt = e["PR"][..., :E], e["PR"][..., E:]
    out = e["e_A"] * dA_log + torch.einsum("benr,er->ben", eWdt, dW_dt)
    if db is not None:
        out = out + e["e_b"] * db[:, None]
    out = out + torch.einsum("benj,er,rj->ben", P, W_dt, dW_x[:R])
    return out + torch.einsum("benj,nj->ben", e["WB"], dW_x[R:R + Ns])
