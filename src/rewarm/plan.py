"""`rewarm plan`: what a grid costs, before anything runs.

Per cell: tokens, optimizer steps, training FLOPs (6 x parameters x tokens, Kaplan et al. 2020),
GPU-hours at a given model FLOPs utilisation and GPU peak, and an estimate of peak GPU memory for
a micro-batch; for the grid: the disk its shards and checkpoints take. The parameter count is
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
    """Peak GPU memory estimate for one micro-batch on one GPU (see `peak_memory`)."""


@dataclass(frozen=True)
class GridPlan:
    parameters: int
    cells: list[CellPlan]
    studies: dict[str, list[str]]
    """Study -> its cells' names (a cell may be in several)."""
    shard_bytes: int
    """Packed tokens of every corpus budget (max_tokens) in the dtype `prepare` writes (uint16 up to 65,536 ids)."""
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


def plan(config: cfg.Config, vocab_size: int, mfu: float, peak_tflops: float, concurrent: int = 1) -> GridPlan:
    from rewarm import grid
    from rewarm.data.packing import token_dtype

    seq_len = config.prepare.seq_len
    parameters = parameter_count(config.model, vocab_size)
    by = grid.trained_by(config)
    cells = []
    for name, run in grid.cells(config).items():
        steps = cfg.total_steps(run, seq_len)
        tokens = steps * run.batch_sequences * seq_len
        flops = 6.0 * parameters * tokens
        cells.append(CellPlan(name=name, run=by[name], tokens=tokens, steps=steps, flops=flops,
                              gpu_hours=flops / (mfu * peak_tflops * 1e12) / 3600,
                              memory_bytes=peak_memory(parameters, config.model, vocab_size, seq_len, run.micro_batch_sequences)))
    itemsize = token_dtype(vocab_size).itemsize
    budgets = [source.max_tokens for source in config.sources().values()]
    shard_bytes = sum(b for b in budgets if b) * itemsize
    weights = BYTES_FP32 * parameters
    runs = sum(c.run == c.name for c in cells)
    models = len(config.checkpoints) + len(cells) + (len(cells) - runs)
    checkpoint_bytes = weights * models + 3 * weights * min(concurrent, runs)
    return GridPlan(parameters=parameters, cells=cells, studies=grid.studies(config), shard_bytes=shard_bytes,
                    checkpoint_bytes=checkpoint_bytes)


def render(result: GridPlan, mfu: float, peak_tflops: float, micro_note: str) -> str:
    """Study by study, each cell's cost (a cell read from a longer run costs nothing); the totals
    count every run once."""
    from rewarm.io import human_bytes

    by_name = {c.name: c for c in result.cells}
    width = max([56] + [len(c.name) for c in result.cells])
    lines = [f"model: {result.parameters:,} parameters; {len(result.cells)} cells in {len(result.studies)} studies, "
             f"{len(result.runs)} training runs; GPU-hours at MFU {mfu:.0%} of {peak_tflops:g} TFLOP/s per GPU"]
    header = f"  {'cell':<{width}} {'tokens':>17} {'steps':>9} {'FLOPs':>10} {'GPU-h':>9} {'peak GPU mem':>13}"
    for study, members in result.studies.items():
        lines += [f"study {study}", header]
        for c in (by_name[n] for n in members):
            shared = c.run != c.name  # read from the longer run's records: no training of its own
            cost = f"{'shared':>10} {'-':>9}" if shared else f"{c.flops:>10.3e} {c.gpu_hours:>9,.1f}"
            lines.append(f"  {c.name:<{width}} {c.tokens:>17,} {c.steps:>9,} {cost} {human_bytes(c.memory_bytes):>13}"
                         + (f"  (read from {c.run})" if shared else ""))
    lines.append(f"total, {len(result.runs)} runs{'':<{max(0, width - 11)}} {sum(c.tokens for c in result.runs):>17,} {'':>9} "
                 f"{result.flops:>10.3e} {result.gpu_hours:>9,.1f}")
    lines.append(f"disk: shards {human_bytes(result.shard_bytes)} (corpus budgets, max_tokens), checkpoints and runs "
                 f"{human_bytes(result.checkpoint_bytes)}; peak memory {micro_note}")
    unbounded = "" if result.shard_bytes else " (no corpus sets max_tokens: shard size unknown)"
    return "\n".join(lines) + unbounded + "\n"
