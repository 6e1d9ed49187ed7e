"""Typed, validated configuration: `params.yaml` into frozen dataclasses.

Every section is a frozen dataclass with a docstring per field. Loading collects
every problem (unknown key, wrong type, impossible value, missing file) and
raises them together in one `ConfigError`, each naming its key and what is
allowed, before any work starts (as litgpt does: `raise ValueError("\\n".join(issues))`).
"""

from __future__ import annotations

import dataclasses
import fractions
import glob
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from rewarm import schedules

# Names that become directory names, Snakemake wildcards and DVC stage keys: no path
# separators, no `..`, no shell metacharacters (names cannot escape the project), and no
# dots, which DVC reads as key separators in `params: - corpora.<name>`.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Used with `fullmatch` only: `match` with `$` would let a name end in a newline."""


class ConfigError(ValueError):
    """One or more problems in the configuration, one per line."""


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A source sampled by a metadata field with weights (SlimPajama by `meta.redpajama_set_name`,
    the Pile by `meta.pile_set_name`): each part gets its weight's share of the source's token
    budget (max_tokens), filled in the order the source is read; reading stops once every part is
    full (or the source ends, and the manifest says which parts fell short). Streamed: memory does
    not grow with the corpus."""

    field: str
    """Dotted path of the part's name in each record, e.g. `meta.redpajama_set_name`."""
    weights: dict[str, float]
    """Part name (the field's value) -> weight; normalised to shares. Documents of other parts are skipped."""


@dataclasses.dataclass(frozen=True)
class DemoSource:
    """The embedded demo: a seeded generator of synthetic documents in one domain,
    written as Pile- (upstream) or SlimPajama-format (downstream) `.jsonl.zst` by
    `rewarm generate`, then read by the same JSON-lines reader as real data."""

    type: Literal["demo"]
    domain: Literal["upstream", "downstream", "news"]
    """Text distribution: `upstream` (the Pile's parts at the Pile's weights, in its format),
    `downstream` (SlimPajama's parts at the paper's sampling weights, in its format): mixtures
    of the same kinds of sources in one language, or `news` (news reports and recipes; a third
    domain for held-out evaluation)."""
    documents: int
    """Number of documents to generate."""
    seed: int = 0
    """Generator seed; use different seeds for train and validation."""
    files: int = 1
    """Files the documents are written to, in order, as real corpora ship in several files (the Pile
    in 30): each file is one unit of `prepare`'s parts (`prepare.parts`). One file: `<split>.jsonl.zst`."""
    max_tokens: Optional[int] = None
    """Stop reading once this many tokens are packed (None: read everything)."""
    mixture: Optional[Mixture] = None
    """Sample the source's parts with weights (needs max_tokens); None: read it as it comes."""


@dataclasses.dataclass(frozen=True)
class JsonlSource:
    """JSON lines with a text field, plain (`.jsonl`), zstd-compressed (`.jsonl.zst`, as the Pile and
    SlimPajama ship) or gzip-compressed (`.jsonl.gz`), one file or a glob."""

    type: Literal["jsonl"]
    path: str
    """File path or glob pattern, relative to the project directory; files are read in sorted order."""
    text_field: str = "text"
    """Name of the field holding the document text."""
    max_tokens: Optional[int] = None
    """Stop reading once this many tokens are packed (None: read everything)."""
    mixture: Optional[Mixture] = None
    """Sample the source's parts with weights (needs max_tokens); None: read it as it comes."""


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
    mixture: Optional[Mixture] = None
    """Sample the source's parts with weights (needs max_tokens); None: read it as it comes."""


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
    parts: int = 1
    """Independent jobs each corpus is tokenized in (`rewarm prepare --part`), then assembled
    (`rewarm assemble`). A split's units (its input files; a hub dataset's shards) are dealt to the
    parts in contiguous groups; each unit is packed on its own, so the shards are the same for any
    number of parts. Parts beyond a split's units have nothing of it to do."""
    workers: int = 1
    """Tokenizer threads per part job (Snakemake's `threads`, DVC's `--workers`); any count gives
    the same shards."""


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
    """Where the run stops, in tokens trained on (global, over all processes); steps = tokens //
    (batch_sequences x seq_len). The paper stops its cells at 50B or 240B tokens of a 297B schedule."""
    schedule_tokens: Optional[int] = None
    """Length of the learning-rate schedule in tokens: warm-up fractions (and wsd's and the infinite
    schedules' fractions) are of this length. None: the run's own `tokens`. Gupta et al. 2023 lay every schedule
    over the whole downstream dataset (296.86B tokens) and stop earlier."""
    decay_end_tokens: Optional[int] = None
    """Where the decay reaches min_lr, in tokens; the learning rate stays at min_lr after it. None: at
    the end of the schedule (schedule_tokens). Gupta et al. 2023: 240B tokens."""
    batch_sequences: int = 32
    """Global batch in sequences; the global batch in tokens, not the hardware, defines the run."""
    micro_batch_sequences: int = 16
    """Sequences per forward pass per process; gradient accumulation makes up the global batch."""
    schedule: Literal["cosine", "constant", "linear", "wsd", "infinite-cosine", "infinite-inv-sqrt", "rex", "neox-floored-cosine",
                      "neox-cosine"] = "cosine"
    """Learning-rate schedule (src/rewarm/schedules.py). The papers' runs are GPT-NeoX's own cosine, update by update:
    neox-floored-cosine (Gupta et al. 2023: a cosine over the whole schedule, floored at min_lr, which it meets near
    80% of it) and neox-cosine (Ibrahim et al. 2024: max_lr to min_lr over the schedule); both warm up from LR 0.
    Neither takes decay_end_tokens."""
    max_lr: float = 3e-4
    """Peak learning rate after warm-up (Pythia-410M's own: 3e-4)."""
    min_lr: Optional[float] = None
    """Final learning rate (None: 0.1 x max_lr, as Pythia and Gupta et al. 2023)."""
    warmup_fraction: Optional[float] = 0.01
    """Warm-up as a fraction of the schedule's length (the paper sweeps 0, 0.005, 0.01, 0.02 of 297B tokens)."""
    warmup_steps: Optional[int] = None
    """Warm-up in steps; set warmup_fraction to null to use it."""
    decay_fraction: float = 0.2
    """wsd: share of the run spent decaying at the end."""
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    """wsd: shape of the final decay."""
    constant_lr: Optional[float] = None
    """infinite-cosine, infinite-inv-sqrt (Ibrahim et al. 2024): the learning rate of the constant phase,
    which the cooldown reaches and a continuation on the next dataset keeps (authors: `constant_lr`,
    1.65e-4 for a maximum of 3e-4). Required by those schedules."""
    cooldown_end_fraction: float = 0.6
    """infinite schedules: where the cooldown from max_lr to constant_lr ends, as a fraction of the
    schedule's length (authors: `cooldown_iters_percent`, 0.6); 0: no cooldown (a continuation)."""
    constant_end_fraction: float = 0.85
    """infinite schedules: where the constant phase ends and the exponential annealing to min_lr
    begins, as a fraction of the schedule's length (authors: `constant_iters_percent`, 0.85); 1: no annealing."""
    timescale: float = 10.0
    """infinite-inv-sqrt: steepness of the inverse-square-root cooldown, h(x) = 1/sqrt(1 + timescale x) - 1
    (authors: `timescale`, 10)."""
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
    loss_scale_window: int = 2000
    """fp16: steps without overflow after which the dynamic loss scale doubles (torch's default 2000; the
    papers' runs: DeepSpeed's loss_scale_window 1000)."""
    seed: int = 0
    """Seed of the data order (and of anything random in training)."""
    eval_every: int = 20
    """Evaluate on the validation samples every this many steps (and at step 0, before any update, and
    at the last step)."""
    early_eval_every: Optional[int] = None
    """Evaluate every this many steps during the first `early_eval_steps` steps, to resolve the
    stability gap (the authors' runs: every 50 steps during warm-up, every 100 after). None: eval_every throughout."""
    early_eval_steps: int = 0
    """How many of the first steps are evaluated every `early_eval_every` steps."""
    eval_tokens: int = 16384
    """Tokens of each validation split used for in-training evaluation (a fixed sample)."""
    save_every: int = 25
    """Save the resumable state every this many steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available (bf16 autocast, fused AdamW), else CPU (float32)."""
    compile: bool = False
    """torch.compile the model (GPU runs)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How several processes (torchrun) share a run. `ddp`: DistributedDataParallel, every process holds
    the whole model, its gradients and both Adam moments (16 bytes per parameter). `fsdp`: PyTorch's
    FSDP (`fully_shard`, one unit per transformer block), which shards those across the processes, with
    a sharded resumable state (torch.distributed.checkpoint): for models that do not fit one GPU
    (`rewarm plan --gpus N` says which do). Results agree up to floating-point order."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Arithmetic of training: `fp16` autocast with dynamic loss scaling (Gupta et al. 2023's), `bf16`
    autocast, `fp32`. auto: bf16 on a GPU that supports it, fp16 on one that does not, fp32 on the CPU.
    fp16 on the CPU is emulated (CPU float16 autocast and loss scaling), slowly: for tests only."""


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
    train_corpus: str = "downstream"
    """The corpus trained on: `downstream` (SlimPajama: the shift), `upstream` (the Pile again, no
    shift: Gupta et al. 2023, section 4.4), or any other corpus with a train split (the next dataset
    of a sequence)."""


@dataclasses.dataclass(frozen=True)
class Study:
    """One study of the grid (src/rewarm/grid.py expands it): cells sharing fixed settings, varying
    one axis (a sweep) or several (every combination), plus baselines."""

    title: str = ""
    """What the study asks, for the report's section (e.g. "How long to warm up? (Gupta et al. 2023, 4.1)")."""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Settings every cell of the study shares, over the `train` section (e.g. its token budget `tokens`)."""
    vary: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Axis -> values. One axis: a sweep; several: every combination (e.g. checkpoint x warm-up)."""
    baselines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Further cells, as overrides of the study's settings (e.g. the constant-LR "no re-warming" baseline)."""
    cells: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Cells listed one by one, as overrides of the study's settings, that are the study's own rather
    than baselines (e.g. the datasets of a sequence, each continuing the one before)."""


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The grid, declared once as named studies (the paper's five, or the demo's miniature)."""

    studies: dict[str, Study] = dataclasses.field(default_factory=dict)
    """Study name -> study. A cell declared by several studies is one cell; a cell that only stops
    earlier than another with the same settings is read from that longer run."""


@dataclasses.dataclass(frozen=True)
class DemoTasks:
    """(Demo) benchmark tasks written by `rewarm tasks` from a demo domain, in the LM Evaluation
    Harness's task format: `demo_next_word` (which of four words comes next) and `demo_cloze` (a
    passage's last word, as LAMBADA), one example of each per document."""

    domain: Literal["upstream", "downstream", "news"] = "news"
    """The demo domain the examples are drawn from: `news`, held out of every training corpus."""
    documents: int = 200
    """Documents drawn; each gives one example per task (fewer where a document has no fit)."""
    seed: int = 8
    """Generator seed: different from every corpus's seed, so no example is a validation document."""


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Benchmarks with the LM Evaluation Harness (`rewarm benchmark`) on every cell's final model and
    every base checkpoint; `benchmark: null` or no tasks switches the stage off in both front ends."""

    tasks: dict[str, int] = dataclasses.field(default_factory=dict)
    """Harness task (or group) name -> few-shot examples, e.g. {hellaswag: 0, mmlu: 5}."""
    demo_tasks: Optional[DemoTasks] = None
    """(Demo) write the demo's own tasks (offline); null where every task is the harness's."""
    limit: Optional[int] = None
    """Examples per task at most (null: all); for quick checks, as the harness's --limit."""
    batch_size: int = 16
    """Sequences per forward pass. Recorded with the scores: the harness's scores can move with it
    (padding changes the arithmetic); the README says how much ours do."""


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
    init: Literal["hf", "gpt-neox"] = "hf"
    """hf: Hugging Face's initialisation, normal(0, 0.02) for every weight matrix. gpt-neox: GPT-NeoX's small_init
    for every weight matrix, normal(0, sqrt(2 / (5 d))), and wang_init for the attention and MLP output
    projections, normal(0, 2 / (L sqrt(d))), as the papers' from-scratch runs were initialised."""


@dataclasses.dataclass(frozen=True)
class PretrainCheckpoint:
    """A checkpoint of the demo's own pre-training series (`rewarm pretrain`)."""

    type: Literal["pretrain"]
    revision: str = "final"
    """`step<N>` with N in pretrain.checkpoint_steps, or `final`."""


@dataclasses.dataclass(frozen=True)
class CellCheckpoint:
    """The final state of another cell of the grid: a run that continues it on its own corpus, as the
    datasets of a sequence follow one another (Ibrahim et al. 2024, section 7: an infinite schedule goes
    on with its constant phase on the next dataset, without re-warming)."""

    type: Literal["cell"]
    cell: str
    """The cell continued: its name as `rewarm grid` lists it, or where the grid declares it
    (`<study>.cells[<i>]`, `<study>.vary[<i>]`, `<study>.baselines[<i>]`, counted from 0). Its training is a
    dependency of every cell that starts from this checkpoint, under Snakemake and DVC alike."""
    optimizer: bool = False
    """Also carry that cell's final optimizer state (Adam's moments) instead of a fresh one; the
    continuing cell's own hyperparameters (betas, weight decay) still apply."""


CheckpointSpec = Union[HubCheckpoint, LocalCheckpoint, ScratchCheckpoint, PretrainCheckpoint, CellCheckpoint]
CHECKPOINT_TYPES: dict[str, type] = {
    "hub": HubCheckpoint,
    "local": LocalCheckpoint,
    "scratch": ScratchCheckpoint,
    "pretrain": PretrainCheckpoint,
    "cell": CellCheckpoint,
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
    """The cells: named studies around `train`."""
    benchmark: Optional[BenchmarkConfig] = None
    """LM Evaluation Harness tasks (null or no tasks: no benchmarks)."""

    def sources(self) -> dict[tuple[str, str], Source]:
        """Every (corpus, split) source, in a stable order."""
        return {(c, s): src for c, corpus in self.corpora.items() for s, src in corpus.splits().items()}

    def benchmarking(self) -> bool:
        """Whether the `benchmark` stage runs: a `benchmark` section with tasks."""
        return self.benchmark is not None and bool(self.benchmark.tasks)

    def demo_tasks(self) -> bool:
        """Whether the `tasks` stage writes the demo's own benchmark tasks."""
        return self.benchmarking() and self.benchmark.demo_tasks is not None

    def eval_corpora(self) -> list[str]:
        """Corpora with a validation split, upstream and downstream first: what `evaluate` measures."""
        names = [name for name, corpus in self.corpora.items() if corpus.val is not None]
        return sorted(names, key=lambda name: (name != "upstream", name != "downstream"))


# -- loading -----------------------------------------------------------------------------------


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


def load(paths: list[str | Path] | str | Path, base_dir: str | Path = ".") -> Config:
    """Read one or more YAML files (later ones deep-merged over earlier ones, as Snakemake's
    `--configfile` does) and validate them."""
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
        merged = deep_merge(merged, data)
    return from_dict(merged, base_dir=base_dir, origin=", ".join(str(p) for p in paths))


# Named collections: in a later file, `name: null` removes an entry an earlier file declared.
COLLECTIONS = ("corpora", "checkpoints")
# Sections a later file replaces whole: a paper's studies (and benchmark tasks) are not mixed with the demo's.
REPLACED = ("grid", "benchmark")


def deep_merge(base: dict, override: dict, _path: tuple = ()) -> dict:
    """`override` merged into `base`, mappings key by key. A source or checkpoint whose `type`
    changes is replaced, not merged (its fields differ); `<collection>.<name>: null` removes it;
    a later `grid` replaces the earlier one whole."""
    out = dict(base)
    for key, value in override.items():
        if not _path and key in REPLACED:
            out[key] = value
        elif value is None and _path and _path[0] in COLLECTIONS and len(_path) == 1:
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
        if not SAFE_NAME.fullmatch(str(name)):
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
    for field in ("seq_len", "shard_sequences", "batch_documents", "parts", "workers"):
        _positive(problems, f"prepare.{field}", getattr(prep, field))
    problems.extend(_check_model(config.model, prep.seq_len))
    problems.extend(_check_optimization(config.pretrain, "pretrain", prep.seq_len))
    problems.extend(_check_optimization(config.train, "train", prep.seq_len))
    problems.extend(check_train_corpus(config, config.train.train_corpus, "train.train_corpus"))
    problems.extend(_check_checkpoints(config, base_dir))
    problems.extend(_check_benchmark(config.benchmark))
    if not problems:
        from rewarm import grid  # grid builds on this module's schema

        problems.extend(grid.expand(config)[1])
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


def _replayed_per_step(replay_fraction: float, batch_sequences: int) -> fractions.Fraction:
    """The replay share of a batch in sequences, exactly (0.005 of 8 is 1/25)."""
    return fractions.Fraction(repr(float(replay_fraction))) * batch_sequences


def replay_before(replay_fraction: float, batch_sequences: int, step: int) -> int:
    """Upstream sequences in the global batches of steps 0 .. step - 1: floor(step x share x batch),
    in exact arithmetic. The share is thus exact over every run, not rounded per step: 0.5% of a batch
    of 8 replays one sequence every 25 steps (Ibrahim et al. 2024 sweep 0.5% and 1%). Where the share
    is a whole number of sequences, every step replays that many."""
    return math.floor(_replayed_per_step(replay_fraction, batch_sequences) * step)


def replay_is_whole(replay_fraction: float, batch_sequences: int) -> bool:
    """Whether the replay share is a whole number of each batch's sequences (then every step replays as many)."""
    return _replayed_per_step(replay_fraction, batch_sequences).denominator == 1


def replay_in_step(replay_fraction: float, batch_sequences: int, step: int) -> int:
    """Upstream sequences in the global batch of `step` (see replay_before)."""
    return replay_before(replay_fraction, batch_sequences, step + 1) - replay_before(replay_fraction, batch_sequences, step)


def _check_optimization(run: Optimization, section: str, seq_len: int) -> list[str]:
    problems: list[str] = []
    for field in ("tokens", "batch_sequences", "micro_batch_sequences", "eval_every", "eval_tokens", "save_every", "loss_scale_window"):
        _positive(problems, f"{section}.{field}", getattr(run, field))
    for field in ("schedule_tokens", "decay_end_tokens", "early_eval_every"):
        _positive(problems, f"{section}.{field}", getattr(run, field), optional=True)
    if run.early_eval_steps < 0:
        problems.append(f"{section}.early_eval_steps: {run.early_eval_steps} must be >= 0")
    if problems or seq_len <= 0:  # the checks below divide by these
        return problems
    if run.batch_sequences % run.micro_batch_sequences:
        problems.append(
            f"{section}.batch_sequences: {run.batch_sequences} is not divisible by micro_batch_sequences ({run.micro_batch_sequences})"
        )
    steps = total_steps(run, seq_len)
    if steps < 1:
        problems.append(f"{section}.tokens: {run.tokens} is less than one batch ({run.batch_sequences} x {seq_len} tokens)")
    if run.schedule_tokens is not None and run.schedule_tokens < run.tokens:
        problems.append(f"{section}.schedule_tokens: {run.schedule_tokens} is shorter than the run (tokens = {run.tokens}); "
                        f"a schedule is laid out over at least the tokens trained")
    schedule = schedule_steps(run, seq_len)
    decay = decay_steps(run, seq_len)
    if run.decay_end_tokens is not None and not 1 <= decay <= schedule:
        problems.append(f"{section}.decay_end_tokens: {run.decay_end_tokens} must be within the schedule: at least one "
                        f"batch and at most schedule_tokens ({schedule * run.batch_sequences * seq_len})")
        decay = schedule
    if run.schedule in schedules.GPT_NEOX and run.decay_end_tokens is not None:
        problems.append(f"{section}.decay_end_tokens: schedule {run.schedule} has no separate decay end (GPT-NeoX's cosine spans "
                        f"the schedule, schedule_tokens); set it to null")
    if run.max_lr <= 0:
        problems.append(f"{section}.max_lr: {run.max_lr} must be > 0")
    if run.min_lr is not None and not 0 <= run.min_lr <= run.max_lr:
        problems.append(f"{section}.min_lr: {run.min_lr} must be in [0, max_lr = {run.max_lr}]")
    if run.warmup_steps is not None and run.warmup_fraction is not None:
        problems.append(f"{section}.warmup_steps: give warmup_steps or warmup_fraction, not both (set the other to null)")
    elif run.warmup_steps is not None and not 0 <= run.warmup_steps < max(decay, 1):
        problems.append(f"{section}.warmup_steps: {run.warmup_steps} must be in [0, {decay}) (the decay ends at step {decay})")
    elif run.warmup_fraction is not None and not 0 <= run.warmup_fraction < 1:
        problems.append(f"{section}.warmup_fraction: {run.warmup_fraction} must be in [0, 1)")
    elif run.warmup_fraction and round(run.warmup_fraction * schedule) >= decay:
        problems.append(f"{section}.warmup_fraction: {run.warmup_fraction} of the schedule's {schedule} steps does not end "
                        f"before the decay does (step {decay})")
    for field in ("decay_fraction", "cooldown_end_fraction", "constant_end_fraction"):
        if not 0 <= getattr(run, field) <= 1:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be in [0, 1]")
    if run.cooldown_end_fraction > run.constant_end_fraction:
        problems.append(f"{section}.cooldown_end_fraction: {run.cooldown_end_fraction} is after constant_end_fraction "
                        f"({run.constant_end_fraction}): the cooldown must end before the constant phase does")
    if run.schedule.startswith("infinite-") and (run.constant_lr is None or run.constant_lr <= 0):
        problems.append(f"{section}.constant_lr: schedule {run.schedule} needs constant_lr > 0, the learning rate of its "
                        f"constant phase (Ibrahim et al. 2024: 1.65e-4 for max_lr 3e-4), got {run.constant_lr}")
    if run.timescale <= 0:
        problems.append(f"{section}.timescale: {run.timescale} must be > 0")
    for field in ("beta1", "beta2"):
        if not 0 <= getattr(run, field) < 1:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be in [0, 1)")
    for field in ("eps", "weight_decay", "grad_clip"):
        if getattr(run, field) < 0:
            problems.append(f"{section}.{field}: {getattr(run, field)} must be >= 0")
    if isinstance(run, TrainConfig) and not 0 <= run.replay_fraction <= 1:
        problems.append(f"{section}.replay_fraction: {run.replay_fraction} must be in [0, 1]")
    elif isinstance(run, TrainConfig) and run.replay_fraction > 0 and replay_before(run.replay_fraction, run.batch_sequences, steps) == 0:
        problems.append(f"{section}.replay_fraction: {run.replay_fraction:g} of {steps} steps of {run.batch_sequences} sequences "
                        f"replays no sequence at all; the smallest share that replays one is {1 / (steps * run.batch_sequences):g}")
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
        if not SAFE_NAME.fullmatch(str(name)):
            problems.append(f"{key}: checkpoint name must match {SAFE_NAME.pattern} (letters, digits, _ -)")
        if isinstance(spec, PretrainCheckpoint) and spec.revision not in revisions:
            problems.append(f"{key}.revision: {spec.revision!r} is not one of {', '.join(sorted(revisions))} (pretrain.checkpoint_steps)")
        if isinstance(spec, LocalCheckpoint) and not (base_dir / spec.path).is_dir():
            problems.append(f"{key}.path: {spec.path!r} is not a directory")
    if config.checkpoints and config.train.checkpoint not in config.checkpoints:
        problems.append(f"train.checkpoint: {config.train.checkpoint!r} is not one of {', '.join(config.checkpoints)} (names in `checkpoints`)")
    return problems


def _check_benchmark(spec: BenchmarkConfig | None) -> list[str]:
    from rewarm.benchmark import DEMO_TASKS

    if spec is None:
        return []
    problems = []
    for name, shots in spec.tasks.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
            problems.append(f"benchmark.tasks.{name}: not a harness task name (letters, digits, _ . -)")
        if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
            problems.append(f"benchmark.tasks.{name}: few-shot examples must be an integer >= 0, got {_show(shots)}")
        if name in DEMO_TASKS and spec.demo_tasks is None:
            problems.append(f"benchmark.tasks.{name}: a demo task needs benchmark.demo_tasks (the pipeline writes it)")
    if spec.demo_tasks is not None:
        _positive(problems, "benchmark.demo_tasks.documents", spec.demo_tasks.documents)
    _positive(problems, "benchmark.limit", spec.limit, optional=True)
    _positive(problems, "benchmark.batch_size", spec.batch_size)
    return problems


def check_train_corpus(config: Config, corpus: str, key: str) -> list[str]:
    """A cell's train_corpus must be a corpus with a train split."""
    trainable = [name for name, c in config.corpora.items() if c is not None and c.train is not None]
    if corpus not in trainable:
        return [f"{key}: {corpus!r} is not a corpus with a train split (have: {', '.join(trainable)})"]
    return []


def total_steps(run: Optimization, seq_len: int) -> int:
    """Optimizer steps of a run: where it stops, in whole global batches."""
    return run.tokens // (run.batch_sequences * seq_len)


def schedule_steps(run: Optimization, seq_len: int) -> int:
    """Length of the run's schedule in steps (schedule_tokens, or the run's own length)."""
    tokens = run.tokens if run.schedule_tokens is None else run.schedule_tokens
    return tokens // (run.batch_sequences * seq_len)


def warmup_steps(run: Optimization, seq_len: int) -> int:
    """The run's warm-up in steps: warmup_steps, or warmup_fraction of the schedule's length."""
    return schedules.warmup_steps_for(schedule_steps(run, seq_len), run.warmup_steps, run.warmup_fraction)


def warmup_exact(run: Optimization, seq_len: int) -> float:
    """The warm-up as GPT-NeoX counts it, a real number of steps (the `neox-` schedules): warmup_steps, or
    warmup_fraction x the schedule's length unrounded (1% of 131,296 steps: 1312.96)."""
    return schedules.warmup_exact(schedule_steps(run, seq_len), run.warmup_steps, run.warmup_fraction)


def decay_steps(run: Optimization, seq_len: int) -> int:
    """Step count at which the decay ends (min_lr from step decay_steps - 1 on)."""
    if run.decay_end_tokens is None:
        return schedule_steps(run, seq_len)
    return run.decay_end_tokens // (run.batch_sequences * seq_len)


def min_lr(run: Optimization) -> float:
    """The final LR: min_lr, or 0.1 x max_lr as in Pythia and Gupta et al. 2023."""
    return 0.1 * run.max_lr if run.min_lr is None else run.min_lr


def _check_source(source: Source | None, key: str, base_dir: Path) -> list[str]:
    problems: list[str] = []
    if source is None:
        return problems
    _positive(problems, f"{key}.max_tokens", source.max_tokens, optional=True)
    if source.mixture is not None:
        if source.max_tokens is None:
            problems.append(f"{key}.mixture: needs {key}.max_tokens (each part gets its weight's share of that budget)")
        if not source.mixture.field:
            problems.append(f"{key}.mixture.field: must name a field, e.g. meta.redpajama_set_name")
        if not source.mixture.weights:
            problems.append(f"{key}.mixture.weights: give at least one part and its weight")
        problems += [f"{key}.mixture.weights.{part}: {weight} must be > 0" for part, weight in source.mixture.weights.items()
                     if not weight > 0]
    if isinstance(source, DemoSource):
        _positive(problems, f"{key}.documents", source.documents)
        _positive(problems, f"{key}.files", source.files)
        if source.files > source.documents > 0:
            problems.append(f"{key}.files: {source.files} files for {source.documents} documents (at most one file per document)")
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
