"""The configuration's schema: every section of `params.yaml` a frozen dataclass with a docstring per
field (the configuration reference in docs/ is generated from them), and the error that lists problems."""

from __future__ import annotations

import dataclasses
import re
import reprlib
from typing import Any, Literal, Optional, Union

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
    """The architecture: what `rewarm plan` counts, what the demo pre-trains and what `scratch` checkpoints
    without a `config` build. The default is GPT-NeoX (Pythia's: rotary embeddings, parallel attention and
    MLP, untied embeddings); other families by transformers' `model_type` (src/rewarm/families.py)."""

    model_type: Literal["gpt_neox", "llama", "mistral", "qwen2", "qwen3", "olmo2"] = "gpt_neox"
    """Family, as transformers names it in config.json. A hub or local checkpoint may be any causal LM
    transformers knows natively; this section describes its shape for `plan`."""
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
    """GPT-NeoX: share of each head's dimensions that get rotary embeddings (Pythia: 0.25); the other families
    rotate every dimension."""
    num_kv_heads: Optional[int] = None
    """Key and value heads (grouped-query attention; must divide num_heads). None: num_heads. GPT-NeoX has none."""
    head_dim: Optional[int] = None
    """Dimensions per head. None: hidden_size / num_heads (Qwen3 sets its own)."""
    tie_word_embeddings: bool = False
    """The output layer shares the input embedding's weights (Pythia and OLMo 2: no)."""
    rope_theta: float = 10000.0
    """Base of the rotary embeddings' frequencies (Pythia: 10,000; OLMo 2 and Llama 3: 500,000)."""


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
    activation_checkpointing: bool = False
    """Keep only each transformer block's input for the backward pass and recompute the block's activations
    there (transformers' gradient checkpointing, non-reentrant, per decoder layer; under DDP and FSDP alike):
    about a third more compute for activations of 2 x seq_len x micro_batch x hidden bytes a layer instead of
    34 (`rewarm plan` counts it), so models above a few billion parameters fit at the paper's micro-batch.
    The same results (on CPU bit for bit)."""
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
class LoggingConfig:
    """Training curves for experiment trackers, besides rewarm's own files (metrics.jsonl, curves/, DVCLive's
    dvclive/, which are always written). Nothing here changes a result: cells and their fingerprints ignore it."""

    tensorboard: bool = False
    """Also write TensorBoard event files to `<run>/tensorboard/` (`tensorboard --logdir runs`): the learning
    rate and training loss of every step and the validation losses and perplexities of every evaluation, as
    the run's other logs hold them; a resumed run rewrites them whole from its history. Needs the `tensorboard`
    package (`pip install 'rewarm[tensorboard]'`). Not a DVC output: event files hold wall-clock times."""
    wandb: bool = False
    """Also write a Weights & Biases run of the same scalars to `<run>/wandb/`, offline (`mode="offline"`: nothing
    leaves the machine; `wandb sync runs/<cell>/wandb/offline-run-*` uploads it when you choose), named by the cell,
    with its settings as the run's config; a resumed run rewrites it whole from its history. Needs the `wandb`
    package (`pip install 'rewarm[wandb]'`). Not a DVC output."""


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """How the report draws the grid (`rewarm report`). Nothing here changes a result: cells and their
    fingerprints ignore it."""

    tokens_per_billion: Optional[int] = None
    """The grid's tokens that stand for one billion of the paper's, for the figures' token axes, which are
    in billions as the paper's are: the demo's 1,024 (one step of 8 x 128 tokens for the paper's 1B, so the
    axes read as the paper's Figs. 1-7); null (full scale): a billion, the tokens themselves."""


@dataclasses.dataclass(frozen=True)
class HalvingConfig:
    """Early stopping of a grid, one rung of successive halving (Jamieson and Talwalkar 2016; Li et al. 2018's
    Hyperband): every cell the law can describe trains to `fraction` of its steps first (`rung`), the law is
    fitted on all those early curves at once, and only the cells whose forecast final loss is within `margin`
    of their study's best are trained to the end (`halve`, then `train`); the others end at the rung (`rewarm plan`
    prints the GPU-hours saved)."""

    fraction: Optional[float] = None
    """The share of each cell's steps trained before the law decides, in (0, 1) (null: no early stopping)."""
    margin: float = 0.05
    """A cell goes on when its forecast objective (forecast.search.upstream_weight x upstream + the rest x
    downstream final loss) is within this many nats of the best of the cells it decides in a study the cell is in."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The schedule search on the fitted law (`rewarm forecast`): the reference cell (`train`) with each
    combination of these values, at the token budget; the one that minimises the weighted final loss wins
    (Wang, Tissue et al. 2025, section 5: balancing general and domain performance)."""

    max_lr: list[float] = dataclasses.field(default_factory=list)
    """Maximum learning rates to try (empty: those of the fitted cells)."""
    warmup_fraction: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.005, 0.01, 0.02])
    """Warm-ups to try, as shares of the schedule (Gupta et al. 2023's 0 to 2%)."""
    replay_fraction: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1, 0.25, 0.5])
    """Replay shares to try (Ibrahim et al. 2024 sweep 0 to 50%)."""
    tokens: Optional[int] = None
    """The token budget (null: train.tokens)."""
    upstream_weight: float = 0.5
    """w in w x upstream + (1 - w) x downstream loss: 0 cares only for the new data, 1 only for the old."""


@dataclasses.dataclass(frozen=True)
class ForecastConfig:
    """The continual pre-training law of Wang, Tissue et al. 2025 (`rewarm forecast`), fitted on a few
    cells, forecasting every other cell's curve and final loss on both corpora."""

    fit: list[str] = dataclasses.field(default_factory=list)
    """The cells the law is fitted on: names (`rewarm grid` lists them) or where they are declared
    (`max_lr.vary[0]`). Empty: no forecast (the stage does not run)."""
    decay: float = 0.999
    """The annealing momentum's decay (Tissue et al. 2024's lambda: 0.999 in their runs)."""
    extrapolation: float = 2.0
    """A forecast for a cell longer than this many times the longest fitted cell is marked as an extrapolation."""
    base_points: bool = True
    """Also fit on each pre-trained base checkpoint's evaluation before training (a point of the hidden
    pre-training curve, costing no training): what lets the law forecast cells from other checkpoints."""
    search: SearchConfig = SearchConfig()
    """The schedule search on the fitted law."""
    halving: HalvingConfig = HalvingConfig()
    """Early stopping of the grid by the law fitted on the cells' first steps (off unless `fraction` is set)."""


@dataclasses.dataclass(frozen=True)
class HubCheckpoint:
    """A model on the Hugging Face hub at a revision, as Pythia publishes them."""

    type: Literal["hub"]
    repo_id: str
    """Hub model id, e.g. `EleutherAI/pythia-410m`."""
    revision: str = "main"
    """Branch, tag or commit; Pythia's are `step0`, `step1000`, ... `step143000` (final), OLMo 2's
    `stage1-step<N>-tokens<M>B`."""
    tokens_seen: Optional[int] = None
    """Tokens the model was pre-trained on, to order a checkpoints study (the latest is the paper's
    reference). None: read from the revision (`...-tokens21B`: 21B), else its step (`step<N>`)."""


@dataclasses.dataclass(frozen=True)
class LocalCheckpoint:
    """A Hugging Face model directory on disk (config.json, weights, tokenizer files) of any causal LM that
    transformers knows natively (GPT-NeoX, Llama, Qwen2, OLMo 2, ...), as `hub` checkpoints are too."""

    type: Literal["local"]
    path: str
    """Directory path, relative to the project directory or absolute."""
    tokens_seen: Optional[int] = None
    """Tokens the model was pre-trained on, to order a checkpoints study (None: unknown)."""


@dataclasses.dataclass(frozen=True)
class ScratchCheckpoint:
    """The same architecture freshly initialised with a fixed seed: the from-scratch baseline."""

    type: Literal["scratch"]
    seed: int = 0
    """Initialisation seed."""
    config: Optional[str] = None
    """Take the architecture from this model (hub id or directory; any causal LM transformers knows natively:
    GPT-NeoX, Llama, Qwen2, OLMo 2, ...); None: the `model` section (GPT-NeoX)."""
    revision: Optional[str] = None
    """Revision of `config` on the hub."""
    init: Literal["hf", "gpt-neox"] = "hf"
    """hf: the family's initialisation in transformers (GPT-NeoX's: normal(0, 0.02) for every weight matrix).
    gpt-neox (GPT-NeoX models only): GPT-NeoX's small_init for every weight matrix, normal(0, sqrt(2 / (5 d))),
    and wang_init for the attention and MLP output projections, normal(0, 2 / (L sqrt(d))), as the papers'
    from-scratch runs were initialised."""


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
    logging: LoggingConfig = LoggingConfig()
    """Curves for experiment trackers (TensorBoard), besides rewarm's own logs."""
    report: ReportConfig = ReportConfig()
    """How the report draws the grid (its figures' token axes)."""
    forecast: ForecastConfig = ForecastConfig()
    """The continual pre-training law fitted on a few cells, forecasting the rest (`rewarm forecast`)."""

    def sources(self) -> dict[tuple[str, str], Source]:
        """Every (corpus, split) source, in a stable order."""
        return {(c, s): src for c, corpus in self.corpora.items() for s, src in corpus.splits().items()}

    def forecasting(self) -> bool:
        """Whether the `forecast` stage runs: cells to fit the law on are declared."""
        return bool(self.forecast.fit)

    def halving(self) -> bool:
        """Whether the grid stops early the cells the law forecasts to be worse (`forecast.halving.fraction`)."""
        return self.forecast.halving.fraction is not None

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


DEMO_TASKS = ("demo_next_word", "demo_cloze")
"""The demo's own benchmark tasks, written by the pipeline (`rewarm tasks`); naming one needs benchmark.demo_tasks."""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_SHOWN = reprlib.Repr()
"""What a message shows of a bad value: bounded, so that a huge or aliased value cannot flood it."""
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 4, 4, 60, 60, 60


def _show(value: Any) -> str:
    return f"{_SHOWN.repr(value)} ({type(value).__name__})" if value is not None else "null"
