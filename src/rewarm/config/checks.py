"""Checks of values, and of fields against each other, once the types are right: each returns a list of
problems, one line each, naming the key and what is allowed."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

from rewarm import schedules
from rewarm.config.schema import (
    DEMO_TASKS,
    SAFE_NAME,
    BenchmarkConfig,
    Config,
    DemoSource,
    JsonlSource,
    LocalCheckpoint,
    ModelConfig,
    Optimization,
    PretrainCheckpoint,
    PretrainConfig,
    Source,
    TrainConfig,
    _show,
)
from rewarm.config.steps import decay_steps, replay_before, schedule_steps, total_steps
from rewarm.io import resolve_glob


def check(config: Config, base_dir: Path) -> list[str]:
    """Checks of values and of fields against each other, after types are right (the grid's cells are
    checked by `rewarm.grid`, which builds on this layer)."""
    problems = []
    if config.logging.wandb and importlib.util.find_spec("wandb") is None:
        problems.append("logging.wandb: true needs the wandb package, which is not installed "
                        "(pip install 'rewarm[wandb]'), or set it to false")
    if config.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        problems.append("logging.tensorboard: true needs the tensorboard package, which is not installed "
                        "(pip install 'rewarm[tensorboard]'), or set it to false")
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
    problems.extend(check_model(config.model, prep.seq_len))
    problems.extend(check_optimization(config.pretrain, "pretrain", prep.seq_len))
    problems.extend(check_optimization(config.train, "train", prep.seq_len))
    problems.extend(check_train_corpus(config, config.train.train_corpus, "train.train_corpus"))
    problems.extend(_check_checkpoints(config, base_dir))
    problems.extend(_check_benchmark(config.benchmark))
    _positive(problems, "report.tokens_per_billion", config.report.tokens_per_billion, optional=True)
    problems.extend(_check_forecast(config))
    problems.extend(f"{key}: {value} must be >= 0 (a seed)" for key, value in _fields_named(config, "seed") if value < 0)
    return problems


def _check_forecast(config: Config) -> list[str]:
    """The law's settings (the fitted cells are checked against the grid by `rewarm.grid`)."""
    forecast, problems = config.forecast, []
    if not 0 < forecast.decay < 1:
        problems.append(f"forecast.decay: {forecast.decay} must be in (0, 1) (Tissue et al. 2024 use 0.999)")
    if forecast.extrapolation < 1:
        problems.append(f"forecast.extrapolation: {forecast.extrapolation} must be >= 1 (a factor of the longest fitted cell)")
    search = forecast.search
    if not 0 <= search.upstream_weight <= 1:
        problems.append(f"forecast.search.upstream_weight: {search.upstream_weight} must be in [0, 1]")
    _positive(problems, "forecast.search.tokens", search.tokens, optional=True)
    problems.extend(f"forecast.search.max_lr[{i}]: {v} must be > 0" for i, v in enumerate(search.max_lr) if v <= 0)
    problems.extend(f"forecast.search.warmup_fraction[{i}]: {v} must be in [0, 1)" for i, v in enumerate(search.warmup_fraction)
                    if not 0 <= v < 1)
    problems.extend(f"forecast.search.replay_fraction[{i}]: {v} must be in [0, 1)" for i, v in enumerate(search.replay_fraction)
                    if not 0 <= v < 1)
    for key in ("warmup_fraction", "replay_fraction"):
        if not getattr(search, key):
            problems.append(f"forecast.search.{key}: needs at least one value")
    halving = forecast.halving
    if halving.fraction is not None and not 0 < halving.fraction < 1:
        problems.append(f"forecast.halving.fraction: {halving.fraction} must be in (0, 1) (a share of each cell's steps), or null")
    if halving.margin < 0:
        problems.append(f"forecast.halving.margin: {halving.margin} must be >= 0 (nats)")
    return problems


def _fields_named(value: Any, name: str, where: str = "") -> list[tuple[str, Any]]:
    """(key, value) of every field called `name` in the configuration tree, with its key."""
    found = []
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            key = f"{where}.{field.name}" if where else field.name
            child = getattr(value, field.name)
            found += [(key, child)] if field.name == name else _fields_named(child, name, key)
    elif isinstance(value, dict):
        for k, child in value.items():
            found += _fields_named(child, name, f"{where}.{k}")
    return found


def check_model(model: ModelConfig, seq_len: int) -> list[str]:
    problems: list[str] = []
    for field in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
        _positive(problems, f"model.{field}", getattr(model, field))
    _positive(problems, "model.num_kv_heads", model.num_kv_heads, optional=True)
    _positive(problems, "model.head_dim", model.head_dim, optional=True)
    if model.num_heads > 0 and model.head_dim is None and model.hidden_size % model.num_heads:
        problems.append(f"model.num_heads: {model.num_heads} must divide model.hidden_size ({model.hidden_size}), "
                        f"or model.head_dim be set")
    if model.num_kv_heads and model.num_heads > 0 and model.num_heads % model.num_kv_heads:
        problems.append(f"model.num_kv_heads: {model.num_kv_heads} must divide model.num_heads ({model.num_heads})")
    if model.model_type == "gpt_neox" and (model.num_kv_heads not in (None, model.num_heads) or model.head_dim is not None):
        problems.append("model.num_kv_heads, model.head_dim: GPT-NeoX has one key and value head per query head and "
                        "hidden_size / num_heads dimensions per head (leave both unset)")
    elif model.model_type != "gpt_neox" and model.rotary_fraction != 0.25:
        problems.append(f"model.rotary_fraction: a {model.model_type} model rotates every dimension (GPT-NeoX only)")
    if model.rope_theta <= 0:
        problems.append(f"model.rope_theta: {model.rope_theta} must be > 0")
    if model.max_position_embeddings < seq_len:
        problems.append(f"model.max_position_embeddings: {model.max_position_embeddings} is shorter than prepare.seq_len ({seq_len})")
    if not 0 < model.rotary_fraction <= 1:
        problems.append(f"model.rotary_fraction: {model.rotary_fraction} must be in (0, 1]")
    return problems


def check_optimization(run: Optimization, section: str, seq_len: int) -> list[str]:
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
