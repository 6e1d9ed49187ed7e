"""The `report` stage: tables, figures and findings across the grid.

Reads each cell's curves (`runs/<cell>/metrics.jsonl`, the learning rate from DVCLive) and
final evaluations (`evals/cells/<cell>.json`, `evals/base/<name>.json`), and writes
`report.md`, `report.html`, `results.csv` and PNG figures. The derived measures are pure
functions of the logged numbers, and every finding is a sentence computed from them.

The measures are in `measures`, the papers' takeaways and their thresholds in `findings`, the figures
in `figures`; this module reads the runs and evaluations and writes the report.
"""

from __future__ import annotations

import math

import json
import logging
from pathlib import Path

from rewarm import config as cfg
from rewarm import forecast, grid
from rewarm.io import FAILURE, atomic_dir, object_schema, read_checked_json, write_text
from rewarm.metrics import read_rows
from rewarm.report.figures import figures, forecast_figure
from rewarm.report.labels import cell_labels
from rewarm.report.findings import (
    CLOSE_PPL_FACTOR,
    FAR_BELOW_FACTOR,
    FEW_PERCENT,
    MATCH_TOLERANCE,
    NO_EFFECT_SPREAD,
    NOT_FASTER_SHARE,
    ORDER_OF_FACTOR,
    RANKS_AGREE,
    RANKS_DISAGREE,
    RECOVERS_MOST,
    SMALL_COST,
    calibration,
    ranking_agreement,
    replay_findings,
    replay_sweep,
    replay_table,
    rewarming_raises_both,
    study_findings,
)
from rewarm.report.measures import CORPORA, EXTRAPOLATION, adaptation, fit_curve, forgetting, lr_areas, stability_gap

log = logging.getLogger(__name__)

EVALUATION = {**object_schema({corpus: object_schema({"loss": {"type": "number"}, "ppl": {"type": "number"}}) for corpus in CORPORA}),
              "additionalProperties": object_schema({"loss": {"type": "number"}, "ppl": {"type": "number"}})}
"""An evaluation (`rewarm evaluate`'s JSON): loss and perplexity per corpus, upstream and downstream at least."""


def collect(config: cfg.Config, runs: Path, evals: Path, partial: bool = False):
    """(cells, table of finished cells, base evaluations, unfinished cells -> why). Without
    `partial`, a cell that has no evaluation is an error naming the missing file."""
    cells = grid.cells(config)
    # A checkpoint that is another cell's final state is measured by that cell's own evaluation.
    continued = grid.continued(config)
    sources = {name: evals / "base" / f"{name}.json" for name in config.checkpoints}
    sources.update({name: evals / "cells" / f"{spec.cell}.json" for name, spec in continued.items()})
    base = {name: read_checked_json(path, EVALUATION, "evaluation") for name, path in sources.items() if path.exists()}
    table, unfinished = {}, {}
    for name, cell in cells.items():
        if not (evals / "cells" / f"{name}.json").exists() or not (runs / name / "metrics.jsonl").exists():
            failure = runs / name / FAILURE
            error = json.loads(failure.read_text())["error"] if failure.exists() else None
            if not partial:
                raise FileNotFoundError(f"{evals / 'cells' / f'{name}.json'}: cell {name} has no evaluation"
                                        + (f" (it failed: {error})" if error else ""))
            unfinished[name] = f"failed: {error}" if error else "not run (or not finished)"
            continue
        rows = read_rows(runs / name / "metrics.jsonl")
        final = read_checked_json(evals / "cells" / f"{name}.json", EVALUATION, "evaluation")
        start = base.get(cell.checkpoint)
        entry = {"rows": rows, "lr": _lr_log(runs / name), **{f"gap_{c}": stability_gap(rows, f"val/{c}/loss") for c in CORPORA}}
        for corpus, result in final.items():
            entry[f"{corpus}_loss"], entry[f"{corpus}_ppl"] = result["loss"], result["ppl"]
            if start is not None and corpus in start:
                entry[f"{corpus}_change"] = result["loss"] - start[corpus]["loss"]
        # Forgetting and adaptation measure what a pre-trained start loses and gains: a cell from scratch knew
        # nothing to forget (its "forgetting" would be the best of the grid), so it has neither.
        if start is not None and cell.checkpoint not in grid.scratch_checkpoints(config.checkpoints):
            entry["forgetting"] = forgetting(final["upstream"]["loss"], start["upstream"]["loss"])
            entry["adaptation"] = adaptation(final["downstream"]["loss"], start["downstream"]["loss"])
        entry["mean_loss"] = sum(result["loss"] for result in final.values()) / len(final)
        ran = runs / name / "config.json"
        halving = json.loads(ran.read_text()).get("halving") if ran.exists() else None
        if halving and not halving["goes_on"]:  # early stopping ended it at its rung (forecast.halving)
            entry["stopped_at"] = (halving["rung"], halving["of"])
        if config.benchmarking():
            entry.update(benchmark_scores(evals / "benchmark" / "cells" / f"{name}.json", partial))
        table[name] = entry
    if config.benchmarking():
        for name in base:
            if name not in continued:  # a continued cell's end is that cell's own benchmark
                base[name] = {**base[name], **benchmark_scores(evals / "benchmark" / "base" / f"{name}.json", partial)}
    return cells, table, base, unfinished


def benchmark_scores(path: Path, partial: bool) -> dict:
    """A benchmark result as table entries: `bench_<task>` (its score) and `bench_average`; nothing
    for a missing file with `partial`, else an error naming it."""
    if not path.exists():
        if partial:
            return {}
        raise FileNotFoundError(f"{path}: no benchmark result (the `benchmark` job has not run)")
    result = json.loads(path.read_text())
    scores = {f"bench_{task}": t["score"]["value"] for task, t in result["tasks"].items() if t["score"]}
    return {**scores, "bench_average": result["average"]}


def _lr_log(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "dvclive/plots/metrics/train/lr.tsv"
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in lines)]


def columns(corpora: list[str], tasks: dict[str, str] | None = None) -> list[tuple[str, str, object]]:
    """(key, title, best-of) for the results table: final perplexity per corpus, forgetting and
    adaptation, the loss change of each extra held-out corpus against the base checkpoint, and each
    benchmark task's score (task -> its title) with their average (higher is better)."""
    extra = [c for c in corpora if c not in CORPORA]
    tasks = tasks or {}
    bench = [(f"bench_{t}", title, max) for t, title in tasks.items()] + ([("bench_average", "benchmark avg", max)] if tasks else [])
    return ([(f"{c}_ppl", f"{c} ppl", min) for c in corpora] + [("forgetting", "forgetting (loss)", min),
            ("adaptation", "adaptation (loss)", max)] + [(f"{c}_change", f"{c} change (loss)", min) for c in extra] + bench)


def benchmark_record(config: cfg.Config, evals: Path) -> dict | None:
    """One benchmark result of the grid (the first cell's there is), for what every result shares:
    the harness's version, the tasks' versions and metrics, the dtype and the batch size."""
    if not config.benchmarking():
        return None
    found = sorted((evals / "benchmark" / "cells").glob("*.json"))
    return json.loads(found[0].read_text()) if found else None


def task_titles(config: cfg.Config, record: dict | None) -> dict[str, str]:
    """Benchmark task -> the results table's head for it: the task and the metric it is scored by."""
    if not config.benchmarking():
        return {}
    scored = {name: t["score"]["metric"] for name, t in (record or {}).get("tasks", {}).items() if t["score"]}
    return {name: f"{name} ({scored[name]})" if name in scored else name for name in sorted(config.benchmark.tasks)}


def benchmark_note(record: dict | None) -> str:
    """How the benchmark columns were computed, from what the harness recorded."""
    if record is None:
        return ""
    tasks = "; ".join(f"{name} (version {t['version']}, {t['num_fewshot']}-shot, {t['examples']} examples, scored by "
                      f"{t['score']['metric'] if t['score'] else 'no accuracy metric'})" for name, t in record["tasks"].items())
    return (f"Benchmark columns: the LM Evaluation Harness ({record['harness']['package']} {record['harness']['version']}) on "
            f"each final model and base checkpoint, {record['dtype']} on {record['device']}, batch size {record['batch_size']}"
            f"{'' if record['limit'] is None else ', at most ' + str(record['limit']) + ' examples per task'}: {tasks}. "
            f"The average is the mean of the tasks' scores (evals/benchmark/ has every metric with its standard error).")


def write_report(config: cfg.Config, runs: Path, evals: Path, out_dir: Path, partial: bool = False,
                 forecast_dir: Path | None = None) -> Path | None:
    """Write the report; with `partial`, over the cells that finished, listing the others as
    failed or not run (None, and nothing written, if no cell finished). `forecast_dir`: the forecast
    stage's output, for the section on the continual pre-training law."""
    cells, table, base, unfinished = collect(config, runs, evals, partial)
    if not table:
        return None
    members = grid.studies(config)
    studies = {name: (study, members[name]) for name, study in grid.declared_studies(config).items()}
    corpora = config.eval_corpora()
    record = benchmark_record(config, evals)
    tasks = task_titles(config, record)
    cols = columns(corpora, tasks)
    with atomic_dir(out_dir, "report") as tmp:
        (tmp / "figures").mkdir()
        short = cell_labels(studies, cells, grid.scratch_checkpoints(config.checkpoints))
        made = figures(config, cells, table, studies, short, tmp / "figures")
        best = {key: pick([n for n in table if key in table[n]], key=lambda n: table[n][key], default=None) for key, _, pick in cols}
        header = ["cell"] + [title for _, title, _ in cols] + ["stability gap up (rise)", "recovered at (tokens)"]
        rows = []
        for name, entry in table.items():
            values = [_cell(entry.get(key), name == best[key]) for key, _, _ in cols]
            gap = entry["gap_upstream"]
            rows.append([labelled(short, name), *values, f"{gap.rise:.3f}", "never" if gap.recovered_tokens is None and gap.rise > 0 else str(gap.recovered_tokens or 0)])
        rows += [[labelled(short, name), status] + ["-"] * (len(header) - 2) for name, status in unfinished.items()]
        overview = [s for s in [rewarming_raises_both(table, cells, config.checkpoints)] if s]
        if unfinished:
            overview.insert(0, f"{len(unfinished)} of {len(cells)} cells did not finish and are left out of the findings: "
                               + "; ".join(f"{name} {status}" for name, status in unfinished.items()) + ".")
        stopped = {name: entry["stopped_at"] for name, entry in table.items() if "stopped_at" in entry}
        if stopped:
            overview.insert(0, f"Early stopping (forecast.halving; halving/halving.json): {len(stopped)} of {len(cells)} cells were "
                               f"stopped at their rung, the law forecasting them more than {config.forecast.halving.margin:g} nats "
                               f"behind the best, and appear here as they were there: "
                               + "; ".join(f"{labelled(short, n)} at step {r} of {of}" for n, (r, of) in stopped.items()) + ".")
        fit_rows, fit_text = predictions(config, cells, table, short)
        law_result = forecast.read(forecast_dir) if forecast_dir else None
        law_section = forecast.section(law_result, lambda n: labelled(short, n))
        if law_result and law_result.get("enabled"):
            law_section["figure"] = forecast_figure(law_result, short, tmp / "figures")
        sweep, union = replay_sweep(studies, table, cells, config.checkpoints)
        context = {
            "replay": {"table": replay_table(sweep, union, table, cells),
                       "findings": [f.sentence() for f in replay_findings(sweep, union, table, cells)]},
            "overview": overview,
            "calibration": calibration(table, cells, base, config.checkpoints),
            "studies": [{"name": name, "title": study.title, "axis": grid.study_axis(study),
                         "note": "Ibrahim et al. 2024's claims on replay are checked in the section on replay and the union baseline "
                                 "above." if set(names) & set(sweep + union) else "",
                         "findings": [f.sentence() for f in study_findings(study, names, table, cells, config.checkpoints, config.prepare.seq_len)],
                         "ranking": ranking_agreement(names, table) if tasks else None,
                         "table": study_table(names, study, cells, table, short), "figures": made.get(name, [])}
                        for name, (study, names) in studies.items()],
            "gap": gap_method(cells),
            "thresholds": [("NO_EFFECT_SPREAD", f"{NO_EFFECT_SPREAD:.0%}",
                            "warm-up length has no significant effect when a study's final losses lie within it of their mean"),
                           ("NOT_FASTER_SHARE", f"{NOT_FASTER_SHARE:.0%}", "earlier checkpoints do not learn faster when the "
                            "latest checkpoint's downstream loss is the lowest at this share of the evaluations"),
                           ("CLOSE_PPL_FACTOR", f"{CLOSE_PPL_FACTOR:g}", "a mild shift: the latest checkpoint's downstream "
                            "perplexity is within this factor of its upstream one"),
                           ("FAR_BELOW_FACTOR", f"{FAR_BELOW_FACTOR:g}", "pre-training helps downstream: the latest checkpoint's "
                            "downstream perplexity is at least this many times below the untrained model's"),
                           ("ORDER_OF_FACTOR", f"{ORDER_OF_FACTOR:g}", "forgetting of the order of the gain: a re-warmed cell's "
                            "upstream loss rise is at most this many times its downstream gain"),
                           ("FEW_PERCENT", f"{FEW_PERCENT:.0%}", "a few percent of replay: the largest share in the sweep at or below it"),
                           ("RECOVERS_MOST", f"{RECOVERS_MOST:.0%}", "replay recovers most of the forgetting when it removes this share "
                            "of the upstream gap between no replay and the union baseline"),
                           ("SMALL_COST", f"{SMALL_COST:g}", "at a small cost downstream: the downstream loss rises by at most this "
                            "share of what the upstream loss falls"),
                           ("MATCH_TOLERANCE", f"{MATCH_TOLERANCE:.0%}", "matches the union baseline: the best replay cell's average "
                            "loss is at most this much above the union's"),
                           *([("RANKS_AGREE", f"{RANKS_AGREE:g}", "the benchmark ranking agrees with the perplexity ranking when "
                               "Spearman's rho between them is at least this"),
                              ("RANKS_DISAGREE", f"{RANKS_DISAGREE:g}", "they disagree when it is at most this")] if tasks else [])],
            "fit_text": fit_text, "fit": {"header": FIT_HEADER, "rows": fit_rows}, "forecast": law_section,
            "results": {"header": header, "rows": rows},
            "key": {"header": ["label", "cell (runs/<cell>/, evals/cells/<cell>.json)"],
                    "rows": [[short[name], f"`{name}`"] for name in cells]},
            "base": {"header": ["checkpoint"] + [f"{c} ppl" for c in corpora] + list(tasks.values())
                               + (["benchmark avg"] if tasks else []),
                     "rows": [[n] + [f"{v[c]['ppl']:.4g}" if c in v else "-" for c in corpora]
                              + [_cell(v.get(f"bench_{t}"), False) for t in tasks] + ([_cell(v.get("bench_average"), False)] if tasks else [])
                              for n, v in base.items()]},
            "benchmark": benchmark_note(record),
            "other_figures": made.get("all", []),
        }
        markdown = render_markdown(context)
        write_text(tmp / "results.csv", _csv(table, corpora, list(tasks), cells, short))
        write_text(tmp / "report.md", markdown)
        write_text(tmp / "report.html", render_html(markdown))
    return out_dir / "report.md"


def labelled(short: dict[str, str], name: str) -> str:
    """A cell in a table: its short label, its full name in the label's tooltip (the key lists them all)."""
    return f'<abbr title="{name}">{short[name]}</abbr>' if short[name] != name else name


def study_table(names: list[str], study: cfg.Study, cells, table, short: dict[str, str] | None = None) -> dict:
    """A study's own table: the value of its axis, the final losses (whole validation splits), the
    change from the starting checkpoint and the early rise of each loss (the stability gap)."""
    # the varied axes; for cells listed one by one, the settings they give (a sequence: checkpoint, corpus, ...)
    axes = list(study.vary) or list(dict.fromkeys(k for cell in study.cells for k in cell)) or ["max_lr"]
    benchmarked = any("bench_average" in table[n] for n in names if n in table)
    header = ["cell", *axes, "upstream loss", "downstream loss", "upstream change", "downstream change",
              "rise up (nats)", "rise down (nats)"] + (["benchmark avg"] if benchmarked else [])
    rows = []
    for n in names:
        if n not in table:
            continue
        entry = table[n]
        rows.append([labelled(short, n) if short else n, *[str(getattr(cells[n], a)) for a in axes], f"{entry['upstream_loss']:.4f}", f"{entry['downstream_loss']:.4f}",
                     _signed(entry.get("upstream_change")), _signed(entry.get("downstream_change")),
                     f"{entry['gap_upstream'].rise:.3f}", f"{entry['gap_downstream'].rise:.3f}"]
                    + ([_cell(entry.get("bench_average"), False)] if benchmarked else []))
    return {"header": header, "rows": rows}


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def gap_method(cells) -> str:
    """How the stability gap was measured, from the evaluation settings the cells used."""
    every = sorted({c.eval_every for c in cells.values()})
    early = sorted({(c.early_eval_every, c.early_eval_steps) for c in cells.values() if c.early_eval_every})
    dense = (" and every " + " / ".join(f"{e} steps during the first {n} steps" for e, n in early)) if early else ""
    return (f"The stability gap of a cell is the highest validation loss logged after step 0 minus the loss at step 0 "
            f"(0 when it never rose), on each corpus, from the in-training evaluations: at step 0, every "
            f"{' / '.join(map(str, every))} steps{dense}, at the end, and where a shorter cell of the same run stops; "
            f"each evaluation reads a fixed sample of eval_tokens tokens of each validation split. Recovered at: the first "
            f"evaluation back below the step-0 loss. A gap shorter than the evaluation interval is not seen.")


def render_markdown(context: dict) -> str:
    """The report as Markdown, from the one template (templates/report.md.j2)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("rewarm", "templates"), autoescape=False,
                                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.md.j2").render(**context)


def render_html(markdown: str) -> str:
    """The same report as HTML: the Markdown rendered by markdown-it (tables on), in a page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Re-warming report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}img{max-width:100%}</style></head><body>\n" + body + "</body></html>\n")


FIT_HEADER = ["cell", "predicted final downstream loss", "measured (in-training sample)", "error"]


def predictions(config: cfg.Config, cells, table, short: dict[str, str] | None = None) -> tuple[list[list[str]], str]:
    """Fit the law on the reference cell's downstream curve; predict the final loss of every cell
    that starts from the same checkpoint, from its learning rates alone, and measure the law on those
    held-out cells. A cell whose learning-rate areas lie outside what the fit supports (beyond
    `measures.EXTRAPOLATION` of the fitted span), or whose prediction is not a loss (<= 0), gets no
    number: the row says why."""
    reference = grid.cell_name(config.train)
    entry = table.get(reference)
    fit = None
    if entry and entry["lr"]:
        rows = entry["rows"]
        fit = fit_curve([r["step"] for r in rows], [r["val/downstream/loss"] for r in rows], [lr for _, lr in entry["lr"]])
    if fit is None:
        return [], "Loss-curve fit (Tissue et al. 2024): not enough evaluations on the reference cell to fit."
    out, errors, omitted = [], [], 0
    for name, other in table.items():
        if cells[name].checkpoint != cells[reference].checkpoint or not other["lr"]:
            continue
        s1, s2 = lr_areas([lr for _, lr in other["lr"]])
        measured = other["rows"][-1]["val/downstream/loss"]
        shown = labelled(short, name) if short else name
        label = f"{shown} (the fit's own curve)" if name == reference else shown
        predicted = fit.predict(s1[-1], s2[-1])
        why = fit.supports(s1[-1], s2[-1]) or (None if predicted > 0 else f"the law gives {predicted:.3g}, not a loss")
        if why:
            omitted += 1
            out.append([label, f"not predicted: {why}", f"{measured:.4f}", "-"])
            continue
        if name != reference:
            errors.append(predicted - measured)
        out.append([label, f"{predicted:.4f}", f"{measured:.4f}", f"{predicted - measured:+.4f}"])
    held_out = (f"on the {len(errors)} held-out cells it predicts, RMSE {math.sqrt(sum(e * e for e in errors) / len(errors)):.4f}"
                if errors else "no held-out cell within what it supports")
    text = (f"Loss-curve fit (Tissue et al. 2024) on the reference cell's downstream curve: L = {fit.l0:.3f} + "
            f"{fit.a:.3g} S1^-{fit.alpha:.2f} - {fit.c:.3g} S2, RMSE {fit.rmse:.4f} on its own points, {held_out}. "
            f"The table predicts the other schedules' final loss from their learning rates alone; {omitted} cell(s) "
            f"whose summed learning rate S1 or annealing area S2 lies beyond the fitted span (by more than "
            f"{EXTRAPOLATION:.0%} of it), or whose prediction is not a loss, are left unpredicted.")
    return out, text


def _cell(value, best: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return f"**{text}**" if best else text


def varied_settings(cells: dict[str, cfg.TrainConfig]) -> list[str]:
    """The settings in which some cells of the grid differ, in the settings' own order."""
    rows = {name: cfg.to_dict(cell) for name, cell in cells.items()}
    keys = list(next(iter(rows.values()), {}))
    return [k for k in keys if len({repr(row[k]) for row in rows.values()}) > 1]


def _csv(table: dict, corpora: list[str], tasks: list[str], cells: dict[str, cfg.TrainConfig], short: dict[str, str]) -> str:
    """results.csv: a row per finished cell, for a spreadsheet or pandas: its name and short label, the
    settings in which the grid's cells differ, and its measures."""
    import csv
    import io

    settings = varied_settings(cells)
    keys = [f"{c}_{m}" for c in corpora for m in ("loss", "ppl")] + ["forgetting", "adaptation"]
    keys += [f"{c}_change" for c in corpora if c not in CORPORA]
    keys += [f"bench_{t}" for t in tasks] + (["bench_average"] if tasks else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["cell", "label", *settings, *keys])
    for name, entry in table.items():
        values = cfg.to_dict(cells[name])
        writer.writerow([name, short[name], *(values[k] for k in settings),
                         *("" if entry.get(k) is None else repr(entry[k]) for k in keys)])
    return out.getvalue()
