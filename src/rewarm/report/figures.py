"""The report's figures: each study's validation loss against tokens on both corpora (the paper's Figs.
1, 2, 3, 5, 7) and the trajectory of downstream against upstream perplexity (Figs. 4, 6), as PNG with
the values drawn beside each as JSON.

As the paper draws them: token axes in billions (at demo scale, the paper-equivalent billions that
`report.tokens_per_billion` says), loss in nats, lines labelled by every setting the study varies
(colour: the first; line style: the second), baselines by what they are, legends outside the axes. A
from-scratch curve, which starts several nats above the re-warmed ones, is drawn in a panel of its own
beneath, so that the re-warmed curves keep the scale on which they cross and separate. The datasets of a
sequence are drawn one after another, each from where the one before it stopped."""

from __future__ import annotations

import json
from pathlib import Path

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import write_text
from rewarm.report import labels
from rewarm.report.measures import CORPORA

DASHES = ["-", "--", "-.", ":"]
# The baselines' own styles, apart from the studies' colours: no re-warming black dashed, from scratch grey dotted.
BASELINE_STYLE = {"constant": ("black", "--"), "scratch": ("grey", ":")}


def warmup_end_tokens(config: cfg.Config, cell: cfg.TrainConfig) -> int:
    """Tokens seen when the cell's warm-up ends (its schedule's warm-up, in whole steps)."""
    seq_len = config.prepare.seq_len
    return cfg.warmup_steps(cell, seq_len) * cell.batch_sequences * seq_len


def study_lines(study_members: list[str], cells, table, scratch: frozenset[str]) -> list[str]:
    """A study's cells, and the baselines (constant LR, from scratch) of other studies trained as far
    on the same corpus, drawn for comparison as the paper's figures do."""
    members = [n for n in study_members if n in table]
    reach = {(cells[n].tokens, cells[n].train_corpus) for n in members}
    extra = [n for n in grid.baseline_cells(cells, scratch) if n in table and n not in members and (cells[n].tokens, cells[n].train_corpus) in reach]
    return members + extra


def token_axis(config: cfg.Config) -> tuple[float, str]:
    """(tokens per unit drawn, the axis label): billions of tokens, or of the paper's tokens at demo scale."""
    per = config.report.tokens_per_billion
    if per is None:
        return 1e9, "tokens seen (billions)"
    return float(per), f"paper-equivalent tokens (billions; 1B = {per:,} tokens here)"


def offsets(config: cfg.Config, cells) -> dict[str, int]:
    """Cell -> the tokens seen before it: 0, or, for a dataset of a sequence (a cell continuing another
    cell's final state), where the cells before it stopped."""
    before = {name: spec.cell for name, spec in grid.continued(config).items()}
    out: dict[str, int] = {}

    def offset(name: str) -> int:
        if name not in out:
            previous = before.get(cells[name].checkpoint)
            out[name] = 0 if previous is None or previous not in cells else offset(previous) + cells[previous].tokens
        return out[name]

    for name in cells:
        offset(name)
    return out


def styles(names: list[str], cells, axes: list[str], scratch: frozenset[str]) -> dict[str, tuple[str, str]]:
    """Cell -> (colour, line style): colour by the value of the study's first axis, line style by its
    second (as the paper's Fig. 7 dashes warm-up against checkpoints); the baselines their own."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    first = list(dict.fromkeys(repr(getattr(cells[n], axes[0])) for n in names)) if axes else []
    second = list(dict.fromkeys(repr(getattr(cells[n], axes[1])) for n in names)) if len(axes) > 1 else []
    out = {}
    for i, name in enumerate(names):
        cell = cells[name]
        if labels.shown_as_baseline(cell, axes, scratch):
            out[name] = BASELINE_STYLE["scratch" if cell.checkpoint in scratch else "constant"]
            continue
        colour = palette[(first.index(repr(getattr(cell, axes[0]))) if axes else i) % len(palette)]
        dash = DASHES[second.index(repr(getattr(cell, axes[1]))) % len(DASHES)] if second else "-"
        out[name] = (colour, dash)
    return out


def figures(config: cfg.Config, cells, table, studies, short: dict[str, str], out: Path) -> dict[str, list[tuple[str, str]]]:
    """PNG figures in the paper's style, each with a JSON of the values drawn (read back from the
    plotted lines, so tests and users can check them against the metrics). Per study: validation
    loss against tokens on both corpora (the paper's Figs. 1, 2, 3, 5, 7), each curve's final model's
    whole-split loss marked at its end, and the trajectory of downstream against upstream perplexity,
    start and end of warm-up marked (Figs. 4, 6); and the learning rates of every cell. Returns figure
    -> (file, caption), by study (and `all`). `short`: each cell's label (`labels.cell_labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per, xlabel = token_axis(config)
    start = offsets(config, cells)
    scratch = grid.scratch_checkpoints(config.checkpoints)
    made: dict[str, list[tuple[str, str]]] = {}
    for study_name, (study, members) in studies.items():
        axes = labels.study_axes(study, members, cells)
        names = study_lines(members, cells, table, scratch)
        if not names:
            continue
        style = styles(names, cells, axes, scratch)
        pretrained = [n for n in names if cells[n].checkpoint not in scratch]
        # From scratch in a panel of its own beneath, with the others for comparison; on top, the pre-trained starts.
        rows = [pretrained, names] if len(pretrained) not in (0, len(names)) else [names]
        fig, grid_axes = plt.subplots(len(rows), 2, figsize=(11, 4 if len(rows) == 1 else 6.5), squeeze=False, layout="constrained",
                                      height_ratios=[1] if len(rows) == 1 else [1.6, 1])
        for r, drawn in enumerate(rows):
            for panel, corpus in zip(grid_axes[r], CORPORA):
                for name in drawn:
                    colour, dash = style[name]
                    points = table[name]["rows"]
                    xs = [(start[name] + p["tokens"]) / per for p in points]
                    line, = panel.plot(xs, [p[f"val/{corpus}/loss"] for p in points], dash, color=colour,
                                       label=labels.in_study(name, cells, axes, scratch))
                    line.set_gid(name)
                    if f"{corpus}_loss" in table[name]:  # the final model's whole validation split, at the curve's end
                        panel.plot([xs[-1]], [table[name][f"{corpus}_loss"]], "o", color=colour, markerfacecolor="none",
                                   gid=f"{name}:final", label="_final")
                panel.set_title(f"{corpus} validation loss" + (", from scratch included" if r else ""))
                panel.set_xlabel(xlabel)
                panel.set_ylabel("loss (nats)")
        handles, names_drawn = grid_axes[-1][0].get_legend_handles_labels()
        keep = [(h, l) for h, l in zip(handles, names_drawn) if not l.startswith("_")]
        # Beneath the panels: a legend beside them would reach up into the study's title.
        fig.legend([h for h, _ in keep], [l for _, l in keep], loc="outside lower center", fontsize=8, ncols=min(len(keep), 4) or 1,
                   title=", ".join(labels.SETTING_NAMES.get(a, a) for a in axes) or None)
        fig.suptitle(f"{study_name}: {study.title}" if study.title else study_name)
        files = [_save(fig, out, f"study_{study_name}", f"Study {study_name}: validation loss against tokens seen on both "
                       "corpora. Curves: the evaluations during training, each on a fixed sample of every validation split; "
                       "circles: the final model on the whole split (the tables' numbers). Black dashed: no re-warming "
                       "(constant learning rate); grey dotted: from scratch"
                       + (", in its own panels beneath on a scale of its own" if len(rows) > 1 else "")
                       + (". A sequence's datasets follow one another." if any(start[n] for n in names) else "."))]
        # The paper's trajectories (Figs. 4, 6) draw the pre-trained starts only: from scratch, thousands of
        # perplexity points, would flatten them into one corner.
        if not pretrained:  # a study of from-scratch cells only (the union baseline) has no trajectory to draw
            made[study_name] = files
            continue
        fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
        for name in pretrained:
            colour, dash = style[name]
            points = table[name]["rows"]
            line, = ax.plot([p["val/downstream/ppl"] for p in points], [p["val/upstream/ppl"] for p in points], dash, color=colour,
                            marker=".", label=labels.in_study(name, cells, axes, scratch))
            line.set_gid(name)
            end = warmup_end_tokens(config, cells[name])
            warm = next((p for p in points if p["tokens"] >= end), points[-1]) if end else None
            if warm is not None and warm is not points[0]:
                ax.plot([warm["val/downstream/ppl"]], [warm["val/upstream/ppl"]], "o", color="green", gid=f"{name}:warmup_end",
                        label="_warmup_end")
        starts = {cells[n].checkpoint: n for n in reversed(pretrained)}  # one per start
        for name in starts.values():
            first = table[name]["rows"][0]
            ax.plot([first["val/downstream/ppl"]], [first["val/upstream/ppl"]], "o", color="red", gid=f"{name}:start", label="_start")
        ax.set_xlabel("downstream validation perplexity")
        ax.set_ylabel("upstream validation perplexity")
        ax.set_title(f"{study_name}: trajectory (red: start, green: warm-up end)")
        fig.legend(loc="outside right upper", fontsize=8)
        files.append(_save(fig, out, f"trajectory_{study_name}", f"Study {study_name}: downstream against upstream perplexity as "
                           "training goes on; red: the starting checkpoints, green: the end of each cell's warm-up (from scratch is "
                           "left out, as in the paper's Figs. 4 and 6)."))
        made[study_name] = files
    fig, ax = plt.subplots(figsize=(11, 5), layout="constrained")
    for name, entry in table.items():
        if entry["lr"]:
            line, = ax.plot(*zip(*entry["lr"]), label=short[name], linewidth=1)
            line.set_gid(name)
    ax.set_title("learning rate")
    ax.set_xlabel("step (of each cell)")
    ax.set_ylabel("learning rate")
    fig.legend(loc="outside right upper", fontsize=6, ncols=2 if len(table) > 14 else 1)
    made["all"] = [_save(fig, out, "learning_rates", "The learning-rate schedules actually used (logged every step), each "
                         "cell under its short label (the results table's key gives its full name).")]
    return made


def _save(fig, out: Path, stem: str, caption: str) -> tuple[str, str]:
    """Write `<stem>.png` and `<stem>.json`: per panel, each line's cell and the x and y it drew; where the
    titles, axes and legends lie, in pixels of the PNG (x0, y0, x1, y1 from its lower left corner)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig.savefig(out / f"{stem}.png", dpi=110)
    renderer = fig.canvas.get_renderer()
    texts = [*(("text", text.get_text(), text) for text in fig.texts), *(("legend", "", legend) for legend in fig.legends),
             *(("title", ax.get_title(), ax.title) for ax in fig.axes), *(("axes", "", ax) for ax in fig.axes)]
    layout = {"size": [float(v) for v in fig.canvas.get_width_height()],
              "boxes": [{"kind": kind, "text": text, "box": [float(v) for v in artist.get_window_extent(renderer).extents]}
                        for kind, text, artist in texts]}
    panels = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
               "lines": [{"cell": line.get_gid(), "label": line.get_label(), "color": to_hex(line.get_color()),
                          "linestyle": line.get_linestyle(),
                          "x": [float(v) for v in line.get_xdata()],
                          "y": [float(v) for v in line.get_ydata()]} for line in ax.get_lines()]}
              for ax in fig.axes]
    write_text(out / f"{stem}.json", json.dumps({"caption": caption, "panels": panels, "layout": layout}, indent=1) + "\n")
    plt.close(fig)
    return f"{stem}.png", caption


def forecast_figure(result: dict, short: dict[str, str], out: Path) -> tuple[str, str] | None:
    """The continual pre-training law's forecasts against the measured final losses, one panel per corpus
    (whole validation splits): the fitted cells, the cells forecast within what the fit supports, and those it
    extrapolates for, each a point named by its cell in the JSON; the diagonal is a perfect forecast. None
    where no cell was both forecast and run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {name: row for name, row in result["cells"].items() if "measured" in row}
    if not rows:
        return None
    kinds = (("fitted", "s", "tab:blue", "full"), ("forecast", "o", "tab:green", "full"),
             ("forecast, extrapolating", "^", "tab:orange", "none"))
    fig, panels = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    for ax, corpus in zip(panels, CORPORA):
        values = [v for row in rows.values() for v in (row["measured"][corpus], row["final"][corpus])]
        low, high = min(values), max(values)
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", linewidth=0.8, label="forecast = measured")
        seen = set()
        for name, row in rows.items():
            kind = kinds[0] if row["fitted"] else kinds[2] if row["marks"] else kinds[1]
            line, = ax.plot([row["measured"][corpus]], [row["final"][corpus]], linestyle="none", marker=kind[1], color=kind[2],
                            fillstyle=kind[3], markersize=7, label=kind[0] if kind[0] not in seen else "_nolegend_")
            line.set_gid(name)
            seen.add(kind[0])
        ax.set_title(f"{corpus}: final loss, forecast against measured")
        ax.set_xlabel(f"measured {corpus} loss (nats, whole split)")
        ax.set_ylabel(f"forecast {corpus} loss (nats)")
    handles, names = panels[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4)
    caption = ("The continual pre-training law (Wang, Tissue et al. 2025) fitted on the fitted cells (squares) against the "
               "final loss each cell measured on the whole validation split: circles, forecasts within what the fit "
               "supports; hollow triangles, forecasts that extrapolate (another schedule family, checkpoint, replay share "
               "or length; the section's table says which). On the diagonal a forecast is exact.")
    return _save(fig, out, "forecast", caption)
