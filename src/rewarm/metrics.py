"""What a run logs: its metric history (kept in the training state, so a resumed run rewrites identical
logs), the per-evaluation JSON lines and CSV curves, DVCLive's files (`dvc plots`, `dvc exp show`) and,
when asked, TensorBoard's event files and an offline Weights & Biases run."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rewarm.io import write_text


def read_rows(path: Path) -> list[dict]:
    """A run's metrics.jsonl: one row per evaluation. A line that is not JSON is an error naming the file
    and the line (a run directory edited by hand, or cut short by a full disk)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not a JSON row of a run's metrics ({error.msg})") from None
    return rows


@dataclass
class History:
    """Everything logged so far; kept in the state so a resumed run rewrites identical logs."""

    steps: list[dict] = field(default_factory=list)
    """Per optimizer step: step, lr, train_loss."""
    evals: list[dict] = field(default_factory=list)
    """Per evaluation: step, tokens, lr, train_loss, validation losses and perplexities, tokens_per_s."""


class MetricsLog:
    """Plain JSON lines (one row per evaluation) and DVCLive (lr and train loss per step,
    validation metrics per evaluation), so `dvc plots` and `dvc exp show` read them."""

    def __init__(self, out_dir: Path, history: History, live: bool = True, tensorboard: bool = False, wandb: bool = False,
                 settings: dict | None = None):
        """`live=False`: the JSON lines and curves without DVCLive's files (benchmarks/gpu_check.py, on a
        machine whose image has no DVC, which DVCLive imports; its cost per step is bench_train's to measure).
        `tensorboard`: the same scalars as DVCLive's as TensorBoard event files in `out_dir/tensorboard`
        (config `logging.tensorboard`); `wandb`: as an offline W&B run in `out_dir/wandb`, named by the run
        directory, `settings` its config (config `logging.wandb`)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.history = history
        self.curves = out_dir / "curves"
        self.jsonl = out_dir / "metrics.jsonl"
        self.live = None
        if live:
            from dvclive import Live

            self.live = Live(dir=str(out_dir / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.board = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            board_dir = out_dir / "tensorboard"
            # Event files only append: a resumed run would log its first steps twice. The directory is this
            # log's own (inside the stage's output), so it is rewritten whole from the history, as DVCLive's is.
            shutil.rmtree(board_dir, ignore_errors=True)
            self.board = SummaryWriter(log_dir=str(board_dir))
        self.wandb = None
        if wandb:
            import wandb as wb

            # Offline only (nothing is sent; `wandb sync` uploads it later), rewritten whole as TensorBoard's;
            # no console capture or system sampling: the job's log and timings stay as they are.
            shutil.rmtree(out_dir / "wandb", ignore_errors=True)
            self.wandb = wb.init(mode="offline", dir=str(out_dir), project="rewarm", name=out_dir.name, config=settings or {},
                                 reinit="create_new", save_code=False,
                                 settings=wb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True))
        self.jsonl.write_text("".join(json.dumps(row) + "\n" for row in history.evals))
        evals = {row["step"]: row for row in history.evals}
        # A resumed run (or a cell read from a longer run) rewrites what was logged, in the order it was.
        if 0 in evals:
            self._live_step({"step": 0}, evals[0])
        for row in history.steps:
            self._live_step(row, evals.get(row["step"]))
        self._write_curves()
        if history.evals and self.live:
            self.live.make_summary()

    def log_step(self, row: dict, evaluation: dict | None) -> None:
        """Every step: lr and train loss appended to DVCLive's tsv files. At an evaluation: the row,
        the curves and DVCLive's summary (metrics.json), which is rewritten whole, so not every step."""
        if evaluation is not None:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(evaluation) + "\n")
            self._write_curves()
        self._live_step(row, evaluation)
        if evaluation is not None and self.live:
            self.live.make_summary()
        if evaluation is not None and self.board:
            self.board.flush()

    def _write_curves(self) -> None:
        """Per validation split, `curves/<name>.csv` (step, tokens, loss, ppl) for `dvc plots`,
        which reads CSV but not JSON lines."""
        names = sorted({k.split("/")[1] for row in self.history.evals for k in row if k.startswith("val/")})
        self.curves.mkdir(exist_ok=True)
        for name in names:
            lines = ["step,tokens,loss,ppl"] + [
                f"{row['step']},{row['tokens']},{row[f'val/{name}/loss']!r},{row[f'val/{name}/ppl']!r}" for row in self.history.evals
            ]
            write_text(self.curves / f"{name}.csv", "\n".join(lines) + "\n")

    def _live_step(self, row: dict, evaluation: dict | None) -> None:
        scalars = {f"train/{key}": row[key] for key in ("lr", "train_loss") if row.get(key) is not None}
        scalars.update({key: value for key, value in (evaluation or {}).items()
                        if key.startswith("val/") and value is not None and math.isfinite(value)})
        if self.live is not None:
            self.live.step = row["step"]
            for key, value in scalars.items():
                self.live.log_metric(key, value, plot=True)
        if self.board is not None:
            for key, value in scalars.items():
                self.board.add_scalar(key, value, global_step=row["step"])
        if self.wandb is not None and scalars:
            self.wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        if self.live:
            self.live.end()
        if self.board:
            self.board.close()
        if self.wandb is not None:
            self.wandb.finish()


def final_metrics(history: History) -> dict:
    """The last evaluation, without the wall-clock figure: a pure function of the inputs."""
    return {k: v for k, v in history.evals[-1].items() if k != "tokens_per_s"}
