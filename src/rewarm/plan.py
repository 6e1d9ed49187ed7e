"""`rewarm plan`: what a grid costs, before anything runs.

Per cell: tokens, optimizer steps, training FLOPs (6 x parameters x tokens, Kaplan et al. 2020),
GPU-hours at a given model FLOPs utilisation and GPU peak, the tokens it evaluates (during training
and in its `evaluate` job) and their GPU-hours (2 x parameters x tokens: forward passes only), and
an estimate of peak GPU memory for a micro-batch; for the grid: the disk its shards and checkpoints
take. The parameter count is
exact (the `model` section's architecture, by the formula of its family); the rest are estimates whose
formulas are written out below so they can be checked by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rewarm import config as cfg
from rewarm import families, grid
from rewarm.io import human_bytes

BYTES_FP32 = 4


@dataclass(frozen=True)
class CellPlan:
    name: str
    run: str
    """The cell whose training produces this one: itself, or a longer run it is read from (no cost)."""
    tokens: int
    """Tokens trained on: whole global batches (steps x batch x seq_len)."""
    steps: int
    flops: float
    """6 x parameters x tokens: forward (2) and backward (4) passes (evaluations not counted)."""
    gpu_hours: float
    """flops / (mfu x peak), in hours of one GPU."""
    memory_bytes: int
    """Peak GPU memory estimate for one micro-batch on one GPU under DDP (see `peak_memory`)."""
    fsdp_memory_bytes: int = 0
    """The same under FSDP over the plan's GPUs per cell (see `fsdp_memory`)."""
    eval_tokens: int = 0
    """Tokens evaluated: during training (a run's, not a cell read from it) and by its `evaluate` job."""
    eval_gpu_hours: float = 0.0
    """2 x parameters x eval_tokens / (mfu x peak), in hours of one GPU."""
    train_eval_gpu_hours: float = 0.0
    """Of those, the evaluations during training (inside the training job)."""


@dataclass(frozen=True)
class GridPlan:
    parameters: int
    cells: list[CellPlan]
    studies: dict[str, list[str]]
    """Study -> its cells' names (a cell may be in several)."""
    shard_bytes: int
    """Packed tokens of every corpus budget (max_tokens) in the dtype `prepare` writes (uint16 up to 65,536 ids)."""
    base_eval_gpu_hours: float
    """The base checkpoints' `evaluate_base` jobs."""
    checkpoint_bytes: int
    """Base checkpoints, each cell's final model (float32 safetensors; a cell read from a longer run
    has its model twice, in that run's records and its own), and at most one resumable state per
    run training at once (weights and two Adam moments: 3 x weights)."""

    @property
    def runs(self) -> list[CellPlan]:
        """The cells that train: what the grid costs (a shared run counted once)."""
        return [c for c in self.cells if c.run == c.name]

    @property
    def flops(self) -> float:
        return sum(c.flops for c in self.runs)

    @property
    def gpu_hours(self) -> float:
        return sum(c.gpu_hours for c in self.runs)

    @property
    def eval_gpu_hours(self) -> float:
        return sum(c.eval_gpu_hours for c in self.cells) + self.base_eval_gpu_hours


def parameter_count(model: cfg.ModelConfig, vocab_size: int) -> int:
    """Exact parameters of the model the `model` section describes (any family of `families.FAMILIES`),
    with `vocab_size` embedding rows, counted by formula (no torch, so that planning and parsing the
    Snakefile stay light). For GPT-NeoX: untied input and output embeddings (V x H each, no output bias),
    and per layer two LayerNorms (2 x 2H), the fused query-key-value projection (H x 3H + 3H), the
    attention output (H x H + H) and the MLP (H x I + I, I x H + H), then the final LayerNorm (2H). The
    tests count transformers' own models."""
    return families.parameter_count(model, vocab_size)


def activation_memory(model: cfg.ModelConfig, seq_len: int, micro_batch: int, checkpointing: bool = False) -> int:
    """Bytes of activations kept for the backward pass: 34 x seq_len x micro_batch x hidden per layer
    (Korthikanti et al. 2022, without the attention-score term that flash attention avoids); with
    activation checkpointing, each layer's half-precision input (2 bytes per element) and one layer's
    full activations while it is recomputed (Korthikanti et al. 2022, full recomputation)."""
    per_layer = seq_len * micro_batch * model.hidden_size
    if checkpointing:
        return 2 * per_layer * model.num_layers + 34 * per_layer
    return 34 * per_layer * model.num_layers


def peak_memory(parameters: int, model: cfg.ModelConfig, vocab_size: int, seq_len: int, micro_batch: int,
                checkpointing: bool = False) -> int:
    """Bytes on one GPU for bf16- or fp16-autocast training under DDP with fused AdamW and scaled-dot-product
    attention: float32 weights, gradients and two Adam moments (16 bytes per parameter; the gradients are
    views of DDP's buckets, `train.wrap_model`), autocast's half-precision copies of the weights, kept
    for the backward pass (2 bytes per parameter), activations kept for the backward pass
    (`activation_memory`), and the logits (`LOGIT_BYTES` per element)."""
    states = (16 + AUTOCAST_COPY_BYTES) * parameters
    activations = activation_memory(model, seq_len, micro_batch, checkpointing)
    logits = LOGIT_BYTES * seq_len * micro_batch * vocab_size
    return states + activations + logits


AUTOCAST_COPY_BYTES = 2
"""Per parameter under autocast: each weight cast to bf16 or fp16 for its matrix product and kept for the backward."""

LOGIT_BYTES = 10
"""Per logit at its peak: the half-precision logits (2), the float32 copy the loss computes on (4), and
that copy's gradient (4) (at Pythia's 50k vocabulary, 6.2 GB for 6 x 2048 tokens)."""


def unit_parameters(model: cfg.ModelConfig, vocab_size: int, parameters: int) -> tuple[int, int]:
    """(root, block): parameters of FSDP's root unit (input and output embeddings, final norm) and of
    one transformer block (the rest, shared equally by the layers)."""
    root = families.root_parameters(model, vocab_size)
    return root, (parameters - root) // model.num_layers


def fsdp_memory(parameters: int, model: cfg.ModelConfig, vocab_size: int, seq_len: int, micro_batch: int, gpus: int,
                checkpointing: bool = False) -> int:
    """Bytes on one of `gpus` GPUs under FSDP (one unit per block, bf16 gathering, float32 reductions):
    the float32 weights, gradients and Adam moments sharded (16 x parameters / gpus), the same
    activations and logits as `peak_memory` (each GPU runs its own micro-batch; the gathered units are
    already in half precision, so autocast makes no copies), and the units
    gathered at once: the root (embeddings, final LayerNorm) and two blocks (the one computing and
    the one prefetched) in bf16 (2 bytes each), and one block's gradient in bf16 and in float32 for
    its reduce-scatter (6 bytes)."""
    root, block = unit_parameters(model, vocab_size, parameters)
    sharded = -(-16 * parameters // gpus)
    gathered = 2 * (root + 2 * block) + 6 * block
    activations = activation_memory(model, seq_len, micro_batch, checkpointing)
    logits = LOGIT_BYTES * seq_len * micro_batch * vocab_size
    return sharded + gathered + activations + logits


# Published shapes, for `rewarm plan --sizes`: Pythia (Biderman et al. 2023, Table 1: layers, model
# dimension, heads; vocab_size from each EleutherAI/pythia-<size> config.json) and Ibrahim et al.
# 2024's 10B (config/ibrahim2024-10b.yaml). All GPT-NeoX: MLP 4 x hidden, context 2048.
MODEL_SIZES = {
    "pythia-410m": dict(num_layers=24, hidden_size=1024, num_heads=16, vocab_size=50304),
    "pythia-1b": dict(num_layers=16, hidden_size=2048, num_heads=8, vocab_size=50304),
    "pythia-1.4b": dict(num_layers=24, hidden_size=2048, num_heads=16, vocab_size=50304),
    "pythia-2.8b": dict(num_layers=32, hidden_size=2560, num_heads=32, vocab_size=50304),
    "pythia-6.9b": dict(num_layers=32, hidden_size=4096, num_heads=32, vocab_size=50432),
    "ibrahim-10b": dict(num_layers=36, hidden_size=4608, num_heads=36, vocab_size=50304),
    "pythia-12b": dict(num_layers=36, hidden_size=5120, num_heads=40, vocab_size=50688),
}


def size_model(name: str) -> tuple[cfg.ModelConfig, int]:
    """A published shape as the `model` section and its vocabulary size."""
    shape = dict(MODEL_SIZES[name])
    vocab = shape.pop("vocab_size")
    return cfg.ModelConfig(**shape, intermediate_size=4 * shape["hidden_size"], max_position_embeddings=2048), vocab


def render_sizes(seq_len: int, micro_batch: int, gpus: int, gpu_bytes: int) -> str:
    """Which published sizes fit: per GPU under DDP and under FSDP over `gpus` GPUs, at `micro_batch`
    sequences of `seq_len` tokens, against `gpu_bytes` of GPU memory."""
    lines = [f"model sizes: peak memory per GPU for a micro-batch of {micro_batch} x {seq_len} tokens, DDP and FSDP over "
             f"{gpus} GPU{'s' if gpus > 1 else ''} of {human_bytes(gpu_bytes)}",
             f"  {'model':<12} {'parameters':>15} {'DDP / GPU':>11} {'FSDP / GPU':>11}  fits"]
    for name in MODEL_SIZES:
        model, vocab = size_model(name)
        parameters = parameter_count(model, vocab)
        ddp = peak_memory(parameters, model, vocab, seq_len, micro_batch)
        fsdp = fsdp_memory(parameters, model, vocab, seq_len, micro_batch, gpus)
        if ddp <= gpu_bytes:
            fits = "DDP and FSDP"
        elif fsdp <= gpu_bytes:
            fits = "FSDP (train.parallel: fsdp)"
        else:
            # Activations grow with the micro-batch, the sharded states shrink with the GPUs: the largest
            # micro-batch that fits (gradient accumulation keeps the global batch).
            def largest(memory) -> int:
                return max((m for m in range(1, micro_batch) if memory(m) <= gpu_bytes), default=0)

            ddp_micro = largest(lambda m: peak_memory(parameters, model, vocab, seq_len, m))
            fsdp_micro = largest(lambda m: fsdp_memory(parameters, model, vocab, seq_len, m, gpus))
            fits = (f"DDP with micro_batch_sequences <= {ddp_micro}" if ddp_micro and ddp_micro >= fsdp_micro else
                    f"FSDP with micro_batch_sequences <= {fsdp_micro}" if fsdp_micro else
                    "neither: more GPUs per cell (--gpus)")
        lines.append(f"  {name:<12} {parameters:>15,} {human_bytes(ddp):>11} {human_bytes(fsdp):>11}  {fits}")
    return "\n".join(lines) + "\n"


def eval_memory(parameters: int, hidden_size: int, vocab_size: int, seq_len: int, batch: int) -> int:
    """Bytes on one GPU for a forward pass without gradients under bf16 autocast: float32 weights
    (4 bytes per parameter), and per token one layer's live tensors (the float32 residual stream and
    the bf16 attention and MLP intermediates, about 24 x hidden bytes: nothing is kept for a backward
    pass) and the logits (bf16, their float32 copy and the float32 log-softmax: 10 x vocab bytes)."""
    return 4 * parameters + batch * seq_len * (24 * hidden_size + 10 * vocab_size)


def eval_batch(parameters: int, hidden_size: int, vocab_size: int, seq_len: int, device_bytes: int,
               share: float = 0.8, most: int = 256) -> int:
    """Sequences per evaluation forward pass that fill `share` of a GPU's memory by `eval_memory`
    (at least 1, at most `most`)."""
    per_sequence = eval_memory(0, hidden_size, vocab_size, seq_len, 1)
    room = share * device_bytes - eval_memory(parameters, hidden_size, vocab_size, seq_len, 0)
    return max(1, min(most, int(room // per_sequence)))


def val_tokens(config: cfg.Config) -> int | None:
    """Tokens an `evaluate` job reads: every evaluated corpus's validation budget (None if one has none)."""
    budgets = [config.corpora[name].val.max_tokens for name in config.eval_corpora()]
    return None if None in budgets else sum(budgets)


def evaluation_minutes(config: cfg.Config, vocab_size: int, tflops: float = 100.0) -> int:
    """A wall-clock limit for one `evaluate` job (SLURM's runtime, in minutes): its forward FLOPs
    (2 x parameters x validation tokens) at `tflops` sustained (about 10% of an H100's bf16 peak:
    deliberately low, since a job over its limit is killed), three times over, plus 15 minutes for
    loading; 60 minutes at least."""
    tokens = val_tokens(config)
    if tokens is None:
        return 60
    seconds = 2.0 * parameter_count(config.model, vocab_size) * tokens / (tflops * 1e12)
    return max(60, int(3 * seconds / 60) + 15)


def select_memory_mb(config: cfg.Config, vocab_size: int) -> int:
    """Host memory for one `select` job, in MB (SLURM's mem_mb): converting a revision that ships only
    pytorch_model*.bin (Pythia's older ones) holds the model in float32 (4 bytes a parameter) and the
    file's tensors as torch loads them (up to 4 more), plus 4 GB for Python, torch and transformers;
    4 GB at least. (At 6.9B: 59 GB, where a flat 4 GB would have the job killed.)"""
    return max(4000, math.ceil(8 * parameter_count(config.model, vocab_size) / 1e6) + 4000)


def plan(config: cfg.Config, vocab_size: int, mfu: float, peak_tflops: float, concurrent: int = 1, gpus: int = 1) -> GridPlan:
    from rewarm.data.packing import token_dtype

    seq_len = config.prepare.seq_len
    parameters = parameter_count(config.model, vocab_size)
    by = grid.trained_by(config)
    records = grid.records(config)
    final_eval = val_tokens(config) or 0
    eval_cost = 2.0 * parameters / (mfu * peak_tflops * 1e12) / 3600  # GPU-hours per token evaluated
    cells = []
    for name, run in grid.cells(config).items():
        steps = cfg.total_steps(run, seq_len)
        tokens = steps * run.batch_sequences * seq_len
        flops = 6.0 * parameters * tokens
        during = 0
        if by[name] == name:  # the run's own evaluations, on upstream and downstream samples
            run_plan = cfg.Plan.of(run, seq_len, run.replay_fraction, 1, records.get(name, {}).values())
            during = run_plan.evaluation_count(run) * run_plan.eval_sequences * seq_len * 2
        cells.append(CellPlan(name=name, run=by[name], tokens=tokens, steps=steps, flops=flops,
                              gpu_hours=flops / (mfu * peak_tflops * 1e12) / 3600,
                              memory_bytes=peak_memory(parameters, config.model, vocab_size, seq_len, run.micro_batch_sequences,
                                                       run.activation_checkpointing),
                              fsdp_memory_bytes=fsdp_memory(parameters, config.model, vocab_size, seq_len,
                                                            run.micro_batch_sequences, gpus, run.activation_checkpointing),
                              eval_tokens=during + final_eval, eval_gpu_hours=(during + final_eval) * eval_cost,
                              train_eval_gpu_hours=during * eval_cost))
    itemsize = token_dtype(vocab_size).itemsize
    budgets = [source.max_tokens for source in config.sources().values()]
    shard_bytes = sum(b for b in budgets if b) * itemsize
    weights = BYTES_FP32 * parameters
    runs = sum(c.run == c.name for c in cells)
    models = len(config.checkpoints) + len(cells) + (len(cells) - runs)
    checkpoint_bytes = weights * models + 3 * weights * min(concurrent, runs)
    return GridPlan(parameters=parameters, cells=cells, studies=grid.studies(config), shard_bytes=shard_bytes,
                    base_eval_gpu_hours=len(config.checkpoints) * final_eval * eval_cost, checkpoint_bytes=checkpoint_bytes)


def halving_savings(result: GridPlan, pool: dict[str, int], decided: dict | None) -> dict:
    """Early stopping's cost against the full grid, in training GPU-hours (a run's cost is proportional to
    its steps: every step the same batch): the rungs' (each cell's first `pool[cell]` steps); once the
    `halve` stage decided (`decided`, its halving.json), what the cells that go on add and what the grid
    saves; before, at most what it can save (every cell but the best stopped at its rung)."""
    by_name = {c.name: c for c in result.cells}
    cost = {name: by_name[name].gpu_hours for name in pool}
    rungs = {name: cost[name] * pool[name] / by_name[name].steps for name in pool}
    out = {"cells": len(pool), "full": result.gpu_hours, "rungs": sum(rungs.values()),
           "at_most_saved": sum(cost.values()) - sum(rungs.values()) - max((cost[n] - rungs[n] for n in pool), default=0.0)}
    if decided is not None:
        stopped = [name for name in decided["stopped"] if name in pool]
        saved = sum(cost[name] - rungs[name] for name in stopped)
        out.update(stopped=stopped, goes_on=[name for name in pool if name not in stopped], saved=saved,
                   with_halving=result.gpu_hours - saved)
    return out


def render_halving(result: GridPlan, pool: dict[str, int], fraction: float, margin: float, decided: dict | None) -> str:
    s = halving_savings(result, pool, decided)
    lines = [f"early stopping (forecast.halving: the first {fraction:g} of each cell's steps, then the cells forecast within "
             f"{margin:g} nats of the best go on): {s['cells']} cells decided, their rungs {s['rungs']:.4g} GPU-hours of the "
             f"full grid's {s['full']:.4g}"]
    if decided is None:
        lines.append(f"  not decided yet (no halving/halving.json): at most {s['at_most_saved']:.4g} GPU-hours saved "
                     f"({s['at_most_saved'] / s['full']:.0%} of the grid's training), when all but one cell stop at their rung")
    else:
        lines.append(f"  decided: {len(s['goes_on'])} go on ({', '.join(s['goes_on'])}), {len(s['stopped'])} stopped at their "
                     f"rung: {s['with_halving']:.4g} GPU-hours instead of {s['full']:.4g}, {s['saved']:.4g} saved "
                     f"({s['saved'] / s['full']:.0%} of the grid's training)")
    return "\n".join(lines) + "\n"


def render(result: GridPlan, mfu: float, peak_tflops: float, micro_note: str, gpus: int = 1, gpu_bytes: int | None = None) -> str:
    """Study by study, each cell's cost (a cell read from a longer run costs nothing); the totals
    count every run once."""
    by_name = {c.name: c for c in result.cells}
    width = max([56] + [len(c.name) for c in result.cells])
    lines = [f"model: {result.parameters:,} parameters; {len(result.cells)} cells in {len(result.studies)} studies, "
             f"{len(result.runs)} training runs; GPU-hours at MFU {mfu:.0%} of {peak_tflops:g} TFLOP/s per GPU"]
    header = (f"  {'cell':<{width}} {'tokens':>17} {'steps':>9} {'FLOPs':>10} {'GPU-h':>9} {'eval GPU-h':>10} {'DDP mem/GPU':>12}"
              f" {'FSDP mem/GPU':>12}")
    for study, members in result.studies.items():
        lines += [f"study {study}", header]
        for c in (by_name[n] for n in members):
            shared = c.run != c.name  # read from the longer run's records: no training of its own
            cost = f"{'shared':>10} {'-':>9}" if shared else f"{c.flops:>10.3e} {c.gpu_hours:>9,.1f}"
            lines.append(f"  {c.name:<{width}} {c.tokens:>17,} {c.steps:>9,} {cost} {c.eval_gpu_hours:>10,.2f} "
                         f"{human_bytes(c.memory_bytes):>12} {human_bytes(c.fsdp_memory_bytes):>12}"
                         + (f"  (read from {c.run})" if shared else ""))
    lines.append(f"total, {len(result.runs)} runs{'':<{max(0, width - 11)}} {sum(c.tokens for c in result.runs):>17,} {'':>9} "
                 f"{result.flops:>10.3e} {result.gpu_hours:>9,.1f} {result.eval_gpu_hours:>10,.2f}")
    lines.append(f"evaluation: {result.eval_gpu_hours:,.2f} GPU-hours in all (forward passes: 2 x parameters x tokens; during "
                 f"training, every cell's `evaluate` job and the base checkpoints' {result.base_eval_gpu_hours:,.2f}), "
                 f"{result.gpu_hours + result.eval_gpu_hours:,.1f} GPU-hours with training")
    lines.append(f"disk: shards {human_bytes(result.shard_bytes)} (corpus budgets, max_tokens), checkpoints and runs "
                 f"{human_bytes(result.checkpoint_bytes)}; peak memory {micro_note}")
    unbounded = "" if result.shard_bytes else " (no corpus sets max_tokens: shard size unknown)"
    if gpu_bytes:
        ddp, fsdp = max(c.memory_bytes for c in result.cells), max(c.fsdp_memory_bytes for c in result.cells)
        verdict = ("fits under DDP (train.parallel: ddp)" if ddp <= gpu_bytes else
                   "needs FSDP (train.parallel: fsdp)" if fsdp <= gpu_bytes else
                   "does not fit even under FSDP: more GPUs per cell (--gpus), or a smaller micro_batch_sequences")
        unbounded += (f"\nmemory: with {gpus} GPU{'s' if gpus > 1 else ''} of {human_bytes(gpu_bytes)} per cell, the grid {verdict} "
                      f"(largest cell: DDP {human_bytes(ddp)}, FSDP {human_bytes(fsdp)} per GPU)")
    return "\n".join(lines) + unbounded + "\n"


# -- a batch scheduler's limits ----------------------------------------------------------------------

JOB_OVERHEAD_MINUTES = 15
"""Of each training job's wall-clock limit, what does not train: start-up (loading the model and
state, a first compiled step) and the stop (the profile's SIGTERM comes 10 minutes before the limit,
for the state to be saved)."""


@dataclass(frozen=True)
class Profile:
    """What a Snakemake profile gives a training job: its wall-clock limit, its GPUs, and how many times
    a job is submitted in all (1 + retries; a job stopped at its limit resumes in the next)."""
    path: str
    runtime_minutes: int
    gpus: int
    tries: int


def gres_gpus(gres) -> int:
    """GPUs per node that a SLURM `gres` resource asks for (`gpu:8`: 8; 0 when it asks for no GPU); a
    ValueError when it asks for GPUs without a count. The train rule's launcher and `read_profile` read
    a job's GPUs with it."""
    text = str(gres or "")
    if not text.startswith("gpu:"):
        return 0
    count = text.rsplit(":", 1)[-1]
    if not count.isdigit():
        raise ValueError(f"gres {text!r} names no GPU count")
    return int(count)


def read_profile(path: str | Path) -> Profile:
    """The `train` rule's limits in a Snakemake profile's config.yaml (or the profile directory):
    set-resources.train runtime and GPUs (`gpu`, or `nodes` x `gres: gpu:N`), falling back to
    default-resources, and `retries`."""
    import yaml

    path = Path(path)
    file = path / "config.yaml" if path.is_dir() else path
    try:
        profile = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise cfg.ConfigError(f"--profile {file}: not a readable Snakemake profile ({error})") from None
    if not isinstance(profile, dict):
        raise cfg.ConfigError(f"--profile {file}: not a Snakemake profile (a mapping of options)")
    defaults = profile.get("default-resources") or {}
    train = (profile.get("set-resources") or {}).get("train") or {}
    resources = {**(defaults if isinstance(defaults, dict) else {}), **(train if isinstance(train, dict) else {})}
    try:
        runtime = int(resources.get("runtime", 0))
        per_node = gres_gpus(resources.get("gres"))
        gpus = int(resources.get("nodes", 1)) * per_node if per_node else int(resources.get("gpu", 1) or 1)
        tries = 1 + int(profile.get("retries", 0) or 0)
    except (TypeError, ValueError) as error:
        raise cfg.ConfigError(f"--profile {file}: set-resources.train runtime, gpu, gres, nodes and retries must be numbers "
                              f"({error})") from None
    if runtime <= JOB_OVERHEAD_MINUTES:
        raise cfg.ConfigError(f"--profile {file}: set-resources.train (or default-resources) runtime must be more than "
                              f"{JOB_OVERHEAD_MINUTES} minutes (a training job's wall-clock limit), got {runtime}")
    return Profile(path=str(file), runtime_minutes=runtime, gpus=max(gpus, 1), tries=tries)


def wall_hours(cell: CellPlan, gpus: int) -> float:
    """A run's training wall-clock time on `gpus` GPUs (its GPU-hours, evaluations during training
    included, divided evenly: data parallelism at the same MFU)."""
    return (cell.gpu_hours + cell.train_eval_gpu_hours) / gpus


def jobs_needed(cell: CellPlan, profile: Profile) -> int:
    """Training jobs a run needs under the profile: each trains for its limit less the overhead."""
    return max(1, math.ceil(wall_hours(cell, profile.gpus) * 60 / (profile.runtime_minutes - JOB_OVERHEAD_MINUTES)))


def render_profile(result: GridPlan, profile: Profile) -> str:
    """Each run's wall-clock time and training jobs under the profile; a ConfigError (before anything
    runs) when a run needs more jobs than the profile submits."""
    lines = [f"profile {profile.path}: training jobs of {profile.runtime_minutes} min on {profile.gpus} GPU"
             f"{'s' if profile.gpus > 1 else ''}, submitted up to {profile.tries} times (retries {profile.tries - 1})"]
    width = max([56] + [len(c.name) for c in result.runs])
    lines.append(f"  {'run':<{width}} {'wall h':>9} {'jobs':>5}")
    short = []
    for cell in result.runs:
        jobs = jobs_needed(cell, profile)
        lines.append(f"  {cell.name:<{width}} {wall_hours(cell, profile.gpus):>9,.1f} {jobs:>5}")
        if jobs > profile.tries:
            short.append((cell, jobs))
    if short:
        cell, jobs = max(short, key=lambda item: item[1])
        raise cfg.ConfigError(
            f"--profile {profile.path}: {len(short)} run(s) cannot finish: {cell.name} needs {jobs} training jobs "
            f"({wall_hours(cell, profile.gpus):,.1f} h on {profile.gpus} GPU{'s' if profile.gpus > 1 else ''}, "
            f"{profile.runtime_minutes - JOB_OVERHEAD_MINUTES} min of training per job), the profile submits a job at most "
            f"{profile.tries} times: raise set-resources.train gpu or runtime, or retries")
    longest = max(result.runs, key=lambda c: jobs_needed(c, profile))
    lines.append(f"every run finishes: the longest, {longest.name}, in {jobs_needed(longest, profile)} of "
                 f"{profile.tries} jobs")
    return "\n".join(lines) + "\n"
