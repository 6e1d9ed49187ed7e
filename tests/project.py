"""What the tests share besides fixtures: the small configuration, the project copied into a temporary
directory, and the real commands (`rewarm`, `snakemake`, `dvc`, git) run in it. Not a test module: the
fixtures in conftest.py and the tests import it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import file_sha256

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent


def small_params(**overrides) -> dict:
    """The reduced configuration of `.test/params.yaml` (the demo's shape, tiny sizes), with overrides."""
    params = yaml.safe_load((ROOT / ".test/params.yaml").read_text())
    return cfg.deep_merge(params, overrides)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def rewarm(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `rewarm` command line in `cwd`."""
    result = subprocess.run(
        [sys.executable, "-m", "rewarm", *args], cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"rewarm {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def copy_of(source: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(source, dest)
    return dest


def train_args(cell: str, base: str = "checkpoints/base/scratch", out: str | None = None, state: str | None = None) -> list[str]:
    return [
        "train", "--cell", cell, "--base", base,
        "--train", "data/tokens/downstream/train", "--replay", "data/tokens/upstream/train",
        "--val", "upstream=data/tokens/upstream/val", "--val", "downstream=data/tokens/downstream/val",
        "--state", state or f"state/runs/{cell}", "--out", out or f"runs/{cell}",
    ]


def cell_of(project: Path) -> str:
    return next(iter(grid.cells(grid.load(project / "params.yaml"))))


# A hub token and remote credentials set for the whole-pipeline run: no file it writes may hold them.
SECRET = "hf_rewarmTestSecret0123456789"


PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc", ".dvcignore", ".gitignore"]


def without(section: dict, *names: str) -> dict:
    return {name: value for name, value in section.items() if name not in names}


# The demo grid's shape in miniature: studies of checkpoints and of max_lr with a constant-LR baseline,
# training on upstream again (no shift), and a cell that stops at half of the reference cell's schedule
# (read from the reference run, not trained).
TEST_GRID = {"studies": {
    "checkpoint": {"vary": {"checkpoint": ["early", "final", "scratch"]}},
    "max_lr": {"vary": {"max_lr": [1e-3, 2e-3]}, "baselines": [{"schedule": "constant", "max_lr": 2e-4, "warmup_fraction": 0.0}]},
    "same_data": {"settings": {"train_corpus": "upstream"}, "vary": {"max_lr": [2e-3]}},
    "half": {"settings": {"tokens": 10240, "schedule_tokens": 20480}, "vary": {"max_lr": [2e-3]}},
    # Three datasets in sequence under an infinite schedule (Ibrahim et al. 2024, section 7): warm-up and
    # cooldown on the first, the constant phase on the second (weights and optimizer state carried over, no
    # re-warming), the annealing at the end of the third; each cell waits for the one before.
    "sequence": {"settings": {"schedule": "infinite-cosine", "constant_lr": 1e-3, "tokens": 5120}, "cells": [
        {"constant_end_fraction": 1.0},
        {"checkpoint": "after_first", "train_corpus": "later", "warmup_fraction": 0.0, "cooldown_end_fraction": 0.0,
         "constant_end_fraction": 1.0},
        {"checkpoint": "after_second", "train_corpus": "upstream", "warmup_fraction": 0.0, "cooldown_end_fraction": 0.0},
    ]},
}}
TEST_PARAMS = small_params(
    train={"checkpoint": "final"}, grid=TEST_GRID,
    corpora={"later": {"train": {"type": "demo", "domain": "downstream", "documents": 200, "seed": 6}}},
    checkpoints={"after_first": {"type": "cell", "cell": "sequence.cells[0]", "optimizer": True},
                 "after_second": {"type": "cell", "cell": "sequence.cells[1]", "optimizer": True}},
)
# The Snakemake run fits the continual pre-training law on the max-LR study's two cells and forecasts the rest.
TEST_FORECAST = {"fit": ["max_lr.vary[0]", "max_lr.vary[1]"]}
# The smallest grid that still has every kind of job a front end runs: a checkpoint of the demo's series
# (select_step), a cell read from a longer run (prefix), datasets in sequence (select_cell), and the
# scratch checkpoint selected and evaluated as a base; each corpus in one part (the shards are the same for
# any number of parts: tested in test_prepare.py). The DVC, SLURM and interrupted runs use it: each of its
# cells is a cell of TEST_GRID, so their outputs are compared with the Snakemake run's cell by cell.
FRONT_END_PARAMS = {**TEST_PARAMS, "prepare": {**TEST_PARAMS["prepare"], "parts": 1},
                    "checkpoints": without(TEST_PARAMS["checkpoints"], "early"),
                    "forecast": {"fit": ["checkpoint.vary[0]", "half.vary[0]"]}, "grid": {"studies": {
    "checkpoint": {"vary": {"checkpoint": ["final"]}},
    "half": TEST_GRID["studies"]["half"],
    "sequence": TEST_GRID["studies"]["sequence"],
}}}


# Smaller still, for the runs whose point is scheduling, interruption and resumption (no harness jobs: the
# front ends' benchmark jobs are compared in test_workflow.py), each with only the corpora and checkpoints
# its cells use (the tokenizer learns from upstream alone, so the shards are the same). SLURM: one cell
# (cancelled and retried), each corpus in one part (the shards are the same for any number of parts: each
# job the scheduler runs costs a status poll of 10 s or more). Interrupted: the three cells of the sequence,
# each waiting for the one before, so an interruption after the first always leaves cells to do.
SCHEDULED_PARAMS = {**FRONT_END_PARAMS, "benchmark": None, "forecast": {}, "corpora": without(TEST_PARAMS["corpora"], "later"),
                    "checkpoints": without(TEST_PARAMS["checkpoints"], "early", "scratch", "after_first", "after_second"),
                    "grid": {"studies": {"checkpoint": {"vary": {"checkpoint": ["final"]}}}}}
SEQUENCE_PARAMS = {**FRONT_END_PARAMS, "benchmark": None, "forecast": {}, "checkpoints": without(TEST_PARAMS["checkpoints"], "early", "scratch"),
                   "grid": {"studies": {"sequence": TEST_GRID["studies"]["sequence"]}}}


def grid_file(project: Path) -> dict:
    """workflow/grid.yaml: cells (all), trained, prefixes."""
    return yaml.safe_load((project / "workflow/grid.yaml").read_text())


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """The project's files in `dest`; with `params`, a smaller configuration (and its grid file)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
        else:
            shutil.copy2(source, dest / name)
    if params is not None:
        write_params(dest / "params.yaml", params)
        rewarm("grid", "--write", "workflow/grid.yaml", cwd=dest)
    return dest


def run(*command: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env or run_env(), capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def snakemake(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "snakemake", *args, cwd=cwd, check=check, env=env)


def digests(root: Path) -> dict[str, str]:
    """sha256 of every data file under root (Snakemake's and rewarm's directory markers are not data: DVC ignores
    both, .dvcignore)."""
    return {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (".snakemake_timestamp", ".rewarm-output")
    }


def curve(run_dir: Path) -> list[dict]:
    """A run's logged rows without the wall-clock figure."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in rows]


def assert_same_results(project: Path, reference: Path, cells: list[str]) -> None:
    """Every cell's weights, final metrics and curve, the evaluations and the report equal the reference
    run's (whose grid holds the project's cells and more): the report as the reference's redone with the
    project's configuration."""
    for cell in cells:
        for name in ("model/model.safetensors", "metrics.json"):
            assert (project / "runs" / cell / name).read_bytes() == (reference / "runs" / cell / name).read_bytes(), (cell, name)
        assert curve(project / "runs" / cell) == curve(reference / "runs" / cell), cell
    evals = digests(project / "evals")
    assert evals == {k: v for k, v in digests(reference / "evals").items() if k in evals}
    assert {k for k in evals if k.startswith("cells/")} == {f"cells/{cell}.json" for cell in cells}
    assert (project / "reports/report.md").read_text() == reference_report(project, reference)


def reference_report(project: Path, reference: Path) -> str:
    """The reference run's report redone with `project`'s configuration (its grid may be a part of the
    reference's, its benchmarks switched off) and `project`'s own forecast."""
    redone = project / "reference-report"
    rewarm("report", "--params", str(project / "params.yaml"), "--runs", str(reference / "runs"), "--evals", str(reference / "evals"),
           "--forecast", str(project / "forecast"), "--out", str(redone), cwd=project)
    return (redone / "report.md").read_text()


def git_commit(project: Path, message: str) -> None:
    """Commit everything (DVCLive asks git for the current revision, so users have a commit)."""
    if not (project / ".git").exists():
        run("git", "init", "-q", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", "-c", "user.name=rewarm", "-c", "user.email=rewarm@localhost", "commit", "-qm", message, cwd=project)


def worker_pids(agent: int) -> dict[int, int]:
    """Rank -> pid of the worker processes a torchrun agent started (read from /proc)."""
    workers = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields["PPid"]) != agent:
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, KeyError, ValueError):
            continue
        ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
        if ranks:
            workers[int(ranks[0])] = int(status.parent.name)
    return workers


def kill_job(agent: subprocess.Popen) -> None:
    """SIGKILL to a torchrun agent's workers (torchrun starts them in sessions of their own) and to it."""
    workers = worker_pids(agent.pid)
    assert set(workers) == {0, 1}
    for pid in [*workers.values(), agent.pid]:
        os.kill(pid, signal.SIGKILL)
    agent.wait(timeout=60)


def log_likelihoods(model, tokenizer, context: str, continuation: str, max_length: int) -> tuple[float, bool]:
    """log P(continuation | context) summed over its tokens, and whether each of its tokens is the
    most likely one: the harness's request, computed here with torch alone (the continuation's tokens
    are those the whole text adds to the context's, as the harness splits them; left-truncated to the
    model's length, as it does)."""
    import torch

    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    target = whole[len(context_ids):]
    tokens = (context_ids + target)[-(max_length + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]])).logits[0].double().log_softmax(-1)
    picked = logits[-len(target):]
    ids = torch.tensor(target)
    return float(picked[torch.arange(len(target)), ids].sum()), bool((picked.argmax(-1) == ids).all())


def next_word_accuracy(model, tokenizer, task_file: Path, max_length: int) -> tuple[float, float]:
    """(acc, acc_norm) of the demo's next-word task as the harness defines them, from `log_likelihoods`:
    the choice of highest log-likelihood, and of highest log-likelihood per character."""
    examples = [json.loads(line) for line in task_file.read_text().splitlines()]
    correct = correct_norm = 0
    for example in examples:
        scores = [log_likelihoods(model, tokenizer, example["context"], " " + c, max_length)[0] for c in example["choices"]]
        correct += max(range(len(scores)), key=scores.__getitem__) == example["answer"]
        normalised = [score / len(c) for score, c in zip(scores, example["choices"])]
        correct_norm += max(range(len(scores)), key=normalised.__getitem__) == example["answer"]
    return correct / len(examples), correct_norm / len(examples)

