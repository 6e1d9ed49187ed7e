"""The report's derived measures are pure functions, checked against small tables."""

from __future__ import annotations

import json
import math

import pytest

from rewarm import config as cfg
from rewarm import grid, report
from rewarm.report import findings, measures
from tests.project import small_params


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
    gap = measures.stability_gap(rows(values), "val/upstream/loss")
    assert gap.rise == pytest.approx(rise)
    assert gap.peak_tokens == peak
    assert gap.recovered_tokens == recovered


def test_forgetting_and_adaptation_signs():
    assert measures.forgetting(final_upstream_loss=2.5, base_upstream_loss=2.0) == pytest.approx(0.5)
    assert measures.adaptation(final_downstream_loss=1.5, base_downstream_loss=4.0) == pytest.approx(2.5)


def table_entry(up: float, down: float, up_rise: float, down_rise: float, curve: list[float] | None = None,
                forgetting: float | None = None) -> dict:
    """A finished cell as the report sees it; `curve`: downstream losses at steps 0, 10, 20, ..."""
    rows = [{"step": 10 * i, "tokens": 1000 * i, "val/downstream/loss": v, "val/upstream/loss": up} for i, v in enumerate(curve or [down])]
    entry = {"upstream_loss": up, "downstream_loss": down, "rows": rows,
             "gap_upstream": measures.Gap(up_rise, 100, None), "gap_downstream": measures.Gap(down_rise, 100, None)}
    if forgetting is not None:
        entry["forgetting"] = forgetting
    return entry


def study_cells(studies: dict) -> tuple[cfg.Config, dict, dict]:
    config = grid.from_dict(small_params(train={"checkpoint": "final"}, grid={"studies": studies}))
    return config, grid.cells(config), grid.studies(config)


def test_warmup_takeaway_uses_the_spread_threshold_and_the_spike():
    config, cells, studies = study_cells({"warmup": {"vary": {"warmup_fraction": [0.0, 0.05, 0.1]}}})
    by = {cells[n].warmup_fraction: n for n in studies["warmup"]}
    # Downstream losses 3.00, 3.01, 3.02: spread 0.02 / 3.01 = 0.66% < 1%; upstream identical; the 0% cell rises most.
    table = {by[0.0]: table_entry(2.0, 3.00, 0.4, 0.1), by[0.05]: table_entry(2.0, 3.01, 0.2, 0.0), by[0.1]: table_entry(2.0, 3.02, 0.1, 0.0)}
    finding = findings.takeaway_warmup(studies["warmup"], table, cells, config.checkpoints)
    assert finding.verdict == "supported" and "differ by 0.00% upstream and 0.66% downstream, threshold 1%" in finding.why
    assert "without warm-up the loss first rises by 0.400 nats, the largest" in finding.why
    table[by[0.1]]["downstream_loss"] = 3.10  # spread 3.3%: warm-up length matters here
    assert findings.takeaway_warmup(studies["warmup"], table, cells, config.checkpoints).verdict == "partly supported"
    table[by[0.05]]["gap_upstream"] = measures.Gap(0.9, 100, None)  # and the spike is not the 0% cell's
    assert findings.takeaway_warmup(studies["warmup"], table, cells, config.checkpoints).verdict == "contradicted"


def test_max_lr_takeaway_with_the_constant_baseline():
    config, cells, studies = study_cells({"max_lr": {"vary": {"max_lr": [1e-3, 2e-3, 4e-3]},
                                                     "baselines": [{"schedule": "constant", "max_lr": 2e-4, "warmup_fraction": 0.0}]}})
    by = {(cells[n].schedule, cells[n].max_lr): n for n in studies["max_lr"]}
    table = {
        by["cosine", 1e-3]: table_entry(2.0, 3.0, 0.5, 0.1, curve=[4.0, 3.5, 3.0]),
        by["cosine", 2e-3]: table_entry(2.2, 2.8, 0.7, 0.2, curve=[4.0, 3.6, 2.8]),
        by["cosine", 4e-3]: table_entry(2.5, 2.7, 0.9, 0.0, curve=[4.0, 3.7, 2.7]),
        by["constant", 2e-4]: table_entry(1.9, 3.2, 0.0, 0.0, curve=[4.0, 3.4, 3.2]),
    }
    for name, up_early in zip(table, (2.1, 2.3, 2.6, 1.95)):
        table[name]["rows"][1]["val/upstream/loss"] = up_early
    finding = findings.takeaway_max_lr(studies["max_lr"], table, cells, config.checkpoints, config.prepare.seq_len)
    assert finding.verdict == "supported", finding
    assert "final downstream loss 3.0000 -> 2.8000 -> 2.7000, upstream 2.0000 -> 2.2000 -> 2.5000" in finding.why
    table[by["constant", 2e-4]]["rows"][1]["val/upstream/loss"] = 2.2  # the constant LR is not better early
    assert findings.takeaway_max_lr(studies["max_lr"], table, cells, config.checkpoints, config.prepare.seq_len).verdict == "partly supported"


def test_same_data_scratch_and_checkpoint_takeaways():
    config, cells, studies = study_cells({
        "same": {"settings": {"train_corpus": "upstream"}, "vary": {"max_lr": [1e-3, 2e-3]}},
        "starts": {"vary": {"checkpoint": ["early", "final", "scratch"]}}})
    same = studies["same"]
    table = {same[0]: table_entry(2.0, 3.0, 0.3, 0.1, forgetting=0.05), same[1]: table_entry(2.1, 3.0, 0.0, 0.1, forgetting=0.1)}
    finding = findings.study_findings(config.grid.studies["same"], same, table, cells, config.checkpoints, config.prepare.seq_len)[0]
    assert finding.claim.startswith("Re-warming raises the loss first even on the same data") and finding.verdict == "partly supported"
    assert "rose after step 0 in 1 of 2 re-warmed cells" in finding.why and "above the starting checkpoint's in 2 of 2" in finding.why
    by = {cells[n].checkpoint: n for n in studies["starts"]}
    table = {by["early"]: table_entry(2.4, 2.9, 0.3, 0.1, curve=[5.0, 3.5, 3.2, 2.9]),
             by["final"]: table_entry(2.0, 2.8, 0.5, 0.1, curve=[4.0, 3.3, 3.0, 2.8]),
             by["scratch"]: table_entry(5.0, 3.5, 0.0, 0.0)}
    scratch, latest = findings.study_findings(config.grid.studies["starts"], studies["starts"], table, cells, config.checkpoints, config.prepare.seq_len)
    assert scratch.verdict == "supported" and "from scratch 3.5000; re-warmed 2.9000, 2.8000" in scratch.why
    # final (step 40 of the small pre-training, `final`) is lowest at all 3 evaluations after step 0 and at the end
    assert latest.verdict == "supported" and "final 2.8000, early 2.9000; final lowest at 3 of 3 evaluations" in latest.why
    table[by["early"]]["rows"][1]["val/downstream/loss"] = 3.2  # the earlier checkpoint is ahead once: 2 of 3 < 90%
    assert findings.study_findings(config.grid.studies["starts"], studies["starts"], table, cells, config.checkpoints, config.prepare.seq_len)[1].verdict \
        == "partly supported"
    table[by["early"]]["downstream_loss"] = 2.0  # and it ends best: contradicted
    assert findings.study_findings(config.grid.studies["starts"], studies["starts"], table, cells, config.checkpoints, config.prepare.seq_len)[1].verdict \
        == "contradicted"


def test_rewarming_raises_the_loss_on_both_corpora_counts_cells_of_the_latest_checkpoint():
    config, cells, studies = study_cells({"max_lr": {"vary": {"max_lr": [1e-3, 2e-3]}},
                                          "early": {"vary": {"checkpoint": ["early"]}}})
    # Both max_lr cells start at downstream loss 3.0 (step 0) and end at 2.5: below the start.
    table = {n: table_entry(2.0, 2.5, 0.2, rise, curve=[3.0, 3.1, 2.5]) for n, rise in zip(studies["max_lr"], (0.1, 0.0))}
    table[studies["early"][0]] = table_entry(2.0, 3.5, 0.0, 0.0, curve=[4.0, 3.5])  # another checkpoint: not counted
    sentence = findings.rewarming_raises_both(table, cells, config.checkpoints)
    assert sentence.startswith("Re-warming the latest checkpoint (final) first raises the loss on both corpora, then the "
                               "downstream loss falls below its start: partly supported")
    assert "rose after step 0 in 2 of 2 re-warmed cells, the downstream loss in 1; the final downstream loss is below the " \
           "step-0 loss in 2)" in sentence
    table[studies["max_lr"][1]]["gap_downstream"] = measures.Gap(0.05, 100, None)
    assert ": supported (" in findings.rewarming_raises_both(table, cells, config.checkpoints)


def test_calibration_against_the_paper_from_base_and_cell_numbers():
    config, cells, studies = study_cells({"max_lr": {"vary": {"max_lr": [1e-3, 2e-3]}}})
    low, high = studies["max_lr"]
    base = {"final": {"upstream": {"ppl": 4.0}, "downstream": {"ppl": 10.0}},
            "scratch": {"upstream": {"ppl": 1000.0}, "downstream": {"ppl": 1000.0}}}
    table = {low: {**table_entry(2.0, 2.5, 0.2, 0.1), "forgetting": 0.1, "adaptation": 0.2},
             high: {**table_entry(2.0, 2.5, 0.2, 0.1), "forgetting": 0.5, "adaptation": 0.2}}
    lines = findings.calibration(table, cells, base, config.checkpoints)
    # 10 / 4 = 2.5 <= 3; 1000 / 10 = 100 >= 10; the worst ratio 0.5 / 0.2 = 2.5 <= 3.
    assert lines[0].startswith("Mild shift: holds") and "a factor of 2.50; threshold 3" in lines[0]
    assert lines[1].startswith("Pre-training upstream helps downstream: holds") and "100.0 times lower" in lines[1]
    assert lines[2].startswith("Forgetting of the order of the gain: holds") and f"at most 2.50 times, in {high}" in lines[2]
    base["final"]["downstream"]["ppl"] = 13.0  # 13 / 4 = 3.25 > 3
    table[high]["adaptation"] = -0.1  # forgot without gaining: not of the order of the gain
    lines = findings.calibration(table, cells, base, config.checkpoints)
    assert lines[0].startswith("Mild shift: does not hold") and lines[2].startswith("Forgetting of the order of the gain: does not hold")


def test_lr_areas_table():
    # lr 1.0, 1.0, 0.5, 0.0 with decay 0.5: momentum 0, 0, 0.5, 0.75 -> S2 0, 0, 0.5, 1.25
    s1, s2 = measures.lr_areas([1.0, 1.0, 0.5, 0.0], decay=0.5)
    assert s1 == [1.0, 2.0, 2.5, 2.5]
    assert s2 == [0.0, 0.0, 0.5, 1.25]


def test_curve_fit_recovers_a_known_law_and_predicts_another_schedule():
    from rewarm import schedules

    truth = measures.CurveFit(l0=2.0, a=3.0, alpha=0.5, c=40.0, rmse=0.0)
    cosine = schedules.build("cosine", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=4)
    lrs = [cosine(i) for i in range(200)]
    s1, s2 = measures.lr_areas(lrs)
    steps = list(range(0, 201, 10))
    losses = [0.0] + [truth.predict(s1[s - 1], s2[s - 1]) for s in steps[1:]]
    fit = measures.fit_curve(steps, losses, lrs)
    assert fit.rmse < 1e-6 and fit.alpha == pytest.approx(0.5, abs=0.02)
    wsd = schedules.build("wsd", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=4, decay_fraction=0.2, decay_shape="linear")
    w1, w2 = measures.lr_areas([wsd(i) for i in range(200)])
    assert fit.predict(w1[-1], w2[-1]) == pytest.approx(truth.predict(w1[-1], w2[-1]), rel=1e-3)
    assert measures.fit_curve([0, 10], [3.0, 2.0], lrs) is None  # too few points


def test_curve_fit_leaves_out_points_before_any_learning():
    """GPT-NeoX's warm-up runs its first update at LR 0 (neox- schedules): after one step S1 is 0 and the
    law's S1^-alpha undefined. The fit leaves that point out and still recovers the law (it failed with an
    SVD error in the demo's report)."""
    from rewarm import schedules

    truth = measures.CurveFit(l0=2.0, a=3.0, alpha=0.5, c=40.0, rmse=0.0)
    neox = schedules.build("neox-floored-cosine", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=2.5)
    lrs = [neox(i) for i in range(200)]
    s1, s2 = measures.lr_areas(lrs)
    assert lrs[0] == 0.0 and s1[0] == 0.0
    steps = [0, 1, 2, 3, *range(10, 201, 10)]
    losses = [0.0, 9.9] + [truth.predict(s1[s - 1], s2[s - 1]) for s in steps[2:]]
    fit = measures.fit_curve(steps, losses, lrs)
    assert fit.rmse < 1e-6 and fit.alpha == pytest.approx(0.5, abs=0.02)


def test_warm_up_is_not_annealing():
    from rewarm import schedules

    rising = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert measures.lr_areas(rising)[1] == [0.0] * 6  # a warm-up then a plateau anneals nothing
    # Two cosine runs that differ only in warm-up length anneal by nearly the same area.
    ends = []
    for warmup in (0, 20):
        cosine = schedules.build("cosine", max_lr=1e-3, min_lr=1e-4, total_steps=1000, warmup_steps=warmup)
        ends.append(measures.lr_areas([cosine(i) for i in range(1000)])[1][-1])
    assert ends[0] > 0.1 and ends[1] == pytest.approx(ends[0], rel=0.05)


def test_curve_fit_keeps_the_law_constants_non_negative():
    # A logarithmic curve: an unconstrained fit would reach it with a large negative L0.
    lrs = [1e-3] * 400
    s1, _ = measures.lr_areas(lrs)
    steps = list(range(0, 401, 20))
    losses = [0.0] + [4.0 - 0.5 * math.log(s1[s - 1]) for s in steps[1:]]
    fit = measures.fit_curve(steps, losses, lrs)
    assert min(fit.l0, fit.a, fit.c) >= 0.0
    assert fit.rmse < 0.2  # still a fit, not a failure


def test_predictions_from_the_reference_cell_follow_the_law_across_the_grid():
    """Curves made by one known law: fitted on the reference cell alone, the law predicts every
    other cell from the same checkpoint (warm-up lengths, max_lr, a constant schedule) and the
    reference row says it is the fit's own curve. Cells from another checkpoint are left out, and a cell
    beyond what the fit supports is not predicted."""
    from rewarm.config import Plan

    params = small_params(train={"checkpoint": "final", "tokens": 400 * 8 * 32, "batch_sequences": 8},
                          grid={"studies": {"warmup": {"vary": {"warmup_fraction": [0.0, 0.05, 0.1]}},
                                            "max_lr": {"vary": {"max_lr": [0.001, 0.004]},
                                                       "baselines": [{"schedule": "constant", "max_lr": 0.0002, "warmup_fraction": 0.0}]},
                                            "checkpoint": {"vary": {"checkpoint": ["final", "scratch"]}}}})
    config = grid.from_dict(params)
    cells = grid.cells(config)
    truth = measures.CurveFit(l0=1.5, a=0.8, alpha=0.4, c=3.0, rmse=0.0)  # losses from 2.9 to 1.8, as a run's
    table = {}
    for name, cell in cells.items():
        plan = Plan.of(cell, 32, 0.0, world=1)
        lrs = [plan.schedule(i) for i in range(plan.total_steps)]
        s1, s2 = measures.lr_areas(lrs)
        rows = [{"step": s, "val/downstream/loss": 9.0 if s == 0 else truth.predict(s1[s - 1], s2[s - 1])}
                for s in range(0, plan.total_steps + 1, 20)]
        table[name] = {"rows": rows, "lr": list(enumerate(lrs))}
    out, text = report.predictions(config, cells, table)
    reference = grid.cell_name(config.train)
    same_start = [n for n in cells if cells[n].checkpoint == "final"]
    assert len(out) == len(same_start) >= 5 and "L = 1.500 + 0.8 S1^-0.40 - 3 S2" in text
    labels = [row[0] for row in out]
    assert f"{reference} (the fit's own curve)" in labels and not [n for n in labels if "scratch" in n]
    # Twice the reference's max_lr (4e-3 against 2e-3) sums about twice its S1: beyond the fitted span, not
    # predicted, and said so; every other cell (warm-up lengths, max_lr 1e-3, the constant 2e-4) is, within 1e-3.
    def final_s1(name):
        return measures.lr_areas([lr for _, lr in table[name]["lr"]])[0][-1]
    fitted = final_s1(reference)
    beyond = [n for n in same_start if final_s1(n) > fitted * (1 + measures.EXTRAPOLATION)]
    assert beyond and all("lr-4e-3" in n for n in beyond)
    for row in out:
        if row[0] in beyond:
            assert row[1].startswith("not predicted: S1 ") and "outside the fitted" in row[1] and row[3] == "-"
        else:
            assert row[3] != "-" and abs(float(row[3])) < 1e-3, row
    assert f"{len(beyond)} cell(s) whose summed learning rate S1" in text and "held-out cells it predicts, RMSE 0.000" in text


def test_the_fit_never_publishes_a_negative_loss():
    """A reference curve with strong annealing and a cell that anneals beyond it: a linear law in S2
    extrapolated there goes below zero (the demo's report printed -12.56); such a cell is not predicted."""
    truth = measures.CurveFit(l0=1.0, a=0.5, alpha=0.5, c=50.0, rmse=0.0)
    from rewarm import schedules

    cosine = schedules.build("cosine", max_lr=1e-2, min_lr=1e-3, total_steps=200, warmup_steps=4)
    lrs = [cosine(i) for i in range(200)]
    s1, s2 = measures.lr_areas(lrs)
    steps = list(range(0, 201, 10))
    fit = measures.fit_curve(steps, [0.0] + [truth.predict(s1[s - 1], s2[s - 1]) for s in steps[1:]], lrs)
    steep = schedules.build("cosine", max_lr=5e-2, min_lr=0.0, total_steps=200, warmup_steps=4)
    t1, t2 = measures.lr_areas([steep(i) for i in range(200)])
    assert fit.predict(t1[-1], t2[-1]) < 0  # what the old section would have printed
    assert fit.supports(t1[-1], t2[-1]) is not None and fit.supports(s1[-1], s2[-1]) is None


# Ibrahim et al. 2024, Table 2 (405M, Pile -> SlimPajama): final validation loss, Pile / SlimPajama.
TABLE_2 = {0.0: (2.44, 2.50), 0.01: (2.26, 2.50), 0.05: (2.23, 2.51), 0.1: (2.21, 2.51), 0.5: (2.16, 2.54)}
UNION_2 = (2.17, 2.53)


def _replay_grid(losses: dict[float, tuple[float, float]], union: tuple[float, float]):
    specs = {"final": cfg.HubCheckpoint(type="hub", repo_id="EleutherAI/pythia-410m"), "scratch": cfg.ScratchCheckpoint(type="scratch")}
    cells = {f"r{share}": cfg.TrainConfig(replay_fraction=share) for share in losses}
    cells["union"] = cfg.TrainConfig(checkpoint="scratch", replay_fraction=0.5)
    table = {f"r{share}": {"upstream_loss": up, "downstream_loss": down} for share, (up, down) in losses.items()}
    table["union"] = {"upstream_loss": union[0], "downstream_loss": union[1]}
    study = cfg.Study(vary={"replay_fraction": list(losses)})
    return findings.replay_sweep({"replay": (study, list(cells))}, table, cells, specs), table, cells


def test_replay_findings_on_the_papers_own_table_2():
    """The paper's numbers give the paper's conclusions: 5% replay removes (2.44 - 2.23) / (2.44 - 2.17) = 78% of
    the forgetting for +0.01 downstream; 50% replay averages (2.16 + 2.54) / 2 = 2.35, the union's (2.17 + 2.53) / 2."""
    (sweep, union), table, cells = _replay_grid(TABLE_2, UNION_2)
    assert sweep == ["r0.0", "r0.01", "r0.05", "r0.1", "r0.5"] and union == ["union"]
    rows = findings.replay_table(sweep, union, table, cells)["rows"]
    assert [r[0] for r in rows] == ["0.0%", "1.0%", "5.0%", "10.0%", "50.0%", "union (from scratch, 50.0% upstream)"]
    assert [r[3] for r in rows] == ["2.4700", "2.3800", "2.3700", "2.3600", "2.3500", "2.3500"]
    recovers, matches = findings.replay_findings(sweep, union, table, cells)
    assert recovers.verdict == "supported" and "5.0% replay" in recovers.why and "78%" in recovers.why
    assert matches.verdict == "supported" and "best: 50.0% replay" in matches.why and "+0.00%" in matches.why


def test_replay_findings_when_replay_does_not_help():
    """Replay that leaves the upstream loss where no replay ends and costs downstream: not 'most of the
    forgetting', not a small cost; the best average (2.44 + 2.52) / 2 = 2.48 is 5.53% above the union's 2.35: contradicted."""
    (sweep, union), table, cells = _replay_grid({0.0: (2.44, 2.50), 0.05: (2.44, 2.52)}, UNION_2)
    recovers, matches = findings.replay_findings(sweep, union, table, cells)
    assert recovers.verdict == "contradicted" and matches.verdict == "contradicted"
    assert "+5.53%" in matches.why


@pytest.mark.parametrize("scores, losses, rho, word", [
    # Same order: rank correlation 1.
    ([0.30, 0.20, 0.10, 0.05], [1.0, 1.1, 1.2, 1.3], 1.0, "agrees"),
    # Reversed: -1.
    ([0.05, 0.10, 0.20], [1.0, 1.1, 1.2], -1.0, "disagrees"),
    # By hand: 4 cells, one adjacent swap: d = 0, 0, 1, -1; rho = 1 - 6 x 2 / (4 x 15) = 0.8, the threshold itself.
    ([0.4, 0.3, 0.2, 0.1], [1.0, 1.1, 1.3, 1.2], 0.8, "agrees"),
    # By hand: benchmark ranks 3, 2, 1; negated-loss ranks 3, 1, 2; d = 0, 1, -1; rho = 1 - 6 x 2 / (3 x 8) = 0.5.
    ([0.30, 0.20, 0.10], [1.0, 1.2, 1.1], 0.5, "partly agrees"),
])
def test_benchmark_ranking_against_perplexity_ranking(scores, losses, rho, word):
    table = {f"c{i}": {"bench_average": s, "mean_loss": l} for i, (s, l) in enumerate(zip(scores, losses))}
    sentence = findings.ranking_agreement(list(table), table)
    assert sentence.startswith(f"The benchmark ranking {word} with the perplexity ranking: Spearman's rho {rho:+.2f} ")
    assert f"over {len(scores)} cells" in sentence


def test_benchmark_ranking_needs_three_cells_that_differ():
    table = {"a": {"bench_average": 0.2, "mean_loss": 1.0}, "b": {"bench_average": 0.3, "mean_loss": 1.1},
             "c": {"mean_loss": 1.2}}  # c has no benchmark result
    assert findings.ranking_agreement(["a", "b", "c"], table) is None
    table["c"]["bench_average"] = 0.2
    table["b"]["bench_average"] = 0.2
    assert "does not tell these 3 cells apart" in findings.ranking_agreement(["a", "b", "c"], table)


@pytest.mark.bad_input
def test_an_evaluation_without_a_corpus_is_refused_naming_the_file(tmp_path):
    """An evaluation JSON cut down to one corpus: the report names the file and what is missing (a KeyError before)."""
    config = grid.from_dict(small_params())
    cell = next(iter(grid.cells(config)))
    (tmp_path / "runs" / cell).mkdir(parents=True)
    (tmp_path / "runs" / cell / "metrics.jsonl").write_text(json.dumps({"step": 0, "tokens": 0}) + "\n")
    path = tmp_path / "evals" / "cells" / f"{cell}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"upstream": {"loss": 2.0, "ppl": 7.39}}))
    with pytest.raises(ValueError) as caught:
        report.collect(config, tmp_path / "runs", tmp_path / "evals")
    assert str(caught.value) == f"{path}: evaluation is incomplete or altered: at the top level, 'downstream' is a required property"


def test_forgetting_is_measured_only_from_a_pre_trained_start(tmp_path):
    """A cell from scratch knew nothing to forget: it gets no forgetting or adaptation (its "forgetting",
    final minus untrained upstream loss, would be the grid's best), a cell from a checkpoint gets both."""
    config = grid.from_dict(small_params(benchmark=None, grid={"studies": {"starts": {"vary": {"checkpoint": ["final", "scratch"]}}}}))
    cells = grid.cells(config)

    def evaluation(path, up: float, down: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"upstream": {"loss": up, "ppl": math.exp(up)}, "downstream": {"loss": down, "ppl": math.exp(down)}}))

    for name in config.checkpoints:
        evaluation(tmp_path / "evals" / "base" / f"{name}.json", 7.0 if name == "scratch" else 2.0, 7.0 if name == "scratch" else 3.0)
    for name in cells:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.jsonl").write_text(json.dumps({"step": 0, "tokens": 0, "val/upstream/loss": 2.0,
                                                                            "val/downstream/loss": 3.0}) + "\n")
        evaluation(tmp_path / "evals" / "cells" / f"{name}.json", 2.25, 2.5)
    _, table, _, _ = report.collect(config, tmp_path / "runs", tmp_path / "evals")
    by = {cells[n].checkpoint: table[n] for n in table}
    assert "forgetting" not in by["scratch"] and "adaptation" not in by["scratch"]
    assert by["final"]["forgetting"] == pytest.approx(2.25 - 2.0) and by["final"]["adaptation"] == pytest.approx(3.0 - 2.5)


@pytest.mark.parametrize("spec, age", [
    (cfg.HubCheckpoint(type="hub", repo_id="EleutherAI/pythia-410m-deduped", revision="step27000"), 27_000),  # Pythia: its step
    (cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B", revision="stage1-step10000-tokens21B"), 21e9),  # OLMo: its tokens
    (cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B", revision="stage1-step1907359-tokens4001B"), 4.001e12),
    (cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B-early-training", revision="stage1-step27000-tokens56.7B"), 56.7e9),
    (cfg.HubCheckpoint(type="hub", repo_id="x/y", revision="stage2-ingredient3-step2000-tokens50B"), 50e9),
    (cfg.HubCheckpoint(type="hub", repo_id="TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T", tokens_seen=10**12), 1e12),  # declared
    (cfg.HubCheckpoint(type="hub", repo_id="x/y", revision="main"), math.inf),  # a series' end
    (cfg.PretrainCheckpoint(type="pretrain", revision="final"), math.inf),
    (cfg.PretrainCheckpoint(type="pretrain", revision="step40"), 40),
    (cfg.HubCheckpoint(type="hub", repo_id="x/y", revision="v1.0"), math.nan),  # unknown
    (cfg.LocalCheckpoint(type="local", path="mine"), math.nan),
    (cfg.LocalCheckpoint(type="local", path="mine", tokens_seen=5), 5),
])
def test_checkpoint_age_from_the_revision_or_as_declared(spec, age):
    got = findings.checkpoint_age(spec)
    assert (math.isnan(got) and math.isnan(age)) or got == pytest.approx(age, rel=1e-12)


def test_the_latest_of_an_olmo_series_is_the_one_with_most_tokens():
    """OLMo 2's revisions: the step alone would put stage 2 (its steps counted from its own start) before stage 1's end."""
    specs = {"early": cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B", revision="stage1-step10000-tokens21B"),
             "end": cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B", revision="stage1-step1907359-tokens4001B"),
             "soup": cfg.HubCheckpoint(type="hub", repo_id="allenai/OLMo-2-0425-1B", revision="stage2-ingredient3-step2000-tokens50B",
                                       tokens_seen=4_051_000_000_000),
             "scratch": cfg.ScratchCheckpoint(type="scratch")}
    assert findings.latest_checkpoint(specs) == "soup"
    assert findings.latest_checkpoint({k: v for k, v in specs.items() if k != "soup"}) == "end"
