"""The grid, expanded once for both front ends: studies, cells, cell names, shared runs.

A study (the `grid.studies` section) is a set of cells: the `train` section, the study's fixed
`settings` over it, and one cell per value of the axis it varies (every combination if it varies
several), plus its baselines. Cells are named from their own settings only, so a cell declared
by two studies is one cell, and a name is the same in Snakemake, DVC and `runs/`.

Two cells whose settings and schedule are identical and which differ only in where they stop
(the paper's warm-up study stops at 50B tokens of the same 297B schedule that its maximum-LR study
follows to 240B) are one run: the longer cell trains, records the shorter one's curve and model at
its stopping point, and `rewarm prefix` makes the shorter cell's run directory from them. Training
is deterministic, so this is exactly what training the shorter cell alone would give.
"""

from __future__ import annotations

import dataclasses
import decimal
import itertools
from typing import Any

from rewarm import config as cfg

# What a study may vary, and what a cell's name covers.
AXES = ("checkpoint", "max_lr", "min_lr", "warmup_fraction", "warmup_steps", "schedule", "optimizer", "replay_fraction",
        "train_corpus", "tokens", "constant_lr", "cooldown_end_fraction", "constant_end_fraction", "timescale")


def cell_name(run: cfg.TrainConfig) -> str:
    """A readable, stable name derived from the cell's parameters only, e.g.
    `ckpt-final_lr-3e-4_warm-1e-2_sched-cosine_replay-0_tokens-50B`; also a Snakemake wildcard, a DVC
    stage key and a directory name. A non-default optimizer or training corpus is inserted before the
    tokens trained (`_opt-radam`, `_data-upstream`), and a minimum learning rate other than the
    schedule's default (0.1 x max_lr) after the maximum (`_lr-3e-4_min-3e-5`). An infinite schedule
    adds its constant LR and where its cooldown and constant phase end
    (`_sched-infinite-cosine_const-165e-6_phases-6e-1-85e-2`). The schedule's length is not in the name: two cells
    that differ only by it are refused with a clear message."""
    warm = f"{run.warmup_steps}steps" if run.warmup_steps is not None else number(run.warmup_fraction or 0.0)
    lr = number(run.max_lr) + (f"_min-{number(run.min_lr)}" if run.min_lr is not None else "")
    schedule = run.schedule
    if schedule.startswith("infinite-"):  # its constant LR and where its cooldown and constant phase end
        schedule += (f"_const-{number(run.constant_lr or 0.0)}_phases-{number(run.cooldown_end_fraction)}"
                     f"-{number(run.constant_end_fraction)}")
        if schedule.startswith("infinite-inv-sqrt") and run.timescale != 10.0:
            schedule += f"_ts-{number(run.timescale)}"
    name = f"ckpt-{run.checkpoint}_lr-{lr}_warm-{warm}_sched-{schedule}_replay-{number(run.replay_fraction)}"
    if run.optimizer != "adamw":
        name += f"_opt-{run.optimizer}"
    if run.train_corpus != "downstream":
        name += f"_data-{run.train_corpus}"
    return name + f"_tokens-{tokens_label(run.tokens)}"


def cells(config: cfg.Config) -> dict[str, cfg.TrainConfig]:
    """The grid's cells by name, in declaration order (study by study). A cell declared twice counts once."""
    built, problems = expand(config)
    if problems:
        raise cfg.ConfigError("\n  ".join(["grid: problems:", *problems]))
    return built


def series_checkpoints(config: cfg.Config) -> list[str]:
    """Base checkpoints taken from the demo's own pre-training series: the only reason to pre-train.
    At paper scale there are none, and neither front end runs `pretrain`."""
    return [name for name, spec in config.checkpoints.items() if isinstance(spec, cfg.PretrainCheckpoint)]


def studies(config: cfg.Config) -> dict[str, list[str]]:
    """Study name -> its cells' names, in declaration order (a cell may be in several studies)."""
    out: dict[str, list[str]] = {name: [] for name in declared_studies(config)}
    for study, _, cell in _declared(config):
        if cell is not None and cell_name(cell) not in out[study]:
            out[study].append(cell_name(cell))
    return out


def study_axis(study: cfg.Study) -> str | None:
    """The axis a study varies (its first, when it crosses several)."""
    return next(iter(study.vary), None)


def scratch_checkpoints(checkpoints: dict[str, cfg.CheckpointSpec]) -> frozenset[str]:
    """The checkpoints that are new, randomly initialised models (`type: scratch`), whatever they are named."""
    return frozenset(name for name, spec in checkpoints.items() if isinstance(spec, cfg.ScratchCheckpoint))


def baseline_cells(names: dict[str, cfg.TrainConfig], scratch: frozenset[str]) -> list[str]:
    """The paper's two baselines among the cells: no re-warming (a constant LR) and training from scratch
    (a cell whose checkpoint is one of `scratch`: `scratch_checkpoints`)."""
    return [n for n, c in names.items() if c.schedule == "constant" or c.checkpoint in scratch]


def run_key(run: cfg.TrainConfig, seq_len: int) -> str:
    """What makes two cells one run: every setting but the stopping point, with the schedule's
    length resolved (a cell without schedule_tokens is laid out over its own tokens)."""
    settings = cfg.to_dict(run)
    settings["schedule_tokens"] = cfg.schedule_steps(run, seq_len) * run.batch_sequences * seq_len
    settings.pop("tokens")
    return repr(sorted(settings.items()))


def trained_by(config: cfg.Config) -> dict[str, str]:
    """Cell -> the cell whose training run produces it: itself, or the longest cell of its run."""
    return _trained_by(config, cells(config))


def _trained_by(config: cfg.Config, named: dict[str, cfg.TrainConfig]) -> dict[str, str]:
    seq_len = config.prepare.seq_len
    longest: dict[str, str] = {}
    for name, run in named.items():
        key = run_key(run, seq_len)
        if key not in longest or run.tokens > named[longest[key]].tokens:
            longest[key] = name
    return {name: longest[run_key(run, seq_len)] for name, run in named.items()}


def records(config: cfg.Config) -> dict[str, dict[str, int]]:
    """Every trained cell -> the shorter cells its run records, by name, with the step each stops at."""
    named = cells(config)
    out: dict[str, dict[str, int]] = {}
    for name, by in trained_by(config).items():
        out.setdefault(by, {})
        if by != name:
            out[by][name] = cfg.total_steps(named[name], config.prepare.seq_len)
    return out


def prefix_stops(config: cfg.Config, cell: str) -> dict[str, int]:
    """For a trained cell: the shorter cells it records, by name, with the step each stops at."""
    return records(config).get(cell, {})


def load(paths, base_dir=".", overrides=()) -> cfg.Config:
    """The configuration of these YAML files (and `--set` overrides), checked, its grid's cells included:
    the entry point every stage and both front ends use (`rewarm.config.load` checks the configuration
    without the cells)."""
    return cfg.load(paths, base_dir, extra=_problems, overrides=overrides)


def from_dict(data: dict, base_dir=".", origin: str = "configuration") -> cfg.Config:
    """`load` of a mapping."""
    return cfg.from_dict(data, base_dir, origin, extra=_problems)


def _problems(config: cfg.Config) -> list[str]:
    return expand(config)[1]


def expand(config: cfg.Config) -> tuple[dict[str, cfg.TrainConfig], list[str]]:
    """(cells by name, problems): every study's cells, checked, with clashing names reported."""
    cells_by_name: dict[str, cfg.TrainConfig] = {}
    where_by_name: dict[str, str] = {}
    problems: list[str] = []
    located: dict[str, str] = {}  # where a cell is declared -> its name (for `cell` checkpoints)
    for _, where, cell in _declared(config, problems):
        if cell is None:
            continue
        name = cell_name(cell)
        located[where.removeprefix("grid.studies.")] = name
        if name in cells_by_name and cells_by_name[name] != cell:
            problems.append(f"{where}: cell name {name} is also {where_by_name[name]}'s, with other settings (names cover "
                            f"{', '.join(AXES)} only)")
        cells_by_name.setdefault(name, cell)
        where_by_name.setdefault(name, where)
    if not problems:
        problems += _check_continuations(config, cells_by_name, located)
        problems += _check_forecast(config, cells_by_name, located)
    return cells_by_name, problems


def forecast_cells(config: cfg.Config) -> list[str]:
    """The cells `forecast.fit` names, as names (each may be given where it is declared: `max_lr.vary[0]`)."""
    located = declared_at(config)
    return list(dict.fromkeys(located.get(entry, entry) for entry in config.forecast.fit))


def _check_forecast(config: cfg.Config, named: dict[str, cfg.TrainConfig], located: dict[str, str]) -> list[str]:
    """The cells the law is fitted on are cells of the grid that continue pre-training on the downstream
    or the upstream corpus (a run from scratch is not continual pre-training)."""
    problems = []
    scratch = scratch_checkpoints(config.checkpoints)
    for i, entry in enumerate(config.forecast.fit):
        name = located.get(entry, entry)
        key = f"forecast.fit[{i}]"
        if name not in named:
            problems.append(f"{key}: {entry!r} is not a cell of the grid: give a cell's name (`rewarm grid` lists them) or where "
                            f"it is declared, e.g. {next(iter(located), 'study.vary[0]')}")
        elif named[name].checkpoint in scratch:
            problems.append(f"{key}: {entry!r} trains from scratch: the law describes continual pre-training (fit on a cell "
                            f"that starts from a pre-trained checkpoint)")
        elif named[name].train_corpus not in ("downstream", "upstream"):
            problems.append(f"{key}: {entry!r} trains on {named[name].train_corpus}: fit on cells of the downstream corpus")
    if config.forecast.halving.fraction is not None and len(pool := _halving_pool(config, named)) < 2:
        problems.append(f"forecast.halving.fraction: early stopping needs at least 2 cells it can decide, the grid has "
                        f"{len(pool)} ({', '.join(pool) or 'none'}): cells that train a run of their own from a pre-trained "
                        f"checkpoint (set forecast.halving.fraction: null)")
    return problems


def halving_pool(config: cfg.Config) -> dict[str, int]:
    """The cells early stopping decides (`forecast.halving`), each with its rung's step (the first
    `fraction` of its steps): every cell that trains a run of its own from a pre-trained checkpoint on the
    downstream or the upstream corpus; not a run that records shorter cells or that another cell
    continues (their later steps are needed whatever the forecast), not a continuation itself. Empty
    when early stopping is off."""
    return _halving_pool(config, cells(config))


def _halving_pool(config: cfg.Config, named: dict[str, cfg.TrainConfig]) -> dict[str, int]:
    fraction = config.forecast.halving.fraction
    if fraction is None:
        return {}
    by = _trained_by(config, named)
    recorded = {by[name] for name in named if by[name] != name}
    sequences = _resolved(config, declared_at(config))
    continued_cells = {spec.cell for spec in sequences.values()}
    skipped = scratch_checkpoints(config.checkpoints) | set(sequences)
    return {name: max(1, int(fraction * cfg.total_steps(run, config.prepare.seq_len))) for name, run in named.items()
            if by[name] == name and name not in recorded and name not in continued_cells
            and run.checkpoint not in skipped and run.train_corpus in ("downstream", "upstream")}


def continued(config: cfg.Config) -> dict[str, cfg.CellCheckpoint]:
    """Checkpoints that are another cell's final state (sequences of datasets), by name, with the cell
    they continue resolved to its name (it may be given where it is declared: `sequence.cells[0]`)."""
    if not any(isinstance(spec, cfg.CellCheckpoint) for spec in config.checkpoints.values()):
        return {}
    return _resolved(config, declared_at(config))


def _resolved(config: cfg.Config, located: dict[str, str]) -> dict[str, cfg.CellCheckpoint]:
    """The `cell` checkpoints, each with a cell given where it is declared replaced by its name."""
    return {name: dataclasses.replace(spec, cell=located.get(spec.cell, spec.cell))
            for name, spec in config.checkpoints.items() if isinstance(spec, cfg.CellCheckpoint)}


def declared_at(config: cfg.Config) -> dict[str, str]:
    """Where each cell is declared, as `<study>.vary[i]`, `<study>.baselines[i]` or `<study>.cells[i]` -> its name."""
    return {where.removeprefix("grid.studies."): cell_name(cell) for _, where, cell in _declared(config) if cell is not None}


def keeps_optimizer(config: cfg.Config, cell: str) -> bool:
    """Whether a cell's run keeps its final optimizer state: a checkpoint continues it with that state."""
    return any(spec.cell == cell and spec.optimizer for spec in continued(config).values())


def _check_continuations(config: cfg.Config, named: dict[str, cfg.TrainConfig], located: dict[str, str]) -> list[str]:
    """A checkpoint of type `cell` names a cell of the grid; following them never loops back; the
    optimizer state is carried only from a cell that trains itself (a shorter cell read from a longer
    run has its model at its stop, not that run's optimizer)."""
    problems = []
    sequences = _resolved(config, located)
    for name, spec in sequences.items():
        key = f"checkpoints.{name}.cell"
        if spec.cell not in named:
            problems.append(f"{key}: {config.checkpoints[name].cell!r} is not a cell of the grid: give a cell's name (`rewarm "
                            f"grid` lists them) or where it is declared, e.g. {next(iter(located), 'study.cells[0]')}")
            continue
        seen, current = [name], named[spec.cell].checkpoint
        while current in sequences and sequences[current].cell in named:
            if current in seen:
                problems.append(f"{key}: the sequence loops back: {' -> '.join([*seen, current])} (a cell cannot start from its own end)")
                break
            seen.append(current)
            current = named[sequences[current].cell].checkpoint
    if not problems:
        by = _trained_by(config, named)
        for name, spec in sequences.items():
            if spec.optimizer and by[spec.cell] != spec.cell:
                problems.append(f"checkpoints.{name}.optimizer: cell {spec.cell} is read from the longer run {by[spec.cell]}, "
                                f"which does not stop there: no optimizer state to carry (set optimizer: false, or give "
                                f"the cell settings of its own)")
    return problems


def declared_studies(config: cfg.Config) -> dict[str, cfg.Study]:
    """The studies; a grid that declares none is the `train` section alone, as a study named `train`."""
    return config.grid.studies or {"train": cfg.Study(title="The reference cell (no studies declared)", baselines=[{}])}


def _declared(config: cfg.Config, problems: list[str] | None = None):
    """(study, where declared, cell or None when invalid) for every cell every study declares."""
    problems = [] if problems is None else problems
    reference = cfg.to_dict(config.train)
    for study_name, study in declared_studies(config).items():
        base = f"grid.studies.{study_name}"
        if not cfg.SAFE_NAME.fullmatch(str(study_name)):
            problems.append(f"{base}: study name must match {cfg.SAFE_NAME.pattern} (letters, digits, _ -)")
        for where, overrides in _study_overrides(study, base):
            unknown = [axis for axis in overrides if axis not in AXES]
            if unknown:
                problems.append(f"{where}: unknown axis {', '.join(map(repr, unknown))} (axes: {', '.join(AXES)})")
                yield study_name, where, None
                continue
            yield study_name, where, _cell(config, reference, study.settings, overrides, where, problems)


def _study_overrides(study: cfg.Study, base: str) -> list[tuple[str, dict[str, Any]]]:
    axes = list(study.vary)
    found = [(f"{base}.vary[{i}]", dict(zip(axes, combination)))
             for i, combination in enumerate(itertools.product(*study.vary.values()))] if axes else []
    return (found + [(f"{base}.baselines[{i}]", dict(overrides)) for i, overrides in enumerate(study.baselines)]
            + [(f"{base}.cells[{i}]", dict(overrides)) for i, overrides in enumerate(study.cells)])


def _cell(config: cfg.Config, reference: dict, settings: dict, overrides: dict, where: str, problems: list[str]):
    merged = dict(reference)
    for layer in (settings, overrides):
        merged.update(layer)
        # A warm-up in steps replaces a fraction given below it, and the other way round.
        if "warmup_steps" in layer and "warmup_fraction" not in layer:
            merged["warmup_fraction"] = None
        if "warmup_fraction" in layer and "warmup_steps" not in layer:
            merged["warmup_steps"] = None
    cell_problems: list[str] = []
    cell = cfg.build(cfg.TrainConfig, merged, where, cell_problems)
    if cell is not None and not cell_problems:
        cell_problems += [p.replace("train.", f"{where}: ", 1) for p in cfg.check_optimization(cell, "train", config.prepare.seq_len)]
        if config.checkpoints and cell.checkpoint not in config.checkpoints:
            cell_problems.append(f"{where}: checkpoint {cell.checkpoint!r} is not one of {', '.join(config.checkpoints)}")
        if "train_corpus" in settings or "train_corpus" in overrides:
            cell_problems += [p.replace("train.train_corpus", f"{where}: train_corpus", 1)
                              for p in cfg.check_train_corpus(config, cell.train_corpus, "train.train_corpus")]
    problems += cell_problems
    return None if cell_problems else cell


def number(value: float) -> str:
    """Compact, stable and dot-free (DVC splits keys at dots): an integer mantissa and a
    power of ten, e.g. 3e-4, 1e-2 (0.01), 25e-2 (0.25), 15e-4 (1.5e-3), 0, 2."""
    digits = decimal.Decimal(repr(float(value))).normalize()
    sign, mantissa, exponent = digits.as_tuple()
    if exponent >= 0:
        return str(int(digits))
    return f"{'-' if sign else ''}{int(''.join(map(str, mantissa)))}e{exponent}"


def tokens_label(tokens: int) -> str:
    """A token count for names: 50B, 240B, 1500M, 200k, 12345 (exact: the largest unit that divides it)."""
    for unit, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if tokens % unit == 0:
            return f"{tokens // unit}{suffix}"
    return str(tokens)
