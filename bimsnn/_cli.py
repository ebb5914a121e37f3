"""``--key value`` command-line flags parsed into dataclasses (argparse built from fields).

Recipes keep their defaults at the top as dataclasses and call::

    train_cfg, model_cfg = parse_config(TrainConfig, MambaConfig(d_model=64, ...))

Types come from the annotations: ``int``/``float``/``str`` and unions of them (``int |
str`` tries int first), ``X | None`` (pass ``none``), ``bool`` (``--flag`` /
``--no-flag``), ``list[X]`` / ``tuple[X, ...]`` (``--key 1 2 3``). Choices come from
``field(metadata={"choices": (...)})`` and help text from ``metadata={"help": "..."}``.
Fields of other types (callables, nested objects) are not exposed. Both ``--snake_case``
and ``--kebab-case`` spellings work. No ``exec``/``eval``.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from dataclasses import MISSING, fields, replace
from typing import Any, Union, get_args, get_origin, get_type_hints


def _convert(types_: tuple, optional: bool) -> Callable[[str], Any]:
    def conv(s: str):
        if optional and s.lower() == "none":
            return None
        for tp in types_:
            try:
                return tp(s)
            except ValueError:
                pass
        raise argparse.ArgumentTypeError(
            f"{s!r} is not {' or '.join(t.__name__ for t in types_)}")
    conv.__name__ = "/".join(t.__name__ for t in types_)  # shown in argparse errors
    return conv


class _TupleAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(values))


def add_dataclass_args(parser: argparse.ArgumentParser, config) -> None:
    """Add one flag per init field of ``config`` (a dataclass type or instance).

    A field name already on ``parser`` is shared: that one flag sets every config that
    has the field. Only flags actually given override defaults (``argparse.SUPPRESS``).
    """
    is_cls = isinstance(config, type)
    cls = config if is_cls else type(config)
    hints = get_type_hints(cls)
    known = {a.dest for a in parser._actions}
    for f in fields(cls):
        if not f.init or f.name in known:
            continue
        tp = hints[f.name]
        args = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
        optional = type(None) in args
        args = tuple(a for a in args if a is not type(None))
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if not is_cls:
            default = getattr(config, f.name)
        elif f.default is not MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not MISSING else "required"
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS,
                    "help": f"{f.metadata.get('help', '')} (default: {default})".strip(),
                    "required": is_cls and not has_default}
        if args == (bool,):
            kw["action"] = argparse.BooleanOptionalAction
        elif len(args) == 1 and get_origin(args[0]) in (list, tuple):
            kw.update(nargs="+", type=_convert((get_args(args[0])[0],), False))
            if get_origin(args[0]) is tuple:
                kw["action"] = _TupleAction
        elif args and all(a in (int, float, str) for a in args):
            kw["type"] = _convert(args, optional)
            if f.metadata.get("choices"):
                kw["choices"] = tuple(f.metadata["choices"]) + ((None,) if optional else ())
        else:
            continue
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        parser.add_argument(*names, **kw)


def parse_config(*configs, argv: list[str] | None = None, description: str | None = None):
    """Parse flags into one or more dataclasses.

    Args:
        configs: dataclass types (defaults from the class; fields without a default become
            required flags) or instances (their values are the defaults; overrides go
            through ``dataclasses.replace``, which re-runs ``__post_init__`` — note that a
            derived field already resolved in the instance is passed on as it is).
        argv: the flags (``sys.argv[1:]`` when None).
    Returns:
        One instance, or a tuple in the order given. Invalid values exit via
        ``parser.error`` with the dataclass's own message.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Cfg:
        ...     lr: float = 0.1
        ...     dims: tuple[int, ...] = (8,)
        >>> parse_config(Cfg, argv=["--lr", "0.5", "--dims", "4", "2"])
        Cfg(lr=0.5, dims=(4, 2))
    """
    parser = argparse.ArgumentParser(description=description)
    for c in configs:
        add_dataclass_args(parser, c)
    given = vars(parser.parse_args(argv))
    out = []
    for c in configs:
        names = {f.name for f in fields(c) if f.init}
        kw = {k: v for k, v in given.items() if k in names}
        try:
            out.append(c(**kw) if isinstance(c, type) else replace(c, **kw))
        except (TypeError, ValueError) as e:
            parser.error(str(e))
    return out[0] if len(out) == 1 else tuple(out)
