"""Multi-process data parallelism for :mod:`bimsnn.training`, without ``DistributedDataParallel``.

Why not DDP: the online rules attach hooks to the *unwrapped* model and write ``.grad``
themselves, step by step. So training keeps the plain model, and data parallelism is:

1. every rank starts from rank 0's parameters and buffers (:func:`broadcast_module`);
2. each rank fills ``.grad`` on its own shard (BPTT or any rule);
3. :func:`allreduce_grads` averages every ``.grad`` over ranks before ``optimizer.step``.

:func:`train_loader` shards (and shuffles) with ``DistributedSampler`` also in a single
process, so there is one code path, and it can start mid-epoch for an exact resume.

Identical parameters + identical averaged gradients + identical optimizer ⇒ ranks stay
identical. Launch with ``torchrun --nproc_per_node=N script.py``: gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class DistInfo(NamedTuple):
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank/world from an initialized process group, else from torchrun's env vars."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)))
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    int(env.get("LOCAL_RANK", 0)))


def setup(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Pick the device and, under torchrun (WORLD_SIZE > 1), init the process group.

    Args:
        device: "cpu", "cuda" or "auto" (cuda when available).
    Returns:
        (DistInfo, torch.device); on GPU each rank uses ``cuda:LOCAL_RANK``.
    """
    info = dist_info()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    dev = torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        info = dist_info()
    return info, dev


def _on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (a no-op outside torchrun)."""
    if _on():
        dist.barrier()


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0, params: bool = True) -> None:
    """Copy ``src``'s parameters (unless ``params=False``) and buffers into every rank's
    ``module``, in place."""
    if not _on():
        return
    for t in (list(module.parameters()) if params else []) + list(module.buffers()):
        dist.broadcast(t.data, src)


@torch.no_grad()
def allreduce_grads(params: list[torch.Tensor]) -> None:
    """Average ``.grad`` over ranks, in one flat all-reduce.

    A parameter that has a ``.grad`` on some rank but not on this one contributes zeros
    here; one with no ``.grad`` on any rank keeps ``None`` (so the optimizer skips it,
    exactly as it would in a single process).
    """
    if not _on() or not params:
        return
    world = dist.get_world_size()
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in live])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in live:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def allreduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a short list of floats over ranks (identity in a single process)."""
    if not _on():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _on():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _SkipSampler(Sampler):
    """``base`` without its first ``n`` indices (mid-epoch resume)."""

    def __init__(self, base: Sampler, n: int):
        self.base, self.n = base, n

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.base), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.n)


def train_loader(ds: Dataset, batch_size: int, seed: int, epoch: int, skip_batches: int,
                 collate_fn: Callable, num_workers: int = 0) -> DataLoader:
    """This rank's shuffled shard of ``ds`` for ``epoch``, minus its first ``skip_batches``.

    The order is a function of (seed, epoch, rank, world size) only: ``DistributedSampler``
    seeds its permutation with ``seed + epoch`` and pads the dataset to a multiple of the
    world size (every rank gets the same number of batches, hence of all-reduces). The
    DataLoader's generator (worker seeds) is also reseeded from ``seed + epoch``, so data
    loading never draws from, or shifts, the global torch RNG.
    """
    info = dist_info()
    sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_size=batch_size,
                      sampler=_SkipSampler(sampler, skip_batches * batch_size),
                      num_workers=num_workers, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(seed + epoch))


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True if ``flag`` is true on any rank (the flag itself in a single process)."""
    if not _on():
        return bool(flag)
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
