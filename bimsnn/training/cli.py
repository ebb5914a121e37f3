"""``--key value`` command-line flags parsed into dataclasses (argparse built from fields).

Recipes keep their defaults at the top as dataclasses and call::

    run, train_cfg, model_cfg = parse_config(MyRunConfig(), TRAIN, MambaConfig(d_model=64))

Every recipe shares one flag vocabulary: :class:`RunConfig` (``--data-dir``,
``--eval-only``, ``--checkpoint``, ``--threads``, ``--debug``, ``--strict``; recipes subclass
it), :class:`~bimsnn.training.config.TrainConfig` (``--rule``, ``--epochs``, ``--resume``, ...)
and ``--out`` (the run folder, ``TrainConfig.out_dir``). :func:`main_guard` runs a recipe's
``main`` so that bad input ends in one line, ``error: <file>: <problem>``, exit status 2.

Types come from the annotations: ``int``/``float``/``str`` and unions of them (``int |
str`` tries int first), ``X | None`` (pass ``none``), ``bool`` (``--flag`` /
``--no-flag``), ``list[X]`` / ``tuple[X, ...]`` (``--key 1 2 3``). Choices come from
``field(metadata={"choices": (...)})`` and help text from ``metadata={"help": "..."}``.
Fields of other types (callables, nested objects) are not exposed. Both ``--snake_case``
and ``--kebab-case`` spellings work. No ``exec``/``eval``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from bimsnn.training.config import flag


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


class _OptionalListAction(argparse.Action):
    """``--flag none`` → None (turns off a list default); "none" among values is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if None in values and len(values) > 1:
            parser.error(f"argument {option_string}: 'none' cannot be combined with values")
        value = None if None in values else values
        if value is not None and self.const is tuple:
            value = tuple(value)
        setattr(namespace, self.dest, value)


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
            kw.update(nargs="+", type=_convert((get_args(args[0])[0],), optional))
            if optional:  # a lone "none" turns the default off
                kw.update(action=_OptionalListAction, const=get_origin(args[0]))
            elif get_origin(args[0]) is tuple:
                kw["action"] = _TupleAction
        elif args and all(a in (int, float, str) for a in args):
            kw["type"] = _convert(args, optional)
            if f.metadata.get("choices"):
                kw["choices"] = tuple(f.metadata["choices"]) + ((None,) if optional else ())
        else:
            continue
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        parser.add_argument(*names, **kw)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: ...``) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


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
    parser = _Parser(description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if any("out_dir" in {f.name for f in fields(c)} for c in configs):
        parser.add_argument("--out", "--out-dir", "--out_dir", dest="out_dir",
                            default=argparse.SUPPRESS, type=_convert((str,), True),
                            help="run folder (default: runs/<recipe> under the repo root)")
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


# ---------------------------------------------------------------- the recipes' shared flags
@dataclass
class RunConfig:
    """Flags every recipe takes besides TrainConfig's; recipes subclass it."""

    data_dir: str | None = flag(None, "dataset root (default: the recipe's generated demo)")
    eval_only: bool = flag(False, "score --checkpoint on every item of --data-dir; no training")
    checkpoint: str | None = flag(None, "--eval-only model (default: <out>/model.pt of a run)")
    threads: int = flag(1, "torch intra-op threads (small per-step ops run fastest on 1)")
    strict: bool = flag(False, "every file a loader would skip (with a warning) is an error")
    debug: bool = flag(False, "show the full traceback of an error")


def peek_flag(argv: list[str] | None, name: str, default: str) -> str:
    """The value given to ``--name`` (or ``--name=value``) in ``argv`` (``sys.argv[1:]``
    when None), before full parsing: recipes pick per-dataset defaults with it, which the
    other flags then override. ``default`` when absent.

    >>> peek_flag(["--epochs", "3", "--dataset", "bonn"], "dataset", "demo")
    'bonn'
    """
    args = sys.argv[1:] if argv is None else argv
    names = {f"--{name}", f"--{name.replace('_', '-')}"}
    for i, a in enumerate(args):
        key, eq, val = a.partition("=")
        if key in names:
            return val if eq else (args[i + 1] if i + 1 < len(args) else default)
    return default


class RunError(Exception):
    """A problem with a recipe's run itself (output folder, flags): one line, exit 2."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


def check_out_dir(path: str | Path, min_free_mb: float = 64.0) -> Path:
    """Make sure the run folder can be created and written, with ``min_free_mb`` free,
    *before* any data loading or training (so a bad ``--out`` costs nothing).

    Raises:
        RunError: naming the folder and the problem.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(path, "output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(path, f"cannot create the output folder ({e.strerror or e})") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RunError(path, f"output folder is not writable ({e.strerror or e})") from None
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise RunError(path, f"only {free_mb:.0f} MiB free; checkpoints need at least "
                       f"{min_free_mb:.0f} MiB")
    return path


def main_guard(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> Any:
    """Run a recipe's ``main(argv)``; bad input becomes one line on stderr and exit 2.

    ``DataError`` (a loader), ``CheckpointError``, ``RunError`` print ``error: <file>:
    <problem>``; an interrupt (SIGINT/SIGTERM, checkpointed) prints where to resume and
    exits 130. ``--debug`` re-raises, with the traceback.
    """
    from bimsnn.data import DataError
    from bimsnn.training.checkpoint import CheckpointError
    from bimsnn.training.loop import TrainingInterrupted

    args = sys.argv[1:] if argv is None else argv
    try:
        return main(argv)
    except (DataError, CheckpointError, RunError) as e:
        if "--debug" in args:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(130) from None
