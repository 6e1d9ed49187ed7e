"""The report's figures and labels, drawn from a small table made here: the values each line draws, its
label, colour and dashes, the axes' units, the panels from scratch gets, the datasets of a sequence one
after another (read back from the JSON written beside each figure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewarm import config as cfg
from rewarm import dvcfile, grid
from rewarm.report import findings, labels, measures
from rewarm.report.figures import figures as draw
from rewarm.report.figures import token_axis
from tests.project import ROOT, TEST_PARAMS, small_params, without

DEMO_STUDIES = __import__("yaml").safe_load((ROOT / "params.yaml").read_text())["grid"]["studies"]


def made_table(cells: dict[str, cfg.TrainConfig], seq_len: int) -> dict:
    """A finished cell per cell: evaluations every 2 steps, losses that differ from cell to cell."""
    table = {}
    for i, (name, cell) in enumerate(cells.items()):
        per_step = cell.batch_sequences * seq_len
        steps = cell.tokens // per_step
        points = [{"step": s, "tokens": s * per_step, "val/upstream/loss": 3.0 + i / 10 - s / 100,
                   "val/downstream/loss": 4.0 + i / 10 - s / 50, "val/upstream/ppl": 20.0 + i - s / 10,
                   "val/downstream/ppl": 50.0 + i - s / 5} for s in range(0, steps + 1, 2)]
        table[name] = {"rows": points, "lr": [(s, 1e-3) for s in range(steps)],
                       "upstream_loss": 2.5 + i / 10, "downstream_loss": 3.5 + i / 10,
                       "gap_upstream": measures.Gap(0.0, 0, None), "gap_downstream": measures.Gap(0.0, 0, None)}
    return table


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The figures of tests/project.py's TEST_GRID (crossed studies added), with 1,024 tokens standing for a billion."""
    studies = {**TEST_PARAMS["grid"]["studies"],
               "crossed": {"settings": {"tokens": 10240}, "vary": {"checkpoint": ["early", "final"], "warmup_fraction": [0.0, 0.1]}}}
    # The longest title of params.yaml's studies (the infinite schedule's), whose line reached into the legend.
    studies["sequence"] = {**studies["sequence"], "title": max((s.get("title", "") for s in DEMO_STUDIES.values()), key=len)}
    config = grid.from_dict({**TEST_PARAMS, "grid": {"studies": studies}, "report": {"tokens_per_billion": 1024}})
    cells = grid.cells(config)
    members = grid.studies(config)
    declared = {name: (study, members[name]) for name, study in grid.declared_studies(config).items()}
    table = made_table(cells, config.prepare.seq_len)
    out = tmp_path_factory.mktemp("figures")
    made = draw(config, cells, table, declared, labels.cell_labels(declared, cells, grid.scratch_checkpoints(config.checkpoints)), out)
    return config, cells, members, table, out, made


def panels(out, stem: str) -> list[dict]:
    return json.loads((out / f"{stem}.json").read_text())["panels"]


def test_loss_panels_in_paper_equivalent_billions_and_nats(drawn):
    config, cells, members, table, out, made = drawn
    assert (out / "study_max_lr.png").stat().st_size > 0 and made["max_lr"][0][0] == "study_max_lr.png"
    for panel in panels(out, "study_half"):
        assert panel["ylabel"] == "loss (nats)"
        assert panel["xlabel"] == "paper-equivalent tokens (billions; 1B = 1,024 tokens here)"
        for line in panel["lines"]:
            name, _, mark = line["cell"].partition(":")
            corpus = panel["title"].split()[0]
            rows = table[name]["rows"]
            if mark == "final":  # the whole split's loss, at the curve's last point
                assert line["x"] == [rows[-1]["tokens"] / 1024] and line["y"] == [table[name][f"{corpus}_loss"]]
            else:
                assert line["x"] == [r["tokens"] / 1024 for r in rows]  # e.g. 8 x 64 tokens a step: step 2 is 1 "billion"
                assert line["y"] == [r[f"val/{corpus}/loss"] for r in rows]
    full_scale = grid.from_dict(small_params())
    assert token_axis(full_scale) == (1e9, "tokens seen (billions)")


def test_from_scratch_gets_panels_of_its_own(drawn):
    config, cells, members, table, out, made = drawn
    drawn_panels = panels(out, "study_checkpoint")
    assert [p["title"] for p in drawn_panels] == ["upstream validation loss", "downstream validation loss",
                                                  "upstream validation loss, from scratch included",
                                                  "downstream validation loss, from scratch included"]
    scratch = {n for n in members["checkpoint"] if cells[n].checkpoint == "scratch"}
    assert len(scratch) == 1
    for i, panel in enumerate(drawn_panels):
        curves = {line["cell"] for line in panel["lines"] if ":" not in line["cell"]}
        assert (curves & scratch) == (scratch if i >= 2 else set())
        # and the no-re-warming baseline of the max_lr study, trained as far on the same corpus
        constant = {n for n, c in cells.items() if c.schedule == "constant" and c.tokens == 20480 and c.train_corpus == "downstream"}
        assert len(constant) == 1 and curves - scratch == (set(members["checkpoint"]) | constant) - scratch
    # A study without from-scratch cells keeps one row of panels.
    assert len(panels(out, "study_half")) == 2


def test_a_crossed_study_is_labelled_by_both_settings_coloured_by_one_dashed_by_the_other(drawn):
    config, cells, members, table, out, made = drawn
    lines = {line["cell"]: line for line in panels(out, "study_crossed")[0]["lines"] if ":" not in line["cell"]}
    assert len(lines) == 4
    for name, line in lines.items():
        cell = cells[name]
        assert line["label"] == f"start {cell.checkpoint}, warm-up {cell.warmup_fraction * 100:g}%"
    by = {(cells[n].checkpoint, cells[n].warmup_fraction): line for n, line in lines.items()}
    assert by[("early", 0.0)]["color"] == by[("early", 0.1)]["color"] != by[("final", 0.0)]["color"] == by[("final", 0.1)]["color"]
    assert by[("early", 0.0)]["linestyle"] == by[("final", 0.0)]["linestyle"] == "-"
    assert by[("early", 0.1)]["linestyle"] == by[("final", 0.1)]["linestyle"] == "--"
    # The baselines by what they are, in their own styles.
    baseline = {line["cell"]: line for line in panels(out, "study_max_lr")[0]["lines"]}
    constant = next(n for n in members["max_lr"] if cells[n].schedule == "constant")
    assert baseline[constant]["label"] == "no re-warming (constant LR 2e-4)"
    assert (baseline[constant]["color"], baseline[constant]["linestyle"]) == ("#000000", "--")


def test_a_sequence_draws_its_datasets_one_after_another(drawn):
    config, cells, members, table, out, made = drawn
    first, second, third = members["sequence"]
    lines = {line["cell"]: line for line in panels(out, "study_sequence")[1]["lines"]}
    per_step = cells[first].batch_sequences * config.prepare.seq_len
    assert lines[first]["x"][0] == 0
    assert lines[second]["x"][0] == cells[first].tokens / 1024 == 5120 / 1024
    assert lines[third]["x"][0] == (cells[first].tokens + cells[second].tokens) / 1024
    assert lines[third]["x"][-1] == (10240 + (cells[third].tokens // per_step) * per_step) / 1024
    # Labelled by the dataset each trains on: the one setting of the listed cells that names them apart.
    assert [lines[n]["label"] for n in (first, second, third)] == ["data downstream", "data later", "data upstream"]


def test_short_labels_are_unique_and_name_the_study():
    config = grid.from_dict(small_params(train={"checkpoint": "final"}, grid={"studies": {
        "max_lr": {"vary": {"max_lr": [1e-3, 2e-3]},
                   # two baselines that only their warm-up tells apart: their labels would be one, so both keep their names
                   "baselines": [{"schedule": "constant", "max_lr": 2e-4, "warmup_fraction": 0.0},
                                 {"schedule": "constant", "max_lr": 2e-4, "warmup_fraction": 0.1}]},
        "replay": {"vary": {"replay_fraction": [0.0, 0.05]}}}}))
    cells = grid.cells(config)
    members = grid.studies(config)
    short = labels.cell_labels({n: (s, members[n]) for n, s in grid.declared_studies(config).items()}, cells,
                               grid.scratch_checkpoints(config.checkpoints))
    by_lr = {cells[n].max_lr: n for n in members["max_lr"] if cells[n].schedule != "constant"}
    assert short[by_lr[1e-3]] == "max_lr: max LR 1e-3" and short[by_lr[2e-3]] == "max_lr: max LR 2e-3"
    constants = [n for n in members["max_lr"] if cells[n].schedule == "constant"]
    assert [short[n] for n in constants] == constants
    by_replay = {cells[n].replay_fraction: n for n in members["replay"]}
    assert short[by_replay[0.05]] == "replay: replay 5%"
    assert len(set(short.values())) == len(short)


def test_from_scratch_is_the_checkpoints_type_not_its_name(tmp_path):
    """A pre-trained checkpoint named `scratch` and a from-scratch one named otherwise: labels, styles,
    panels, the DVC plots and the paper's takeaway 4 go by the checkpoint's type."""
    checkpoints = {**without(TEST_PARAMS["checkpoints"], "scratch", "after_first", "after_second"),
                   "scratch": {"type": "pretrain", "revision": "step20"}, "random_init": {"type": "scratch", "seed": 0}}
    config = grid.from_dict({**TEST_PARAMS, "checkpoints": checkpoints, "grid": {"studies": {
        "checkpoint": {"vary": {"checkpoint": ["final", "scratch", "random_init"]}}}}})
    cells = grid.cells(config)
    members = grid.studies(config)
    declared = {name: (study, members[name]) for name, study in grid.declared_studies(config).items()}
    by = {cells[n].checkpoint: n for n in members["checkpoint"]}
    assert grid.scratch_checkpoints(config.checkpoints) == {"random_init"}
    short = labels.cell_labels(declared, cells, grid.scratch_checkpoints(config.checkpoints))
    assert short[by["random_init"]] == "checkpoint: from scratch" and short[by["scratch"]] == "checkpoint: start scratch"
    table = made_table(cells, config.prepare.seq_len)
    draw(config, cells, table, declared, short, tmp_path)
    drawn = [{line["cell"] for line in panel["lines"] if ":" not in line["cell"]} for panel in panels(tmp_path, "study_checkpoint")]
    # On top the pre-trained starts (the one named scratch among them); beneath, from scratch with them.
    assert drawn == [{by["final"], by["scratch"]}] * 2 + [set(by.values())] * 2
    finding = findings.takeaway_scratch(members["checkpoint"], table, cells, config.checkpoints)
    assert f"from scratch {table[by['random_init']]['downstream_loss']:.4f}" in finding.why
    assert f"{table[by['scratch']]['downstream_loss']:.4f}" in finding.why.split("re-warmed")[1]
    plots = dvcfile.dvc_plots(config, tmp_path)
    assert [Path(p).parts[-3] for p in plots["from_scratch_downstream"]["y"]] == [by["random_init"]]
    assert {Path(p).parts[-3] for p in plots["all_cells_downstream"]["y"]} == {by["final"], by["scratch"]}


def test_no_title_legend_or_panel_overlaps_another_or_leaves_the_figure(drawn):
    """Every figure's texts, legends and panels, where they were drawn (boxes in pixels, from the JSON):
    inside the image and apart from each other (a panel's own title sits on its top edge: it may touch
    that panel only), with the longest study title of the paper's configurations."""
    config, cells, members, table, out, made = drawn
    for path in sorted(out.glob("*.json")):
        layout = json.loads(path.read_text())["layout"]
        width, height = layout["size"]
        boxes = layout["boxes"]
        for box in boxes:
            x0, y0, x1, y1 = box["box"]
            assert -1 <= x0 and -1 <= y0 and x1 <= width + 1 and y1 <= height + 1, (path.name, box)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                if {a["kind"], b["kind"]} == {"title", "axes"}:
                    continue
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["box"], b["box"]
                apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
                assert apart, (path.name, a, b)
