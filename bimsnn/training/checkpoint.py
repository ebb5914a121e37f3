"""Checkpoints: atomic writes, safe loads with one clear error, RNG capture, exact resume.

Every file is written to a temporary file in the *same* directory, flushed, fsync'ed and
then ``os.replace``'d over the target, so a crash (or a ``DataError`` mid-epoch) leaves
either the old file or the new one, never a torn one.

Checkpoints hold only tensors and Python primitives (dict/list/tuple/int/float/str/bool/
None), so they load with ``torch.load(path, weights_only=True)``. No numpy RNG state is
stored: training randomness comes from torch's RNG (saved here) and from the per-epoch
shuffling seed ``seed + epoch`` (a function of two stored integers).

Every load failure becomes one :class:`CheckpointError` naming the file and the kind of
problem (missing, empty, truncated, not a checkpoint, non-finite weights, another model's
weights with the differing parameters listed). None of them suggests
``weights_only=False``: a file that a safe load refuses is not run.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir → fsync → replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # persist the rename itself (POSIX); best effort elsewhere
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _json_safe(obj: Any) -> Any:
    """Tensors/numpy → lists, non-finite floats → None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # torch.Tensor, np.ndarray, np.generic
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented strict JSON, atomically (NaN/inf become null)."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


_ZIP_MAGIC = b"PK\x03\x04"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    finite: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling).

    Args:
        finite: also refuse non-finite floats in ``ck["model"]`` (a diverged run).
    Raises:
        CheckpointError: missing, empty, truncated or not a checkpoint; not a dict;
            non-finite weights (``finite=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "empty file, not a checkpoint")
    with open(path, "rb") as f:
        zipped = f.read(4) == _ZIP_MAGIC
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        kind = ("holds Python objects that a safe (weights-only) load refuses to run: not a "
                "bimsnn checkpoint" if zipped else "not a PyTorch checkpoint")
        raise CheckpointError(path, kind) from None
    except Exception as e:  # torch raises many types here; none of their texts is shown
        kind = (f"truncated or corrupt checkpoint ({size} bytes; {type(e).__name__})" if zipped
                else "not a PyTorch checkpoint")
        raise CheckpointError(path, kind) from None
    if not isinstance(ck, dict):
        raise CheckpointError(path, f"not a bimsnn checkpoint (holds a {type(ck).__name__})")
    if finite and isinstance(ck.get("model"), dict):
        check_finite(ck["model"], path)
    return ck


def check_finite(state: dict, path: str | Path) -> None:
    """Raise :class:`CheckpointError` listing the tensors of ``state`` with NaN/inf values."""
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor)
           and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(path, f"non-finite weights (NaN/inf) in {', '.join(bad[:5])}"
                              f"{more}: the run diverged; use an earlier checkpoint")


def load_state_checked(module: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``module.load_state_dict(state)``, or a :class:`CheckpointError` that lists what
    differs (missing/unexpected parameters, shape mismatches) instead of torch's traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and isinstance(state[k], torch.Tensor)
              and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = ([f"shapes differ: {'; '.join(shapes[:6])}"] if shapes else []) + \
                ([f"missing in the file: {', '.join(missing[:6])}"] if missing else []) + \
                ([f"not in the model: {', '.join(extra[:6])}"] if extra else [])
        raise CheckpointError(path, "weights of a different model architecture (a model "
                              "flag changed since it was written?): " + " | ".join(parts))
    module.load_state_dict(state)


def rng_state() -> dict:
    """torch CPU (and every CUDA device's) RNG state as uint8 tensors."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def cpu_state_dict(module_or_obj: Any) -> dict:
    """A detached CPU copy of ``.state_dict()`` (safe to keep while training goes on)."""
    def copy(v):
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)
        if isinstance(v, dict):
            return {k: copy(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(copy(x) for x in v)
        return v
    return copy(module_or_obj.state_dict())


def training_state(model, optimizer, scheduler, pruner, progress: dict, history: list,
                   config: dict) -> dict:
    """Everything a resumed run needs, as tensors and primitives (``weights_only`` safe).

    ``scheduler``/``pruner`` may be None; a pruner without ``state_dict`` is stored as None.
    """
    return {"format": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "pruner": pruner.state_dict() if hasattr(pruner, "state_dict") else None,
            "rng": rng_state(), "progress": dict(progress), "history": list(history),
            "config": config}


def restore_training_state(ck: dict, model, optimizer, scheduler=None, pruner=None,
                           path: str | Path = "checkpoint") -> None:
    """Load model, optimizer, scheduler, pruner and RNG states from :func:`training_state`.

    Raises:
        CheckpointError: not a training checkpoint, or another architecture's weights.
    """
    missing = [k for k in ("model", "optimizer", "rng", "progress", "history") if k not in ck]
    if missing:
        raise CheckpointError(path, f"not a training checkpoint (no {', '.join(missing)}); "
                              "--resume needs the run's ckpt.pt")
    check_finite(ck["model"], path)
    load_state_checked(model, ck["model"], path)
    try:
        optimizer.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(path, f"optimizer state does not fit this run ({e})") from None
    for obj, key in ((scheduler, "scheduler"), (pruner, "pruner")):
        if obj is not None and ck.get(key) is not None:
            obj.load_state_dict(ck[key])
    set_rng_state(ck["rng"])
