"""Loading: YAML files read (duplicate keys refused), deep-merged as Snakemake merges `--configfile`s,
converted into the schema's dataclasses, and checked; every problem raised together in one ConfigError."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rewarm.config.checks import check
from rewarm.config.schema import _TAGGED_UNIONS, Config, ConfigError, _join, _show


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently, so a
    second `train:` section would replace the first), naming both lines."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first on line {first[key] + 1}, again on line "
                                    f"{key_node.start_mark.line + 1})", key_node.start_mark)
                first[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: YAML's own error follows
                pass
        return super().construct_mapping(node, deep=deep)


Extra = Callable[[Config], list[str]]
"""Further checks a higher layer runs once the configuration itself is sound (`rewarm.grid.load`: the cells)."""


def load(paths: list[str | Path] | str | Path, base_dir: str | Path = ".", extra: Extra | None = None,
         overrides: list[str] | tuple = ()) -> Config:
    """Read one or more YAML files (later ones deep-merged over earlier ones, as Snakemake's
    `--configfile` does), then the `overrides` (`section.key=value`, the value read as YAML: the
    command line's `--set train.max_lr=6e-4`), and validate them all together. `rewarm.grid.load` is
    this with the grid's checks: the entry point every stage and front end uses."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for path in paths:
        try:
            data = yaml.load(Path(path).read_text(), Loader=UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        size = expanded_size(data)
        if size > MAX_VALUES:
            raise ConfigError(f"{path}: expands to {size:,} values through YAML aliases (at most {MAX_VALUES:,}): refused")
        merged = deep_merge(merged, data)
    for override in overrides:
        merged = deep_merge(merged, parse_override(override))
    origin = ", ".join([*(str(p) for p in paths), *(f"--set {o}" for o in overrides)])
    return from_dict(merged, base_dir=base_dir, origin=origin, extra=extra)


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""A number in exponent notation without a decimal point, which YAML 1.1 reads as a string."""


def parse_override(text: str) -> dict:
    """`train.max_lr=6e-4` as {"train": {"max_lr": 6e-4}}: the dotted key's sections, the value as YAML
    reads it (a number, a list, null to remove an entry); the key itself is checked with the rest."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set train.max_lr=6e-4")
    try:
        parsed = yaml.load(value, Loader=UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {error}") from None
    if isinstance(parsed, str) and NUMBER.fullmatch(parsed.strip()):
        parsed = float(parsed)  # 6e-4: YAML 1.1 (PyYAML) wants 6.0e-4 for a float; a command line should not
    for part in reversed(parts):
        parsed = {part: parsed}
    return parsed


MAX_VALUES = 1_000_000
"""A configuration expands to at most this many values: a YAML alias bomb (aliases of aliases) is refused
before anything walks it."""


def expanded_size(value: Any, _memo: dict | None = None) -> int:
    """Values in `value` with every shared (aliased) part counted each time it is used; linear in the distinct
    objects, so an alias bomb is measured without being expanded."""
    memo = {} if _memo is None else _memo
    if id(value) in memo:
        return memo[id(value)]
    children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
    memo[id(value)] = 1  # a cycle (YAML allows recursive aliases) counts once
    memo[id(value)] = 1 + sum(expanded_size(child, memo) for child in children)
    return memo[id(value)]


# Named collections: in a later file, `name: null` removes an entry an earlier file declared.
COLLECTIONS = ("corpora", "checkpoints")
# Sections a later file replaces whole: a paper's studies (and benchmark tasks) are not mixed with the demo's.
REPLACED = ("grid", "benchmark")
# Keys a later file replaces whole wherever they are: a source's mixture is one distribution, never the union
# of two files' weights (a later file that changes a corpus names all of its parts).
REPLACED_ANYWHERE = ("mixture",)


def deep_merge(base: dict, override: dict, _path: tuple = ()) -> dict:
    """`override` merged into `base`, mappings key by key. A source or checkpoint whose `type`
    changes is replaced, not merged (its fields differ); `<collection>.<name>: null` removes it;
    a later `grid` (and any source's `mixture`) replaces the earlier one whole."""
    out = dict(base)
    for key, value in override.items():
        if (not _path and key in REPLACED) or key in REPLACED_ANYWHERE:
            out[key] = value
        elif value is None and _path and _path[0] in COLLECTIONS and len(_path) == 1:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("type", out[key].get("type")) == out[key].get("type"):
            out[key] = deep_merge(out[key], value, (*_path, key))
        else:
            out[key] = value
    return out


def from_dict(data: dict, base_dir: str | Path = ".", origin: str = "configuration", extra: Extra | None = None) -> Config:
    """Validate a configuration mapping; raise one ConfigError listing every problem (`extra`'s too,
    once the configuration's own checks pass)."""
    problems: list[str] = []
    config = build(Config, data, "", problems)
    if config is not None:
        try:
            problems.extend(check(config, Path(base_dir)))
        except (TypeError, ValueError, AttributeError, ArithmeticError):
            if not problems:
                raise
            # A cross-check that met a wrongly typed value (`max_lr: '3e-4'`, a string): the type errors
            # already found say what is wrong; the cross-checks run once they are fixed.
    if config is not None and not problems and extra is not None:
        problems.extend(extra(config))
    if problems:
        header = f"{origin}: {len(problems)} problem{'s' * (len(problems) > 1)}:"
        raise ConfigError("\n  ".join([header, *problems]))
    return config


def to_dict(value: Any) -> Any:
    """A dataclass tree back into plain YAML/JSON-ready values."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    return value


def digest(value: Any) -> str:
    """A short sha256 of a dataclass tree's (or plain value's) canonical JSON. Snakemake re-runs a job
    whose parameters changed and prints a changed parameter whole: a digest keeps the first and spares
    the console kilobytes per job (the whole grid is one parameter of the report)."""
    text = json.dumps(to_dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from `data`, appending a message per problem."""
    if not isinstance(data, dict):
        problems.append(f"{where or '<top>'}: expected a mapping, got {_show(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(f"{_join(where, key)}: unknown key (allowed: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], key, problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{key}: required key missing")
    try:
        return cls(**values)
    except TypeError:
        return None  # a required key was missing: already reported


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        tagged = _TAGGED_UNIONS.get(frozenset(options))
        if tagged is not None:
            return _convert_tagged(tagged, value, key, problems)
        return _convert(options[0], value, key, problems)
    if origin is Literal:
        if value not in args:
            problems.append(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_show(value)}")
            return {}
        if args[0] is str:  # names: YAML reads `123:` or `true:` as a number or a boolean
            problems += [f"{_join(key, str(k))}: the name {k!r} is a {type(k).__name__}, not a string (quote it)"
                         for k in value if not isinstance(k, str)]
        return {k: _convert(args[1], v, _join(key, str(k)), problems) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return []
        return [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, problems)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1000 else math.inf
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{key}: {value} is not a finite number")
        return value
    if tp is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # YAML reads 1e9 as a float; an integral one is a fine count
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        problems.append(f"{key}: expected {tp.__name__}, got {_show(value)}")
    return value


def _convert_tagged(types_by_name: dict[str, type], value: Any, key: str, problems: list[str]) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in types_by_name:
        shown = repr(kind) if isinstance(value, dict) and "type" in value else "no type"
        problems.append(f"{key}.type: {shown} is not one of {', '.join(repr(t) for t in types_by_name)}")
        return None
    return build(types_by_name[kind], value, key, problems)
