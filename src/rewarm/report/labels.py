"""Short labels of the grid's cells for the report's tables, legends and keys: a cell's study and the
settings it varies ("warmup: warm-up 0.5%"), in place of its 80-character name, which the report keeps
in a key and in each label's tooltip."""

from __future__ import annotations

from rewarm import config as cfg

# The settings' names as a reader of the paper knows them; any other setting reads as its key.
SETTING_NAMES = {"warmup_fraction": "warm-up", "max_lr": "max LR", "min_lr": "min LR", "replay_fraction": "replay",
                 "checkpoint": "start", "train_corpus": "data"}


def number(value: float) -> str:
    """A setting's number as the papers write it: 0.5, 100, or 1e-3 and 2.5e-4 for rates."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def setting(axis: str, value, scratch: frozenset[str]) -> str:
    """One setting as a legend reads it: fractions in percent, rates as `5e-4`, names as they are, a
    start from one of the `scratch` checkpoints as "from scratch"."""
    if axis == "checkpoint" and value in scratch:
        return "from scratch"
    if axis.endswith("_fraction") and isinstance(value, (int, float)):
        return f"{SETTING_NAMES.get(axis, axis)} {value * 100:g}%"
    if isinstance(value, float):
        return f"{SETTING_NAMES.get(axis, axis)} {number(value)}"
    return f"{SETTING_NAMES.get(axis, axis)} {value}"


def study_axes(study: cfg.Study, members: list[str], cells: dict[str, cfg.TrainConfig]) -> list[str]:
    """The settings that tell a study's own cells apart: its varied axes; for cells listed one by one,
    the corpus each trains on where that differs (a sequence of datasets), else every setting that differs."""
    if study.vary:
        return list(study.vary)
    keys = list(dict.fromkeys(k for cell in study.cells for k in cell))
    differing = [k for k in keys if len({repr(getattr(cells[n], k)) for n in members}) > 1]
    return ["train_corpus"] if "train_corpus" in differing else differing


def baseline_label(cell: cfg.TrainConfig, scratch: frozenset[str]) -> str | None:
    """The paper's baselines by what they are: no re-warming (a constant LR) and from scratch."""
    if cell.checkpoint in scratch:
        return f"from scratch, max LR {number(cell.max_lr)}"
    if cell.schedule == "constant":
        return f"no re-warming (constant LR {number(cell.max_lr)})"
    return None


def shown_as_baseline(cell: cfg.TrainConfig, axes: list[str], scratch: frozenset[str]) -> bool:
    """Whether a study's figure shows the cell as one of the paper's baselines rather than by its values of
    the study's axes: a constant LR where the study does not vary the schedule, a start from scratch where
    it does not vary the checkpoint (or a study without axes)."""
    if cell.schedule == "constant" and "schedule" not in axes:
        return True
    if cell.checkpoint in scratch and "checkpoint" not in axes:
        return True
    return not axes and baseline_label(cell, scratch) is not None


def in_study(name: str, cells: dict[str, cfg.TrainConfig], axes: list[str], scratch: frozenset[str]) -> str:
    """A cell's label in a study's figure: its values of the study's axes (a baseline: what it is)."""
    cell = cells[name]
    if not axes or shown_as_baseline(cell, axes, scratch):
        return baseline_label(cell, scratch) or name
    return ", ".join(setting(a, getattr(cell, a), scratch) for a in axes)


def cell_labels(studies: dict[str, tuple[cfg.Study, list[str]]], cells: dict[str, cfg.TrainConfig],
                scratch: frozenset[str]) -> dict[str, str]:
    """Cell -> its short label across the report: the first study that declares it and its settings there
    (`max_lr: max LR 1e-3`); unique (a label two cells would share gets each cell's full name instead)."""
    labels: dict[str, str] = {}
    for study_name, (study, members) in studies.items():
        axes = study_axes(study, members, cells)
        for name in members:
            labels.setdefault(name, f"{study_name}: {in_study(name, cells, axes, scratch)}")
    for name in cells:
        labels.setdefault(name, name)
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {name: (label if counts[label] == 1 else name) for name, label in labels.items()}

