"""Models by name: ``build(spec)``, and the one ``model.pt`` format (``save`` / ``load``).

A *spec* is ``{"name": str, "kwargs": {...}}`` with primitives only (str, int, float, bool,
None, lists/tuples/dicts of them), so it travels in JSON reports and in checkpoints read
with ``torch.load(..., weights_only=True)``. ``build(spec)`` calls the factory registered
under ``spec["name"]`` with ``**spec["kwargs"]``; the model is freshly initialised from
torch's global RNG (seed it first for a reproducible model).

model.pt, format 2 (what :func:`save` writes)::

    {"format": 2, "model": state_dict (CPU tensors), "spec": spec,
     "preprocessing": dict | None (what turns raw input into the model's input), **extra}

:func:`load` also reads the format-1 files of the recipes before issue 11. Their four
``spec`` shapes are mapped to registry specs (:func:`spec_from_v1`)::

    recipes/_common.save_model          {"name", "kwargs"}: already a registry spec
    keyword_spotting, speech_recognition MambaConfig keyword arguments → "spiking_mamba"
    language_modeling                   {"model": "mamba" | "lstm", "vocab_size", ...}
                                        → "spiking_mamba_lm" | "lstm_lm"

and their input description (``features``; ``vocab`` + ``level``) becomes ``preprocessing``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bimsnn.training.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    check_finite,
    load_checkpoint,
    load_state_checked,
)

FORMAT = 2
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_PRIMITIVES = (str, int, float, bool, type(None))


def register(name: str):
    """Decorator: make a model class (or factory function) buildable as ``name``.

    The factory is called as ``factory(**kwargs)`` with the spec's primitives::

        @register("my_net")
        class MyNet(nn.Module):
            def __init__(self, n_inputs: int, n_classes: int): ...

        model = build(spec("my_net", n_inputs=4, n_classes=2))
    """
    def deco(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} is already registered "
                             f"({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = factory
        return factory
    return deco


def names() -> tuple[str, ...]:
    """Registered model names, sorted."""
    return tuple(sorted(_REGISTRY))


def _check_primitive(obj: Any, where: str, tensors: bool = False) -> None:
    """Raise TypeError unless ``obj`` is made of primitives (and tensors if allowed).

    Exact types: a numpy float is a ``float`` subclass but needs numpy to unpickle, so
    ``torch.load(weights_only=True)`` would refuse the file later, when the run is gone.
    """
    if type(obj) in _PRIMITIVES or (tensors and isinstance(obj, torch.Tensor)):
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_primitive(v, f"{where}[{i}]", tensors)
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            _check_primitive(v, f"{where}[{k!r}]", tensors)
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not a primitive (str, int, float, bool, "
                    f"None, list, tuple, dict{', Tensor' if tensors else ''}); convert it, "
                    "e.g. float(x) or x.tolist()")


def spec(name: str, **kwargs) -> dict:
    """``{"name": name, "kwargs": kwargs}`` after checking the name and the primitives.

    >>> spec("lstm", n_inputs=3, n_classes=2, hidden=8)
    {'name': 'lstm', 'kwargs': {'n_inputs': 3, 'n_classes': 2, 'hidden': 8}}
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
    _check_primitive(kwargs, f"spec({name!r}) kwargs")
    return {"name": name, "kwargs": dict(kwargs)}


def build(model_spec: dict) -> nn.Module:
    """The freshly initialised model that ``model_spec`` describes (RNG: torch's global)."""
    if not isinstance(model_spec, dict) or "name" not in model_spec:
        raise ValueError(f"a model spec is {{'name': str, 'kwargs': dict}}, got {model_spec!r}")
    name = model_spec["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name](**dict(model_spec.get("kwargs") or {}))


def _build_quietly(model_spec: dict) -> nn.Module:
    """:func:`build` without advancing the caller's RNG (its init is overwritten anyway)."""
    with torch.random.fork_rng(devices=[]):
        return build(model_spec)


# ---------------------------------------------------------------- model.pt
def save(path: str | Path, model: nn.Module, model_spec: dict, *,
         preprocessing: dict | None = None, **extra) -> Path:
    """Write a deployable model.pt (format 2) atomically; returns its path.

    Args:
        model: the trained model; ``build(model_spec)`` must give the same architecture
            (checked here, on a throw-away build: a mismatch found at load time would
            come too late).
        model_spec: :func:`spec` output. preprocessing: how raw input becomes the model's
            input (sampling rate, encoder, thresholds, vocabulary...), primitives only.
        extra: more primitives or tensors (threshold, classes, rule, train_config...).
    """
    _check_primitive(model_spec, "spec")
    _check_primitive(preprocessing, "preprocessing", tensors=True)
    _check_primitive(extra, "extra", tensors=True)
    reserved = {"format", "model", "spec", "preprocessing"} & set(extra)
    if reserved:
        raise ValueError(f"save: {sorted(reserved)} are model.pt's own keys")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ref = _build_quietly(model_spec).state_dict()
    bad = sorted(k for k in set(ref) | set(state)
                 if k not in ref or k not in state or ref[k].shape != state[k].shape)
    if bad:
        raise ValueError(f"save: the model does not match its spec {model_spec['name']!r} "
                         f"(differing or missing tensors: {bad[:5]})")
    return atomic_torch_save({"format": FORMAT, "model": state, "spec": model_spec,
                              "preprocessing": preprocessing, **extra}, path)


def load(path: str | Path, map_location: str | torch.device = "cpu"
         ) -> tuple[nn.Module, dict]:
    """(model in eval mode, checkpoint dict) from a model.pt of format 2 or 1.

    The returned dict has the registry ``spec`` and ``preprocessing`` in every format
    (format-1 files keep their own keys too). Reads with ``weights_only=True``.

    Raises:
        CheckpointError (a ValueError) naming the file: not a checkpoint, no ``spec``
        (e.g. a training ckpt.pt), an unknown format, spec shape or model name, weights
        that do not fit the spec (the differing tensors listed), non-finite weights.
    """
    ck = load_checkpoint(path, map_location=map_location)
    if "spec" not in ck or "model" not in ck:
        raise CheckpointError(path, "not a model file (no 'spec'/'model'); pass the run's "
                              "model.pt, not ckpt.pt/best.pt")
    fmt = ck.get("format")
    if fmt not in (1, FORMAT):
        raise CheckpointError(path, f"unknown model.pt format {fmt!r} (this bimsnn reads 1, 2)")
    try:
        model_spec = ck["spec"] if fmt == FORMAT else spec_from_v1(ck["spec"])
        model = _build_quietly(model_spec)
    except (ValueError, TypeError) as e:
        raise CheckpointError(path, f"cannot rebuild its model ({e})") from None
    check_finite(ck["model"], path)
    load_state_checked(model, ck["model"], path)
    out = {**ck, "spec": model_spec}
    if fmt == 1:
        out.setdefault("preprocessing", _preprocessing_v1(ck))
    return model.to(map_location).eval(), out


def spec_from_v1(old: dict) -> dict:
    """A format-1 recipe spec (module docstring) → registry spec."""
    from bimsnn.ssm.mamba import MambaConfig

    if not isinstance(old, dict):
        raise ValueError(f"format-1 spec must be a dict, got {type(old).__name__}")
    if "name" in old:                                      # recipes/_common.model_spec
        return {"name": old["name"], "kwargs": dict(old.get("kwargs") or {})}
    if "vocab_size" in old and old.get("model") in ("mamba", "lstm"):  # language_modeling
        common = dict(vocab_size=old["vocab_size"], d_embed=old["d_embed"])
        if old["model"] == "lstm":
            return spec("lstm_lm", **common, hidden=old["d_model"], num_layers=old["n_layers"])
        return spec("spiking_mamba_lm", **common, d_model=old["d_model"],
                    n_layers=old["n_layers"], d_state=old["d_state"],
                    beta=old.get("beta", 0.9))
    cfg_keys = {f.name for f in fields(MambaConfig) if f.init}
    if {"d_model", "n_inputs", "n_classes"} <= set(old) <= cfg_keys:  # KWS, ASR
        return spec("spiking_mamba", **old)
    raise ValueError(f"unrecognised format-1 spec with keys {sorted(old)}")


def _preprocessing_v1(ck: dict) -> dict | None:
    if "features" in ck:                                   # keyword_spotting, ASR
        return dict(ck["features"])
    if "vocab" in ck:                                      # language_modeling
        return {"vocab": ck["vocab"], "level": ck.get("level")}
    return None
