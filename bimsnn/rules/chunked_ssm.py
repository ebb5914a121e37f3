"""SelectiveSSM eligibility traces advanced over a chunk of K steps (eq. 7-8, closed form).

Symbols: K chunk length, B batch, E SSM channels, Ns state size, R dt rank, J rows of PR.
The per-step traces are those of :mod:`bimsnn.rules.ssm_rtrl`; here they are stored with
the state index n before the channel e (see :func:`ssm_advance`) and advanced per chunk.

    ssm_advance / ssm_advance_ref    e_0 → e_K (fast closed form / per-step twin)
    ssm_inputs                       Δ, A, B, W_Δ u, σ of a chunk from the SSM's parameters
    ssm_contract / ssm_tangent       Σ g·e per parameter (eq. 8 at a boundary) / e·dθ
    SSMChunkRTRL                     the handler: wraps ``ssm.forward``, injects, advances
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bimsnn.rules.chunked_layers import ChunkInject, _wrap
from bimsnn.rules.scan_traces import _workspace, suffix_sums

_SLAB = 1 << 17                         # elements per (k, B, Ns, E) buffer of ssm_advance
_GEMM_K = 64                            # steps per batched matmul of ssm_advance


def _ssm_block(K: int, B: int, E: int, Ns: int) -> int:
    """Sub-block length: about ``_SLAB`` elements per (k, B, E, Ns) working buffer, so the
    half-dozen buffers of :func:`ssm_advance` stay cache-sized (as the scan kernel does)."""
    return max(1, min(K, _SLAB // max(1, B * E * Ns)))


def ssm_advance(e: dict | None, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, r: Tensor,
                h0: Tensor, sig: Tensor | None = None, block: int | None = None,
                inplace: bool = False, ws: dict | None = None, proj: bool = True) -> dict:
    """Advance SelectiveSSM RTRL traces over one chunk (eq. 7 in closed form).

    Per step (rules/ssm_rtrl.py), Ā_t = exp(Δ_t A), σ_t = 1 − exp(−Δ_t) = sigmoid(z_t),
    q_t = (A Ā_t h_{t-1} + u_t ⊗ B_t) σ_t. Layouts put the channel e last and the state n
    before it, so per-(n, e) decays broadcast over contiguous rows of Ns·E::

        e_A[b,n,e]      ← Ā e_A + Δ_t A Ā_t h_{t-1}                      (B, Ns, E)
        PR[b,j,n,e]     ← Ā PR + [u_t | r_t | 1]_j q_t                    (B, E + R + 1, Ns, E)
                          rows j < E: P (W_Δ through W_dt), E ≤ j < E + R: e_Wdt, last: e_b
        WB[b,j,n,e]     ← Ā WB + u_t[j] Δ_t u_t[e]        e_WB            (B, E, Ns, E)

    Closed form: e_K = (Π Ā) ⊙ e_0 + Σ_t w_t ⊙ imm_t with w_t = Π_{s>t} Ā_s =
    exp(A ⊙ Σ_{s>t} Δ_s) ≤ 1. The states are never formed: every imm_t holds Ā_t h_{t-1}, and
    w_t Ā_t h_{t-1} = g_t := (Π Ā) h_0 + Σ_{s<t} w_s x_s (x_s = Δ_s u_s ⊗ B_s), an exclusive
    prefix sum with no decay (stable: all weights ≤ 1). So, with m_t = w_t x_t::

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


class SSMChunkRTRL:
    """Exact RTRL traces of one SelectiveSSM, advanced per chunk (a Handler).

    Wraps ``ssm.forward(u (K, B, E), h0 (B, E, Ns) | None)``: h0 is detached and injected
    (A_log, dt_proj, x_proj get g_0·e_0), then the original parallel scan runs. The traces
    move to the chunk's end with :func:`ssm_advance` lazily, when the next chunk of the same
    sequence starts (a sequence's last chunk costs no advance): in place if that chunk's
    backward, the only reader of e_0, is done; else out of place, since the earlier graph
    may still be backwarded. ``h0=None`` starts a fresh sequence (zero traces). Calls under
    ``no_grad`` or in eval mode pass through (h0 detached). ``x_proj_traces=False`` drops
    the O(B·Ns·E²) traces of x_proj's Δ and B rows (see :func:`ssm_advance`).
    """

    def __init__(self, ssm: nn.Module, x_proj_traces: bool = True):
        if getattr(ssm.__dict__.get("forward"), "_chunk_ssm", None) is not None:
            raise RuntimeError("this SSM already has a chunked rule attached")
        if ssm.x_proj.bias is not None:
            raise NotImplementedError("x_proj with a bias is not supported")
        self.ssm, self.proj = ssm, bool(x_proj_traces)
        self.Ns = ssm.A_log.shape[1]
        self.R = ssm.x_proj.out_features - 2 * self.Ns
        self.traces: dict | None = None
        self._pending: tuple | None = None       # (u, h0) of a chunk not yet advanced over
        self._backwarded = False                 # its graph is freed: advance in place
        self._ws: dict = {}                      # scratch buffers of ssm_advance
        self._spare: dict | None = None          # trace storage of the previous sequence
        self._orig = ssm.forward

        def forward(u: Tensor, h0: Tensor | None = None):
            return self._forward(u, h0)
        forward._chunk_ssm = self
        self._restore = _wrap(ssm, "forward", forward)

    @property
    def params(self) -> tuple:
        s = self.ssm
        return s.A_log, s.dt_proj.weight, s.dt_proj.bias, s.x_proj.weight

    def numel(self) -> int:
        return sum(t.numel() for t in (self.traces or {}).values())

    def _forward(self, u: Tensor, h0: Tensor | None):
        ssm = self.ssm
        if not (ssm.training and torch.is_grad_enabled()):
            return self._orig(u, None if h0 is None else h0.detach())
        if h0 is None:
            self._pending = None                 # a new sequence: nothing to advance over
        self._advance(inplace=self._backwarded)
        K, B, E = u.shape
        h0d = u.new_zeros(B, E, self.Ns) if h0 is None else h0.detach()
        if h0 is None:
            self.traces = None
        h_in = h0d
        if self.traces is not None:
            if self.traces["e_A"].shape[0] != B:
                raise ValueError(f"batch {B} != traces' batch {self.traces['e_A'].shape[0]}; "
                                 "call rule.reset(batch_size) at each new sequence")
            e, W_dt, R = self.traces, ssm.dt_proj.weight.detach(), self.R

            def contract(g: Tensor, need: tuple) -> tuple:
                return ssm_contract(g, e, W_dt, R, need, self._ws)
            h_in = ChunkInject.apply(h0d, contract, *self.params)
        y, hK = self._orig(u, h_in)
        self._pending, self._backwarded = (u.detach(), h0d), False
        return y, hK

    @torch.no_grad()
    def _advance(self, inplace: bool) -> None:
        """e_0 → e_K over the pending chunk (see the class docstring)."""
        if self._pending is None:
            return
        u, h0 = self._pending
        self._pending = None
        e = self.traces
        if e is None and inplace and self._spare is not None:
            # The last sequence's trace storage, zeroed, instead of fresh (page-faulting)
            # tensors: its graphs were all backwarded before reset().
            e = {k: v.zero_() for k, v in self._spare.items()}
            if e["e_A"].shape != (u.shape[1], self.Ns, u.shape[2]):
                e = None
        self._spare = None
        delta, A, Bm, r, sig = ssm_inputs(self.ssm, u)
        self.traces = ssm_advance(e, u, delta, A, Bm, r, h0, sig,
                                     inplace=inplace and e is not None, ws=self._ws,
                                     proj=self.proj)

    def reset(self, batch_size: int) -> None:
        if self.traces is not None:
            self._spare = self.traces
        self.traces = self._pending = None

    def after_backward(self) -> None:
        """The chunk's graph is freed: the advance (lazily, when the next chunk starts, so
        a sequence's last chunk costs none) may update the traces in place."""
        self._backwarded = True

    def remove(self) -> None:
        self._restore()
        self.traces = self._pending = self._spare = None
        self._ws = {}
