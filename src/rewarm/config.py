"""Typed, validated configuration: `params.yaml` into frozen dataclasses.

Every section is a frozen dataclass with a docstring per field. Loading collects
every problem (unknown key, wrong type, impossible value, missing file) and
raises them together in one `ConfigError`, each naming its key and what is
allowed, before any work starts (as litgpt does: `raise ValueError("\\n".join(issues))`).
"""

from __future__ import annotations

import dataclasses
import decimal
import glob
import itertools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

# Names that become directory names, Snakemake wildcards and DVC stage keys: no path
# separators, no `..`, no shell metacharacters (names cannot escape the project), and no
# dots, which DVC reads as key separators in `params: - corpora.<name>`.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ConfigError(ValueError):
    """One or more problems in the configuration, one per line."""


@dataclasses.dataclass(frozen=True)
class DemoSource:
    """The embedded demo: a seeded generator of synthetic documents in one domain,
    written as Pile- (upstream) or SlimPajama-format (downstream) `.jsonl.zst` by
    `rewarm generate`, then read by the same JSON-lines reader as real data."""

    type: Literal["demo"]
    domain: Literal["upstream", "downstream", "news"]
    """Text distribution: `upstream` (encyclopedia, code, maths; Pile format),
    `downstream` (web reviews, stories, Q&A; SlimPajama format) or `news` (news reports
    and recipes; a third domain for held-out evaluation)."""
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
class ModelConfig:
    """GPT-NeoX architecture (Pythia's: rotary embeddings, parallel attention and MLP, untied
    embeddings) for the demo's pre-training and for `scratch` checkpoints without a `config`."""

    hidden_size: int = 128
    """Width of the residual stream (Pythia-410M: 1024)."""
    num_layers: int = 4
    """Transformer blocks (Pythia-410M: 24)."""
    num_heads: int = 4
    """Attention heads; must divide hidden_size (Pythia-410M: 16)."""
    intermediate_size: int = 512
    """MLP width (Pythia: 4 x hidden_size)."""
    max_position_embeddings: int = 128
    """Longest context; at least prepare.seq_len (Pythia: 2048)."""
    rotary_fraction: float = 0.25
    """Share of each head's dimensions that get rotary embeddings (Pythia: 0.25)."""


@dataclasses.dataclass(frozen=True)
class Optimization:
    """How a training run optimizes: budget, batch, schedule, optimizer, evaluation, saving."""

    tokens: int = 200_000
    """Tokens to train on (global, over all processes); steps = tokens // (batch_sequences x seq_len)."""
    batch_sequences: int = 32
    """Global batch in sequences; the global batch in tokens, not the hardware, defines the run."""
    micro_batch_sequences: int = 16
    """Sequences per forward pass per process; gradient accumulation makes up the global batch."""
    schedule: Literal["cosine", "constant", "linear", "wsd", "infinite", "rex"] = "cosine"
    """Learning-rate schedule (src/rewarm/schedules.py); the paper's is cosine."""
    max_lr: float = 3e-4
    """Peak learning rate after warm-up (Pythia-410M's own: 3e-4)."""
    min_lr: Optional[float] = None
    """Final learning rate (None: 0.1 x max_lr, as Pythia and Gupta et al. 2023)."""
    warmup_fraction: Optional[float] = 0.01
    """Warm-up as a fraction of the steps (the paper sweeps 0, 0.005, 0.01, 0.02)."""
    warmup_steps: Optional[int] = None
    """Warm-up in steps; set warmup_fraction to null to use it."""
    decay_fraction: float = 0.2
    """wsd: share of the run spent decaying at the end."""
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    """wsd: shape of the final decay."""
    cooldown_fraction: float = 0.2
    """infinite: share of the run for the cosine cooldown to the plateau."""
    plateau_ratio: float = 0.5
    """infinite: plateau learning rate as a fraction of max_lr."""
    anneal_fraction: float = 0.1
    """infinite: share of the run for the final annealing to min_lr."""
    optimizer: Literal["adamw", "radam"] = "adamw"
    """AdamW (the paper's), or RAdam (warm-up-free by design). Fresh state, as in the paper."""
    beta1: float = 0.9
    """Adam beta1 (Pythia: 0.9)."""
    beta2: float = 0.95
    """Adam beta2 (Pythia: 0.95)."""
    eps: float = 1e-8
    """Adam epsilon (Pythia: 1e-8)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (Pythia: 0.01)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (Pythia: 1.0); 0 disables."""
    seed: int = 0
    """Seed of the data order (and of anything random in training)."""
    eval_every: int = 20
    """Evaluate on the validation samples every this many steps (and at step 0, before any update)."""
    eval_tokens: int = 16384
    """Tokens of each validation split used for in-training evaluation (a fixed sample)."""
    save_every: int = 25
    """Save the resumable state every this many steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available (bf16 autocast, fused AdamW), else CPU (float32)."""
    compile: bool = False
    """torch.compile the model (GPU runs)."""


@dataclasses.dataclass(frozen=True)
class PretrainConfig(Optimization):
    """The demo's upstream pre-training of a tiny GPT-NeoX, saved as a Pythia-style series."""

    checkpoint_steps: list[int] = dataclasses.field(default_factory=lambda: [0])
    """Steps to save as `step<N>` checkpoints (step 0 is the initialisation); the final step is always saved."""


@dataclasses.dataclass(frozen=True)
class TrainConfig(Optimization):
    """One re-warm run (grid cell): continual pre-training of a base checkpoint on downstream data."""

    checkpoint: str = "final"
    """Name of the base checkpoint (a key of `checkpoints`)."""
    replay_fraction: float = 0.0
    """Share of each batch drawn from the upstream train split (Ibrahim et al. 2024); 0 reproduces the paper."""


GRID_AXES = ("checkpoint", "max_lr", "min_lr", "warmup_fraction", "warmup_steps", "schedule", "optimizer", "replay_fraction")


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The grid, declared once: cells are the reference cell (the `train` section) varied one
    axis at a time (the paper's sweeps), full cross products, and extra cells."""

    sweeps: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Axis -> values; each value gives a cell that differs from the reference on that axis only."""
    cross: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Axis -> values; every combination gives a cell (the other axes as in the reference)."""
    extra: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Cells given as overrides of the reference, e.g. the constant-LR "no re-warming" baseline."""


@dataclasses.dataclass(frozen=True)
class HubCheckpoint:
    """A model on the Hugging Face hub at a revision, as Pythia publishes them."""

    type: Literal["hub"]
    repo_id: str
    """Hub model id, e.g. `EleutherAI/pythia-410m`."""
    revision: str = "main"
    """Branch, tag or commit; Pythia's are `step0`, `step1000`, ... `step143000` (final)."""


@dataclasses.dataclass(frozen=True)
class LocalCheckpoint:
    """A Hugging Face model directory on disk (config.json, weights, tokenizer files)."""

    type: Literal["local"]
    path: str
    """Directory path, relative to the project directory or absolute."""


@dataclasses.dataclass(frozen=True)
class ScratchCheckpoint:
    """The same architecture freshly initialised with a fixed seed: the from-scratch baseline."""

    type: Literal["scratch"]
    seed: int = 0
    """Initialisation seed."""
    config: Optional[str] = None
    """Take the architecture from this model (hub id or directory); None: the `model` section."""
    revision: Optional[str] = None
    """Revision of `config` on the hub."""


@dataclasses.dataclass(frozen=True)
class PretrainCheckpoint:
    """A checkpoint of the demo's own pre-training series (`rewarm pretrain`)."""

    type: Literal["pretrain"]
    revision: str = "final"
    """`step<N>` with N in pretrain.checkpoint_steps, or `final`."""


CheckpointSpec = Union[HubCheckpoint, LocalCheckpoint, ScratchCheckpoint, PretrainCheckpoint]
CHECKPOINT_TYPES: dict[str, type] = {
    "hub": HubCheckpoint,
    "local": LocalCheckpoint,
    "scratch": ScratchCheckpoint,
    "pretrain": PretrainCheckpoint,
}
# Unions told apart by their `type` key.
_TAGGED_UNIONS = {frozenset(SOURCE_TYPES.values()): SOURCE_TYPES, frozenset(CHECKPOINT_TYPES.values()): CHECKPOINT_TYPES}


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration (`params.yaml`)."""

    corpora: dict[str, Corpus]
    """Corpora by name; `upstream` (the Pile) and `downstream` (SlimPajama) are required, others are extra held-out sets."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """Tokenizer source."""
    prepare: PrepareConfig = PrepareConfig()
    """Packing settings."""
    model: ModelConfig = ModelConfig()
    """Architecture for pre-training and scratch checkpoints."""
    pretrain: PretrainConfig = PretrainConfig()
    """The demo's upstream pre-training."""
    checkpoints: dict[str, CheckpointSpec] = dataclasses.field(default_factory=dict)
    """Base checkpoints by name, resolved by `rewarm select` into checkpoints/base/<name>/."""
    train: TrainConfig = TrainConfig()
    """The reference re-warm run: every cell's settings unless the grid varies them."""
    grid: GridConfig = GridConfig()
    """The cells: sweeps, cross products and extra cells around `train`."""

    def sources(self) -> dict[tuple[str, str], Source]:
        """Every (corpus, split) source, in a stable order."""
        return {(c, s): src for c, corpus in self.corpora.items() for s, src in corpus.splits().items()}

    def eval_corpora(self) -> list[str]:
        """Corpora with a validation split, upstream and downstream first: what `evaluate` measures."""
        names = [name for name, corpus in self.corpora.items() if corpus.val is not None]
        return sorted(names, key=lambda name: (name != "upstream", name != "downstream"))


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


# Named collections: in a later file, `name: null` removes an entry an earlier file declared.
COLLECTIONS = ("corpora", "checkpoints")


def deep_merge(base: dict, override: dict, _path: tuple = ()) -> dict:
    """`override` merged into `base`, mappings key by key. A source or checkpoint whose `type`
    changes is replaced, not merged (its fields differ); `<collection>.<name>: null` removes it."""
    out = dict(base)
    for key, value in override.items():
        if value is None and _path and _path[0] in COLLECTIONS and len(_path) == 1:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("type", out[key].get("type")) == out[key].get("type"):
            out[key] = deep_merge(out[key], value, (*_path, key))
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


def _convert_tagged(types_by_name: dict[str, type], value: Any, key: str, problems: list[str]) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in types_by_name:
        shown = repr(kind) if isinstance(value, dict) and "type" in value else "no type"
        problems.append(f"{key}.type: {shown} is not one of {', '.join(repr(t) for t in types_by_name)}")
        return None
    return _build(types_by_name[kind], value, key, problems)


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
            problems.append(f"corpora.{name}: corpus name must match {SAFE_NAME.pattern} (letters, digits, _ -)")
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
    problems.extend(_check_model(config.model, prep.seq_len))
    problems.extend(_check_optimization(config.pretrain, "pretrain", prep.seq_len))
    problems.extend(_check_optimization(config.train, "train", prep.seq_len))
    problems.extend(_check_checkpoints(config, base_dir))
    if not problems:
        problems.extend(_expand(config)[1])
    return problems


def _check_model(model: ModelConfig, seq_len: int) -> list[str]:
    problems: list[str] = []
    for field in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
        _positive(problems, f"model.{field}", getattr(model, field))
    if model.num_heads > 0 and model.hidden_size % model.num_heads:
        problems.append(f"model.num_heads: {model.num_heads} must divide model.hidden_size ({model.hidden_size})")
    if model.max_position_embeddings < seq_len:
        problems.append(f"model.max_position_embeddings: {model.max_position_embeddings} is shorter than prepare.seq_len ({seq_len})")
    if not 0 < model.rotary_fraction <= 1:
        problems.append(f"model.rotary_fraction: {model.rotary_fraction} must be in (0, 1]")
    return problems


def _check_optimization(run: Optimization, section: str, seq_len: int) -> list[str]:
    problems: list[str] = []
    for field in ("tokens", "batch_sequences", "micro_batch_sequences", "eval_every", "eval_tokens", "save_every"):
        _positive(problems, f"{section}.{field}", getattr(run, field))
    if problems or seq_len <= 0:  # the checks below divide by these
        return problems
    if run.batch_sequences % run.micro_batch_sequences:
        problems.append(
            f"{section}.batch_sequences: {run.batch_sequences} is not divisible by micro_batch_sequences ({run.micro_batch_sequences})"
        )
    steps = total_steps(run, seq_len)
    if steps < 1:
        problems.append(f"{section}.tokens: {run.tokens} is less than one batch ({run.batch_sequences} x {seq_len} tokens)")
    if run.max_lr <= 0:
        problems.append(f"{section}.max_lr: {run.max_lr} must be > 0")
    if run.min_lr is not None and not 0 <= run.min_lr <= run.max_lr:
        problems.append(f"{section}.min_lr: {run.min_lr} must be in [0, max_lr = {run.max_lr}]")
    if run.warmup_steps is not None and run.warmup_fraction is not None:
        problems.append(f"{section}.warmup_steps: give warmup_steps or warmup_fraction, not both (set the other to null)")
    elif run.warmup_steps is not None and not 0 <= run.warmup_steps < max(steps, 1):
        problems.append(f"{section}.warmup_steps: {run.warmup_steps} must be in [0, {steps}) (the run has {steps} steps)")
    elif run.warmup_fraction is not None and not 0 <= run.warmup_fraction < 1:
        problems.append(f"{section}.warmup_fraction: {run.warmup_fraction} must be in [0, 1)")
    for field in ("decay_fraction", "cooldown_fraction", "anneal_fraction", "plateau_ratio"):
        if not 0 <= getattr(run, field) <= 1:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be in [0, 1]")
    for field in ("beta1", "beta2"):
        if not 0 <= getattr(run, field) < 1:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be in [0, 1)")
    for field in ("eps", "weight_decay", "grad_clip"):
        if getattr(run, field) < 0:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be >= 0")
    if isinstance(run, TrainConfig) and not 0 <= run.replay_fraction <= 1:
        problems.append(f"{section}.replay_fraction: {run.replay_fraction} must be in [0, 1]")
    if isinstance(run, PretrainConfig):
        bad = [s for s in run.checkpoint_steps if not 0 <= s < steps]
        if bad:
            problems.append(f"pretrain.checkpoint_steps: {bad} outside [0, {steps}) (pre-training has {steps} steps)")
    return problems


def _check_checkpoints(config: Config, base_dir: Path) -> list[str]:
    problems: list[str] = []
    revisions = {f"step{s}" for s in config.pretrain.checkpoint_steps} | {"final"}
    for name, spec in config.checkpoints.items():
        key = f"checkpoints.{name}"
        if not SAFE_NAME.match(str(name)):
            problems.append(f"{key}: checkpoint name must match {SAFE_NAME.pattern} (letters, digits, _ -)")
        if isinstance(spec, PretrainCheckpoint) and spec.revision not in revisions:
            problems.append(f"{key}.revision: {spec.revision!r} is not one of {', '.join(sorted(revisions))} (pretrain.checkpoint_steps)")
        if isinstance(spec, LocalCheckpoint) and not (base_dir / spec.path).is_dir():
            problems.append(f"{key}.path: {spec.path!r} is not a directory")
    if config.checkpoints and config.train.checkpoint not in config.checkpoints:
        problems.append(f"train.checkpoint: {config.train.checkpoint!r} is not one of {', '.join(config.checkpoints)} (names in `checkpoints`)")
    return problems


def cell_name(run: TrainConfig) -> str:
    """A readable, stable name derived from the cell's parameters only, e.g.
    `ckpt-final_lr-3e-4_warm-0.01_sched-cosine_replay-0`; also a Snakemake wildcard,
    a DVC stage key and a directory name. Non-default optimizers are appended."""
    warm = f"{run.warmup_steps}steps" if run.warmup_steps is not None else _number(run.warmup_fraction or 0.0)
    name = f"ckpt-{run.checkpoint}_lr-{_number(run.max_lr)}_warm-{warm}_sched-{run.schedule}_replay-{_number(run.replay_fraction)}"
    if run.optimizer != "adamw":
        name += f"_opt-{run.optimizer}"
    return name


def cells(config: Config) -> dict[str, TrainConfig]:
    """The grid's cells by name, in declaration order: the reference, each sweep, the cross
    product, the extra cells. A cell declared twice (a sweep through the reference) counts once."""
    built, problems = _expand(config)
    if problems:
        raise ConfigError("\n  ".join(["grid: problems:", *problems]))
    return built


def sweep_cells(config: Config, names: dict[str, TrainConfig]) -> dict[str, list[str]]:
    """Axis -> the cells of that one-axis sweep (the reference included), in value order."""
    reference = cell_name(config.train)
    out = {}
    for axis, values in config.grid.sweeps.items():
        members = [n for n, c in names.items() if all(getattr(c, a) == getattr(config.train, a) for a in GRID_AXES if a != axis)]
        members = [n for n in members if getattr(names[n], axis) in values]
        out[axis] = sorted(members, key=lambda n: (values.index(getattr(names[n], axis)), n))
        if reference not in out[axis]:
            out[axis].insert(0, reference)
    return out


def baseline_cells(names: dict[str, TrainConfig]) -> list[str]:
    """The paper's two baselines among the cells: no re-warming (a constant LR) and training from scratch."""
    return [n for n, c in names.items() if c.schedule == "constant" or c.checkpoint == "scratch"]


def grid_overrides(grid: GridConfig) -> list[tuple[str, dict[str, Any]]]:
    """(where declared, overrides of the reference) for every cell of the grid."""
    found: list[tuple[str, dict[str, Any]]] = [("train", {})]
    for axis, values in grid.sweeps.items():
        found += [(f"grid.sweeps.{axis}[{i}]", {axis: value}) for i, value in enumerate(values)]
    axes = list(grid.cross)
    for i, combination in enumerate(itertools.product(*grid.cross.values())):
        found.append((f"grid.cross[{i}]", dict(zip(axes, combination))))
    found += [(f"grid.extra[{i}]", dict(overrides)) for i, overrides in enumerate(grid.extra)]
    return found


def _expand(config: Config) -> tuple[dict[str, TrainConfig], list[str]]:
    cells_by_name: dict[str, TrainConfig] = {}
    where_by_name: dict[str, str] = {}
    problems: list[str] = []
    reference = to_dict(config.train)
    for where, overrides in grid_overrides(config.grid):
        unknown = [axis for axis in overrides if axis not in GRID_AXES]
        if unknown:
            problems.append(f"{where}: unknown axis {', '.join(map(repr, unknown))} (axes: {', '.join(GRID_AXES)})")
            continue
        merged = {**reference, **overrides}
        if "warmup_steps" in overrides and "warmup_fraction" not in overrides:
            merged["warmup_fraction"] = None  # a warm-up in steps replaces the reference's fraction
        if "warmup_fraction" in overrides and "warmup_steps" not in overrides:
            merged["warmup_steps"] = None
        cell_problems: list[str] = []
        cell = _build(TrainConfig, merged, where, cell_problems)
        if cell is not None and not cell_problems:
            cell_problems += [p.replace("train.", f"{where}: ", 1) for p in _check_optimization(cell, "train", config.prepare.seq_len)]
            if config.checkpoints and cell.checkpoint not in config.checkpoints:
                cell_problems.append(f"{where}: checkpoint {cell.checkpoint!r} is not one of {', '.join(config.checkpoints)}")
        if cell_problems or cell is None:
            problems += cell_problems
            continue
        name = cell_name(cell)
        if name in cells_by_name and cells_by_name[name] != cell:
            problems.append(f"{where}: cell name {name} is also {where_by_name[name]}'s, with other settings (names cover "
                            f"checkpoint, max_lr, warm-up, schedule, replay and optimizer only)")
        cells_by_name.setdefault(name, cell)
        where_by_name.setdefault(name, where)
    return cells_by_name, problems


def _number(value: float) -> str:
    """Compact, stable and dot-free (DVC splits keys at dots): an integer mantissa and a
    power of ten, e.g. 3e-4, 1e-2 (0.01), 25e-2 (0.25), 15e-4 (1.5e-3), 0, 2."""
    digits = decimal.Decimal(repr(float(value))).normalize()
    sign, mantissa, exponent = digits.as_tuple()
    if exponent >= 0:
        return str(int(digits))
    return f"{'-' if sign else ''}{int(''.join(map(str, mantissa)))}e{exponent}"


def total_steps(run: Optimization, seq_len: int) -> int:
    """Optimizer steps of a run: its token budget in whole global batches."""
    return run.tokens // (run.batch_sequences * seq_len)


def min_lr(run: Optimization) -> float:
    """The final LR: min_lr, or 0.1 x max_lr as in Pythia and Gupta et al. 2023."""
    return 0.1 * run.max_lr if run.min_lr is None else run.min_lr


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
