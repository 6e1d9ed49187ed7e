"""Typed, validated configuration: `params.yaml` into frozen dataclasses.

Every section is a frozen dataclass with a docstring per field (`schema`). Loading (`loading`) collects
every problem (unknown key, wrong type, impossible value, missing file: `checks`) and raises them together
in one `ConfigError`, each naming its key and what is allowed, before any work starts (as litgpt does:
`raise ValueError("\\n".join(issues))`). A run's derived values (steps, warm-up, replay) are in `steps`.
This package imports nothing of rewarm's above `io` and `schedules`; the grid's cells build on it
(`rewarm.grid`, whose `load` is the entry point that checks them too).
"""

from __future__ import annotations

from rewarm.config.checks import (
    check,
    check_optimization,
    check_train_corpus,
)
from rewarm.config.loading import (
    COLLECTIONS,
    MAX_VALUES,
    REPLACED,
    Extra,
    UniqueKeyLoader,
    build,
    deep_merge,
    digest,
    expanded_size,
    from_dict,
    load,
    to_dict,
)
from rewarm.config.schema import (
    CHECKPOINT_TYPES,
    DEMO_TASKS,
    SAFE_NAME,
    SOURCE_TYPES,
    BenchmarkConfig,
    CellCheckpoint,
    CheckpointSpec,
    Config,
    ConfigError,
    Corpus,
    DemoSource,
    DemoTasks,
    GridConfig,
    HfSource,
    HubCheckpoint,
    JsonlSource,
    LocalCheckpoint,
    LoggingConfig,
    ReportConfig,
    ForecastConfig,
    SearchConfig,
    HalvingConfig,
    Mixture,
    ModelConfig,
    Optimization,
    PrepareConfig,
    PretrainCheckpoint,
    PretrainConfig,
    ScratchCheckpoint,
    Source,
    Study,
    TokenizerConfig,
    TrainConfig,
)
from rewarm.config.steps import (
    Plan,
    decay_steps,
    min_lr,
    replay_before,
    replay_in_step,
    replay_is_whole,
    schedule_steps,
    total_steps,
    warmup_exact,
    warmup_steps,
)

__all__ = [
    "SAFE_NAME", "ConfigError", "Mixture", "DemoSource", "JsonlSource", "HfSource", "Source", "SOURCE_TYPES",
    "Corpus", "TokenizerConfig", "PrepareConfig", "ModelConfig", "Optimization", "PretrainConfig",
    "TrainConfig", "Study", "GridConfig", "DemoTasks", "BenchmarkConfig", "LoggingConfig", "ReportConfig", "ForecastConfig", "SearchConfig", "HalvingConfig", "HubCheckpoint", "LocalCheckpoint",
    "ScratchCheckpoint", "PretrainCheckpoint", "CellCheckpoint", "CheckpointSpec", "CHECKPOINT_TYPES",
    "Config", "DEMO_TASKS", "replay_before", "replay_is_whole", "replay_in_step", "total_steps",
    "schedule_steps", "warmup_steps", "warmup_exact", "decay_steps", "min_lr", "Plan", "check",
    "check_optimization", "check_train_corpus", "UniqueKeyLoader", "Extra", "load", "COLLECTIONS", "REPLACED",
    "deep_merge", "digest", "from_dict", "to_dict", "build", "MAX_VALUES", "expanded_size",
]
