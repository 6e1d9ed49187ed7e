"""The grid: studies expand to cells, names are readable and stable, and cells that only stop
earlier than another with the same settings are read from that run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm import config as cfg
from rewarm import grid
from tests.project import ROOT, small_params

# .test/params.yaml: 8 x 64 = 512 tokens per step; train.tokens 20480 = 40 steps.
STEP_TOKENS = 512


# What each shipped configuration is merged after (its header says so): params.yaml, then these.
MERGED_AFTER = {"config/paper.yaml": [], "config/ibrahim2024.yaml": ["config/paper.yaml"],
                "config/ibrahim2024-10b.yaml": ["config/paper.yaml", "config/ibrahim2024.yaml"],
                "config/pythia-6.9b.yaml": ["config/paper.yaml"], "config/olmo2-1b.yaml": ["config/paper.yaml"],
                "config/llama-1b.yaml": ["config/paper.yaml"]}


@pytest.mark.parametrize("path", ["params.yaml", ".test/params.yaml", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("config/*.yaml"))])
def test_shipped_configurations_expand(path):
    """Every shipped configuration (every file in config/, as litgpt tests its config hub) loads, with the
    files its header says it is merged after, and expands to cells."""
    if path.startswith("config/"):
        assert path in MERGED_AFTER, f"{path}: say in MERGED_AFTER which files it is merged after"
        assert all(f"config/{Path(p).name}" in (ROOT / path).read_text() for p in MERGED_AFTER[path]), "its header names them"
    files = [ROOT / "params.yaml", *(ROOT / p for p in MERGED_AFTER.get(path, [])), ROOT / path] if path.startswith("config/") else [ROOT / path]
    config = grid.load(files, base_dir=ROOT)
    assert grid.cells(config)


def test_demo_grid_is_the_papers_studies_in_miniature():
    """The demo declares config/paper.yaml's five studies with the same axes, the same warm-up fractions,
    the same learning rates relative to pre-training's, and the same ratios of stopping point, end of
    decay and schedule length (50B and 240B of 297B tokens)."""
    config = grid.load(ROOT / "params.yaml", base_dir=ROOT)
    paper = grid.load([ROOT / "params.yaml", ROOT / "config/paper.yaml"], base_dir=ROOT)
    assert set(paper.grid.studies) == {"warmup", "max_lr", "scratch", "same_data", "checkpoints"}
    assert set(config.grid.studies) == set(paper.grid.studies) | {"replay", "union", "infinite"}  # and Ibrahim et al. 2024's
    seq = config.prepare.seq_len, paper.prepare.seq_len
    pythia_lr = 3e-4  # Pythia-410M's maximum learning rate, the paper's reference (Gupta et al. 2023, 4.2)
    for name in paper.grid.studies:
        cells = [grid.cells(config)[n] for n in grid.studies(config)[name]]
        paper_cells = [grid.cells(paper)[n] for n in grid.studies(paper)[name]]
        assert list(config.grid.studies[name].vary) == list(paper.grid.studies[name].vary)
        assert len(cells) == len(paper_cells)
        for ours, theirs in zip(cells, paper_cells):
            assert ours.warmup_fraction == theirs.warmup_fraction and ours.schedule == theirs.schedule
            assert ours.train_corpus == theirs.train_corpus
            assert ours.max_lr / config.pretrain.max_lr == pytest.approx(theirs.max_lr / pythia_lr)
            steps = [cfg.total_steps(c, s) / cfg.schedule_steps(c, s) for c, s in zip((ours, theirs), seq)]
            decay = [cfg.decay_steps(c, s) / cfg.schedule_steps(c, s) for c, s in zip((ours, theirs), seq)]
            assert steps[0] == pytest.approx(steps[1], rel=0.01) and decay[0] == pytest.approx(decay[1], rel=0.01)
    # Checkpoints: early, mid and final of the demo's series in the paper's order, and scratch.
    starts = [grid.cells(config)[n].checkpoint for n in grid.studies(config)["checkpoints"]]
    assert starts == ["early", "early", "mid", "mid", "final", "final"]
    steps = [config.pretrain.checkpoint_steps, cfg.total_steps(config.pretrain, config.prepare.seq_len)]
    early, mid = (int(config.checkpoints[n].revision[4:]) for n in ("early", "mid"))
    assert 0 < early < mid < steps[1] and {early, mid} <= set(steps[0])
    # 4 + 4 + 1 + 4 + 4 = 17 cells (the reference cell and the scratch study's final cell are shared),
    # 16 runs: the warm-up study's 1% cell is the first 50 steps of the max_lr study's run at the same LR;
    # then Ibrahim et al. 2024's 6 replay cells, the union baseline and 3 datasets in sequence: 27 cells, 26 runs.
    assert len({n for s in paper.grid.studies for n in grid.studies(config)[s]}) == 17
    assert len(grid.cells(config)) == 27
    assert len(set(grid.trained_by(config).values())) == 26


def test_demo_runs_ibrahim_et_al_in_miniature():
    """The demo's replay shares are config/ibrahim2024.yaml's; its union baseline mixes the upstream tokens of
    pre-training with a replay cell's downstream tokens in proportion (999,424 and 51,200 by hand: 976 and 50
    steps of 8 x 128); its infinite schedule keeps the authors' constant LR ratio (1.65e-4 / 3e-4) and phases."""
    demo = grid.load(ROOT / "params.yaml", base_dir=ROOT)
    ibrahim = grid.load([ROOT / "params.yaml", ROOT / "config/paper.yaml", ROOT / "config/ibrahim2024.yaml"], base_dir=ROOT)
    cells, theirs = grid.cells(demo), grid.cells(ibrahim)
    replay = [cells[n].replay_fraction for n in grid.studies(demo)["replay"]]
    assert replay == [theirs[n].replay_fraction for n in grid.studies(ibrahim)["replay"]][:-1]  # theirs ends with the union
    (union,) = (cells[n] for n in grid.studies(demo)["union"])
    seq_len = demo.prepare.seq_len
    upstream = cfg.total_steps(demo.pretrain, seq_len) * demo.pretrain.batch_sequences * seq_len
    downstream = cells[grid.studies(demo)["replay"][0]].tokens
    assert (upstream, downstream) == (999_424, 51_200)
    assert union.checkpoint == "scratch" and union.tokens == upstream + downstream
    assert union.replay_fraction == pytest.approx(upstream / (upstream + downstream), abs=1e-4)
    for ours, reference in zip((cells[n] for n in grid.studies(demo)["infinite"]), (theirs[n] for n in grid.studies(ibrahim)["infinite_cosine"])):
        assert ours.constant_lr / ours.max_lr == pytest.approx(reference.constant_lr / reference.max_lr)
        assert (ours.schedule, ours.warmup_fraction, ours.cooldown_end_fraction, ours.constant_end_fraction) == (
            reference.schedule, reference.warmup_fraction, reference.cooldown_end_fraction, reference.constant_end_fraction)


def test_a_study_has_settings_crossed_axes_and_baselines():
    studies = {
        "crossed": {"settings": {"max_lr": 1e-3}, "vary": {"schedule": ["cosine", "wsd"], "replay_fraction": [0.0, 0.5]}},
        "other": {"vary": {"max_lr": [1e-3, 2e-3]}, "baselines": [{"optimizer": "radam", "warmup_fraction": 0.0}]},
    }
    config = grid.from_dict(small_params(grid={"studies": studies}))
    assert grid.studies(config) == {
        "crossed": ["ckpt-scratch_lr-1e-3_warm-5e-2_sched-cosine_replay-0_tokens-20480", "ckpt-scratch_lr-1e-3_warm-5e-2_sched-cosine_replay-5e-1_tokens-20480",
                    "ckpt-scratch_lr-1e-3_warm-5e-2_sched-wsd_replay-0_tokens-20480", "ckpt-scratch_lr-1e-3_warm-5e-2_sched-wsd_replay-5e-1_tokens-20480"],
        # the 1e-3 cell is also the first study's: one cell in two studies
        "other": ["ckpt-scratch_lr-1e-3_warm-5e-2_sched-cosine_replay-0_tokens-20480", "ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-20480",
                  "ckpt-scratch_lr-2e-3_warm-0_sched-cosine_replay-0_opt-radam_tokens-20480"],
    }
    assert len(grid.cells(config)) == 6
    assert grid.study_axis(config.grid.studies["crossed"]) == "schedule"


def test_without_studies_the_grid_is_the_reference_cell():
    config = grid.from_dict(small_params())
    assert list(grid.cells(config)) == [grid.cell_name(config.train)]


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "studies, expected",
    [
        ({"s": {"vary": {"lr": [1e-3]}}}, "grid.studies.s.vary[0]: unknown axis 'lr' (axes: checkpoint, max_lr"),
        ({"s": {"vary": {"replay_fraction": [2.0]}}}, "grid.studies.s.vary[0]: replay_fraction: 2.0 must be in [0, 1]"),
        ({"s": {"vary": {"checkpoint": ["nowhere"]}}}, "grid.studies.s.vary[0]: checkpoint 'nowhere' is not one of early, final, scratch"),
        ({"s": {"baselines": [{"warmup_steps": 400}]}}, "grid.studies.s.baselines[0]: warmup_steps: 400 must be in [0, 40)"),
        # 40 steps of 8 sequences: 0.1% of 320 sequences is none at all (the name would say replay, the run would not);
        # 1 / 320 = 0.003125 replays one.
        ({"s": {"vary": {"replay_fraction": [0.001]}}},
         "grid.studies.s.vary[0]: replay_fraction: 0.001 of 40 steps of 8 sequences replays no sequence at all; "
         "the smallest share that replays one is 0.003125"),
        ({"s": {"baselines": [{"schedule": "cyclic"}]}}, "grid.studies.s.baselines[0].schedule: 'cyclic' is not one of"),
        ({"s": {"settings": {"tokens": 10240, "schedule_tokens": 5120}, "vary": {"max_lr": [1e-3]}}},
         "grid.studies.s.vary[0]: schedule_tokens: 5120 is shorter than the run"),
        ({"s": {"settings": {"unknown_key": 1}, "vary": {"max_lr": [1e-3]}}}, "grid.studies.s.vary[0].unknown_key: unknown key"),
        ({"a.b": {"vary": {"max_lr": [1e-3]}}}, "grid.studies.a.b: study name must match"),
        ({"a\n": {"vary": {"max_lr": [1e-3]}}}, "grid.studies.a\n: study name must match"),
    ],
)
def test_bad_grid_is_refused_naming_the_cell(studies, expected):
    with pytest.raises(cfg.ConfigError) as caught:
        grid.from_dict(small_params(grid={"studies": studies}))
    assert expected in str(caught.value)


# Two values of every axis a study may vary (the README's list), away from .test/params.yaml's reference.
AXIS_VALUES = {"checkpoint": ["early", "final"], "max_lr": [1e-3, 3e-3], "min_lr": [1e-5, 1e-4],
               "warmup_fraction": [0.0, 0.1], "warmup_steps": [2, 4], "schedule": ["linear", "wsd"],
               "optimizer": ["adamw", "radam"], "replay_fraction": [0.25, 0.5], "train_corpus": ["downstream", "upstream"],
               "tokens": [10240, 20480], "constant_lr": [5e-4, 1e-3], "cooldown_end_fraction": [0.3, 0.6],
               "constant_end_fraction": [0.85, 1.0], "timescale": [5.0, 20.0]}
# The infinite schedules' axes shape only those schedules (and names show them only there).
AXIS_SETTINGS = {"constant_lr": {"schedule": "infinite-cosine"},
                 "cooldown_end_fraction": {"schedule": "infinite-cosine", "constant_lr": 1e-3},
                 "constant_end_fraction": {"schedule": "infinite-cosine", "constant_lr": 1e-3},
                 "timescale": {"schedule": "infinite-inv-sqrt", "constant_lr": 1e-3}}


def test_every_axis_sweeps_and_crosses():
    """Each axis gives one cell per value, named apart and differing in that setting only; crossed with
    max_lr (or checkpoint), every combination is a cell of its own."""
    assert set(AXIS_VALUES) == set(grid.AXES)
    reference = grid.from_dict(small_params()).train
    for axis, values in AXIS_VALUES.items():
        settings = AXIS_SETTINGS.get(axis, {})
        config = grid.from_dict(small_params(grid={"studies": {"sweep": {"settings": settings, "vary": {axis: values}}}}))
        cells = grid.cells(config)
        assert [getattr(c, axis) for c in cells.values()] == values, axis
        for cell in cells.values():
            changed = {k for k, v in cfg.to_dict(cell).items() if v != cfg.to_dict(reference)[k]}
            # a warm-up in steps replaces the fraction
            assert changed <= {axis, "warmup_fraction", "warmup_steps", *settings}, (axis, changed)
        other = {"checkpoint": ["early", "final"]} if axis == "max_lr" else {"max_lr": [1e-3, 3e-3]}
        crossed = grid.from_dict(small_params(grid={"studies": {"cross": {"settings": settings, "vary": {axis: values, **other}}}}))
        assert len(grid.cells(crossed)) == 4, axis
    assert "_lr-2e-3_min-1e-5_warm" in grid.cell_name(
        grid.cells(grid.from_dict(small_params(grid={"studies": {"s": {"vary": {"min_lr": [1e-5]}}}}))).popitem()[1])


@pytest.mark.parametrize(
    "train, name",
    [
        ({}, "ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-20480"),
        ({"checkpoint": "final", "max_lr": 3e-4, "warmup_fraction": 0.01}, "ckpt-final_lr-3e-4_warm-1e-2_sched-cosine_replay-0_tokens-20480"),
        ({"max_lr": 1.5e-3, "replay_fraction": 0.25, "schedule": "wsd"}, "ckpt-scratch_lr-15e-4_warm-5e-2_sched-wsd_replay-25e-2_tokens-20480"),
        ({"warmup_fraction": None, "warmup_steps": 7, "optimizer": "radam"},
         "ckpt-scratch_lr-2e-3_warm-7steps_sched-cosine_replay-0_opt-radam_tokens-20480"),
        ({"warmup_fraction": 0.0, "schedule": "constant"}, "ckpt-scratch_lr-2e-3_warm-0_sched-constant_replay-0_tokens-20480"),
        ({"train_corpus": "upstream"}, "ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_data-upstream_tokens-20480"),
        ({"tokens": 20000}, "ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-20k"),
        # The schedule's length is not in the name (it is the same for a study's cells).
        ({"tokens": 10240, "schedule_tokens": 20480}, "ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-10240"),
    ],
)
def test_cell_names_are_readable_stable_and_dot_free(train, name):
    config = grid.from_dict(small_params(train=train))
    assert grid.cell_name(config.train) == name
    assert list(grid.cells(config)) == [name]
    assert cfg.SAFE_NAME.match(name.replace("_", "-")[:64]) and "." not in name


@pytest.mark.parametrize("tokens, label", [(50_000_000_000, "50B"), (240_000_000_000, "240B"), (1_500_000, "1500k"),
                                           (2_000_000, "2M"), (200_000, "200k"), (12_345, "12345")])
def test_token_labels(tokens, label):
    assert grid.tokens_label(tokens) == label


def paper_like_studies(schedule_tokens: int) -> dict:
    """The paper's shape at the test's scale: one schedule, studies stopping at 10 and 30 steps."""
    common = {"schedule_tokens": schedule_tokens, "checkpoint": "final", "warmup_fraction": 0.05}
    return {
        "warmup": {"settings": {**common, "tokens": 10 * STEP_TOKENS}, "vary": {"warmup_fraction": [0.0, 0.05]}},
        "max_lr": {"settings": {**common, "tokens": 30 * STEP_TOKENS}, "vary": {"max_lr": [1e-3, 2e-3]}},
    }


def test_cells_that_only_stop_earlier_are_read_from_the_longer_run():
    config = grid.from_dict(small_params(grid={"studies": paper_like_studies(40 * STEP_TOKENS)}))
    cells = grid.cells(config)
    by = grid.trained_by(config)
    short = "ckpt-final_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-5120"
    long = "ckpt-final_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-15360"
    assert set(cells) == {"ckpt-final_lr-2e-3_warm-0_sched-cosine_replay-0_tokens-5120", short, long,
                          "ckpt-final_lr-1e-3_warm-5e-2_sched-cosine_replay-0_tokens-15360"}
    # The warm-up study's 5% cell is the max-LR study's 2e-3 cell stopped at step 10: one run.
    assert by[short] == long
    assert {name for name, run in by.items() if run == name} == set(cells) - {short}
    assert grid.prefix_stops(config, long) == {short: 10}
    assert grid.prefix_stops(config, short) == {}
    assert grid.records(config) == {name: ({short: 10} if name == long else {}) for name in set(cells) - {short}}


def test_cells_with_different_schedules_are_separate_runs():
    # Without a common schedule length each cell's schedule ends where it stops: no sharing.
    studies = paper_like_studies(40 * STEP_TOKENS)
    for study in studies.values():
        study["settings"].pop("schedule_tokens")
    config = grid.from_dict(small_params(grid={"studies": studies}))
    assert all(run == name for name, run in grid.trained_by(config).items())


@pytest.mark.bad_input
def test_cells_differing_only_in_schedule_length_are_refused():
    studies = {"a": {"settings": {"schedule_tokens": 40960}, "vary": {"max_lr": [1e-3]}},
               "b": {"settings": {"schedule_tokens": 81920}, "vary": {"max_lr": [1e-3]}}}
    with pytest.raises(cfg.ConfigError, match=r"grid.studies.b.vary\[0\]: cell name .* is also grid.studies.a.vary\[0\]'s"):
        grid.from_dict(small_params(grid={"studies": studies}))


SEQUENCE = {"sequence": {"settings": {"schedule": "infinite-cosine", "constant_lr": 1e-3, "tokens": 5120},
                         "cells": [{"constant_end_fraction": 1.0},
                                   {"checkpoint": "after", "warmup_fraction": 0.0, "cooldown_end_fraction": 0.0}]}}


def test_a_cell_checkpoint_resolves_where_the_cell_is_declared():
    config = grid.from_dict(small_params(grid={"studies": SEQUENCE},
                                        checkpoints={"after": {"type": "cell", "cell": "sequence.cells[0]", "optimizer": True}}))
    first, second = grid.studies(config)["sequence"]
    assert grid.continued(config)["after"].cell == first and grid.cells(config)[second].checkpoint == "after"
    assert grid.keeps_optimizer(config, first) and not grid.keeps_optimizer(config, second)
    # the same checkpoint given by the cell's name
    named = grid.from_dict(small_params(grid={"studies": SEQUENCE}, checkpoints={"after": {"type": "cell", "cell": first}}))
    assert grid.continued(named)["after"].cell == first and not grid.keeps_optimizer(named, first)


@pytest.mark.bad_input
@pytest.mark.parametrize("checkpoints, studies, expected", [
    ({"after": {"type": "cell", "cell": "sequence.cells[5]"}}, SEQUENCE,
     "checkpoints.after.cell: 'sequence.cells[5]' is not a cell of the grid"),
    # a cell that starts from its own end
    ({"after": {"type": "cell", "cell": "sequence.cells[1]"}}, SEQUENCE, "the sequence loops back: after -> after"),
    # the optimizer state of a cell read from a longer run (the 10240-token cell of the same 20480-token schedule)
    ({"after": {"type": "cell", "cell": "s.vary[0]", "optimizer": True}},
     {"s": {"settings": {"schedule_tokens": 20480}, "vary": {"tokens": [10240, 20480]}}},
     "checkpoints.after.optimizer: cell ckpt-scratch_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-10240 is read from the longer run"),
    ({}, {"s": {"vary": {"train_corpus": ["news"]}}}, "grid.studies.s.vary[0]: train_corpus: 'news' is not a corpus with a train split (have: upstream, downstream)"),
])
def test_bad_sequences_are_refused(checkpoints, studies, expected):
    with pytest.raises(cfg.ConfigError) as caught:
        grid.from_dict(small_params(grid={"studies": studies}, checkpoints=checkpoints))
    assert expected in str(caught.value)
