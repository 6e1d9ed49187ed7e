"""The report's figures: each study's validation loss against tokens on both corpora (the paper's Figs.
1, 2, 3, 5, 7) and the trajectory of downstream against upstream perplexity (Figs. 4, 6), as PNG with
the values drawn beside each as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import write_text
from rewarm.report.measures import CORPORA


def warmup_end_tokens(config: cfg.Config, cell: cfg.TrainConfig) -> int:
    """Tokens seen when the cell's warm-up ends (its schedule's warm-up, in whole steps)."""
    seq_len = config.prepare.seq_len
    return cfg.warmup_steps(cell, seq_len) * cell.batch_sequences * seq_len


def study_lines(study_members: list[str], cells, table) -> list[str]:
    """A study's cells, and the baselines (constant LR, from scratch) of other studies trained as far
    on the same corpus, drawn for comparison as the paper's figures do."""
    members = [n for n in study_members if n in table]
    reach = {(cells[n].tokens, cells[n].train_corpus) for n in members}
    extra = [n for n in grid.baseline_cells(cells) if n in table and n not in members and (cells[n].tokens, cells[n].train_corpus) in reach]
    return members + extra


def _style(name: str, cells, axis: str | None, members: list[str]) -> tuple[str, str]:
    cell = cells[name]
    if cell.checkpoint == "scratch":
        return ":", f"from scratch, max_lr {cell.max_lr:g}"
    if cell.schedule == "constant":
        return "--", f"constant LR {cell.max_lr:g} (no re-warming)"
    label = ", ".join(f"{a}={getattr(cell, a)}" for a in ([axis] if axis else [])) or name
    return "-", label if name in members else f"{label} ({name})"


def figures(config: cfg.Config, cells, table, studies, out: Path) -> dict[str, list[tuple[str, str]]]:
    """PNG figures in the paper's style, each with a JSON of the values drawn (read back from the
    plotted lines, so tests and users can check them against the metrics). Per study: validation
    loss against tokens on both corpora (the paper's Figs. 1, 2, 3, 5, 7) and the trajectory of
    downstream against upstream perplexity, start and end of warm-up marked (Figs. 4, 6); and the
    learning rates of every cell. Returns figure -> (file, caption), by study (and `all`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[tuple[str, str]]] = {}
    for study_name, (study, members) in studies.items():
        axis = grid.study_axis(study)
        names = study_lines(members, cells, table)
        if not names:
            continue
        fig, panels = plt.subplots(1, 2, figsize=(11, 4))
        for panel, corpus in zip(panels, CORPORA):
            for name in names:
                style, label = _style(name, cells, axis, members)
                rows = table[name]["rows"]
                line, = panel.plot([r["tokens"] for r in rows], [r[f"val/{corpus}/loss"] for r in rows], style, label=label)
                line.set_gid(name)
            panel.set_title(f"{corpus} validation loss")
            panel.set_xlabel("tokens seen")
            panel.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            panel.legend(fontsize=7)
        fig.suptitle(f"{study_name}: {study.title}" if study.title else study_name)
        files = [_save(fig, out, f"study_{study_name}", f"Study {study_name}: validation loss against tokens seen on both "
                       "corpora (dashed: constant learning rate, no re-warming; dotted: from scratch).")]
        # The paper's trajectories (Figs. 4, 6) draw the pre-trained starts only: from scratch, thousands of
        # perplexity points, would flatten them into one corner.
        pretrained = [n for n in names if cells[n].checkpoint != "scratch"]
        if not pretrained:  # a study of from-scratch cells only (the union baseline) has no trajectory to draw
            made[study_name] = files
            continue
        fig, ax = plt.subplots(figsize=(6, 5))
        for name in pretrained:
            style, label = _style(name, cells, axis, members)
            rows = table[name]["rows"]
            line, = ax.plot([r["val/downstream/ppl"] for r in rows], [r["val/upstream/ppl"] for r in rows], style, marker=".", label=label)
            line.set_gid(name)
            end = warmup_end_tokens(config, cells[name])
            warm = next((r for r in rows if r["tokens"] >= end), rows[-1]) if end else None
            if warm is not None and warm is not rows[0]:
                ax.plot([warm["val/downstream/ppl"]], [warm["val/upstream/ppl"]], "o", color="green", gid=f"{name}:warmup_end")
        starts = {cells[n].checkpoint: n for n in reversed(pretrained)}  # one per start
        for name in starts.values():
            first = table[name]["rows"][0]
            ax.plot([first["val/downstream/ppl"]], [first["val/upstream/ppl"]], "o", color="red", gid=f"{name}:start")
        ax.set_xlabel("downstream validation perplexity")
        ax.set_ylabel("upstream validation perplexity")
        ax.set_title(f"{study_name}: trajectory (red: start, green: warm-up end)")
        ax.legend(fontsize=7)
        files.append(_save(fig, out, f"trajectory_{study_name}", f"Study {study_name}: downstream against upstream perplexity as "
                           "training goes on; red: the starting checkpoints, green: the end of each cell's warm-up (from scratch is "
                           "left out, as in the paper's Figs. 4 and 6)."))
        made[study_name] = files
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in table.items():
        if entry["lr"]:
            line, = ax.plot(*zip(*entry["lr"]), label=name, linewidth=1)
            line.set_gid(name)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=5)
    made["all"] = [_save(fig, out, "learning_rates", "The learning-rate schedules actually used (logged every step).")]
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
