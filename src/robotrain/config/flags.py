"""A small bridge between config dataclasses and command-line flags (house rule 2).

Every field of a dataclass becomes a flag (`--batch-size` / `--batch_size`); fields of a
nested config become dotted flags (`--policy.dim_model 256`). Help text comes from the
string literal written under each field (the dataclass "docstring per field" style), so
`--help` is free. Values are converted from text with the field's type hint
(int, float, bool, str, tuple, Optional, dict as JSON or `a=b,c=d`) and a bad value raises
`ConfigError` naming the flag.

Precedence when resolving a config: dataclass defaults < preset < `--config FILE.json`
< flags. Example:

    robotrain train --dataset data/so101 --policy act --steps 1000 --policy.dim_model 256
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robotrain.errors import ConfigError

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


# --- field documentation ------------------------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """`{field: docstring}` from the string literals written under dataclass fields.

    Walks the MRO so inherited fields keep their documentation. Classes whose source is
    unavailable (e.g. built in a REPL) simply give no help text.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _field_help(cls: type, f: dataclasses.Field) -> str:
    return f.metadata.get("help") or field_docs(cls).get(f.name, "")


# --- type conversion ------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, accepts None) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def _parse_tuple_text(text: str) -> list[str]:
    """'240x320', '240,320', '(240, 320)', '[0.9, 0.95]' -> ['240', '320']."""
    body = text.strip().strip("()[]")
    if not body:
        return []
    sep = "x" if "x" in body and "," not in body else ","
    return [p.strip() for p in body.split(sep) if p.strip()]


def _parse_dict_text(text: str) -> Any:
    """'{"a": "b"}' (JSON) or the short form of a flag, 'a=b,c=d' -> a dict."""
    body = text.strip()
    if body.startswith("{"):
        return json.loads(body)
    pairs = [part.split("=", 1) for part in body.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError("expected KEY=VALUE[,KEY=VALUE...] or a JSON object")
    return {key.strip(): value.strip() for key, value in pairs}


def convert(value: Any, tp: Any, name: str) -> Any:
    """Convert `value` (flag text or JSON value) to type `tp`; ConfigError names `name`."""
    inner, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS and inner is not str):
        if optional:
            return None
        raise ConfigError(f"{name} may not be None")
    if isinstance(value, str) and optional and inner is str and value.strip().lower() in _NONE_WORDS:
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is Any:
            return value
        if inner is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
            raise ValueError("expected true/false")
        if inner is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if inner is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if inner in (Path,):
            return Path(value)
        if origin is typing.Literal:
            choices = typing.get_args(inner)
            if value not in choices:
                raise ValueError(f"expected one of {list(choices)}")
            return value
        if origin is tuple or inner is tuple:
            items = _parse_tuple_text(value) if isinstance(value, str) else list(value)
            args = typing.get_args(inner)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(convert(v, args[0], name) for v in items)
            if args and len(items) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(items)}")
            return tuple(convert(v, a, name) for v, a in zip(items, args)) if args else tuple(items)
        if origin is list or inner is list:
            items = _parse_tuple_text(value) if isinstance(value, str) else list(value)
            (arg,) = typing.get_args(inner) or (Any,)
            return [convert(v, arg, name) for v in items]
        if origin is dict or inner is dict:
            parsed = _parse_dict_text(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ValueError("expected a JSON object")
            return dict(parsed)
    except ConfigError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"invalid value {value!r} for {name}: {exc}") from None
    if dataclasses.is_dataclass(inner):
        raise ConfigError(f"{name} is a group of settings; set its fields as {name}.<field>")
    return value


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved field types (works with `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


# --- dataclass <-> dict ----------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a (nested) dataclass: tuples become lists, Paths strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        policy_type = getattr(type(obj), "type", None)
        if isinstance(policy_type, str) and policy_type:
            out["type"] = policy_type
        for f in dataclasses.fields(obj):
            out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "", nested: Mapping[str, type] | None = None,
              ignore: tuple[str, ...] = (), keys: bool = False) -> Any:
    """Build dataclass `cls` from a (possibly partial) dict, converting every value.

    Unknown keys raise ConfigError naming them (a typo must not be silently ignored);
    `ignore` lists keys that may be present and are dropped (e.g. "type").
    `nested` maps a field name to the dataclass to build for it (the policy config,
    whose class depends on the chosen policy). `__post_init__` ValueErrors become
    ConfigErrors naming the group. Errors name a value by its flag (`--policy.dim_model`),
    or with `keys` by its key in a file (`dim_model`, `record.episodes`).
    """
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields) - set(ignore))
    if unknown:
        raise ConfigError(f"unknown setting(s) {[prefix + k for k in unknown]} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in ignore:
            continue
        sub = (nested or {}).get(name)
        if sub is not None:
            if isinstance(value, sub):
                kwargs[name] = value
            else:
                kwargs[name] = from_dict(sub, value or {}, prefix=f"{prefix}{name}.", ignore=("type",), keys=keys)
        else:
            if keys:
                label = f"{prefix}{name}"
            else:
                label = f"--{prefix}{name}" if prefix else f"--{name.replace('_', '-')}"
            kwargs[name] = convert(value, hints[name], label)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"invalid {where} config: {exc}") from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict update (override wins), returning a new dict."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_dotted(d, "policy.dim_model", 256)` -> d["policy"]["dim_model"] = 256."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# --- argparse --------------------------------------------------------------------------


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    nested: Mapping[str, type] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add one flag per field of `cls`; nested dataclass fields get dotted flags.

    Flags store raw text under `dest=<dotted name>` with no default, so only what the
    user typed is in the namespace; conversion happens in `from_dict` (one place).
    """
    hints = type_hints(cls)
    group = parser.add_argument_group(f"{prefix.rstrip('.') or cls.__name__} settings") if prefix else parser
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    for f in sorted(fields, key=lambda f: f.name in (nested or {})):  # nested groups listed last
        sub = (nested or {}).get(f.name)
        if sub is not None:
            add_dataclass_flags(parser, sub, prefix=f"{prefix}{f.name}.")
            continue
        dotted = prefix + f.name
        names = [f"--{dotted}"]
        if "_" in dotted:  # top-level flags show the dashed form first, dotted ones LeRobot's
            dashed = f"--{dotted.replace('_', '-')}"
            names = [dashed, *names] if not prefix else [*names, dashed]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        inner, _ = _strip_optional(hints[f.name])
        metavar = getattr(inner, "__name__", str(inner)).upper().replace("[", "").replace("]", "")
        help_text = _field_help(cls, f)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if inner is bool else {}  # `--resume` alone
        group.add_argument(*names, dest=dotted, default=argparse.SUPPRESS, metavar=metavar,
                           # argparse %-formats help strings: a docstring's "%" must be doubled
                           help=f"{help_text} (default: {to_dict(default)!r})".strip().replace("%", "%%"), **extra)


def flags_to_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags the user typed, as a nested dict of raw strings."""
    overrides: dict[str, Any] = {}
    for dotted, value in vars(namespace).items():
        set_dotted(overrides, dotted, value)
    return overrides
