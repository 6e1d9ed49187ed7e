"""The `forecast` stage: the continual pre-training law (`rewarm.law`, Wang, Tissue et al. 2025) fitted
on a few declared cells (`forecast.fit`), forecasting every other cell's curve and final loss on both
corpora from its settings alone, measured against the cells that were run, and a schedule search on
the fitted law.

Reads the fitted cells' in-training curves (`runs/<cell>/metrics.jsonl`), the base checkpoints' and
the cells' evaluations (`evals/`), and writes to its output directory:
- `fit-<corpus>.json`: the law's parameters, their standard errors and covariance, its fit error;
- `forecast.json`: every cell's forecast (curve and final loss per corpus), what it extrapolates in,
  its error where the cell was run, the errors' summary, and the schedule search;
- `forecast.csv`: one row per cell and corpus, for a spreadsheet or pandas.

The learning rates of every cell are computed from its configuration as training computes them (and
checked against those the fitted runs logged). The in-training evaluations read a fixed sample of each
validation split, the final evaluations the whole split: the final losses forecast are the law's plus
the offset between the two measured on the fitted cells."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from pathlib import Path

from rewarm import config as cfg
from rewarm import grid, law
from rewarm.config.steps import Plan, total_steps
from rewarm.io import atomic_dir, write_json, write_text
from rewarm.metrics import read_rows

log = logging.getLogger(__name__)

CORPORA = ("upstream", "downstream")


def lrs(run: cfg.Optimization, seq_len: int) -> list[float]:
    """The learning rate of each update of a run, as the training loop sets it (`Plan.schedule(step)`)."""
    return schedule(run, seq_len)[0]


def schedule(run: cfg.Optimization, seq_len: int) -> tuple[list[float], list[int]]:
    """(the learning rate of each update, the steps it evaluates at, 0 included), from one `Plan` of the run."""
    plan = Plan.of(run, seq_len, getattr(run, "replay_fraction", 0.0), world=1)
    return ([plan.schedule(step) for step in range(plan.total_steps)],
            [0, *[done for done in range(1, plan.total_steps + 1) if plan.evaluates(done, run)]])


def pretraining_lrs(config: cfg.Config, checkpoint: str) -> list[float] | None:
    """The learning rates that made a checkpoint of the demo's pre-training series (`step<N>`: its first
    N updates, `final`: all); None for any other checkpoint (its pre-training is not known here)."""
    spec = config.checkpoints.get(checkpoint)
    if not isinstance(spec, cfg.PretrainCheckpoint):
        return None
    rates = lrs(config.pretrain, config.prepare.seq_len)
    if spec.revision == "final":
        return rates
    return rates[:int(spec.revision.removeprefix("step"))]


def new_share(cell: cfg.TrainConfig) -> float | None:
    """The share of each batch that is new data: 1 - replay on the downstream corpus, none when the cell
    continues on the upstream corpus itself; None on another corpus (a shift the fit has not seen)."""
    if cell.train_corpus == "downstream":
        return 1.0 - cell.replay_fraction
    if cell.train_corpus == "upstream":
        return 0.0
    return None


@dataclasses.dataclass
class Observed:
    """One fitted cell's curves: the law's points at its evaluations and the losses logged there."""

    points: list[law.Point]
    losses: dict[str, list[float]]


def logged_rows(runs: Path, name: str) -> list[dict] | None:
    """A cell's in-training evaluations (its metrics.jsonl), None where it has not run."""
    path = runs / name / "metrics.jsonl"
    return read_rows(path) if path.exists() else None


def observe(config: cfg.Config, name: str, cell: cfg.TrainConfig, rows: list[dict] | None, path: Path, decay: float,
            rates: list[float]) -> Observed:
    """The law's points and the losses logged at a run's evaluations (`rows`, read from `path`), its logged
    learning rates checked against those its settings give (`rates`, `lrs` of the cell)."""
    if rows is None:
        raise FileNotFoundError(f"{path}: cell {name} has no curves (it has not run)")
    for row in rows:
        step = row["step"]
        if 0 < step <= len(rates) and row.get("lr") is not None and not math.isclose(row["lr"], rates[step - 1], rel_tol=1e-9, abs_tol=1e-15):
            raise ValueError(f"{path}: the learning rate logged at step {step} ({row['lr']:.6g}) is not the one its settings give "
                             f"({rates[step - 1]:.6g}): the run was made with other settings than params.yaml's")
    points = law.areas(pretraining_lrs(config, cell.checkpoint) or [], rates, new_share(cell), decay)
    # (A checkpoint whose pre-training is not known starts at S1 = 0, where the law has no value: from step 1 on.)
    kept = [row for row in rows if row["step"] <= len(rates) and points[row["step"]].s1 > 0]
    return Observed(points=[points[row["step"]] for row in kept],
                    losses={corpus: [row[f"val/{corpus}/loss"] for row in kept] for corpus in CORPORA})


def measured(evals: Path, name: str) -> dict[str, float] | None:
    path = evals / "cells" / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {corpus: data[corpus]["loss"] for corpus in CORPORA}


def marks(cell: cfg.TrainConfig, fitted: list[cfg.TrainConfig], config: cfg.Config, factor: float) -> list[str]:
    """What a forecast extrapolates in, beyond what the fitted cells span: printed with it, not hidden."""
    out = []
    families = sorted({c.schedule for c in fitted})
    if cell.schedule not in families:
        out.append(f"schedule {cell.schedule}: not a family the fit saw ({', '.join(families)})")
    seq_len = config.prepare.seq_len
    longest = max(total_steps(c, seq_len) for c in fitted)
    if total_steps(cell, seq_len) > factor * longest:
        out.append(f"{total_steps(cell, seq_len)} steps: beyond {factor:g} x the longest fitted run ({longest})")
    replays = [c.replay_fraction for c in fitted]
    if cell.train_corpus == "downstream" and not min(replays) <= cell.replay_fraction <= max(replays):
        out.append(f"replay {cell.replay_fraction:g}: outside the fitted {min(replays):g} to {max(replays):g}")
    if cell.checkpoint not in {c.checkpoint for c in fitted}:
        out.append(f"starts from {cell.checkpoint}: the fit saw that checkpoint only before training" if config.forecast.base_points
                   else f"starts from {cell.checkpoint}, a checkpoint the fit did not see")
    return out


def unsupported(cell: cfg.TrainConfig, config: cfg.Config, fitted: list[cfg.TrainConfig]) -> str | None:
    """Why the law cannot forecast a cell at all (None: it can)."""
    if cell.checkpoint in grid.scratch_checkpoints(config.checkpoints):
        return "from scratch: not a continual pre-training run"
    if new_share(cell) is None:
        return f"trains on {cell.train_corpus}: a shift the fit has not seen"
    if pretraining_lrs(config, cell.checkpoint) is None and cell.checkpoint not in {c.checkpoint for c in fitted}:
        return f"starts from {cell.checkpoint}, whose pre-training schedule is not known here"
    return None


def forecast(config: cfg.Config, runs: Path, evals: Path) -> tuple[dict, dict[str, law.Fit]]:
    """(forecast.json's content, the fit per corpus)."""
    settings = config.forecast
    seq_len = config.prepare.seq_len
    cells = grid.cells(config)
    fit_names = grid.forecast_cells(config)
    fitted = [cells[name] for name in fit_names]
    # Each cell read once: its schedule, its logged curve and its final evaluation (None where it has not run).
    schedules = {name: schedule(cell, seq_len) for name, cell in cells.items()}
    logged = {name: logged_rows(runs, name) for name in cells}
    finals = {name: measured(evals, name) for name in cells}
    observed = [observe(config, name, cells[name], logged[name], runs / name / "metrics.jsonl", settings.decay, schedules[name][0])
                for name in fit_names]
    # The offset between the whole split (final evaluations) and the in-training sample, on the fitted cells.
    offsets = {}
    for corpus in CORPORA:
        gaps = [m[corpus] - o.losses[corpus][-1] for name, o in zip(fit_names, observed) if (m := finals[name])]
        offsets[corpus] = sum(gaps) / len(gaps) if gaps else 0.0
    # Each pre-trained base checkpoint's evaluation before training: a point of the hidden pre-training curve.
    base_points = []
    if settings.base_points:
        for name in dict.fromkeys(c.checkpoint for c in cells.values()):
            rates = pretraining_lrs(config, name)
            path = evals / "base" / f"{name}.json"
            if rates and path.exists():
                data = json.loads(path.read_text())
                base_points.append((law.areas(rates, [], 1.0, settings.decay)[0], {c: data[c]["loss"] for c in CORPORA}))
    fits = {}
    for corpus in CORPORA:
        points = [p for o in observed for p in o.points] + [p for p, _ in base_points]
        losses = [v for o in observed for v in o.losses[corpus]] + [v[corpus] - offsets[corpus] for _, v in base_points]
        result = law.fit(points, losses)
        if result is None:
            raise ValueError(f"forecast: {len(points)} points are too few to fit the law on {corpus} (fit on more cells, or longer ones)")
        fits[corpus] = result
    rows = {}
    for name, cell in cells.items():
        why = unsupported(cell, config, fitted)
        entry: dict = {"fitted": name in fit_names, "checkpoint": cell.checkpoint, "schedule": cell.schedule,
                       "max_lr": cell.max_lr, "warmup_fraction": cell.warmup_fraction, "replay_fraction": cell.replay_fraction,
                       "tokens": cell.tokens, "train_corpus": cell.train_corpus}
        if why:
            rows[name] = {**entry, "not_forecast": why}
            continue
        rates, steps = schedules[name]
        points = law.areas(pretraining_lrs(config, cell.checkpoint) or [], rates, new_share(cell), settings.decay)
        final = {c: fits[c].law.predict(points[-1]) + offsets[c] for c in CORPORA}
        entry.update(marks=marks(cell, fitted, config, settings.extrapolation), final=final,
                     curve={"step": steps, **{c: [fits[c].law.predict(points[s]) if points[s].s1 > 0 else None for s in steps]
                                              for c in CORPORA}})
        curve = [r for r in logged[name] or [] if 0 < r["step"] <= len(rates)]
        if curve:
            # The law against the run's own in-training sample: its error without the sample's offset from the split.
            entry["curve_error"] = {c: {"final": fits[c].law.predict(points[curve[-1]["step"]]) - curve[-1][f"val/{c}/loss"],
                                        "rmse": math.sqrt(sum((fits[c].law.predict(points[r["step"]]) - r[f"val/{c}/loss"]) ** 2
                                                              for r in curve) / len(curve))} for c in CORPORA}
        result = finals[name]
        if result:
            entry["measured"] = result
            entry["error"] = {c: final[c] - result[c] for c in CORPORA}
        rows[name] = entry
    summary = errors_summary(rows)
    search = schedule_search(config, fits, offsets, fitted)
    return {"law": "Wang, Tissue et al. 2025 (arXiv 2505.07796): L = L0 + A*S1^-alpha - C*S2 + B*(1 - (1 + E*S1_new)^-beta)",
            "fit_cells": fit_names, "decay": settings.decay, "offsets": offsets, "base_points": len(base_points),
            "fits": {c: {"rmse": fits[c].rmse, "points": fits[c].points} for c in CORPORA},
            "summary": summary, "cells": rows, "search": search}, fits


def errors_summary(rows: dict) -> dict:
    """Per corpus, over the cells forecast and run but not fitted: the mean and largest absolute error
    of the final loss (whole split), over all of them and over those the forecast does not extrapolate
    for; and the same of the final in-training point (`in_training`: the law's own error, without the
    sample's offset from the split)."""
    out = {}
    for corpus in CORPORA:
        for group, keep in (("all", lambda r: True), ("within_support", lambda r: not r["marks"])):
            for key, value in (("", lambda r: r.get("error", {}).get(corpus)),
                               ("in_training_", lambda r: r.get("curve_error", {}).get(corpus, {}).get("final"))):
                errors = [abs(value(r)) for r in rows.values() if value(r) is not None and not r["fitted"] and keep(r)]
                out.setdefault(corpus, {})[key + group] = ({"cells": len(errors), "mean_abs_error": sum(errors) / len(errors),
                                                            "max_abs_error": max(errors)} if errors else {"cells": 0})
    return out


def schedule_search(config: cfg.Config, fits: dict[str, law.Fit], offsets: dict[str, float], fitted: list[cfg.TrainConfig]) -> dict:
    """The maximum learning rate, warm-up and replay that minimise w x upstream + (1 - w) x downstream
    final loss (whole split) at the token budget, on the fitted law (Wang, Tissue et al. 2025, section 5:
    balancing general and domain performance), from the reference cell (`train`); with the law's
    uncertainty by the delta method on each fit's covariance: the objective's standard deviation, and the
    rival settings whose margin is the fewest standard deviations, with the probability (normal) that the
    chosen settings are truly the better of the two."""
    settings = config.forecast.search
    weight = settings.upstream_weight
    base = dataclasses.replace(config.train, tokens=settings.tokens or config.train.tokens)
    pretraining = pretraining_lrs(config, base.checkpoint) or []
    rates = settings.max_lr or sorted({c.max_lr for c in fitted})
    candidates = []
    for max_lr in rates:
        for warmup in settings.warmup_fraction:
            for replay in settings.replay_fraction:
                cell = dataclasses.replace(base, max_lr=max_lr, warmup_fraction=warmup, warmup_steps=None, replay_fraction=replay)
                point = law.areas(pretraining, lrs(cell, config.prepare.seq_len), 1.0 - replay, config.forecast.decay)[-1]
                candidates.append(({"max_lr": max_lr, "warmup_fraction": warmup, "replay_fraction": replay}, point))

    def objective(point: law.Point) -> float:
        return sum(w * (fits[c].law.predict(point) + offsets[c]) for c, w in zip(CORPORA, (weight, 1 - weight)))

    def spread(point: law.Point, rival: law.Point | None = None) -> float:
        """The standard deviation of the objective at `point` (of its difference from `rival`'s), by the delta method."""
        total = 0.0
        for c, w in zip(CORPORA, (weight, 1 - weight)):
            g = fits[c].law.gradient(point)
            if rival is not None:
                g = [a - b for a, b in zip(g, fits[c].law.gradient(rival))]
            total += w * w * law.variance(fits[c], g)
        return math.sqrt(total)

    scores = [objective(point) for _, point in candidates]
    chosen = min(range(len(candidates)), key=scores.__getitem__)
    settings_chosen, point = candidates[chosen]
    # The rival most likely to be better in truth: the one whose margin is fewest standard deviations.
    rivals = [(scores[k] - scores[chosen]) / (spread(candidates[k][1], point) or math.inf) for k in range(len(candidates)) if k != chosen]
    closest = min(range(len(rivals)), key=rivals.__getitem__) if rivals else None
    rival_index = None if closest is None else (closest if closest < chosen else closest + 1)
    return {"objective": f"{weight:g} x upstream + {1 - weight:g} x downstream final loss", "tokens": base.tokens,
            "checkpoint": base.checkpoint, "schedule": base.schedule, "candidates": len(candidates), "best": settings_chosen,
            "predicted": {c: fits[c].law.predict(point) + offsets[c] for c in CORPORA}, "objective_value": scores[chosen],
            "objective_sd": spread(point),
            "closest_rival": None if rival_index is None else {
                **candidates[rival_index][0], "objective_value": scores[rival_index],
                "margin_sd": rivals[closest], "probability_best_is_better": 0.5 * math.erfc(-rivals[closest] / math.sqrt(2))}}


CSV_HEADER = ["cell", "corpus", "fitted", "forecast final loss", "measured final loss", "error", "extrapolates in", "not forecast"]


def csv_text(result: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for name, row in result["cells"].items():
        for corpus in CORPORA:
            writer.writerow([name, corpus, row["fitted"], _number(row.get("final", {}).get(corpus)),
                             _number(row.get("measured", {}).get(corpus)), _number(row.get("error", {}).get(corpus)),
                             "; ".join(row.get("marks", [])), row.get("not_forecast", "")])
    return out.getvalue()


def _number(value) -> str:
    return "" if value is None else f"{value:.6f}"


def halving(config: cfg.Config, rungs: Path) -> dict:
    """Early stopping, one rung of successive halving: the law fitted on every rung's curve at once (each
    cell's first `forecast.halving.fraction` of steps, its own base checkpoint's evaluation at step 0
    included), each cell's final loss forecast on both corpora, and the cells whose forecast objective
    (forecast.search.upstream_weight x upstream + the rest x downstream) is within `margin` of the best of
    a study they are in go on (a study compares its own cells: the best of another, of other lengths or
    corpora, is not their rival).
    Losses are the in-training sample's, the same for every cell: the ranking needs no offset."""
    settings = config.forecast
    pool = grid.halving_pool(config)
    cells = grid.cells(config)
    observed = {}
    rates = {name: lrs(cells[name], config.prepare.seq_len) for name in pool}
    for name, step in pool.items():
        curve, path = logged_rows(rungs, name), rungs / name / "metrics.jsonl"
        observed[name] = observe(config, name, cells[name], curve, path, settings.decay, rates[name])
        if not curve or curve[-1]["step"] != step:
            raise ValueError(f"{path}: the rung of cell {name} ends at step {curve[-1]['step'] if curve else 0}, not at its rung's "
                             f"step {step}: the rung did not finish (run the `rung` stage again)")
    fits = {}
    for corpus in CORPORA:
        points = [p for o in observed.values() for p in o.points]
        losses = [v for o in observed.values() for v in o.losses[corpus]]
        result = law.fit(points, losses)
        if result is None:
            raise ValueError(f"halve: {len(points)} points of {len(pool)} rungs are too few to fit the law on {corpus} "
                             f"(a larger forecast.halving.fraction, or evaluations more often: train.eval_every)")
        fits[corpus] = result
    weight, margin = settings.search.upstream_weight, settings.halving.margin
    rows = {}
    for name, rung in pool.items():
        cell = cells[name]
        point = law.areas(pretraining_lrs(config, cell.checkpoint) or [], rates[name], new_share(cell), settings.decay)[-1]
        final = {c: fits[c].law.predict(point) for c in CORPORA}
        sd = math.sqrt(sum(w * w * law.variance(fits[c], fits[c].law.gradient(point)) for c, w in zip(CORPORA, (weight, 1 - weight))))
        rows[name] = {"rung": rung, "steps": len(rates[name]), "at_rung": {c: observed[name].losses[c][-1] for c in CORPORA},
                      "forecast": final, "objective": weight * final["upstream"] + (1 - weight) * final["downstream"],
                      "objective_sd": sd}
    # Within each study (what a study compares), the best of its decided cells; a cell goes on when it is within
    # the margin of the best of any study it is in.
    studies = {study: [n for n in members if n in rows] for study, members in grid.studies(config).items()}
    studies = {study: members for study, members in studies.items() if members}
    for study, members in studies.items():
        best = min(rows[n]["objective"] for n in members)
        for n in members:
            row = rows[n]
            row.setdefault("best_in", {})[study] = best
            row["goes_on"] = row.get("goes_on", False) or row["objective"] <= best + margin
    stopped = [name for name, row in rows.items() if not row["goes_on"]]
    steps = sum(row["steps"] for row in rows.values())
    trained = sum(row["steps"] if row["goes_on"] else row["rung"] for row in rows.values())
    return {"fraction": settings.halving.fraction, "margin": margin, "objective": f"{weight:g} x upstream + {1 - weight:g} x "
            f"downstream final loss (in-training sample)", "studies": studies, "cells": rows,
            "goes_on": [name for name in rows if name not in stopped], "stopped": stopped,
            "steps": {"full": steps, "trained": trained, "saved": steps - trained},
            "fits": {c: fits[c].to_dict() for c in CORPORA}}


def write_halving(config: cfg.Config, rungs: Path, out_dir: Path) -> Path:
    """The `halve` stage: halving.json (atomically, as a whole directory)."""
    if not config.halving():
        raise cfg.ConfigError("forecast.halving.fraction is null: early stopping is off, there is nothing to decide")
    result = halving(config, rungs)
    with atomic_dir(out_dir, "halve") as tmp:
        write_json(tmp / "halving.json", result)
    for name, row in result["cells"].items():
        log.info("%s: forecast %.4f +/- %.4f (best of its studies: %s): %s", name, row["objective"], row["objective_sd"],
                 ", ".join(f"{study} {best:.4f}" for study, best in row["best_in"].items()),
                 "goes on" if row["goes_on"] else f"stops at step {row['rung']} of {row['steps']}")
    log.info("early stopping: %d of %d cells go on; %d of %d steps saved", len(result["goes_on"]), len(result["cells"]),
             result["steps"]["saved"], result["steps"]["full"])
    return out_dir / "halving.json"


def read_halving(out_dir: Path) -> dict | None:
    """The `halve` stage's halving.json, None where there is none."""
    path = Path(out_dir) / "halving.json"
    return json.loads(path.read_text()) if path.is_file() else None


OFF = {"enabled": False, "why": "forecast.fit names no cell to fit the law on"}
"""forecast.json where the stage has nothing to fit: both front ends run it on every configuration, so that
the report depends on it alike in both."""


def write_forecast(config: cfg.Config, runs: Path, evals: Path, out_dir: Path) -> Path:
    """Fit, forecast, search; write the stage's files (atomically, as a whole directory). Without
    `forecast.fit`, forecast.json only says so."""
    if not config.forecasting():
        with atomic_dir(out_dir, "forecast") as tmp:
            write_json(tmp / "forecast.json", OFF)
        log.info("forecast.fit names no cell: no forecast")
        return out_dir / "forecast.json"
    result, fits = forecast(config, runs, evals)
    result = {"enabled": True, **result}
    with atomic_dir(out_dir, "forecast") as tmp:
        for corpus, fitted in fits.items():
            write_json(tmp / f"fit-{corpus}.json", {"corpus": corpus, "fit_cells": result["fit_cells"], **fitted.to_dict()})
        write_json(tmp / "forecast.json", result)
        write_text(tmp / "forecast.csv", csv_text(result))
    summary = result["summary"]
    for corpus in CORPORA:
        held = summary[corpus]["all"]
        if held["cells"]:
            log.info("%s: %d held-out cells, mean |error| %.4f, largest %.4f nats", corpus, held["cells"],
                     held["mean_abs_error"], held["max_abs_error"])
    return out_dir / "forecast.json"


def read(out_dir: Path) -> dict:
    """The stage's forecast.json (an error naming it where it is missing: the stage has not run)."""
    path = Path(out_dir) / "forecast.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no forecast (the `forecast` stage has not run)")
    return json.loads(path.read_text())




SECTION_HEADER = ["cell", "role", "upstream forecast", "measured", "error", "downstream forecast", "measured", "error",
                  "extrapolates in"]


def section(result: dict | None, label=lambda name: name) -> dict:
    """The report's section on the law: a paragraph, a table of every cell's forecast against its
    measured final loss (whole validation splits), and the schedule search; `label` writes a cell's name."""
    if result is None:
        return {"text": "No forecast: the `forecast` stage's output was not given to the report.", "table": None, "search": ""}
    if not result.get("enabled"):
        return {"text": f"No forecast: {result['why']} (`forecast.fit` in params.yaml; docs/forecast.md).", "table": None, "search": ""}
    rows = []
    for name, row in result["cells"].items():
        role = "fitted" if row["fitted"] else "forecast"
        if "not_forecast" in row:
            rows.append([label(name), "not forecast", *(["-"] * 6), row["not_forecast"]])
            continue
        values = []
        for corpus in CORPORA:
            values += [f"{row['final'][corpus]:.4f}", f"{row['measured'][corpus]:.4f}" if "measured" in row else "not run",
                       f"{row['error'][corpus]:+.4f}" if "error" in row else "-"]
        rows.append([label(name), role, *values, "; ".join(row["marks"]) or "-"])
    summary = result["summary"]

    def held(corpus: str, group: str) -> str:
        s = summary[corpus][group]
        return (f"mean {s['mean_abs_error']:.4f}, largest {s['max_abs_error']:.4f} nats over {s['cells']} cells"
                if s["cells"] else "no cell")

    fits = result["fits"]
    text = (f"The continual pre-training law of Wang, Tissue et al. 2025, {result['law'].split(': ', 1)[1]}, fitted on each "
            f"corpus's in-training curves of {len(result['fit_cells'])} cells ({', '.join(label(n) for n in result['fit_cells'])})"
            + (f" and the {result['base_points']} pre-trained base checkpoints' evaluations before training" if result["base_points"] else "")
            + f" (fit RMSE {fits['upstream']['rmse']:.4f} nats upstream, {fits['downstream']['rmse']:.4f} downstream), forecasts "
            f"every other cell from its settings alone. Its final losses are the law's plus the offset of the whole "
            f"validation split from the in-training sample measured on the fitted cells ({result['offsets']['upstream']:+.4f} "
            f"upstream, {result['offsets']['downstream']:+.4f} downstream). Absolute error of the final loss on the cells "
            f"forecast and run: upstream {held('upstream', 'all')}, downstream {held('downstream', 'all')}; on those the "
            f"forecast does not extrapolate for (no mark in the last column): upstream {held('upstream', 'within_support')}, "
            f"downstream {held('downstream', 'within_support')}. Against each run's own in-training sample (the law's error "
            f"without the sample's offset from the split, which varies from cell to cell: the fitted cells' own final errors "
            f"show it), the final point's error is: upstream {held('upstream', 'in_training_all')}, downstream "
            f"{held('downstream', 'in_training_all')}. The parameters, their standard errors and covariance are in "
            f"forecast/fit-<corpus>.json, every forecast curve in forecast/forecast.json.")
    search = result["search"]
    best = search["best"]
    rival = search["closest_rival"]
    rival_text = ("" if rival is None else
                  f"; the closest rival, max_lr {rival['max_lr']:g}, warm-up {rival['warmup_fraction']:g}, replay "
                  f"{rival['replay_fraction']:g}, is {rival['objective_value'] - search['objective_value']:.4f} worse, "
                  f"{rival['margin_sd']:.2f} standard deviations: the chosen settings are the better with probability "
                  f"{rival['probability_best_is_better']:.0%}")
    search_text = (f"Schedule search on the fitted law: from {search['checkpoint']} with the {search['schedule']} schedule over "
                   f"{search['tokens']:,} tokens, of {search['candidates']} combinations the lowest {search['objective']} is "
                   f"max_lr {best['max_lr']:g}, warm-up {best['warmup_fraction']:g}, replay {best['replay_fraction']:g}: forecast "
                   f"{search['predicted']['upstream']:.4f} upstream and {search['predicted']['downstream']:.4f} downstream "
                   f"(objective {search['objective_value']:.4f} +/- {search['objective_sd']:.4f}, the fits' uncertainty by the "
                   f"delta method{rival_text}).")
    return {"text": text, "table": {"header": SECTION_HEADER, "rows": rows}, "search": search_text}
