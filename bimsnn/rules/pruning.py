"""Adaptive stochastic pruning (paper eq. 9-10).

Symbols: w a weight entry, θ(t) pruning threshold (weight units), β sigmoid slope
(1/weight units), γ threshold gain, ρ target sparsity, s(t) current sparsity (fraction
of masked entries), m the {0, 1} mask.

Eq. 9 as printed, p = ``σ(β(|w| − θ))``, would prune *large* weights. We prune *small* ones::

    p_prune(w) = σ(β(θ(t) − |w|))          (eq. 9, sign flipped: |w| ≪ θ → p ≈ 1)
    dθ/dt      = γ (ρ − s(t))              (eq. 10; one Euler step, dt, per step())

Each :meth:`AdaptivePruning.step` (1) stores the live values of unmasked weights in a
latent copy, (2) moves θ by γ·dt·(ρ − s), (3) resamples every mask entry as
m ~ Bernoulli(1 − p_prune(w_latent)), (4) writes w = m ⊙ w_latent. So a pruned weight is 0
in the model but keeps its magnitude for eq. 9, and comes back with that value when θ
falls. (Zeroing it for good would make s depend on θ's running maximum: θ would wind up
and s would oscillate.) Expected sparsity E[s] = mean ``σ(β(θ − |w|))`` is then a smooth,
increasing function of θ, and eq. 10 is an integral controller that settles at s ≈ ρ.
A gradient hook multiplies every gradient reaching the weight by the mask, so pruned
weights get no autograd gradient. Rules that write ``.grad`` directly (STDP's Ω) bypass
the hook, but step (4) restores such weights after the optimizer step.

Call ``pruner.step()`` after ``opt.step()`` (once per update). It works with any rule or
with plain BPTT. θ is kept per tensor (``per_tensor=True``: every tensor reaches ρ) or
shared (one θ, global sparsity, as in eq. 10). Choose β for the weights' scale: the
pruning edge is ~4/β wide in ``|w|``; β ≈ 20/std(w) is a reasonable start.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class AdaptivePruning:
    """Stochastic magnitude pruning toward ``target_sparsity`` (eq. 9-10).

    Args:
        model: the network; its ``nn.Linear`` weights are pruned unless ``params`` is given.
        target_sparsity: ρ ∈ [0, 1).
        beta: sigmoid slope β in 1/weight units.
        gamma: threshold gain γ (weight units per step at full sparsity error).
        theta0: initial θ.
        params: explicit tensors to prune (default: every ``nn.Linear.weight``).
        per_tensor: one θ per tensor (default) or one shared θ.
        dt: Euler step of eq. 10 per :meth:`step`.
        seed: seed of the mask sampler (a private ``torch.Generator``).

    Example:
        >>> net = nn.Sequential(nn.Linear(20, 20))
        >>> pruner = AdaptivePruning(net, target_sparsity=0.5, beta=200.0, gamma=0.02)
        >>> for _ in range(200):
        ...     s = pruner.step()
        >>> abs(s - 0.5) < 0.05
        True
        >>> pruner.remove()
    """

    def __init__(self, model: nn.Module, target_sparsity: float, beta: float = 100.0,
                 gamma: float = 0.01, theta0: float = 0.0, params: Iterable[Tensor] | None = None,
                 per_tensor: bool = True, dt: float = 1.0, seed: int = 0):
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must lie in [0, 1), got {target_sparsity}")
        if params is None:
            params = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        self.params = list(params)
        if not self.params:
            raise ValueError("AdaptivePruning: nothing to prune (no nn.Linear weights)")
        self.rho, self.beta, self.gamma, self.dt = float(target_sparsity), beta, gamma, dt
        self.per_tensor = per_tensor
        self.theta = [float(theta0)] * (len(self.params) if per_tensor else 1)
        self.masks = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        self.latent = [p.detach().clone() for p in self.params]
        dev = self.params[0].device
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        self._hooks = [p.register_hook(lambda g, i=i: g * self.masks[i].to(g.dtype))
                       for i, p in enumerate(self.params) if p.requires_grad]

    @property
    def sparsity(self) -> float:
        """Fraction of masked entries over all pruned tensors."""
        n = sum(m.numel() for m in self.masks)
        return sum(int((~m).sum()) for m in self.masks) / n

    def tensor_sparsity(self) -> list[float]:
        return [float((~m).float().mean()) for m in self.masks]

    def prune_prob(self, i: int) -> Tensor:
        """p_prune = ``σ(β(θ − |w|))`` for tensor i (eq. 9, small weights pruned)."""
        theta = self.theta[i if self.per_tensor else 0]
        return torch.sigmoid(self.beta * (theta - self.latent[i].abs()))

    @torch.no_grad()
    def step(self) -> float:
        """θ Euler step (eq. 10), resample masks (eq. 9), zero pruned weights; returns s."""
        for i, p in enumerate(self.params):
            self.latent[i] = torch.where(self.masks[i], p.detach(), self.latent[i])
        if self.per_tensor:
            for i, s in enumerate(self.tensor_sparsity()):
                self.theta[i] += self.gamma * self.dt * (self.rho - s)
        else:
            self.theta[0] += self.gamma * self.dt * (self.rho - self.sparsity)
        for i, p in enumerate(self.params):
            u = torch.rand(p.shape, generator=self.gen, device=p.device)
            self.masks[i] = u >= self.prune_prob(i)          # kept with prob 1 − p_prune
            p.copy_(self.latent[i] * self.masks[i])
        return self.sparsity

    def state_dict(self) -> dict:
        """θ, masks, latent weights and the sampler state (tensors and floats: safe for
        ``torch.load(..., weights_only=True)``), so a resumed run continues exactly."""
        return {"theta": list(self.theta), "masks": [m.clone() for m in self.masks],
                "latent": [x.clone() for x in self.latent], "gen": self.gen.get_state(),
                "rho": self.rho}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the pruned tensors must match in number and shape."""
        masks, latent = state["masks"], state["latent"]
        if len(masks) != len(self.params) or any(
                m.shape != p.shape for m, p in zip(masks, self.params)):
            raise ValueError("AdaptivePruning.load_state_dict: the saved masks do not match "
                             f"the {len(self.params)} pruned tensors")
        if len(state["theta"]) != len(self.theta):
            raise ValueError("AdaptivePruning.load_state_dict: per_tensor setting differs")
        self.theta = [float(t) for t in state["theta"]]
        self.masks = [m.to(p.device, torch.bool) for m, p in zip(masks, self.params)]
        self.latent = [x.to(p.device, p.dtype) for x, p in zip(latent, self.params)]
        self.gen.set_state(state["gen"])

    @torch.no_grad()
    def remove(self, restore: bool = False) -> None:
        """Detach the gradient hooks; weights stay pruned unless ``restore`` (latent values)."""
        if restore:
            for p, m, lat in zip(self.params, self.masks, self.latent):
                p.copy_(torch.where(m, p, lat))
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
