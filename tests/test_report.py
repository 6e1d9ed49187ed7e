"""The report's derived measures are pure functions, checked against small tables."""

from __future__ import annotations

import math

import pytest

from rewarm import config as cfg
from rewarm import grid
from rewarm import report
from tests.conftest import small_params


def rows(values: list[float], key: str = "val/upstream/loss") -> list[dict]:
    return [{"step": i, "tokens": 100 * i, key: v} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    "values, rise, peak, recovered",
    [
        ([2.0, 3.0, 2.5, 1.9, 1.8], 1.0, 100, 300),  # jumps, then comes back below 2.0 at 300 tokens
        ([2.0, 2.6, 2.8, 2.4], 0.8, 200, None),  # rises and never recovers
        ([2.0, 1.5, 1.2], 0.0, 0, None),  # no gap: the loss only falls
    ],
)
def test_stability_gap(values, rise, peak, recovered):
    gap = report.stability_gap(rows(values), "val/upstream/loss")
    assert gap.rise == pytest.approx(rise)
    assert gap.peak_tokens == peak
    assert gap.recovered_tokens == recovered


def test_forgetting_and_adaptation_signs():
    assert report.forgetting(final_upstream_loss=2.5, base_upstream_loss=2.0) == pytest.approx(0.5)
    assert report.adaptation(final_downstream_loss=1.5, base_downstream_loss=4.0) == pytest.approx(2.5)


def table_entry(up: float, down: float, up_rise: float, down_rise: float) -> dict:
    return {"upstream_loss": up, "downstream_loss": down,
            "gap_upstream": report.Gap(up_rise, 100, None), "gap_downstream": report.Gap(down_rise, 100, None)}


def test_findings_are_computed_from_the_numbers():
    params = small_params(train={"checkpoint": "final"},
                          grid={"studies": {"max_lr": {"vary": {"max_lr": [1e-3, 2e-3, 4e-3]}},
                                            "checkpoint": {"vary": {"checkpoint": ["early", "final", "scratch"]}}}})
    config = cfg.from_dict(params)
    cells = grid.cells(config)
    studies = grid.studies(config)
    by_study = {name: (grid.study_axis(study), studies[name]) for name, study in config.grid.studies.items()}
    assert [cells[n].max_lr for n in studies["max_lr"]] == [1e-3, 2e-3, 4e-3]
    assert [cells[n].checkpoint for n in studies["checkpoint"]] == ["early", "final", "scratch"]
    lr = {cells[n].max_lr: n for n in studies["max_lr"]}
    ckpt = {cells[n].checkpoint: n for n in studies["checkpoint"]}
    table = {
        lr[1e-3]: table_entry(up=2.0, down=3.0, up_rise=0.5, down_rise=0.1),
        lr[2e-3]: table_entry(up=2.2, down=2.8, up_rise=0.7, down_rise=0.2),
        lr[4e-3]: table_entry(up=2.5, down=2.7, up_rise=0.9, down_rise=0.0),
        ckpt["early"]: table_entry(up=2.4, down=2.9, up_rise=0.3, down_rise=0.1),
        ckpt["scratch"]: table_entry(up=5.0, down=3.5, up_rise=0.0, down_rise=0.0),
    }
    sentences = report.findings(table, by_study, cells)
    assert sentences[0].startswith("Re-warming first raises the loss on both corpora: partly supported")
    assert "in 4 of 4 re-warmed cells, the downstream loss in 3" in sentences[0]
    assert sentences[1].startswith("A larger maximum learning rate helps downstream and hurts upstream: supported")
    assert sentences[2].startswith("Starting from the final checkpoint beats earlier checkpoints and training from scratch on downstream: supported")
    table[ckpt["early"]]["downstream_loss"] = 2.0
    assert "contradicted" in report.findings(table, by_study, cells)[2]


def test_lr_areas_table():
    # lr 1.0, 1.0, 0.5, 0.0 with decay 0.5: momentum 0, 0, 0.5, 0.75 -> S2 0, 0, 0.5, 1.25
    s1, s2 = report.lr_areas([1.0, 1.0, 0.5, 0.0], decay=0.5)
    assert s1 == [1.0, 2.0, 2.5, 2.5]
    assert s2 == [0.0, 0.0, 0.5, 1.25]


def test_curve_fit_recovers_a_known_law_and_predicts_another_schedule():
    from rewarm import schedules

    truth = report.CurveFit(l0=2.0, a=3.0, alpha=0.5, c=40.0, rmse=0.0)
    cosine = schedules.build("cosine", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=4)
    lrs = [cosine(i) for i in range(200)]
    s1, s2 = report.lr_areas(lrs)
    steps = list(range(0, 201, 10))
    losses = [0.0] + [truth.predict(s1[s - 1], s2[s - 1]) for s in steps[1:]]
    fit = report.fit_curve(steps, losses, lrs)
    assert fit.rmse < 1e-6 and fit.alpha == pytest.approx(0.5, abs=0.02)
    wsd = schedules.build("wsd", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=4, decay_fraction=0.2, decay_shape="linear")
    w1, w2 = report.lr_areas([wsd(i) for i in range(200)])
    assert fit.predict(w1[-1], w2[-1]) == pytest.approx(truth.predict(w1[-1], w2[-1]), rel=1e-3)
    assert report.fit_curve([0, 10], [3.0, 2.0], lrs) is None  # too few points


def test_warm_up_is_not_annealing():
    from rewarm import schedules

    rising = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert report.lr_areas(rising)[1] == [0.0] * 6  # a warm-up then a plateau anneals nothing
    # Two cosine runs that differ only in warm-up length anneal by nearly the same area.
    ends = []
    for warmup in (0, 20):
        cosine = schedules.build("cosine", max_lr=1e-3, min_lr=1e-4, total_steps=1000, warmup_steps=warmup)
        ends.append(report.lr_areas([cosine(i) for i in range(1000)])[1][-1])
    assert ends[0] > 0.1 and ends[1] == pytest.approx(ends[0], rel=0.05)


def test_curve_fit_keeps_the_law_constants_non_negative():
    # A logarithmic curve: an unconstrained fit would reach it with a large negative L0.
    lrs = [1e-3] * 400
    s1, _ = report.lr_areas(lrs)
    steps = list(range(0, 401, 20))
    losses = [0.0] + [4.0 - 0.5 * math.log(s1[s - 1]) for s in steps[1:]]
    fit = report.fit_curve(steps, losses, lrs)
    assert min(fit.l0, fit.a, fit.c) >= 0.0
    assert fit.rmse < 0.2  # still a fit, not a failure


def test_predictions_from_the_reference_cell_follow_the_law_across_the_grid():
    """Curves made by one known law: fitted on the reference cell alone, the law predicts every
    other cell from the same checkpoint (warm-up lengths, max_lr, a constant schedule) and the
    reference row says it is the fit's own curve. Cells from another checkpoint are left out."""
    from rewarm.train import Plan

    params = small_params(train={"checkpoint": "final", "tokens": 400 * 8 * 32, "batch_sequences": 8},
                          grid={"studies": {"warmup": {"vary": {"warmup_fraction": [0.0, 0.05, 0.1]}},
                                            "max_lr": {"vary": {"max_lr": [0.001, 0.002]},
                                                       "baselines": [{"schedule": "constant", "max_lr": 0.0002, "warmup_fraction": 0.0}]},
                                            "checkpoint": {"vary": {"checkpoint": ["final", "scratch"]}}}})
    config = cfg.from_dict(params)
    cells = grid.cells(config)
    truth = report.CurveFit(l0=1.5, a=0.8, alpha=0.4, c=30.0, rmse=0.0)
    table = {}
    for name, cell in cells.items():
        plan = Plan.of(cell, 32, 0.0, world=1)
        lrs = [plan.schedule(i) for i in range(plan.total_steps)]
        s1, s2 = report.lr_areas(lrs)
        rows = [{"step": s, "val/downstream/loss": 9.0 if s == 0 else truth.predict(s1[s - 1], s2[s - 1])}
                for s in range(0, plan.total_steps + 1, 20)]
        table[name] = {"rows": rows, "lr": list(enumerate(lrs))}
    out, text = report.predictions(config, cells, table)
    reference = grid.cell_name(config.train)
    same_start = [n for n in cells if cells[n].checkpoint == "final"]
    assert len(out) == len(same_start) >= 5 and "L = 1.500 + 0.8 S1^-0.40 - 30 S2" in text
    labels = [row[0] for row in out]
    assert f"{reference} (the fit's own curve)" in labels and not [n for n in labels if "scratch" in n]
    assert all(abs(float(row[3])) < 1e-3 for row in out), out
