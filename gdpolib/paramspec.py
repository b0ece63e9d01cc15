"""Typed parameters with rules: `param()` declares one (default, help, choices, bounds,
a pattern or a check) as a dataclass field's metadata, as TRL's configs do; `coerce` checks and
gently converts a value to its type, `rule_problem` says why a value breaks its rules and
`allowed_text` says what is allowed, in words. `load_yaml` parses parameter text safely (no
aliases, no duplicate keys), `name_problem` is the rule of a folder name. Generic: gdpolib.config
declares the run parameters with these.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Sizes a parameter value may have: no real value comes near them, and a bigger one would only
# cost memory and time (or fill an error message).
MAX_YAML_BYTES = 1 << 20  # bytes of a params file (ours are about 2 KB)
MAX_TEXT = 4096           # characters of a string value
MAX_ITEMS = 1000          # items of a list value
SHOWN = 120               # characters of a value quoted in an error message


def shown(value: Any) -> str:
    """repr(value), cut to SHOWN characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN - 20]}... ({len(text)} characters)"


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (`*name`: a few bytes can expand into gigabytes, and
    parameters never need them) and without duplicate keys (YAML keeps the last one silently)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed here",
                                       problem_mark=mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                           problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML text as Python values, parsed safely: yaml.YAMLError for an alias, a duplicate key,
    bad syntax or nesting too deep to parse."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: `line L, column C: problem`."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = getattr(err, "problem", None) or str(err)
    return " ".join(((f"line {mark.line + 1}, column {mark.column + 1}: " if mark else "")
                     + str(what)).split())


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a folder inside another one (a run, a sweep), or None: it must be
    one path component, so that nothing is written outside the folder that holds it."""
    if not isinstance(name, str) or not name.strip():
        return f"{shown(name)} is empty"
    if "/" in name or "\\" in name or "\0" in name:
        return f"{shown(name)} holds a path separator (a name is one folder, not a path)"
    if name.startswith((".", "~")):
        return f"{shown(name)} starts with {name[0]!r} (hidden, relative or home folder)"
    if len(name.encode()) > 200:
        return f"{shown(name)} is longer than 200 bytes"
    return None


def resolve_path(path: str | Path) -> Path:
    """Params paths are relative to the project root (not to the notebook's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def param(default: Any, help: str, *, choices: Sequence[Any] = (), ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          pattern: str | None = None, check: Callable[[Any], str | None] | None = None,
          allowed: str | None = None, trl: str | None = None) -> Any:
    """A RunConfig field: its default plus the metadata `validate` and the docs read; `trl`
    names the TRL config argument the value is (gdpolib.sections.training builds them)."""
    if not help.strip():
        raise ValueError("every parameter needs a help sentence")
    if (pattern or check) and not allowed:
        raise ValueError("a pattern or check rule needs allowed= (the text errors show)")
    meta = {"help": help, "choices": tuple(choices), "ge": ge, "gt": gt, "le": le, "lt": lt,
            "pattern": pattern, "check": check, "allowed": allowed, "trl": trl}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def path_problem(value: str, kind: str) -> str | None:
    """Why `value` is not a readable file/folder (relative to the project root), or None."""
    p = resolve_path(value)
    where = "" if str(p) == value else f" (resolved to {p})"
    if not p.exists():
        return f"{value!r} does not exist{where}"
    if kind == "folder" and not p.is_dir():
        return f"{value!r} is a file, not a folder{where}"
    if kind == "file" and not p.is_file():
        return f"{value!r} is {'a folder' if p.is_dir() else 'not a regular file'}, not a file{where}"
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return f"{value!r} is not readable{where}"
    return None


FRACTIONS = "three non-negative numbers summing to 1"


def fractions_problem(value: list[float]) -> str | None:
    """Why `value` is not three fractions summing to 1 (a split's), or None."""
    if len(value) != 3 or any(f < 0 for f in value) or abs(sum(value) - 1) > 1e-6:
        return f"{value!r} are not three non-negative fractions summing to 1"
    return None


def _split_hint(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)][0], type(None) in args
    return hint, False


_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings"), bool: ("true or false", "true/false values")}


def coerce(value: Any, hint: Any) -> Any:
    """`value` as type `hint`, gently coerced (int -> float, papermill's and -p's strings, a
    number given for a string); ValueError with the problem otherwise."""
    base, optional = _split_hint(hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        if isinstance(value, str):
            try:
                value = load_yaml(value) if value.strip().startswith("[") else \
                    [v.strip() for v in value.split(",") if v.strip()]
            except yaml.YAMLError as err:
                raise ValueError(f"{shown(value)} is not a YAML list ({yaml_problem(err)})") from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{shown(value)} ({type(value).__name__}) is not a list")
        if len(value) > MAX_ITEMS:
            raise ValueError(f"a list of {len(value)} items is longer than {MAX_ITEMS}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(coerce(v, item))
            except ValueError as err:
                raise ValueError(f"item {i} of {shown(list(value))}: {err}") from None
        return out
    wrong = ValueError(f"{shown(value)} ({type(value).__name__}) is not {_WORDS[base][0]}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise wrong
    if isinstance(value, bool):           # bool is an int in Python; never a number here
        raise wrong
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise wrong
    if base is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise wrong from None
        if not math.isfinite(number):     # nan would pass every bound check
            raise ValueError(f"{shown(value)} is not a finite number")
        return number
    if base is str:
        # `-p run_name 2024` reaches us as the int 2024 (YAML-parsed, as papermill does).
        if isinstance(value, (str, int, float)):
            if len(str(value)) > MAX_TEXT:
                raise ValueError(f"a text of {len(str(value))} characters is longer than {MAX_TEXT}")
            return str(value)
        raise wrong
    return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _bounds_text(m: Mapping[str, Any]) -> str:
    lo = (">=", m["ge"]) if m["ge"] is not None else (">", m["gt"]) if m["gt"] is not None else None
    hi = ("<=", m["le"]) if m["le"] is not None else ("<", m["lt"]) if m["lt"] is not None else None
    if lo and hi:
        return (f"in {'[' if lo[0] == '>=' else '('}{_number(lo[1])}, "
                f"{_number(hi[1])}{']' if hi[0] == '<=' else ')'}")
    if lo or hi:
        op, x = lo or hi
        return f"{op} {_number(x)}"
    return ""


def allowed_text(m: Mapping[str, Any], hint: Any) -> str:
    """What a parameter (its metadata `m` and type `hint`) accepts, in words (error messages,
    defaults.yaml, the README table)."""
    base, optional = _split_hint(hint)
    is_list = typing.get_origin(base) is list
    item = typing.get_args(base)[0] if is_list else base
    bounds = _bounds_text(m)
    if m["allowed"]:
        text = m["allowed"]
    elif m["choices"]:
        text = ("a list of items from " if is_list else "one of ") + ", ".join(map(str, m["choices"]))
    elif is_list:
        text = f"a list of {_WORDS[item][1]}" + (f", each {bounds}" if bounds else "")
    else:
        text = _WORDS[item][0] + (f" {bounds}" if bounds else "")
    return text + (" or null" if optional and not text.endswith("null") else "")


def has_rule(m: Mapping[str, Any]) -> bool:
    """Whether a parameter (its metadata) accepts less than any value of its type."""
    return bool(m["choices"] or m["pattern"] or m["check"] or _bounds_text(m))


def _out_of_bounds(x: float, m: Mapping[str, Any]) -> bool:
    return ((m["ge"] is not None and x < m["ge"]) or (m["gt"] is not None and x <= m["gt"])
            or (m["le"] is not None and x > m["le"]) or (m["lt"] is not None and x >= m["lt"]))


def rule_problem(m: Mapping[str, Any], value: Any) -> str | None:
    """Why a well-typed `value` breaks the rules of a parameter (its metadata `m`), or None."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    where = f" in {shown(value)}" if isinstance(value, list) else ""
    for x in items:
        if m["choices"] and x not in m["choices"]:
            return f"{shown(x)}{where} is not among the choices"
        if isinstance(x, (int, float)) and _out_of_bounds(x, m):
            return f"{x!r}{where} is out of range"
    if m["pattern"] and not re.fullmatch(m["pattern"], value):
        return f"{shown(value)} is not of the allowed form"
    if m["check"]:
        return m["check"](value)
    return None
