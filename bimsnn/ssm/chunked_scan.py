"""Chunked selective-scan kernel: a custom autograd.Function with a hand-written adjoint.

Symbols: T time, B batch, E channels (expanded width), N state size, K chunk length,
P = Δ ⊙ A (the log-decay), x_t = (Δ_t u_t) ⊗ B_t (the drive). Steps t = 1..T, h_0 = h0.

    h_t = exp(P_t) ⊙ h_{t-1} + x_t                  # (B, E, N)   (paper eq. 1)
    y_t = h_t · C_t                                 # (B, E)      (eq. 2, without D u_t)

Why this is fast on a CPU: autograd never sees the time loop. The recurrence itself is one
in-place ``addcmul_`` on a (B, E, N) slab per step; everything else (exp, outer products,
contractions with C and B, every gradient reduction) is vectorised over a chunk of K steps,
whose (K, B, E, N) working set stays cache-sized.

Memory: forward keeps only the inputs and one state per chunk boundary, (T/K, B, E, N).
Backward walks chunks in reverse, recomputes each chunk's states from its boundary
state, then runs the adjoint recurrence

    g_t = gy_t ⊗ C_t + exp(P_{t+1}) ⊙ g_{t+1}        # (B, E, N); g_T = gy_T ⊗ C_T + ∂L/∂h_T
    ∂L/∂P_t = g_t ⊙ exp(P_t) ⊙ h_{t-1}   ∂L/∂x_t = g_t   ∂L/∂h_0 = exp(P_1) ⊙ g_1

and contracts g with B, C, Δu and A for the input gradients.

Only exp(P) ≤ 1 is ever formed (A < 0, Δ ≥ 0), so large ``Δ·|A|`` cannot overflow.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Target working-set size of one (K, B, E, N) chunk tensor, in elements (~1 MiB float32):
# large enough to amortise per-op dispatch, small enough to stay in cache.
_CHUNK_ELEMS = 1 << 18


def default_chunk(T: int, Bt: int, E: int, N: int) -> int:
    """Chunk length K: about ``_CHUNK_ELEMS`` elements per (K, B, E, N) slab, 16 ≤ K ≤ T."""
    return max(1, min(T, max(16, _CHUNK_ELEMS // max(1, Bt * E * N))))


def _vecmat(v: Tensor, M: Tensor, out: Tensor) -> None:
    """Row vector times matrix, batched over (K, B): out = (K, B, i) @ (K, B, i, j) -> (K, B, j).

    Written as a bmm with a single-row left operand (also for the transposed cases below):
    on CPU this measured ~10x faster than the equivalent matrix @ column-vector bmm or einsum.
    """
    K, Bt, i = v.shape
    # flatten(0, 1) stays a view for the transposed M used here (its leading dims are dense).
    torch.bmm(v.reshape(K * Bt, 1, i), M.flatten(0, 1), out=out.view(K * Bt, 1, -1))


def _chunk_states(hbuf: Tensor, h_prev: Tensor, dA: Tensor, du: Tensor, Bc: Tensor) -> None:
    """Fill ``hbuf`` (k+1, B, E, N) with [h_prev, h_1, ..., h_k] for one chunk.

    dA: (k, B, E, N) = exp(P). du: (k, B, E) = Δ ⊙ u. Bc: (k, B, N).
    """
    hbuf[0].copy_(h_prev)
    torch.mul(du.unsqueeze(-1), Bc.unsqueeze(2), out=hbuf[1:])   # x_t, (k, B, E, N)
    hs, das = hbuf.unbind(0), dA.unbind(0)
    for t in range(len(das)):
        hs[t + 1].addcmul_(das[t], hs[t])                           # h_t = dA_t h_{t-1} + x_t


class _SelectiveScanFn(torch.autograd.Function):
    """(du, delta, A, B, C, h0) -> (y, h_T); see the module docstring.

    du, delta: (T, B, E). A: (E, N). B, C: (T, B, N). h0: (B, E, N) or None.
    Returns y: (T, B, E) and h_T: (B, E, N). All inputs must share dtype and be contiguous.
    """

    @staticmethod
    def forward(ctx, du, delta, A, B, C, h0, chunk):
        T, Bt, E = du.shape
        N = A.shape[1]
        K = chunk
        y = du.new_empty(T, Bt, E)
        h = du.new_zeros(Bt, E, N) if h0 is None else h0
        starts = list(range(0, T, K))
        bounds = du.new_empty(len(starts), Bt, E, N)   # state entering each chunk
        dA_buf = du.new_empty(K, Bt, E, N)
        hbuf = du.new_empty(K + 1, Bt, E, N)
        for c, t0 in enumerate(starts):
            k = min(K, T - t0)
            bounds[c].copy_(h)
            dA = torch.mul(delta[t0:t0 + k].unsqueeze(-1), A, out=dA_buf[:k]).exp_()
            _chunk_states(hbuf[:k + 1], h, dA, du[t0:t0 + k], B[t0:t0 + k])
            _vecmat(C[t0:t0 + k], hbuf[1:k + 1].transpose(-1, -2), y[t0:t0 + k])  # h_t · C_t
            h = hbuf[k].clone()
        ctx.chunk = K
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(du, delta, A, B, C, bounds)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, ghT):
        du, delta, A, B, C, bounds = ctx.saved_tensors
        T, Bt, E = du.shape
        N = A.shape[1]
        K = ctx.chunk
        need = ctx.needs_input_grad
        # Upstream grads may be expanded views (e.g. from y.sum()); bmm wants dense rows.
        gy = du.new_zeros(T, Bt, E) if gy is None else gy.contiguous()
        g_du = torch.empty_like(du)
        g_delta = torch.empty_like(delta)
        gB = torch.empty_like(B)
        gC = torch.empty_like(C)
        gA = torch.zeros_like(A)
        # gcarry: adjoint flowing into the last state of the current chunk from the future.
        gcarry = du.new_zeros(Bt, E, N) if ghT is None else ghT.clone()
        dA_buf = du.new_empty(K, Bt, E, N)
        hbuf = du.new_empty(K + 1, Bt, E, N)
        gbuf = du.new_empty(K, Bt, E, N)
        starts = list(range(0, T, K))
        for c in reversed(range(len(starts))):
            t0 = starts[c]
            k = min(K, T - t0)
            sl = slice(t0, t0 + k)
            d_c, du_c, B_c, C_c, gy_c = delta[sl], du[sl], B[sl], C[sl], gy[sl]
            # Recompute this chunk's decays and states from its saved boundary state.
            dA = torch.mul(d_c.unsqueeze(-1), A, out=dA_buf[:k]).exp_()
            hb = hbuf[:k + 1]
            _chunk_states(hb, bounds[c], dA, du_c, B_c)
            H = hb[1:]                                               # h_t,     (k, B, E, N)
            # Adjoint recurrence, in place, newest step first.
            G = torch.mul(gy_c.unsqueeze(-1), C_c.unsqueeze(2), out=gbuf[:k])
            G[k - 1].add_(gcarry)
            gs, das = G.unbind(0), dA.unbind(0)
            for t in range(k - 2, -1, -1):
                gs[t].addcmul_(das[t + 1], gs[t + 1])
            gcarry = dA[0] * G[0]              # ∂L/∂(state entering this chunk), eq. for ∂L/∂h_0
            # Contractions over E or N as batched matmuls.
            _vecmat(B_c, G.transpose(-1, -2), g_du[sl])                  # Σ_n g B    (k, B, E)
            if need[3]:
                _vecmat(du_c, G, gB[sl])                                 # Σ_e du g   (k, B, N)
            if need[4]:
                _vecmat(gy_c, H, gC[sl])                                 # Σ_e gy h   (k, B, N)
            gP = dA.mul_(G).mul_(hb[:-1])                                # ∂L/∂P      (k, B, E, N)
            torch.sum(gP * A, -1, out=g_delta[sl])
            if need[2]:
                gA += (gP * d_c.unsqueeze(-1)).sum((0, 1))
        gh0 = gcarry if ctx.has_h0 else None
        return (g_du, g_delta, gA if need[2] else None, gB if need[3] else None,
                gC if need[4] else None, gh0, None)


def chunked_selective_scan(du: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           h0: Tensor | None, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Run the chunked kernel. Shapes as in :class:`_SelectiveScanFn`; ``chunk`` = K."""
    T, Bt, E = du.shape
    K = chunk or default_chunk(T, Bt, E, A.shape[1])
    return _SelectiveScanFn.apply(du, delta, A, B, C, h0, K)
