"""Typed parsing of nested dicts into dataclasses, collecting every problem with its dotted path.

A config section is a plain dataclass whose fields carry their documentation in
`field(metadata={"help": ...})` (see `option`). `parse(cls, data)` walks the YAML mapping and the
dataclass types together; it never stops at the first problem, so a user sees every unknown key
and wrong type at once. Supported field types: bool, int, float, str, Literal[...], X | None,
list[X], dict[str, X], nested dataclasses, and `Section | list[Section]` (one or several).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

MISSING = dataclasses.MISSING


def option(
    default: Any = MISSING,
    help: str = "",
    default_factory: Any = MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    subject: str = "",
) -> Any:
    """A dataclass field with its documentation and its allowed range.

    `default=MISSING` makes it required. `gt`/`ge`/`lt`/`le` bound a number (or each number of
    a list or mapping of numbers); `parse` reports a value outside them with its dotted path,
    as "KEY: [subject] must ...".
    """
    meta = {"help": help, "range": Range(gt, ge, lt, le, subject)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def derived(help: str, default_factory: Any = list) -> Any:
    """A field the config normalisation fills from other fields; not a YAML key.

    It is neither parsed nor written to the resolved config, nor listed in the reference.
    """
    return dataclasses.field(init=False, default_factory=default_factory, repr=False,
                             metadata={"help": help, "derived": True})


def is_derived(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("derived"))


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field: greater than / at least / less than / at most."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    subject: str = ""  # what the number is, when the message should say: "the domain share"

    def __bool__(self) -> bool:
        return any(b is not None for b in (self.gt, self.ge, self.lt, self.le))

    def allows(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def describe(self) -> str:
        """'> 0', '>= 1', or an interval such as '[0, 1)' when both ends are bounded."""
        low = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else None
        high = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else None
        if low and high:
            return f"lie in {low}, {high}"
        if low:
            return f"be {'>' if self.gt is not None else '>='} {low[1:]}"
        return f"be {'<' if self.lt is not None else '<='} {high[:-1]}"

    def short(self) -> str:
        """The range as the config reference shows it: '> 0', 'in [0, 1)'."""
        text = self.describe()
        return text.replace("lie in ", "in ").replace("be ", "", 1) if self else ""

    def problems(self, value: Any, path: str) -> list[str]:
        """'path: must ...' for a number (or each number of a list or mapping) out of range."""
        if not self or value is None or isinstance(value, bool):
            return []
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in self.problems(v, f"{path}[{i}]")]
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in self.problems(v, f"{path}.{k}")]
        if isinstance(value, (int, float)) and not self.allows(value):
            what = f"{self.subject} " if self.subject else ""
            return [f"{path}: {what}must {self.describe()}, got {value}"]
        return []


def field_range(f: dataclasses.Field) -> Range:
    return f.metadata.get("range") or Range()


def parse(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Build `cls` from `data`; append 'path: message' strings to `problems` for each fault."""
    return _convert(cls, data, path, problems)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if typing.get_origin(a) is not list or
                typing.get_args(a)[0] not in typing.get_args(tp)]
        many = len(args) < len(typing.get_args(tp))  # Section | list[Section]: "one or several"
        text = " or ".join(_type_name(a) for a in args)
        return text.replace(_type_name(args[0]), f"{_type_name(args[0])} (or a list of them)", 1) if many else text
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__.removesuffix('Config').lower()} section"
    if tp is type(None):
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Invalid:
    """Marker for a value that failed to convert (its problem is already recorded)."""


INVALID = _Invalid()


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, path, problems)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[0]):
            return value
        problems.append(f"{path}: must be one of {', '.join(map(repr, choices))}, got {_describe(value)}")
        return INVALID
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{path}: must be {_type_name(tp)}, got {_describe(value)}")
            return INVALID
        # A wrong item is reported and left out, so that the value checks can still run.
        items = [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return [v for v in items if v is not INVALID]
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{path}: must be {_type_name(tp)}, got {_describe(value)}")
            return INVALID
        items = {str(k): _convert(item_tp, v, f"{path}.{k}", problems) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not INVALID}
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, problems)
    return _convert_scalar(tp, value, path, problems)


def _convert_union(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        problems.append(f"{path}: must be {_type_name(tp)}, got null")
        return INVALID
    candidates = [a for a in args if a is not type(None)]
    # A single section given where a list of sections is allowed: take it as a list of one.
    sections = [a for a in candidates if dataclasses.is_dataclass(a)]
    lists = [a for a in candidates if typing.get_origin(a) is list]
    if isinstance(value, dict) and sections:
        return _convert(sections[0], value, path, problems)
    if isinstance(value, list) and lists:
        return _convert(lists[0], value, path, problems)
    for cand in candidates:
        trial: list[str] = []
        out = _convert(cand, value, path, trial)
        if not trial:
            return out
    if len(candidates) == 1:
        return _convert(candidates[0], value, path, problems)
    problems.append(f"{path}: must be {_type_name(tp)}, got {_describe(value)}")
    return INVALID


def _convert_scalar(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # 1.0e9 and "1e9" are common ways to write a large count; accept them when whole.
        number = _as_number(value)
        if number is not None and math.isfinite(number) and number == int(number):
            return int(number)
    elif tp is float:
        number = _as_number(value)
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    problems.append(f"{path}: must be {_type_name(tp)}, got {_describe(value)}")
    return INVALID


def _as_number(value: Any) -> float | None:
    """Numbers, and strings YAML left unparsed such as '1e-5' (PyYAML reads that as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            return None
    return None


def _convert_dataclass(cls: type, value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{path}: must be a mapping, got {_describe(value)}")
        return INVALID
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, raw in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{sub}: unknown key (known keys here: {known})")
            continue
        converted = _convert(hints[key], raw, sub, problems)
        if converted is not INVALID:
            # An out-of-range value is reported and kept, so the cross-field rules still see it.
            problems += field_range(fields[key]).problems(converted, sub)
            kwargs[key] = converted
    ok = True
    for name, f in fields.items():
        required = f.default is MISSING and f.default_factory is MISSING
        if required and name not in kwargs:
            if name not in value:
                sub = f"{path}.{name}" if path else name
                problems.append(f"{sub}: required, but missing")
            ok = False
    if not ok:
        return INVALID
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """The plain-data form of a parsed config (for writing the resolved config.yaml)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not is_derived(f)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def reference(cls: type, prefix: str = "", seen: set | None = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every field, for the README's config reference.

    A section type met a second time (data.general after data.domain) is not expanded again.
    """
    seen = set() if seen is None else seen
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if is_derived(f):
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(to_dict(f.default_factory()))
        else:
            default = "(required)"
        bounds = field_range(f)
        kind = _type_name(tp) + (f", {bounds.short()}" if bounds else "")
        rows.append((key, kind, default, f.metadata.get("help", "")))
        nested = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        if nested and typing.get_origin(tp) is not dict and nested[0] not in seen:
            seen.add(nested[0])
            rows.extend(reference(nested[0], prefix=f"{key}.", seen=seen))
    return rows


def markdown_reference(cls: type) -> str:
    """The config reference as Markdown: one table per top-level section (used in the README)."""
    out = []
    top = [r for r in reference(cls) if "." not in r[0]]
    rows = reference(cls)
    for key, _, default, help in top:
        out.append(f"**`{key}`**: {help}" + (" (required)" if default == "(required)" and "." not in key else ""))
        out.append("")
        sub = [r for r in rows if r[0].startswith(key + ".")]
        if not sub:
            out.append("")
            continue
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for k, tp, d, h in sub:
            out.append(f"| `{k}` | {_cell(tp)} | `{_cell(d)}` | {_cell(h)} |")
        out.append("")
    return "\n".join(out).strip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
