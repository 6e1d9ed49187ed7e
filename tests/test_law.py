"""The continual pre-training law (rewarm.law) and the forecast's rules of support (rewarm.forecast):
the law's areas against a hand computation, its fit against curves generated from known parameters
by the formula written out here, and forecasts outside what a fit supports marked or refused."""

from __future__ import annotations

import json
import math

import pytest

from rewarm import config as cfg
from rewarm import forecast, grid, law
from tests.project import small_params


def test_areas_follow_the_momentum_by_hand():
    # pre-training 0, 1, 0.5 (peak at update 1), then CPT 1.0, 0.25 with half of each batch new; decay 0.5:
    # PT: m = 0, 0, 0 * 0.5 + (1 - 0.5) = 0.5: S1 = 1.5, S2 = 0.5
    # CPT 1.0: m = 0.5 * 0.5 + (0.5 - 1.0) = -0.25: S1 = 2.5, S2 = 0.25, S1_new = 0.5
    # CPT 0.25: m = 0.5 * -0.25 + (1.0 - 0.25) = 0.625: S1 = 2.75, S2 = 0.875, S1_new = 0.625
    points = law.areas([0.0, 1.0, 0.5], [1.0, 0.25], new_share=0.5, decay=0.5)
    assert [(p.s1, p.s2, p.s1_new) for p in points] == [(1.5, 0.5, 0.0), (2.5, 0.25, 0.5), (2.75, 0.875, 0.625)]


def cosine(steps: int, peak: float, warmup: int, floor: float) -> list[float]:
    """A warm-up and cosine, written here (not rewarm.schedules)."""
    return [peak * i / warmup if i < warmup else floor + (peak - floor) * (1 + math.cos(math.pi * (i - warmup) / (steps - warmup))) / 2
            for i in range(steps)]


def loss(s1, s2, new, l0, a, alpha, c, b, e, beta):
    """The law as Wang, Tissue et al. 2025 write it, here by itself."""
    return l0 + a * s1 ** -alpha - c * s2 + b * (1 - (1 + e * new) ** -beta)


def own_areas(pretraining, lrs, share, decay=0.999):
    """S1, S2 and S1_new after each CPT update, computed here: S2's momentum from pre-training's peak on."""
    sequence = pretraining + lrs
    peak = pretraining.index(max(pretraining))
    s1 = s2 = m = new = 0.0
    out = []
    for i, lr in enumerate(sequence):
        if i > peak:
            m = decay * m + sequence[i - 1] - lr
        s1, s2 = s1 + lr, s2 + m
        if i >= len(pretraining):
            new += share * lr
        if i >= len(pretraining) - 1:
            out.append((s1, s2, new))
    return out


TRUE = {"upstream": dict(l0=1.3, a=0.08, alpha=0.7, c=0.6, b=0.25, e=40.0, beta=0.9),
        "downstream": dict(l0=1.1, a=0.1, alpha=0.5, c=0.8, b=-0.5, e=25.0, beta=1.2)}


@pytest.mark.parametrize("corpus", ["upstream", "downstream"])
def test_the_fit_recovers_the_parameters_curves_were_made_with(corpus):
    """Curves of two peak learning rates from a checkpoint of a 976-step pre-training, made by the formula
    above from known parameters: the fit finds them, and forecasts a third peak, another checkpoint and
    replay as the formula does."""
    truth = TRUE[corpus]
    pretraining = cosine(976, 5e-4, 10, 5e-5)
    points, losses = [], []
    for peak in (2.5e-4, 1e-3):
        lrs = cosine(297, peak, 3, peak / 10)[:240]
        mine = own_areas(pretraining, lrs, 1.0)
        ours = law.areas(pretraining, lrs, 1.0)
        for step in [*range(13), *range(20, 241, 10)]:
            assert (ours[step].s1, ours[step].s2, ours[step].s1_new) == pytest.approx(mine[step], rel=1e-12, abs=1e-15)
            points.append(ours[step])
            losses.append(loss(*mine[step], **truth))
    fitted = law.fit(points, losses)
    assert fitted is not None and fitted.rmse < 1e-6
    for name, value in truth.items():
        assert getattr(fitted.law, name) == pytest.approx(value, rel=1e-3), name
    for pretrained, lrs, share in ((pretraining, cosine(297, 5e-4, 3, 5e-5)[:240], 1.0),
                                   (pretraining[:500], cosine(297, 5e-4, 3, 5e-5)[:50], 1.0),
                                   (pretraining, cosine(297, 5e-4, 3, 5e-5)[:50], 0.9)):
        expected = loss(*own_areas(pretrained, lrs, share)[-1], **truth)
        assert fitted.law.predict(law.areas(pretrained, lrs, share)[-1]) == pytest.approx(expected, abs=1e-5)


def test_a_noisy_fit_gives_errors_that_cover_the_truth():
    """With noise of 0.005 nats on each point, the identified parameters lie within 4 standard errors of
    the truth."""
    import numpy as np

    rng = np.random.default_rng(0)
    truth = TRUE["downstream"]
    pretraining = cosine(976, 5e-4, 10, 5e-5)
    points, losses = [], []
    for peak in (2.5e-4, 5e-4, 1e-3):
        lrs = cosine(297, peak, 3, peak / 10)[:240]
        for step, p in enumerate(law.areas(pretraining, lrs, 1.0)):
            points.append(p)
            losses.append(loss(p.s1, p.s2, p.s1_new, **truth) + rng.normal(0, 0.005))
    fitted = law.fit(points, losses)
    assert 0.003 < fitted.rmse < 0.007
    covered = [name for name in law.NAMES if fitted.stderr[name] is not None]
    assert "b" in covered
    for name in covered:
        assert abs(getattr(fitted.law, name) - truth[name]) <= 4 * fitted.stderr[name], name


def test_the_delta_method_matches_the_spread_of_refits_on_noisy_curves():
    """The variance law.variance gives a forecast agrees with the spread of the same forecast over 15
    fits to curves with fresh noise (within a factor of 2: 15 refits estimate a spread to about 19%)."""
    import numpy as np

    truth = TRUE["downstream"]
    pretraining = cosine(976, 5e-4, 10, 5e-5)
    runs = [law.areas(pretraining, cosine(297, peak, 3, peak / 10)[:240], 1.0) for peak in (2.5e-4, 1e-3)]
    points = [p for run in runs for p in run[::10]]
    clean = [loss(p.s1, p.s2, p.s1_new, **truth) for p in points]
    target = law.areas(pretraining, cosine(297, 5e-4, 3, 5e-5)[:240], 1.0)[-1]
    rng = np.random.default_rng(3)
    forecasts, deltas = [], []
    for _ in range(15):
        fitted = law.fit(points, [y + rng.normal(0, 0.005) for y in clean])
        forecasts.append(fitted.law.predict(target))
        deltas.append(law.variance(fitted, fitted.law.gradient(target)))
    spread = float(np.std(forecasts, ddof=1))
    assert 0.5 < math.sqrt(float(np.median(deltas))) / spread < 2.0


def test_too_few_points_give_no_fit():
    points = law.areas([1e-3] * 5, [1e-3] * 10, 1.0)
    assert law.fit(points[:7], [2.0] * 7) is None


FORECAST_GRID = {"studies": {
    "max_lr": {"vary": {"max_lr": [1e-3, 2e-3]}},
    "other": {"cells": [{"schedule": "constant", "warmup_fraction": 0.0}, {"tokens": 163840}, {"replay_fraction": 0.5},
                        {"checkpoint": "early"}, {"checkpoint": "scratch"}, {"train_corpus": "upstream"},
                        {"checkpoint": "hub_model"}]},
}}


def forecast_config(**forecast_section):
    params = small_params(train={"checkpoint": "final"}, grid=FORECAST_GRID, forecast={"fit": ["max_lr.vary[0]", "max_lr.vary[1]"], **forecast_section},
                          checkpoints={"hub_model": {"type": "hub", "repo_id": "EleutherAI/pythia-14m"}})
    return grid.from_dict(params)


def test_forecasts_outside_the_fit_are_marked_and_runs_it_cannot_describe_are_refused():
    config = forecast_config()
    cells = grid.cells(config)
    fitted = [cells[n] for n in grid.forecast_cells(config)]
    where = grid.declared_at(config)
    marks = {i: forecast.marks(cells[where[f"other.cells[{i}]"]], fitted, config, config.forecast.extrapolation) for i in range(4)}
    assert marks[0] == ["schedule constant: not a family the fit saw (cosine)"]
    assert marks[1] == ["320 steps: beyond 2 x the longest fitted run (40)"]  # 163,840 / (8 x 64) steps against 40
    assert marks[2] == ["replay 0.5: outside the fitted 0 to 0"]
    assert marks[3] == ["starts from early: the fit saw that checkpoint only before training"]
    unsupported = {i: forecast.unsupported(cells[where[f"other.cells[{i}]"]], config, fitted) for i in range(4, 7)}
    assert unsupported[4] == "from scratch: not a continual pre-training run"
    assert unsupported[5] is None  # continuing on the upstream corpus: the law with no shift
    assert unsupported[6] == "starts from hub_model, whose pre-training schedule is not known here"
    assert forecast.new_share(cells[where["other.cells[5]"]]) == 0.0
    assert forecast.new_share(cells[where["other.cells[2]"]]) == 0.5


def test_the_learning_rates_forecast_are_those_the_schedule_gives():
    config = forecast_config()
    cell = grid.cells(config)[grid.forecast_cells(config)[0]]
    plan = cfg.Plan.of(cell, config.prepare.seq_len, 0.0, world=1)
    assert forecast.lrs(cell, config.prepare.seq_len) == [plan.schedule(step) for step in range(40)]
    series = forecast.lrs(config.pretrain, config.prepare.seq_len)
    assert forecast.pretraining_lrs(config, "early") == series[:20]  # revision step20: its first 20 updates
    assert forecast.pretraining_lrs(config, "final") == series
    assert forecast.pretraining_lrs(config, "hub_model") is None


@pytest.mark.bad_input
@pytest.mark.parametrize("section, message", [
    ({"fit": ["nope"]}, "forecast.fit[0]: 'nope' is not a cell of the grid"),
    ({"fit": ["other.cells[4]"]}, "forecast.fit[0]: 'other.cells[4]' trains from scratch"),
    ({"decay": 1.5}, "forecast.decay: 1.5 must be in (0, 1)"),
    ({"extrapolation": 0.5}, "forecast.extrapolation: 0.5 must be >= 1"),
    ({"search": {"upstream_weight": 2}}, "forecast.search.upstream_weight: 2.0 must be in [0, 1]"),
    ({"search": {"replay_fraction": []}}, "forecast.search.replay_fraction: needs at least one value"),
    ({"halving": {"fraction": 1.5}}, "forecast.halving.fraction: 1.5 must be in (0, 1)"),
    ({"halving": {"fraction": 0.25, "margin": -1}}, "forecast.halving.margin: -1.0 must be >= 0"),
])
def test_a_bad_forecast_setting_is_refused_naming_its_key(section, message):
    with pytest.raises(cfg.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        forecast_config(**section)


def logged_lrs(run_dir) -> list[float]:
    """The learning rate of each update as the run logged it (DVCLive), not as the configuration computes it."""
    lines = (run_dir / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[1]) for line in lines]


def test_the_pipeline_forecasts_the_cells_it_did_not_fit_on(snakemake_run):
    """The Snakemake run's forecast: the fitted law, applied here to the areas of the learning rates each
    run logged, gives every forecast final loss (plus the measured offset), each error is the forecast
    minus the cell's own evaluation, a cell from scratch is refused with its reason, and the report
    holds the section."""
    import csv
    import json

    project = snakemake_run
    result = json.loads((project / "forecast/forecast.json").read_text())
    config = grid.load([project / "params.yaml"])
    cells = grid.cells(config)
    assert result["enabled"] and result["fit_cells"] == grid.forecast_cells(config)
    assert len(result["fit_cells"]) == 2
    fits = {c: json.loads((project / f"forecast/fit-{c}.json").read_text())["law"] for c in ("upstream", "downstream")}
    pretraining = logged_lrs(project / "runs/pretrain")
    forecast_cells = 0
    for name, row in result["cells"].items():
        cell = cells[name]
        if cell.checkpoint == "scratch":
            assert row["not_forecast"] == "from scratch: not a continual pre-training run"
            continue
        if "not_forecast" in row or cell.checkpoint not in ("early", "final"):
            continue
        steps = {"early": 20, "final": len(pretraining)}[cell.checkpoint]
        share = 0.0 if cell.train_corpus == "upstream" else 1.0 - cell.replay_fraction
        lrs = logged_lrs(project / "runs" / name) if (project / "runs" / name / "dvclive").exists() else None
        if lrs is None:
            continue
        s1, s2, new = own_areas(pretraining[:steps], lrs, share)[-1]
        measured = json.loads((project / "evals/cells" / f"{name}.json").read_text())
        for corpus in ("upstream", "downstream"):
            expected = loss(s1, s2, new, **fits[corpus]) + result["offsets"][corpus]
            assert row["final"][corpus] == pytest.approx(expected, abs=1e-9), (name, corpus)
            assert row["error"][corpus] == pytest.approx(row["final"][corpus] - measured[corpus]["loss"], abs=1e-12)
        forecast_cells += not row["fitted"]
    assert forecast_cells >= 3
    summary = result["summary"]["downstream"]["all"]
    errors = [abs(r["error"]["downstream"]) for r in result["cells"].values() if "error" in r and not r["fitted"]]
    assert summary["cells"] == len(errors) and summary["max_abs_error"] == pytest.approx(max(errors))
    search = result["search"]
    assert search["candidates"] == 2 * 4 * 6  # the fitted cells' two peaks x the default warm-ups and replays
    assert search["objective_sd"] > 0
    rival = search["closest_rival"]
    assert rival["objective_value"] >= search["objective_value"]
    assert rival["probability_best_is_better"] == pytest.approx(0.5 * (1 + math.erf(rival["margin_sd"] / math.sqrt(2))))
    rows = list(csv.DictReader((project / "forecast/forecast.csv").open()))
    assert len(rows) == 2 * len(cells)
    report = (project / "reports/report.md").read_text()
    assert "## Forecast: the continual pre-training law" in report and "Schedule search on the fitted law" in report


def test_early_stopping_decides_the_cells_that_train_runs_of_their_own_from_a_pretrained_checkpoint():
    """Every cell but the one from scratch; each rung the first quarter of its steps (40 steps of 8 x 64
    tokens for 20,480 tokens; 320 for 163,840)."""
    config = forecast_config(halving={"fraction": 0.25})
    where = grid.declared_at(config)
    expected = {where[f"max_lr.vary[{i}]"]: 10 for i in range(2)}
    expected.update({where[f"other.cells[{i}]"]: 10 for i in (0, 2, 3, 5, 6)})
    expected[where["other.cells[1]"]] = 80
    assert grid.halving_pool(config) == expected
    assert grid.halving_pool(forecast_config()) == {}  # off


@pytest.mark.bad_input
def test_early_stopping_with_fewer_than_two_cells_to_decide_is_refused():
    with pytest.raises(cfg.ConfigError, match=r"forecast.halving.fraction: early stopping needs at least 2 cells it can decide, the grid has 1"):
        grid.from_dict(small_params(train={"checkpoint": "final"}, forecast={"halving": {"fraction": 0.5}}))


def rows_of(path) -> list[dict]:
    """A metrics.jsonl's rows without the wall-clock figure."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in rows]


@pytest.mark.slow
def test_early_stopping_trains_on_only_the_cells_forecast_near_the_best(snakemake_run, tmp_path):
    """The test grid with early stopping at a quarter of each run: under Snakemake every decided cell trains
    its rung (the first quarter of the uninterrupted run, the same numbers), the law fitted on the rungs
    decides (recomputed here from its parameters and the logged learning rates), the cells that go on end
    as the uninterrupted runs did (resumed from the rung), the others end at their rung; `rewarm plan`
    prints the GPU-hours saved, here computed from 6 x parameters x tokens."""
    import hashlib
    import re
    import shutil
    import subprocess
    import sys

    import yaml
    from safetensors import safe_open

    from tests.project import snakemake

    project = tmp_path / "halving"
    shutil.copytree(snakemake_run, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["forecast"] = {"halving": {"fraction": 0.25, "margin": 0.02}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = grid.load([project / "params.yaml"])
    pool = grid.halving_pool(config)
    assert len(pool) >= 3 and set(pool.values()) == {10}  # 40 steps each
    snakemake("--cores", "2", "halving", *[f"runs/{name}/metrics.json" for name in pool], cwd=project)
    decided = json.loads((project / "halving/halving.json").read_text())
    pretraining = logged_lrs(snakemake_run / "runs/pretrain")
    objectives = {}
    for name, rung in pool.items():
        full = rows_of(snakemake_run / "runs" / name / "metrics.jsonl")
        assert rows_of(project / "rungs" / name / "metrics.jsonl") == [r for r in full if r["step"] <= rung]
        cell = grid.cells(config)[name]
        steps = {"early": 20, "final": len(pretraining)}[cell.checkpoint]
        share = 0.0 if cell.train_corpus == "upstream" else 1.0 - cell.replay_fraction
        s1, s2, new = own_areas(pretraining[:steps], logged_lrs(snakemake_run / "runs" / name), share)[-1]
        final = {c: loss(s1, s2, new, **decided["fits"][c]["law"]) for c in ("upstream", "downstream")}
        objectives[name] = 0.5 * final["upstream"] + 0.5 * final["downstream"]
        assert decided["cells"][name]["objective"] == pytest.approx(objectives[name], abs=1e-9)
    # A cell goes on when within 0.02 of the best decided cell of a study it is in.
    studies = [[n for n in members if n in pool] for members in grid.studies(config).values()]
    goes_on = sorted(n for n in pool if any(n in members and objectives[n] <= min(objectives[m] for m in members) + 0.02
                                            for members in studies))
    assert sorted(decided["goes_on"]) == goes_on and len(goes_on) < len(pool)

    def weights(run_dir):
        return hashlib.sha256((run_dir / "model/model.safetensors").read_bytes()).hexdigest()

    for name, rung in pool.items():
        run = project / "runs" / name
        ran = json.loads((run / "config.json").read_text())["halving"]
        final = json.loads((run / "metrics.json").read_text())
        if name in goes_on:  # resumed from the rung: the uninterrupted run's end, bit for bit
            assert ran == {"rung": rung, "of": 40, "goes_on": True}
            assert final == json.loads((snakemake_run / "runs" / name / "metrics.json").read_text())
            assert weights(run) == weights(snakemake_run / "runs" / name)
        else:
            assert ran == {"rung": rung, "of": 40, "goes_on": False}
            assert final == [r for r in rows_of(snakemake_run / "runs" / name / "metrics.jsonl") if r["step"] == rung][0]
            assert rows_of(run / "metrics.jsonl") == rows_of(project / "rungs" / name / "metrics.jsonl")
    # The savings: each stopped cell's last 30 of 40 steps, at 6 x parameters x tokens per step's tokens.
    with safe_open(str(project / "runs" / goes_on[0] / "model/model.safetensors"), "pt") as f:
        parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    hours = 6 * parameters * config.train.batch_sequences * config.prepare.seq_len / (0.4 * 989e12) / 3600  # a step's GPU-hours
    saved = sum(40 - pool[n] for n in pool if n not in goes_on) * hours
    printed = subprocess.run([sys.executable, "-m", "rewarm", "plan", "--params", "params.yaml"], cwd=project, check=True,
                             capture_output=True, text=True).stdout
    found = re.search(r"decided: (\d+) go on .*, ([0-9.e+-]+) saved", printed)
    assert found, printed
    assert int(found[1]) == len(goes_on) and float(found[2]) == pytest.approx(saved, rel=1e-3)
    # The report names the stopped cells, each at its rung (read from the run directories).
    subprocess.run([sys.executable, "-m", "rewarm", "report", "--params", "params.yaml", "--runs", "runs", "--evals", "evals",
                    "--forecast", "forecast", "--out", "halved-report"], cwd=project, check=True, capture_output=True)
    report = (project / "halved-report/report.md").read_text()
    sentence = re.search(r"Early stopping \(forecast.halving; halving/halving.json\): (\d+) of \d+ cells were stopped[^\n]*", report)
    assert sentence and int(sentence[1]) == len(pool) - len(goes_on), report[:3000]
    assert sentence[0].count("at step 10 of 40") == len(pool) - len(goes_on)


@pytest.mark.bad_input
def test_a_cell_early_stopping_decides_is_not_trained_without_its_decision(tmp_path):
    """dvc.yaml has no early stopping: its `train` (no --halving) of a decided cell is refused before any work,
    and a rung of a cell early stopping does not decide is refused too; nothing is written."""
    from rewarm import train

    config = forecast_config(halving={"fraction": 0.25})
    cells = grid.cells(config)
    where = grid.declared_at(config)
    decided, scratch = cells[where["max_lr.vary[0]"]], cells[where["other.cells[4]"]]
    paths = [tmp_path / "base", tmp_path / "train", {"upstream": tmp_path / "val"}, tmp_path / "out", tmp_path / "state"]
    with pytest.raises(cfg.ConfigError, match=r"under early stopping .* give --halving DIR .*dvc.yaml has no early stopping"):
        train.train_cell(config, decided, *paths)
    with pytest.raises(cfg.ConfigError, match=r"has no rung: early stopping .* does not decide it"):
        train.train_cell(config, scratch, *paths, rung=True)
    with pytest.raises(FileNotFoundError, match=r"halving.json: missing \(the `halve` stage writes it"):
        train.train_cell(config, decided, *paths, halving=tmp_path / "halving")
    assert list(tmp_path.iterdir()) == []
