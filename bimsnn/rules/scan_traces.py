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

import functools

import torch
from torch import Tensor
from torch.nn import functional as F

SUBTRACT, ZERO, NONE = 0, 1, 2          # snnTorch's reset_mechanism_val
_BLOCK = 64                             # block of suffix_sums' triangular matmuls
_TOEPLITZ = 32                          # block of exp_filter (k·K work: small k is cheaper)
_SLAB = 1 << 17                         # elements per (k, B, E, Ns) buffer of ssm_advance
_GEMM_K = 64                            # steps per batched matmul of ssm_advance


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


# ------------------------------------------------------------- SelectiveSSM RTRL traces
def _workspace(ws: dict | None, name: str, shape: tuple, dtype, device) -> Tensor:
    """Scratch buffer ``name`` from ``ws`` (reused while shape and dtype match), or fresh."""
    t = None if ws is None else ws.get(name)
    if t is None or t.shape != shape or t.dtype != dtype or t.device != device:
        t = torch.empty(shape, dtype=dtype, device=device)
        if ws is not None:
            ws[name] = t
    return t


def _ssm_block(K: int, B: int, E: int, Ns: int) -> int:
    """Sub-block length: about ``_SLAB`` elements per (k, B, E, Ns) working buffer, so the
    half-dozen buffers of :func:`ssm_advance` stay cache-sized (as the scan kernel does)."""
    return max(1, min(K, _SLAB // max(1, B * E * Ns)))


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


def ssm_advance(e: dict | None, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, r: Tensor,
                h0: Tensor, sig: Tensor | None = None, block: int | None = None,
                inplace: bool = False, ws: dict | None = None, proj: bool = True) -> dict:
    """Advance SelectiveSSM RTRL traces over one chunk (eq. 7 in closed form).

    Per step (rules/ssm_rtrl.py), Ā_t = exp(Δ_t A), σ_t = 1 − exp(−Δ_t) = sigmoid(z_t),
    q_t = (A Ā_t h_{t-1} + u_t ⊗ B_t) σ_t. Layouts put the channel e last and the state n
    before it, so per-(n, e) decays broadcast over contiguous rows of Ns·E:
        e_A[b,n,e]      ← Ā e_A + Δ_t A Ā_t h_{t-1}                      (B, Ns, E)
        PR[b,j,n,e]     ← Ā PR + [u_t | r_t | 1]_j q_t                    (B, E + R + 1, Ns, E)
                          rows j < E: P (W_Δ through W_dt), E ≤ j < E + R: e_Wdt, last: e_b
        WB[b,j,n,e]     ← Ā WB + u_t[j] Δ_t u_t[e]        e_WB            (B, E, Ns, E)
    Closed form: e_K = (Π Ā) ⊙ e_0 + Σ_t w_t ⊙ imm_t with w_t = Π_{s>t} Ā_s =
    exp(A ⊙ Σ_{s>t} Δ_s) ≤ 1. The states are never formed: every imm_t holds Ā_t h_{t-1}, and
    w_t Ā_t h_{t-1} = g_t := (Π Ā) h_0 + Σ_{s<t} w_s x_s (x_s = Δ_s u_s ⊗ B_s), an exclusive
    prefix sum with no decay (stable: all weights ≤ 1). So, with m_t = w_t x_t,
        Σ w imm^A = A ⊙ Σ_t Δ_t g_t,   w_t q_t = (A g_t + w_t u_t ⊗ B_t) σ_t,
    and the outer-product sums are batched matmuls over ≤ 64 steps, (B, E + R + 1, k) @
    (B, k, Ns·E) for PR and (B, E, k) @ (B, k, Ns·E) for WB. The elementwise work runs over
    cache-sized sub-blocks of ``block`` steps (default :func:`_ssm_block`). Any ``block``
    gives the same traces.

    Args:
        e: traces after the previous chunk, or None (zeros).
        u, delta: (K, B, E). A: (E, Ns). Bm: (K, B, Ns). r: (K, B, R) = W_Δ u.
        h0: (B, E, Ns) the state entering the chunk.
        sig: (K, B, E) σ_t = softplus'(z_t), or None (computed as 1 − exp(−Δ)).
        inplace: update ``e``'s tensors in place (only once no pending backward reads them).
        ws: a dict kept by the caller across chunks, holding the scratch buffers (fresh
            large buffers cost page faults on first touch).
        proj: keep the x_proj traces (P rows of PR, and WB). False drops them: PR holds only
            [r | 1] rows (e_Wdt, e_b) and there is no WB, so x_proj's Δ and B rows get
            credit within a chunk only. Those traces are the O(B·Ns·E²) part of the cost.
    Returns:
        dict {"e_A", "PR", "WB"} in the layouts above (``e``'s tensors if inplace; no "WB"
        when not ``proj``).
    """
    K, B, E = u.shape
    Ns, NE, J = A.shape[1], E * A.shape[1], (E if proj else 0) + r.shape[-1] + 1
    dt = u.dtype
    ks = block or _ssm_block(K, B, E, Ns)
    kz = max(ks, min(K, _GEMM_K // ks * ks))             # steps per matmul flush

    def buf(name, *shape):
        return _workspace(ws, name, shape, dt, u.device)
    if sig is None:                                       # σ = 1 − exp(−Δ)
        sig = torch.neg(delta, out=buf("sig", K, B, E)).expm1_().neg_()
    At = A.t().contiguous()                                               # (Ns, E)
    du = torch.mul(delta, u, out=buf("du", K, B, E))[:, :, None, :]       # (K, B, 1, E)
    ones = u.new_ones(K, B, 1)
    rows = [u, r, ones] if proj else [r, ones]
    urt = torch.cat(rows, -1, out=buf("ur", K, B, J)).permute(1, 2, 0)   # (B, J, K)
    Sx, CK = suffix_sums(delta, ws)                                       # Σ_{s>t} Δ_s
    Sx = Sx[:, :, None, :]
    tot = torch.exp(CK[:, None, :] * At)                                  # Π Ā, (B, Ns, E)
    w, m, g = (buf(n, ks, B, Ns, E) for n in ("w", "m", "g"))
    zq = buf("zq", B, kz, NE)                                             # matmul operands
    zb = buf("zb", B, kz, NE) if proj else None
    iA = u.new_zeros(B, Ns, E)
    t1 = tot.view(B, 1, NE)
    PR = WB = None
    if e is None:
        PR = u.new_zeros(B, J, NE)
        WB = u.new_zeros(B, E, NE) if proj else None
    elif inplace:
        PR = e["PR"].view(B, J, NE).mul_(t1)
        WB = e["WB"].view(B, E, NE).mul_(t1) if proj else None
    else:
        PR = e["PR"].view(B, J, NE) * t1
        WB = e["WB"].view(B, E, NE) * t1 if proj else None
    carry = tot * h0.to(dt).transpose(1, 2)                               # g_1 = (Π Ā) h_0
    z0 = 0                                                # first step held in zq / zb
    for t0 in range(0, K, ks):
        k = min(ks, K - t0)
        sl, zs = slice(t0, t0 + k), slice(t0 - z0, t0 - z0 + k)
        Bk = Bm[sl][..., None]                                            # (k, B, Ns, 1)
        wk = torch.mul(Sx[sl], At, out=w[:k]).exp_()                      # w_t
        if proj:                                                          # w_t Δ_t u_t
            torch.mul(wk, du[sl], out=zb[:, zs].transpose(0, 1).view(k, B, Ns, E))
        vk = wk.mul_(Bk)                                                  # v_t = w_t ⊙ B_t
        mk = torch.mul(vk, du[sl], out=m[:k])                             # m_t = w_t x_t
        gk = g[:k]
        gk[0].copy_(carry)                                                # g_t, prefix sum
        for t in range(1, k):                                             # (k ≤ 16 adds)
            torch.add(gk[t - 1], mk[t - 1], out=gk[t])
        carry = gk[k - 1] + mk[k - 1]
        iA.add_(torch.mul(gk, delta[sl][:, :, None, :], out=m[:k]).sum(0))  # Σ Δ g (× A later)
        q = vk.mul_(u[sl][:, :, None, :]).addcmul_(gk, At)                # w_t q_t / σ_t
        torch.mul(q, sig[sl][:, :, None, :], out=zq[:, zs].transpose(0, 1).view(k, B, Ns, E))
        if t0 + k - z0 == kz or t0 + k == K:                              # flush the operands
            n = t0 + k - z0
            PR.baddbmm_(urt[..., z0:z0 + n], zq[:, :n])
            if proj:
                WB.baddbmm_(urt[:, :E, z0:z0 + n], zb[:, :n])
            z0 = t0 + k
    iA.mul_(At)
    if e is not None:
        iA = e["e_A"].mul_(tot).add_(iA) if inplace else iA.addcmul_(tot, e["e_A"])
    out = {"e_A": iA, "PR": PR.view(B, J, Ns, E)}
    if proj:
        out["WB"] = WB.view(B, E, Ns, E)
    return out


def ssm_advance_ref(e, u, delta, A, Bm, r, h0, sig=None, block=None, inplace=False, ws=None,
                    proj=True):
    """Reference twin of :func:`ssm_advance`: the per-step updates of rules/ssm_rtrl.py in
    their natural [b, e, n, j] order, with the state recursion h_t = Ā_t h_{t-1} + x_t."""
    K, B, E = u.shape
    Ns, R = A.shape[1], r.shape[-1]
    if e is None:
        z = u.new_zeros
        e = {"e_A": z(B, E, Ns), "PR": z(B, E, Ns, (E if proj else 0) + R + 1)}
        if proj:
            e["WB"] = z(B, E, Ns, E)
    else:                                                     # [b, j, n, e] → [b, e, n, j]
        e = {k: v.transpose(1, 2) if v.dim() == 3 else v.permute(0, 3, 2, 1)
             for k, v in e.items()}
    h = h0.to(u.dtype)
    for t in range(K):
        a = torch.exp(delta[t][..., None] * A)                            # (B, E, Ns)
        AdAh = A * a * h
        q = (AdAh + u[t][..., None] * Bm[t][:, None, :]) * (-torch.expm1(-delta[t]))[..., None]
        ur1 = torch.cat([u[t], r[t], torch.ones_like(u[t][:, :1])] if proj
                        else [r[t], torch.ones_like(u[t][:, :1])], -1)    # (B, J)
        du = delta[t] * u[t]                                              # (B, E)
        e["e_A"] = a * e["e_A"] + delta[t][..., None] * AdAh
        e["PR"] = a[..., None] * e["PR"] + q[..., None] * ur1[:, None, None, :]
        if proj:
            e["WB"] = a[..., None] * e["WB"] + du[:, :, None, None] * u[t][:, None, None, :]
        h = a * h + du[..., None] * Bm[t][:, None, :]
    return {k: (v.transpose(1, 2) if v.dim() == 3 else v.permute(0, 3, 2, 1)).contiguous()
            for k, v in e.items()}


def ssm_inputs(ssm, u: Tensor) -> tuple:
    """(delta, A, Bm, r, sig) for :func:`ssm_advance`, from the SSM's parameters (call under
    no_grad), as ``discretize`` computes them: z = W_dt (W_Δ u) + b, Δ = softplus(z),
    σ = sigmoid(z) = softplus'(z). u (K, B, E) → (K, B, E), (E, Ns), (K, B, Ns), (K, B, R),
    (K, B, E)."""
    R, Ns = ssm.dt_rank, ssm.d_state
    rB = F.linear(u, ssm.x_proj.weight[:R + Ns])                          # (K, B, R + Ns)
    r, Bm = rB[..., :R], rB[..., R:]
    z = ssm.dt_proj(r)
    return F.softplus(z), -torch.exp(ssm.A_log), Bm, r, torch.sigmoid(z)


def _batch_dot(T: Tensor, gc: Tensor, ws: dict | None, name: str) -> Tensor:
    """Σ_b T[b] ⊙ gc[b]: T (B, J, M), gc (B, 1, M) → (J, M), in cache-sized batch blocks
    through a reused buffer (one (B, J, M) temporary would be as large as the trace)."""
    B, J, M = T.shape
    bs = max(1, min(B, _SLAB // (J * M)))
    buf = _workspace(ws, name, (bs, J, M), T.dtype, T.device)
    acc = T.new_zeros(J, M)
    for b0 in range(0, B, bs):
        n = min(bs, B - b0)
        acc += torch.mul(T[b0:b0 + n], gc[b0:b0 + n], out=buf[:n]).sum(0)
    return acc


def ssm_contract(g: Tensor, e: dict, W_dt: Tensor, R: int, need: tuple,
                 ws: dict | None = None) -> tuple:
    """Σ g·e for (A_log, dt_proj.weight, dt_proj.bias, x_proj.weight); g (B, E, Ns) = ∂L/∂h_0.

    x_proj rows: [W_Δ (R) | W_B (Ns) | W_C (Ns)]; ∂h/∂W_Δ[r, j] = Σ_e W_dt[e, r] P[.., e, .., j]
    (W_Δ's trace factors through the current W_dt, as in rules/ssm_rtrl.py); W_C gets zero.
    ``ws``: scratch buffers reused across calls (see :func:`ssm_advance`).
    """
    E = g.shape[1]
    gt = g.transpose(1, 2)                                                # (B, Ns, E)
    gA = (gt * e["e_A"]).sum(0).t() if need[0] else None                  # (E, Ns)
    gWdt = gb = gx = None
    if need[1] or need[2] or need[3]:
        B, J, Ns = e["PR"].shape[:3]
        gc = gt.contiguous().view(B, 1, -1)                               # (B, 1, Ns·E)
        M = _batch_dot(e["PR"].view(B, J, -1), gc, ws, "cPR")             # (J, Ns·E)
        M = M.view(J, Ns, E).sum(1).t()                                   # (E, J)
        gWdt = M[:, J - 1 - R:J - 1] if need[1] else None                 # (E, R)
        gb = M[:, J - 1] if need[2] else None                             # (E,)
        if need[3] and "WB" in e:                      # else: no x_proj traces (proj=False)
            gB = _batch_dot(e["WB"].view(B, E, -1), gc, ws, "cWB")        # (E, Ns·E)
            gB = gB.view(E, Ns, E).sum(-1).t()                            # (Ns, E)
            gx = torch.cat([W_dt.t() @ M[:, :E], gB, torch.zeros_like(gB)], 0)
    return gA, gWdt, gb, gx


def ssm_tangent(e: dict, W_dt: Tensor, R: int, dA_log, dW_dt, db, dW_x) -> Tensor:
    """Σ_θ e_θ·dθ (B, E, Ns); autograd of it is the reference for :func:`ssm_contract`."""
    Ns, E = e["e_A"].shape[1:]
    J = e["PR"].shape[1]
    eWdt, e_b = e["PR"][:, J - 1 - R:J - 1], e["PR"][:, J - 1]
    out = e["e_A"] * dA_log.t() + torch.einsum("brne,er->bne", eWdt, dW_dt)
    if db is not None:
        out = out + e_b * db
    if "WB" in e:
        out = out + torch.einsum("bjne,er,rj->bne", e["PR"][:, :E], W_dt, dW_x[:R])
        out = out + torch.einsum("bjne,nj->bne", e["WB"], dW_x[R:R + Ns])
    return out.transpose(1, 2)
