"""Typed, validated configuration: `params.yaml` into frozen dataclasses.

Every section is a frozen dataclass with a docstring per field. Loading collects
every problem (unknown key, wrong type, impossible value, missing file) and
raises them together in one `ConfigError`, each naming its key and what is
allowed, before any work starts (as litgpt does: `raise ValueError("\\n".join(issues))`).
"""

from __future__ import annotations

import dataclasses
import glob
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

# Names that become directory names and Snakemake wildcards: no path separators,
# no `..`, no shell metacharacters (issue 6: names cannot escape the project).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """One or more problems in the configuration, one per line."""


@dataclasses.dataclass(frozen=True)
class DemoSource:
    """The embedded demo: a seeded generator of synthetic documents in one domain,
    written as Pile- (upstream) or SlimPajama-format (downstream) `.jsonl.zst` by
    `rewarm generate`, then read by the same JSON-lines reader as real data."""

    type: Literal["demo"]
    domain: Literal["upstream", "downstream"]
    """Text distribution: `upstream` (encyclopedia, code, maths; Pile format) or
    `downstream` (web reviews, stories, Q&A; SlimPajama format)."""
    documents: int
    """Number of documents to generate."""
    seed: int = 0
    """Generator seed; use different seeds for train and validation."""
    max_tokens: Optional[int] = None
    """Stop reading once this many tokens are packed (None: read everything)."""


@dataclasses.dataclass(frozen=True)
class JsonlSource:
    """JSON lines with a text field, plain (`.jsonl`) or zstd-compressed
    (`.jsonl.zst`, as the Pile and SlimPajama ship), one file or a glob."""

    type: Literal["jsonl"]
    path: str
    """File path or glob pattern, relative to the project directory; files are read in sorted order."""
    text_field: str = "text"
    """Name of the field holding the document text."""
    max_tokens: Optional[int] = None
    """Stop reading once this many tokens are packed (None: read everything)."""


@dataclasses.dataclass(frozen=True)
class HfSource:
    """A Hugging Face dataset, streamed with `datasets.load_dataset(..., streaming=True)`."""

    type: Literal["hf"]
    path: str
    """Hub dataset id (e.g. `monology/pile-uncopyrighted`), a builder name such as `json`, or a local directory."""
    split: str = "train"
    """Dataset split to stream."""
    name: Optional[str] = None
    """Dataset configuration name, if the dataset has several."""
    revision: Optional[str] = None
    """Git revision (branch, tag or commit) of the hub dataset; pin it for reproducibility."""
    data_files: Optional[list[str]] = None
    """Explicit data files (for builders such as `json`)."""
    text_field: str = "text"
    """Name of the column holding the document text."""
    max_tokens: Optional[int] = None
    """Stop reading once this many tokens are packed (None: read everything)."""


Source = Union[DemoSource, JsonlSource, HfSource]
SOURCE_TYPES: dict[str, type] = {"demo": DemoSource, "jsonl": JsonlSource, "hf": HfSource}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The sources of one corpus, per split. Upstream and downstream need both splits."""

    train: Optional[Source] = None
    """Training documents."""
    val: Optional[Source] = None
    """Held-out validation documents."""

    def splits(self) -> dict[str, Source]:
        return {name: source for name, source in (("train", self.train), ("val", self.val)) if source is not None}


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Where the tokenizer comes from. Paper scale uses the base checkpoint's
    (Pythia's GPT-NeoX-20B BPE); the demo trains its own byte-level BPE."""

    type: Literal["train", "pretrained"] = "train"
    """`train`: byte-level BPE trained on the upstream train split; `pretrained`: load with AutoTokenizer."""
    vocab_size: int = 4096
    """Vocabulary size for `train` (special tokens included)."""
    name_or_path: Optional[str] = None
    """For `pretrained`: hub model id (e.g. `EleutherAI/pythia-410m`) or local model directory."""
    revision: Optional[str] = None
    """For `pretrained` from the hub: revision (e.g. `step143000`)."""
    train_documents: Optional[int] = None
    """For `train`: use at most this many upstream documents (None: all)."""


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Tokenization and packing into fixed-length sequences."""

    seq_len: int = 128
    """Tokens per packed training sequence (Pythia: 2048)."""
    shard_sequences: int = 4096
    """Sequences per Arrow shard file."""
    batch_documents: int = 512
    """Documents tokenized per batch; fixed so that output is independent of the worker count."""
    on_bad_record: Literal["error", "skip"] = "error"
    """`error`: stop at the first bad record, naming file and line; `skip`: skip and count bad records."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration (`params.yaml`)."""

    corpora: dict[str, Corpus]
    """Corpora by name; `upstream` (the Pile) and `downstream` (SlimPajama) are required, others are extra held-out sets."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """Tokenizer source."""
    prepare: PrepareConfig = PrepareConfig()
    """Packing settings."""

    def sources(self) -> dict[tuple[str, str], Source]:
        """Every (corpus, split) source, in a stable order."""
        return {(c, s): src for c, corpus in self.corpora.items() for s, src in corpus.splits().items()}


# -- loading -----------------------------------------------------------------------------------


def load(paths: list[str | Path] | str | Path, base_dir: str | Path = ".") -> Config:
    """Read one or more YAML files (later ones deep-merged over earlier ones, as Snakemake's
    `--configfile` does) and validate them."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        merged = deep_merge(merged, data)
    return from_dict(merged, base_dir=base_dir, origin=", ".join(str(p) for p in paths))


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(data: dict, base_dir: str | Path = ".", origin: str = "configuration") -> Config:
    """Validate a configuration mapping; raise one ConfigError listing every problem."""
    problems: list[str] = []
    config = _build(Config, data, "", problems)
    if config is not None:
        problems.extend(_check(config, Path(base_dir)))
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


def _build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
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
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if options == list(SOURCE_TYPES.values()):
            return _convert_source(value, key, problems)
        return _convert(options[0], value, key, problems)
    if origin is Literal:
        if value not in args:
            problems.append(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_show(value)}")
            return {}
        return {k: _convert(args[1], v, _join(key, str(k)), problems) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return []
        return [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, problems)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # YAML reads 1e9 as a float; an integral one is a fine count
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        problems.append(f"{key}: expected {tp.__name__}, got {_show(value)}")
    return value


def _convert_source(value: Any, key: str, problems: list[str]) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in SOURCE_TYPES:
        shown = repr(kind) if isinstance(value, dict) and "type" in value else "no type"
        problems.append(f"{key}.type: {shown} is not one of {', '.join(repr(t) for t in SOURCE_TYPES)}")
        return None
    return _build(SOURCE_TYPES[kind], value, key, problems)


def _check(config: Config, base_dir: Path) -> list[str]:
    """Checks of values and of fields against each other, after types are right."""
    problems = []
    for name in ("upstream", "downstream"):
        corpus = config.corpora.get(name)
        if corpus is None:
            problems.append(f"corpora.{name}: required corpus missing (the re-warm experiment needs upstream and downstream)")
        elif corpus.train is None or corpus.val is None:
            problems.append(f"corpora.{name}: needs both a `train` and a `val` source")
    for name, corpus in config.corpora.items():
        if not SAFE_NAME.match(str(name)):
            problems.append(f"corpora.{name}: corpus name must match {SAFE_NAME.pattern} (letters, digits, _ . -)")
        if corpus is not None and not corpus.splits():
            problems.append(f"corpora.{name}: needs at least one of `train`, `val`")
    for (corpus, split), source in config.sources().items():
        problems.extend(_check_source(source, f"corpora.{corpus}.{split}", base_dir))
    tok = config.tokenizer
    if tok.type == "train" and not 256 + 2 <= tok.vocab_size <= 2**20:
        problems.append(f"tokenizer.vocab_size: {tok.vocab_size} must be in [258, 1048576] (256 bytes + 2 special tokens at least)")
    if tok.type == "pretrained" and not tok.name_or_path:
        problems.append("tokenizer.name_or_path: required when tokenizer.type is 'pretrained' (hub id or local directory)")
    _positive(problems, "tokenizer.train_documents", tok.train_documents, optional=True)
    prep = config.prepare
    for field in ("seq_len", "shard_sequences", "batch_documents"):
        _positive(problems, f"prepare.{field}", getattr(prep, field))
    return problems


def _check_source(source: Source | None, key: str, base_dir: Path) -> list[str]:
    problems: list[str] = []
    if source is None:
        return problems
    _positive(problems, f"{key}.max_tokens", source.max_tokens, optional=True)
    if isinstance(source, DemoSource):
        _positive(problems, f"{key}.documents", source.documents)
        if source.seed < 0:
            problems.append(f"{key}.seed: {source.seed} must be >= 0")
    elif isinstance(source, JsonlSource):
        if not source.path:
            problems.append(f"{key}.path: must not be empty")
        elif not resolve_glob(source.path, base_dir):
            problems.append(f"{key}.path: {source.path!r} matches no file (relative to {base_dir.resolve()})")
    return problems


def _positive(problems: list[str], key: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, int) and value <= 0:
        problems.append(f"{key}: {value} must be a positive integer")


def resolve_glob(pattern: str, base_dir: str | Path = ".") -> list[Path]:
    """Files matching `pattern` (relative to `base_dir` unless absolute), sorted for a stable order."""
    full = pattern if Path(pattern).is_absolute() else str(Path(base_dir) / pattern)
    return sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"
