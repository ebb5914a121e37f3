"""Selective scan (paper eq. 1-2; Mamba's S6 recurrence).

Symbols: T time, B batch, E channels (expanded width), N state size.

    h_t = exp(Δ_t ⊙ A) ⊙ h_{t-1} + (Δ_t ⊙ u_t) ⊗ B_t        # (B, E, N)
    y_t = h_t · C_t + D ⊙ u_t                                 # (B, E)

Public tensors are time-major, as in snnTorch:
    u, delta: (T, B, E)   A: (E, N) (negative)   B, C: (T, B, N)   D: (E,) or None
    h0: (B, E, N) or None (zeros)

Three implementations share this contract::

    selective_scan      fast path (training): chunked kernel with a hand-written adjoint
                        (``chunked_scan.py``), O(T/K · B·E·N) saved state
    selective_scan_ref  plain per-step loop under autograd (the reference twin)
    selective_step      one streaming step
"""

from __future__ import annotations

import torch
from torch import Tensor

from bimsnn.ssm.chunked_scan import chunked_selective_scan


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
           h0: Tensor | None) -> None:
    if u.dim() != 3:
        raise ValueError(f"u: expected shape (T, B, E), got {tuple(u.shape)}")
    T, Bt, E = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta: expected shape {(T, Bt, E)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"A: expected shape ({E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (T, Bt, N):
            raise ValueError(f"{name}: expected shape {(T, Bt, N)}, got {tuple(t.shape)}")
    if D is not None and D.shape != (E,):
        raise ValueError(f"D: expected shape ({E},), got {tuple(D.shape)}")
    if h0 is not None and h0.shape != (Bt, E, N):
        raise ValueError(f"h0: expected shape {(Bt, E, N)}, got {tuple(h0.shape)}")


def selective_step(u_t: Tensor, delta_t: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor,
                   D: Tensor | None = None, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One streaming step of eq. 1-2.

    Args:
        u_t, delta_t: (B, E). A: (E, N). B_t, C_t: (B, N). D: (E,) or None. h: (B, E, N) or None.
    Returns:
        y_t: (B, E), h: (B, E, N)
    """
    dA = torch.exp(delta_t.unsqueeze(-1) * A)                       # (B, E, N)
    dBu = (delta_t * u_t).unsqueeze(-1) * B_t.unsqueeze(1)          # (B, E, N)
    h = dBu if h is None else dA * h + dBu
    y = (h * C_t.unsqueeze(1)).sum(-1)                              # (B, E)
    if D is not None:
        y = y + D * u_t
    return y, h


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, h0: Tensor | None = None,
                       return_last_state: bool = False):
    """Reference loop: ``selective_step`` over time, iterating with ``unbind``.

    Returns y: (T, B, E), and h_T: (B, E, N) if ``return_last_state``.
    """
    _check(u, delta, A, B, C, D, h0)
    h = h0
    ys = []
    for u_t, d_t, b_t, c_t in zip(u.unbind(0), delta.unbind(0), B.unbind(0), C.unbind(0)):
        y_t, h = selective_step(u_t, d_t, A, b_t, c_t, D, h)
        ys.append(y_t)
    y = torch.stack(ys, 0)
    return (y, h) if return_last_state else y


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, h0: Tensor | None = None,
                   return_last_state: bool = False):
    """Fast selective scan (eq. 1-2); same contract as :func:`selective_scan_ref`.

    Runs the chunked kernel of :mod:`bimsnn.ssm.chunked_scan`: the time loop is hidden from
    autograd behind a hand-written adjoint, and only one state per chunk is kept for
    backward. Gradients flow to u, delta, A, B, C, D and h0. Numerically stable for any
    Δ ≥ 0 with A < 0 (only exp(Δ A) ≤ 1 is formed). Not twice differentiable.

    Args:
        u, delta: (T, B, E). A: (E, N). B, C: (T, B, N). D: (E,) or None.
        h0: (B, E, N) or None (zeros).
    Returns:
        y: (T, B, E), and h_T: (B, E, N) if ``return_last_state``.

    Example:
        >>> T, Bt, E, N = 5, 2, 3, 4
        >>> u, delta, A = torch.randn(T, Bt, E), torch.rand(T, Bt, E), -torch.rand(E, N)
        >>> B, C = torch.randn(T, Bt, N), torch.randn(T, Bt, N)
        >>> y, h = selective_scan(u, delta, A, B, C, return_last_state=True)
        >>> tuple(y.shape), tuple(h.shape)
        ((5, 2, 3), (2, 3, 4))
    """
    _check(u, delta, A, B, C, D, h0)
    dtype = u.dtype
    for t in (delta, A, B, C, D, h0):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    # Half precision would lose the recurrence; compute in float32 and cast back.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def prep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(work).contiguous()

    u_, delta_, A_, B_, C_, h0_ = map(prep, (u, delta, A, B, C, h0))
    # Δ ⊙ u and D ⊙ u are O(T·B·E): left to autograd, which also routes their gradients.
    y, h = chunked_selective_scan(delta_ * u_, delta_, A_, B_, C_, h0_)
    if D is not None:
        y = y + D.to(work) * u_
    y, h = y.to(dtype), h.to(dtype)
    return (y, h) if return_last_state else y
