"""`rewarm plan`: what a grid costs, before anything runs.

Per cell: tokens, optimizer steps, training FLOPs (6 x parameters x tokens, Kaplan et al. 2020),
GPU-hours at a given model FLOPs utilisation and GPU peak, the tokens it evaluates (during training
and in its `evaluate` job) and their GPU-hours (2 x parameters x tokens: forward passes only), and
an estimate of peak GPU memory for a micro-batch; for the grid: the disk its shards and checkpoints
take. The parameter count is
exact (the `model` section's GPT-NeoX, counted on the meta device); the rest are estimates whose
formulas are written out below so they can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewarm import config as cfg

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
    """Exact parameters of the GPT-NeoX the `model` section describes, with `vocab_size` embedding rows."""
    from rewarm import checkpoints

    return checkpoints.parameter_count(checkpoints.neox_architecture(model, vocab_size))


def peak_memory(parameters: int, model: cfg.ModelConfig, vocab_size: int, seq_len: int, micro_batch: int) -> int:
    """Bytes on one GPU for bf16-autocast training with fused AdamW and scaled-dot-product attention:
    float32 weights, gradients and two Adam moments (16 bytes per parameter), activations kept for the
    backward pass (34 x seq_len x micro_batch x hidden bytes per layer: Korthikanti et al. 2022,
    without the attention-score term that flash attention avoids), and the logits (bf16, and the
    float32 copy the loss makes: 6 x seq_len x micro_batch x vocab bytes)."""
    states = 16 * parameters
    activations = 34 * seq_len * micro_batch * model.hidden_size * model.num_layers
    logits = 6 * seq_len * micro_batch * vocab_size
    return states + activations + logits


def unit_parameters(model: cfg.ModelConfig, vocab_size: int, parameters: int) -> tuple[int, int]:
    """(root, block): parameters of FSDP's root unit (input and output embeddings, final LayerNorm)
    and of one transformer block (the rest, shared equally by the layers)."""
    root = 2 * vocab_size * model.hidden_size + 2 * model.hidden_size
    return root, (parameters - root) // model.num_layers


def fsdp_memory(parameters: int, model: cfg.ModelConfig, vocab_size: int, seq_len: int, micro_batch: int, gpus: int) -> int:
    """Bytes on one of `gpus` GPUs under FSDP (one unit per block, bf16 gathering, float32 reductions):
    the float32 weights, gradients and Adam moments sharded (16 x parameters / gpus), the same
    activations and logits as `peak_memory` (each GPU runs its own micro-batch), and the units
    gathered at once: the root (embeddings, final LayerNorm) and two blocks (the one computing and
    the one prefetched) in bf16 (2 bytes each), and one block's gradient in bf16 and in float32 for
    its reduce-scatter (6 bytes)."""
    root, block = unit_parameters(model, vocab_size, parameters)
    sharded = -(-16 * parameters // gpus)
    gathered = 2 * (root + 2 * block) + 6 * block
    activations = 34 * seq_len * micro_batch * model.hidden_size * model.num_layers
    logits = 6 * seq_len * micro_batch * vocab_size
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
    from rewarm.io import human_bytes

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


def plan(config: cfg.Config, vocab_size: int, mfu: float, peak_tflops: float, concurrent: int = 1, gpus: int = 1) -> GridPlan:
    from rewarm import grid
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
            from rewarm.train import Plan

            run_plan = Plan.of(run, seq_len, run.replay_fraction, 1, records.get(name, {}).values())
            during = run_plan.evaluation_count(run) * run_plan.eval_sequences * seq_len * 2
        cells.append(CellPlan(name=name, run=by[name], tokens=tokens, steps=steps, flops=flops,
                              gpu_hours=flops / (mfu * peak_tflops * 1e12) / 3600,
                              memory_bytes=peak_memory(parameters, config.model, vocab_size, seq_len, run.micro_batch_sequences),
                              fsdp_memory_bytes=fsdp_memory(parameters, config.model, vocab_size, seq_len,
                                                            run.micro_batch_sequences, gpus),
                              eval_tokens=during + final_eval, eval_gpu_hours=(during + final_eval) * eval_cost))
    itemsize = token_dtype(vocab_size).itemsize
    budgets = [source.max_tokens for source in config.sources().values()]
    shard_bytes = sum(b for b in budgets if b) * itemsize
    weights = BYTES_FP32 * parameters
    runs = sum(c.run == c.name for c in cells)
    models = len(config.checkpoints) + len(cells) + (len(cells) - runs)
    checkpoint_bytes = weights * models + 3 * weights * min(concurrent, runs)
    return GridPlan(parameters=parameters, cells=cells, studies=grid.studies(config), shard_bytes=shard_bytes,
                    base_eval_gpu_hours=len(config.checkpoints) * final_eval * eval_cost, checkpoint_bytes=checkpoint_bytes)


def render(result: GridPlan, mfu: float, peak_tflops: float, micro_note: str, gpus: int = 1, gpu_bytes: int | None = None) -> str:
    """Study by study, each cell's cost (a cell read from a longer run costs nothing); the totals
    count every run once."""
    from rewarm.io import human_bytes

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
