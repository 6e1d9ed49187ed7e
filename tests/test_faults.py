"""Faults injected for real into whole runs: an interrupted grid, a diverging cell, two runs at
once, a disk too small, and secrets in the environment. Unit-level faults (killed jobs, altered
shards and states, bad records) are in the tests of each stage, marked `fault` or `bad_input`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rewarm import grid
from rewarm.io import made_by
from tests.project import (
    SECRET, SEQUENCE_PARAMS, TEST_PARAMS, assert_same_results, copy_project, digests, git_commit, rewarm, run, run_env, small_params, snakemake,
    without, write_params,
)

pytestmark = pytest.mark.fault


def cells_of(project: Path) -> dict:
    return yaml.safe_load((project / "workflow/grid.yaml").read_text())["cells"]


def trained_cells(log: Path) -> set[str]:
    """Cells whose `train` job Snakemake's log reports as finished."""
    text = log.read_text()
    cell_of_job = dict(re.findall(r"localrule train:.*?jobid: (\d+).*?wildcards: cell=(\S+)", text, re.DOTALL))
    return {cell_of_job[j] for j in re.findall(r"Finished jobid: (\d+) \(Rule: train\)", text) if j in cell_of_job}


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_interrupted_grid_reruns_only_the_missing_cells(snakemake_run, tmp_path):
    """Ctrl-C in the middle of the grid (SIGINT to Snakemake and its jobs); while it runs, a second
    Snakemake on the same project is refused; `--rerun-incomplete` then finishes only the missing
    cells, and every output equals that of an uninterrupted run."""
    project = copy_project(tmp_path / "interrupted", SEQUENCE_PARAMS)
    cells = list(cells_of(project))
    command = [sys.executable, "-m", "snakemake", "--cores", "2"]
    with open(project / "first.log", "w") as log:
        # A terminal's Ctrl-C: SIGINT to the run's process group. Restore its default handling first,
        # since a shell that started these tests in the background makes its children ignore SIGINT.
        first = subprocess.Popen(command, cwd=project, env=run_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            # A second Snakemake is refused: the running jobs' outputs are marked incomplete, and even
            # when told to redo those, the directory lock holds.
            wait_for(lambda: (project / "data/tokens/upstream").exists(), first, "the first run's jobs started")
            second = snakemake("--cores", "1", cwd=project, check=False)
            assert second.returncode != 0
            assert "Directory cannot be locked" in second.stderr or "seem to be incomplete" in second.stderr, second.stderr[-3000:]
            second = snakemake("--cores", "1", "--rerun-incomplete", cwd=project, check=False)
            assert second.returncode != 0 and "Directory cannot be locked" in second.stderr, second.stderr[-3000:]
            # Interrupt as soon as Snakemake has recorded one cell's training as finished.
            wait_for(lambda: trained_cells(project / "first.log"), first, "a cell finished")
        finally:
            # Ctrl-C, pressed again while Snakemake has not stopped.
            for _ in range(20):
                if first.poll() is not None:
                    break
                os.killpg(first.pid, signal.SIGINT)
                try:
                    first.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            first.wait(timeout=300)
    assert first.returncode != 0
    finished = {c: (project / "runs" / c / "metrics.json").stat().st_mtime_ns for c in trained_cells(project / "first.log")}
    assert 0 < len(finished) < len(cells)

    rerun = snakemake("--cores", "2", "--rerun-incomplete", "--printshellcmds", cwd=project)
    trained = {line.split("--cell ")[1].split()[0] for line in (rerun.stdout + rerun.stderr).splitlines() if "rewarm train" in line}
    assert trained == set(yaml.safe_load((project / "workflow/grid.yaml").read_text())["trained"]) - set(finished), \
        "only the missing cells are trained again"
    assert all((project / "runs" / c / "metrics.json").stat().st_mtime_ns == t for c, t in finished.items())
    assert_same_results(project, snakemake_run, cells)


def test_diverging_cell_fails_and_the_report_lists_it(snakemake_run, tmp_path):
    """A cell whose loss becomes infinite fails naming the step and value; with --keep-going the
    other cells finish and the report (written when the run ends with errors) lists it as failed.
    In a copy of the Snakemake run with a grid of new cells: the data and base checkpoints are done."""
    project = tmp_path / "diverging"
    shutil.copytree(snakemake_run, project, symlinks=True)
    params = {**TEST_PARAMS, "checkpoints": without(TEST_PARAMS["checkpoints"], "after_first", "after_second"), "grid": {"studies": {"max_lr": {"vary": {"max_lr": [1.5e-3, 3e-3]},
                                                             "baselines": [{"max_lr": 1e6, "warmup_fraction": 0.0}]}}}}
    params["benchmark"] = None  # training's failure is the point: no harness jobs
    write_params(project / "params.yaml", params)
    cells = list(grid.cells(grid.from_dict(params)))
    assert not any((project / "runs" / cell).exists() for cell in cells)
    bad = grid.cell_name(grid.cells(grid.from_dict(params))[cells[-1]])
    assert "lr-1000000" in bad
    result = snakemake("--cores", "2", "--keep-going", "--printshellcmds", cwd=project, check=False)
    assert result.returncode != 0
    ran = set(re.findall(r"^(?:Shell command: )?(?:exec )?rewarm (\w+) ", result.stdout + result.stderr, re.MULTILINE))
    assert ran == {"train", "evaluate"}, ran  # nothing before training is done again (the report: by onerror)
    log = (project / "logs/train" / f"{bad}.log").read_text()
    message = next(line for line in log.splitlines() if "loss is" in line)
    assert " at step " in message and ("loss is inf" in message or "loss is nan" in message)
    for cell in cells[:-1]:
        assert (project / "evals/cells" / f"{cell}.json").exists(), cell
    assert not (project / "runs" / bad / "metrics.json").exists()
    report = (project / "reports/report.md").read_text()
    # Each cell's row goes by its short label (study and varied setting), its full name in the tooltip.
    row = next(line for line in report.splitlines() if line.startswith(f'| <abbr title="{bad}">max_lr: max LR 1e6</abbr> |'))
    assert "failed:" in row and " at step " in row
    assert f"1 of {len(cells)} cells did not finish" in report
    assert all(f'<abbr title="{cell}">max_lr: ' in report and f"| `{cell}` |" in report for cell in cells[:-1])


@pytest.mark.slow
def test_two_dvc_runs_at_once_the_second_is_refused(tmp_path):
    """DVC's repository lock: a second `dvc repro` while the first runs fails with DVC's message."""
    project = copy_project(tmp_path / "dvc-lock", {**small_params(grid={"studies": {}}), "benchmark": None})  # DVC tracks the `grid` key
    git_commit(project, "project")
    with open(project / "first.log", "w") as log:
        # The first runs the stages up to one corpus's shards (long enough to be caught running), the second all.
        first = subprocess.Popen(["dvc", "repro", "assemble@upstream"], cwd=project, env=run_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: (project / "data/raw").exists() or list(project.glob("data/raw.partial-*")), first, "dvc started")
            second = run("dvc", "repro", cwd=project, check=False)
        finally:
            first.wait(timeout=600)
    # DVC refuses through its repository lock or, once the first holds its stages' paths, its rwlock.
    refused = second.stdout + second.stderr
    assert second.returncode != 0 and ("Unable to acquire lock" in refused or "is busy, it is being blocked by" in refused), refused
    assert first.returncode == 0, (project / "first.log").read_text()[-2000:]


@pytest.mark.slow
def test_two_trainings_of_one_cell_at_once(prepared_copy):
    """Without a front end, the cell's state directory is locked: a second `rewarm train` refuses."""
    from tests.project import cell_of, train_args

    write_params(prepared_copy / "params.yaml", small_params(train={"tokens": 20480 * 20}))  # long enough to overlap
    cell = cell_of(prepared_copy)
    command = [sys.executable, "-m", "rewarm", *train_args(cell)]
    first = subprocess.Popen(command, cwd=prepared_copy, env=run_env(), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (prepared_copy / "state/runs" / cell / "state.json").exists(), first, "the first saved a state")
        second = rewarm(*train_args(cell), cwd=prepared_copy, check=False)
        assert first.poll() is None, "the first run ended before the second started: no overlap tested"
    finally:
        first.send_signal(signal.SIGTERM)  # no need to train 800 steps: the first stops as a pre-empted job does
        first.wait(timeout=600)
    assert second.returncode == 1
    assert f"state/runs/{cell}: training of {cell} is already running in another process" in second.stderr
    # The refused second run left the first alone: it was still training, and saved its state on SIGTERM.
    assert first.returncode == 143 and json.loads((prepared_copy / "state/runs" / cell / "state.json").read_text())["step"] > 0


NO_FLOCK = (  # a file system without flock (Lustre mounted without it): flock fails with ENOSYS
    "import errno, fcntl, sys, time\n"
    "def missing(*args):\n"
    "    raise OSError(errno.ENOSYS, 'Function not implemented')\n"
    "fcntl.flock = missing\n"
    "from rewarm.io import BusyError, exclusive\n"
    "try:\n"
    "    with exclusive(sys.argv[1], 'training of the cell'):\n"
    "        print('held', flush=True)\n"
    "        time.sleep(float(sys.argv[2]))\n"
    "except BusyError as error:\n"
    "    print(error, flush=True)\n"
)


@pytest.mark.fault
def test_the_state_lock_works_without_flock_and_is_taken_over_from_a_dead_holder(tmp_path):
    """Where the file system has no flock, the lock is a marker file naming its holder: a second
    process is refused while the holder lives, and takes the lock once the holder was killed."""
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", NO_FLOCK, str(state), "600"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = subprocess.run([sys.executable, "-c", NO_FLOCK, str(state), "0"], capture_output=True, text=True, timeout=60)
        assert refused.stdout.strip() == f"{state}: training of the cell is already running in another process; wait for it " \
                                         "to finish or stop it", refused.stderr
    finally:
        holder.kill()  # SIGKILL: the marker stays behind, naming a process that is gone
        holder.wait()
    assert (state / ".rewarm-lock").exists()
    taken = subprocess.run([sys.executable, "-c", NO_FLOCK, str(state), "0"], capture_output=True, text=True, timeout=60)
    assert taken.stdout.strip() == "held", taken.stderr


def test_disk_too_small_for_shards_stops_before_writing(project_copy):
    """A source far larger than the free space (a sparse file: its size is real, its blocks are not)."""
    free = os.statvfs(project_copy).f_bavail * os.statvfs(project_copy).f_frsize
    huge = project_copy / "huge.jsonl"
    with open(huge, "wb") as f:
        f.truncate(min(4 * free, 15 * 10**12))
    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "jsonl", "path": "huge.jsonl"}}
    write_params(project_copy / "params.yaml", params)
    result = rewarm("prepare", "--corpus", "extra", "--tokenizer", "data/tokenizer", "--out", "data/tokens/extra",
                    cwd=project_copy, check=False)
    assert result.returncode == 1
    assert "prepare extra: needs about" in result.stderr and "free some space" in result.stderr
    assert not list((project_copy / "data").glob("tokens/extra*"))


@pytest.mark.slow
def test_disk_too_small_for_a_checkpoint_stops_before_writing(project_copy):
    """A scratch model of trillions of bytes: refused before any weight is allocated."""
    params = small_params(model={"hidden_size": 16384, "num_heads": 64, "intermediate_size": 65536, "num_layers": 400})
    write_params(project_copy / "params.yaml", params)
    result = rewarm("select", "--name", "scratch", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/scratch",
                    cwd=project_copy, check=False)
    assert result.returncode == 1
    assert "select scratch: needs about" in result.stderr and "TB" in result.stderr
    assert not (project_copy / "checkpoints").exists()


def test_no_secret_reaches_logs_metrics_or_tracked_files(snakemake_run):
    """The whole-pipeline run had a hub token and remote credentials in its environment: no file it
    wrote (logs, metrics, reports, DVCLive files, models, Snakemake's own records) holds them."""
    written = [p for p in snakemake_run.rglob("*") if p.is_file()]
    assert len(written) > 100 and (snakemake_run / "reports/report.md").exists()
    assert (snakemake_run / "snakemake-output.log").stat().st_size > 1000
    leaks = [str(p.relative_to(snakemake_run)) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.bad_input
@pytest.mark.parametrize("args, victim, owner", [
    # the corpus's name left off: data/tokens holds every corpus's shards
    (["prepare", "--corpus", "upstream", "--tokenizer", "data/tokenizer", "--out", "data/tokens"], "data/tokens", "not an output of rewarm's"),
    (["tasks", "--out", "data"], "data", "not an output of rewarm's"),
    (["tasks", "--out", "."], ".", "not an output of rewarm's"),
    # another stage's output
    (["select", "--name", "scratch", "--tokenizer", "data/tokenizer", "--out", "data/tokens/upstream"], "data/tokens/upstream",
     "`rewarm prepare`'s output"),
    (["tokenizer", "--out", "checkpoints/base/scratch"], "checkpoints/base/scratch", "`rewarm select`'s output"),
])
def test_an_out_that_is_not_the_stages_own_is_refused_and_left_as_it_was(prepared_copy, args, victim, owner):
    """A stage replaces only a directory it made (its marker, .rewarm-output, says so) or an empty one: an --out
    given by mistake is refused before any work, naming the directory and whose it is, and nothing in it changes."""
    before = digests(prepared_copy / victim)
    result = rewarm(*args, cwd=prepared_copy, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{victim}: exists and is {owner}" in result.stderr and "refusing to replace it" in result.stderr, result.stderr[-2000:]
    assert digests(prepared_copy / victim) == before


def test_a_stage_replaces_its_own_output(prepared_copy):
    """A stage's own output (or an empty directory) it replaces, as a rerun does."""
    (prepared_copy / "empty").mkdir()
    rewarm("tasks", "--out", "empty", cwd=prepared_copy)
    assert json.loads((prepared_copy / "empty/.rewarm-output").read_text()) == {"made_by": "tasks"}
    (prepared_copy / "empty/stale.yaml").write_text("left by an earlier run\n")
    rewarm("tasks", "--out", "empty", cwd=prepared_copy)
    assert not (prepared_copy / "empty/stale.yaml").exists()
    # what Snakemake leaves before a job (an output's parent directories) and after one (its timestamp) is not content
    (prepared_copy / "made/curves").mkdir(parents=True)
    (prepared_copy / "made/.snakemake_timestamp").touch()
    rewarm("tasks", "--out", "made", cwd=prepared_copy)
    assert made_by(prepared_copy / "made") == "tasks"
