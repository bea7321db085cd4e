"""Building frozen option dataclasses from plain values (config files, flags), strictly.

Unknown keys, wrong types and bad values are an ``OptionError`` (a ``ValueError``, ``fruitlens.errors``) that
carries the key with its path (``explain_options.lime.num_sample``), the value and what was expected; lists
become tuples, ints are accepted as floats.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin

from fruitlens.errors import MAX_SHOWN, OptionError

MAX_VALUES = 100_000  # values (scalars, items, keys) a config or a --set value may hold: refused beyond


def check_value_count(value: Any, where: str, limit: int = MAX_VALUES) -> Any:
    """``value`` unchanged if it holds at most ``limit`` values, counted through shared references (a YAML
    "billion laughs" of 300 bytes holds 10^9); else a ValueError, found after at most ``limit`` steps."""
    seen, stack = 0, [value]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            raise ValueError(f"{where}: more than {limit} values (nested aliases that expand?); expected a "
                             "plain config of numbers, names and short lists")
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (lists become tuples; ints are accepted as floats)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, where)
    if origin is Literal:
        if value in get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            if option is type(None) and value is None:
                return None
        for option in get_args(tp):
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except OptionError:
                continue
    elif origin is tuple:
        if isinstance(value, list | tuple):
            args = get_args(tp)
            item = args[0] if args else Any
            if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
                return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise OptionError(where, value, _type_name(tp))


def build(cls: type, values: Mapping[str, Any] | None, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from plain values: unknown keys and wrong types are ValueErrors.

    ``where`` prefixes the key names in messages (``explain_options.lime``). Values are checked against the
    field annotations; the class's ``__post_init__`` then checks ranges.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise OptionError(where or cls.__name__, values, f"a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(map(str, set(values) - set(names)))
    if unknown:
        keys = ", ".join(f"{where}.{k[:MAX_SHOWN]}" if where else k[:MAX_SHOWN] for k in unknown[:5])
        raise OptionError(keys, None, ", ".join(names), unknown=True)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except OptionError as exc:
        raise (exc.at(where) if where else exc) from exc
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}" if where else str(exc)) from exc


def to_plain(obj: Any) -> Any:
    """A config dataclass as JSON-able values (tuples as lists, nested dataclasses as dicts)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.init}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def check(checks: list[tuple[bool, str, Any, str]]) -> None:
    """Raise an ``OptionError`` for the first ``(ok, name, value, expected)`` that is not ok."""
    for ok, name, value, expected in checks:
        if not ok:
            raise OptionError(name, value, expected)
