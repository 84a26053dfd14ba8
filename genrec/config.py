"""Typed stage configs <-> CLI flags and YAML files.

Every stage has one dataclass config. This module turns its fields (recursively, with
dotted names for nested dataclasses) into argparse flags, and reads/writes YAML, so the
CLI stays a thin layer over typed functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def _field_help(cls: type, name: str) -> str:
    """The comment after a field (``x: int = 3  # what it is``) becomes its help text."""
    import inspect

    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return ""
    lines = [line.strip() for line in src.splitlines()]
    for i, stripped in enumerate(lines):
        if stripped.startswith(f"{name}:") and "#" in stripped:
            parts = [stripped.split("#", 1)[1].strip()]
            for more in lines[i + 1:]:   # a comment may continue on the following comment-only lines
                if not more.startswith("#"):
                    break
                parts.append(more.lstrip("#").strip())
            return " ".join(parts)
    return ""


def _scalar_type(tp: Any) -> tuple[Any, bool]:
    """Return (python type to parse with, is_optional) for a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, _ = _scalar_type(args[0]) if len(args) == 1 else (str, False)
        return inner, True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parser_for(tp: Any):
    inner, optional = _scalar_type(tp)
    origin = typing.get_origin(inner)
    if inner is bool:
        base = _parse_bool
    elif inner in (int, float, str):
        base = inner
    elif inner is Path:
        base = Path
    elif origin in (list, tuple) or inner in (list, tuple):
        args = typing.get_args(inner)
        elem = args[0] if args else str
        elem = elem if elem in (int, float, str) else str

        def base(text: str, _elem=elem):
            if text.strip().startswith("["):   # the YAML flow list a config file would hold: '[genrec, sasrec]'
                try:
                    items = yaml.safe_load(text)
                except yaml.YAMLError:
                    items = None
                if not isinstance(items, list):
                    raise argparse.ArgumentTypeError(f"expected a list like 'a,b' or '[a, b]', got {text!r}")
                return [_elem(x) for x in items]
            return [_elem(x) for x in text.split(",") if x.strip()] if text else []

    elif origin is dict or inner is dict:
        def base(text: str):
            out = yaml.safe_load(text)
            if not isinstance(out, dict):
                raise argparse.ArgumentTypeError(f"expected a mapping like '{{a: 1}}', got {text!r}")
            return out
    else:
        base = str
    if not optional:
        return base

    def parse(text: str):
        return None if text.lower() in ("none", "null") else base(text)

    return parse


def add_config_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--prefix.field`` flag per (nested) dataclass field; defaults stay in the dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            add_config_args(parser, tp, prefix=f"{name}.")
            continue
        inner, _ = _scalar_type(tp)
        if any(dataclasses.is_dataclass(a) for a in typing.get_args(inner)):
            continue  # lists of nested configs are set in the --config YAML file only
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=f"cfg:{name}", type=_parser_for(tp), default=argparse.SUPPRESS,
            metavar=type(default).__name__.upper() if default is not None else "VALUE",
            help=f"{_field_help(cls, f.name)} (default: {default!r})".replace("%", "%%"),   # argparse formats %
        )


def config_from_args(cls: type, args: argparse.Namespace, yaml_path: str | Path | None = None,
                     base: dict[str, Any] | None = None):
    """Build ``cls`` from ``base`` values, then an optional YAML file, then the CLI overrides on top."""
    import copy

    values: dict[str, Any] = copy.deepcopy(base or {})
    if yaml_path:
        _merge(values, load_yaml(yaml_path))
    for key, val in vars(args).items():
        if key.startswith("cfg:"):
            _set_dotted(values, key[4:], val)
    return from_dict(cls, values)


def _merge(into: dict, values: dict) -> None:
    """Nested update: mappings are merged key by key, anything else replaces."""
    for key, val in values.items():
        if isinstance(val, dict) and isinstance(into.get(key), dict):
            _merge(into[key], val)
        else:
            into[key] = val


def _set_dotted(d: dict, dotted: str, val: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = val


def from_dict(cls: type, values: dict[str, Any] | None):
    """Recursively construct a dataclass; unknown keys are an error that lists the valid ones."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}")
    kwargs = {}
    for name, val in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(val, dict):
            val = from_dict(tp, val)
        elif isinstance(val, list):
            inner, _ = _scalar_type(tp)
            elems = [a for a in typing.get_args(inner) if dataclasses.is_dataclass(a)]
            if elems:
                val = tuple(from_dict(elems[0], v) if isinstance(v, dict) else v for v in val)
            elif typing.get_origin(inner) is tuple:
                val = tuple(val)
        kwargs[name] = val
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return _plain(out)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields at the top level")
    return data
