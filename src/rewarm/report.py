"""The `report` stage: tables, figures and findings across the grid.

Reads each cell's curves (`runs/<cell>/metrics.jsonl`, the learning rate from DVCLive) and
final evaluations (`evals/cells/<cell>.json`, `evals/base/<name>.json`), and writes
`report.md`, `report.html`, `results.csv` and PNG figures. The derived measures are pure
functions of the logged numbers, and every finding is a sentence computed from them.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import FAILURE, atomic_dir, write_text

log = logging.getLogger(__name__)

CORPORA = ("upstream", "downstream")


# -- derived measures (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """The stability gap of one validation loss after re-warming (De Lange et al. 2023)."""

    rise: float
    """Peak loss after step 0 minus the loss at step 0 (0 if it never rose)."""
    peak_tokens: int
    """Tokens seen at the peak."""
    recovered_tokens: int | None
    """Tokens seen when the loss first came back below its step-0 value after the peak (None: never)."""


def stability_gap(rows: list[dict], key: str) -> Gap:
    start = rows[0][key]
    later = rows[1:] or rows
    peak = max(later, key=lambda r: r[key])
    rise = max(0.0, peak[key] - start)
    recovered = None
    if rise > 0:
        after = [r for r in rows if r["tokens"] > peak["tokens"] and r[key] < start]
        recovered = after[0]["tokens"] if after else None
    return Gap(rise=rise, peak_tokens=peak["tokens"] if rise > 0 else 0, recovered_tokens=recovered)


def forgetting(final_upstream_loss: float, base_upstream_loss: float) -> float:
    """Final upstream loss minus the base checkpoint's: > 0 means the model forgot upstream."""
    return final_upstream_loss - base_upstream_loss


def adaptation(final_downstream_loss: float, base_downstream_loss: float) -> float:
    """Base downstream loss minus the final one: > 0 means the model learned downstream."""
    return base_downstream_loss - final_downstream_loss


@dataclass(frozen=True)
class CurveFit:
    """L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s): the loss-curve law with learning-rate annealing
    of Tissue et al. 2024, S1 the summed learning rate ("forward area"), S2 the annealing area."""

    l0: float
    a: float
    alpha: float
    c: float
    rmse: float
    """Root-mean-square error of the fit on the points it was fitted to."""

    def predict(self, s1: float, s2: float) -> float:
        return self.l0 + self.a * s1 ** (-self.alpha) - self.c * s2


def lr_areas(lrs: list[float], decay: float = 0.999) -> tuple[list[float], list[float]]:
    """S1 and S2 after each step of a learning-rate sequence (Tissue et al. 2024, eq. 2-3):
    S1 sums the rates; S2 sums an annealing momentum m_i = decay * m_(i-1) + (lr_(i-1) - lr_i),
    counted from the peak on. A warm-up's rise is not annealing: counted, it would be negative
    annealing that lasts the whole run, and two cells that differ only in warm-up length would be
    predicted far apart."""
    peak = lrs.index(max(lrs)) if lrs else 0
    s1, s2, out1, out2, momentum = 0.0, 0.0, [], [], 0.0
    for i, lr in enumerate(lrs):
        if i > peak:
            momentum = decay * momentum + (lrs[i - 1] - lr)
        s1 += lr
        s2 += momentum
        out1.append(s1)
        out2.append(s2)
    return out1, out2


def fit_curve(steps: list[int], losses: list[float], lrs: list[float]) -> CurveFit | None:
    """Least squares for L0, A, C >= 0 (the law's constants are positive: a negative L0 would let a
    near-logarithm fit the points and extrapolate badly) at each alpha of a grid; the best alpha
    wins. `lrs[i]` is the rate of update i, so the loss logged at step s follows updates 0..s-1.
    None if too few points."""
    import itertools

    import numpy as np

    s1, s2 = lr_areas(lrs)
    points = [(s1[s - 1], s2[s - 1], loss) for s, loss in zip(steps, losses) if 0 < s <= len(lrs)]
    if len(points) < 4:
        return None
    x1, x2, y = (np.array(v, dtype=float) for v in zip(*points))
    supports = [cols for k in (3, 2, 1) for cols in itertools.combinations(range(3), k)]
    best = None
    for alpha in np.linspace(0.05, 2.0, 79):
        design = np.stack([np.ones_like(x1), x1 ** (-alpha), -x2], axis=1)
        # Non-negative least squares with three unknowns: the optimum is the unconstrained fit on
        # its non-zero columns, so try every set of columns and keep the best feasible one.
        for cols in supports:
            sub, *_ = np.linalg.lstsq(design[:, cols], y, rcond=None)
            if (sub < 0).any():
                continue
            coef = np.zeros(3)
            coef[list(cols)] = sub
            rmse = float(np.sqrt(np.mean((design @ coef - y) ** 2)))
            if best is None or rmse < best.rmse:
                best = CurveFit(l0=float(coef[0]), a=float(coef[1]), alpha=float(alpha), c=float(coef[2]), rmse=rmse)
    return best


def axis_members(by_study: dict[str, tuple[str | None, list[str]]], axis: str) -> list[str]:
    """The cells of the studies that vary `axis`, in study order, each once."""
    return list(dict.fromkeys(n for varied, members in by_study.values() if varied == axis for n in members))


def findings(table: dict[str, dict], by_study: dict[str, tuple[str | None, list[str]]], cells: dict[str, cfg.TrainConfig]) -> list[str]:
    """The paper's claims, each a sentence saying whether these numbers support it. `by_study`:
    study -> (the axis it varies, its cells)."""
    out = []
    rewarmed = [n for n, c in cells.items() if c.checkpoint != "scratch" and c.schedule != "constant" and n in table]
    if rewarmed:
        up = sum(table[n]["gap_upstream"].rise > 0 for n in rewarmed)
        down = sum(table[n]["gap_downstream"].rise > 0 for n in rewarmed)
        verdict = "supported" if up == down == len(rewarmed) else ("partly supported" if up or down else "contradicted")
        out.append(f"Re-warming first raises the loss on both corpora: {verdict} (the upstream loss rose after step 0 in "
                   f"{up} of {len(rewarmed)} re-warmed cells, the downstream loss in {down}).")
    lrs = [n for n in axis_members(by_study, "max_lr") if n in table and cells[n].schedule != "constant"]
    if len(lrs) >= 2:
        lrs = sorted(lrs, key=lambda n: cells[n].max_lr)
        down = [table[n]["downstream_loss"] for n in lrs]
        up = [table[n]["upstream_loss"] for n in lrs]
        helps = all(b <= a for a, b in zip(down, down[1:]))
        hurts = all(b >= a for a, b in zip(up, up[1:]))
        verdict = "supported" if helps and hurts else ("partly supported" if helps or hurts else "contradicted")
        out.append(f"A larger maximum learning rate helps downstream and hurts upstream: {verdict} (max_lr "
                   f"{', '.join(f'{cells[n].max_lr:g}' for n in lrs)}: final downstream loss {_series(down)}, upstream {_series(up)}).")
    warm = [n for n in axis_members(by_study, "warmup_fraction") if n in table]
    if len(warm) >= 2:
        down = [table[n]["downstream_loss"] for n in warm]
        spread = (max(down) - min(down)) / (sum(down) / len(down))
        verdict = "supported" if spread < 0.01 else "contradicted"
        out.append(f"Warm-up length matters little: {verdict} (final downstream loss varies by {spread:.2%} across warm-up "
                   f"fractions {', '.join(f'{cells[n].warmup_fraction:g}' for n in warm)}).")
    starts = [n for n in axis_members(by_study, "checkpoint") if n in table]
    final = [n for n in starts if cells[n].checkpoint == "final"]
    if final and len(starts) >= 2:
        best = min(starts, key=lambda n: table[n]["downstream_loss"])
        verdict = "supported" if best == final[0] else "contradicted"
        ranking = ", ".join(f"{cells[n].checkpoint} {table[n]['downstream_loss']:.4f}" for n in sorted(starts, key=lambda n: table[n]["downstream_loss"]))
        out.append(f"Starting from the final checkpoint beats earlier checkpoints and training from scratch on downstream: "
                   f"{verdict} (final downstream loss: {ranking}).")
    return out


def _series(values: list[float]) -> str:
    return " -> ".join(f"{v:.4f}" for v in values)


# -- reading and writing ----------------------------------------------------------------------------


def collect(config: cfg.Config, runs: Path, evals: Path, partial: bool = False):
    """(cells, table of finished cells, base evaluations, unfinished cells -> why). Without
    `partial`, a cell that has no evaluation is an error naming the missing file."""
    cells = grid.cells(config)
    base = {name: json.loads((evals / "base" / f"{name}.json").read_text()) for name in config.checkpoints
            if (evals / "base" / f"{name}.json").exists()}
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
        rows = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
        final = json.loads((evals / "cells" / f"{name}.json").read_text())
        start = base.get(cell.checkpoint)
        entry = {"rows": rows, "lr": _lr_log(runs / name), **{f"gap_{c}": stability_gap(rows, f"val/{c}/loss") for c in CORPORA}}
        for corpus, result in final.items():
            entry[f"{corpus}_loss"], entry[f"{corpus}_ppl"] = result["loss"], result["ppl"]
            if start is not None and corpus in start:
                entry[f"{corpus}_change"] = result["loss"] - start[corpus]["loss"]
        if start is not None:
            entry["forgetting"] = forgetting(final["upstream"]["loss"], start["upstream"]["loss"])
            entry["adaptation"] = adaptation(final["downstream"]["loss"], start["downstream"]["loss"])
        table[name] = entry
    return cells, table, base, unfinished


def _lr_log(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "dvclive/plots/metrics/train/lr.tsv"
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in lines)]


def figures(config: cfg.Config, cells, table, by_study, out: Path) -> list[tuple[str, str]]:
    """PNG figures in the paper's style, each with a JSON of the values drawn (read back from the
    plotted lines, so tests and users can check them against the metrics); returns (file, caption)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    others = [n for n in grid.baseline_cells(cells) if n in table]
    for study, (axis, members) in by_study.items():
        members = [n for n in members if n in table]
        fig, panels = plt.subplots(1, 2, figsize=(11, 4))
        for panel, corpus in zip(panels, CORPORA):
            for name in members + [b for b in others if b not in members]:
                rows = table[name]["rows"]
                if name in members:
                    style, label = "-", f"{axis}={getattr(cells[name], axis)}" if axis else name
                elif cells[name].checkpoint == "scratch":
                    style, label = ":", "baseline: from scratch"
                else:
                    style, label = "--", f"baseline: {cells[name].schedule} lr {cells[name].max_lr:g}"
                line, = panel.plot([r["tokens"] for r in rows], [r[f"val/{corpus}/ppl"] for r in rows], style, label=label)
                line.set_gid(name)
            panel.set_title(f"{corpus} validation perplexity")
            panel.set_xlabel("tokens seen")
            panel.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            panel.set_yscale("log")
            panel.legend(fontsize=7)
        fig.suptitle(f"study {study}: {config.grid.studies[study].title if study in config.grid.studies else study}")
        made.append(_save(fig, out, f"study_{study}",
                          f"Validation perplexity against tokens seen, study {study} over {axis} (dashed: constant LR, no re-warming; "
                          f"dotted: from scratch)."))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in table.items():
        if entry["lr"]:
            line, = ax.plot(*zip(*entry["lr"]), label=name, linewidth=1)
            line.set_gid(name)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=5)
    made.append(_save(fig, out, "learning_rates", "The learning-rate schedules actually used (logged every step)."))
    return made


def _save(fig, out: Path, stem: str, caption: str) -> tuple[str, str]:
    """Write `<stem>.png` and `<stem>.json`: per panel, each line's cell and the x and y it drew."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    panels = [{"title": ax.get_title(), "lines": [{"cell": line.get_gid(), "label": line.get_label(),
                                                    "x": [float(v) for v in line.get_xdata()],
                                                    "y": [float(v) for v in line.get_ydata()]} for line in ax.get_lines()]}
              for ax in fig.axes]
    write_text(out / f"{stem}.json", json.dumps({"caption": caption, "panels": panels}, indent=1) + "\n")
    plt.close(fig)
    return f"{stem}.png", caption


def columns(corpora: list[str]) -> list[tuple[str, str, object]]:
    """(key, title, best-of) for the results table: final perplexity per corpus, forgetting and
    adaptation, and the loss change of each extra held-out corpus against the base checkpoint."""
    extra = [c for c in corpora if c not in CORPORA]
    return ([(f"{c}_ppl", f"{c} ppl", min) for c in corpora] + [("forgetting", "forgetting (loss)", min),
            ("adaptation", "adaptation (loss)", max)] + [(f"{c}_change", f"{c} change (loss)", min) for c in extra])


def write_report(config: cfg.Config, runs: Path, evals: Path, out_dir: Path, partial: bool = False) -> Path | None:
    """Write the report; with `partial`, over the cells that finished, listing the others as
    failed or not run (None, and nothing written, if no cell finished)."""
    cells, table, base, unfinished = collect(config, runs, evals, partial)
    if not table:
        return None
    by_study = {name: (grid.study_axis(study), grid.studies(config)[name]) for name, study in grid.declared_studies(config).items()}
    corpora = config.eval_corpora()
    cols = columns(corpora)
    with atomic_dir(out_dir) as tmp:
        (tmp / "figures").mkdir()
        made = figures(config, cells, table, by_study, tmp / "figures")
        sentences = findings(table, by_study, cells)
        best = {key: pick([n for n in table if key in table[n]], key=lambda n: table[n][key], default=None) for key, _, pick in cols}
        header = ["cell"] + [title for _, title, _ in cols] + ["stability gap up (rise)", "recovered at (tokens)"]
        rows = []
        for name, entry in table.items():
            values = [_cell(entry.get(key), name == best[key]) for key, _, _ in cols]
            gap = entry["gap_upstream"]
            rows.append([name, *values, f"{gap.rise:.3f}", "never" if gap.recovered_tokens is None and gap.rise > 0 else str(gap.recovered_tokens or 0)])
        base_header = ["checkpoint"] + [f"{c} ppl" for c in corpora]
        base_rows = [[n] + [f"{v[c]['ppl']:.4g}" if c in v else "-" for c in corpora] for n, v in base.items()]
        fit_rows, fit_text = predictions(config, cells, table)
        sentences = sentences + [fit_text]
        rows += [[name, *[status] + ["-"] * (len(header) - 2)] for name, status in unfinished.items()]
        if unfinished:
            sentences.insert(0, f"{len(unfinished)} of {len(cells)} cells did not finish and are left out of the findings: "
                                + "; ".join(f"{name} {status}" for name, status in unfinished.items()) + ".")
        write_text(tmp / "results.csv", _csv(table, corpora))
        write_text(tmp / "report.md", _markdown(header, rows, base_header, base_rows, sentences, made, fit_rows))
        write_text(tmp / "report.html", _html(header, rows, base_header, base_rows, sentences, made, fit_rows))
    return out_dir / "report.md"


FIT_HEADER = ["cell", "predicted final downstream loss", "measured (in-training sample)", "error"]


def predictions(config: cfg.Config, cells, table) -> tuple[list[list[str]], str]:
    """Fit the law on the reference cell's downstream curve; predict the final loss of every cell
    that starts from the same checkpoint, from its learning rates alone."""
    reference = grid.cell_name(config.train)
    entry = table.get(reference)
    fit = None
    if entry and entry["lr"]:
        rows = entry["rows"]
        fit = fit_curve([r["step"] for r in rows], [r["val/downstream/loss"] for r in rows], [lr for _, lr in entry["lr"]])
    if fit is None:
        return [], "Loss-curve fit (Tissue et al. 2024): not enough evaluations on the reference cell to fit."
    out = []
    for name, other in table.items():
        if cells[name].checkpoint != cells[reference].checkpoint or not other["lr"]:
            continue
        s1, s2 = lr_areas([lr for _, lr in other["lr"]])
        predicted, measured = fit.predict(s1[-1], s2[-1]), other["rows"][-1]["val/downstream/loss"]
        label = f"{name} (the fit's own curve)" if name == reference else name
        out.append([label, f"{predicted:.4f}", f"{measured:.4f}", f"{predicted - measured:+.4f}"])
    text = (f"Loss-curve fit (Tissue et al. 2024) on the reference cell's downstream curve: L = {fit.l0:.3f} + "
            f"{fit.a:.3g} S1^-{fit.alpha:.2f} - {fit.c:.3g} S2, RMSE {fit.rmse:.4f}; the table below predicts the other "
            f"schedules' final loss from their learning rates alone (fitted at max_lr {cells[reference].max_lr:g}: "
            f"cells with another maximum are extrapolations).")
    return out, text


def _cell(value, best: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return f"**{text}**" if best else text


def _csv(table: dict, corpora: list[str]) -> str:
    keys = [f"{c}_{m}" for c in corpora for m in ("loss", "ppl")] + ["forgetting", "adaptation"]
    keys += [f"{c}_change" for c in corpora if c not in CORPORA]
    lines = ["cell," + ",".join(keys)]
    for name, entry in table.items():
        lines.append(name + "," + ",".join("" if entry.get(k) is None else repr(entry[k]) for k in keys))
    return "\n".join(lines) + "\n"


def _markdown(header, rows, base_header, base_rows, sentences, made, fit_rows) -> str:
    out = ["# Re-warming report", "", "## Findings", ""] + [f"- {s}" for s in sentences]
    if fit_rows:
        out += ["", "## Predicted against measured (loss-curve fit)", "", "| " + " | ".join(FIT_HEADER) + " |", "|---|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in fit_rows]
    out += ["", "## Results", "", "Final perplexity on whole validation splits; best value per column in bold.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "## Base checkpoints (0 tokens)", "", "| " + " | ".join(base_header) + " |", "|" + "---|" * len(base_header)]
    out += ["| " + " | ".join(row) + " |" for row in base_rows]
    out += ["", "## Figures", ""] + [f"![{caption}](figures/{file})\n\n{caption}\n" for file, caption in made]
    return "\n".join(out) + "\n"


def _html(header, rows, base_header, base_rows, sentences, made, fit_rows) -> str:
    esc = html.escape

    def table(head, body):
        cells = "".join(f"<th>{esc(h)}</th>" for h in head)
        lines = "".join("<tr>" + "".join(f"<td>{_bold(esc(c))}</td>" for c in row) + "</tr>" for row in body)
        return f"<table><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>"

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Re-warming report</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
             "table{border-collapse:collapse}img{max-width:100%}</style></head><body>",
             "<h1>Re-warming report</h1><h2>Findings</h2><ul>", *(f"<li>{esc(s)}</li>" for s in sentences), "</ul>",
             "<h2>Predicted against measured (loss-curve fit)</h2>", table(FIT_HEADER, fit_rows),
             "<h2>Results</h2>", table(header, rows), "<h2>Base checkpoints (0 tokens)</h2>",
             table(base_header, base_rows), "<h2>Figures</h2>",
             *(f"<figure><img src='figures/{esc(f)}' alt='{esc(c)}'><figcaption>{esc(c)}</figcaption></figure>" for f, c in made),
             "</body></html>"]
    return "\n".join(parts) + "\n"


def _bold(text: str) -> str:
    return f"<b>{text[2:-2]}</b>" if text.startswith("**") and text.endswith("**") else text
