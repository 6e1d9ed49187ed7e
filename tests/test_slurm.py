"""The SLURM profile against a real single-node SLURM started on this machine (tests/slurm_cluster.sh):
jobs go through the scheduler, a training job cancelled with `scancel` is retried and resumes from
its saved state, and the outputs equal those of a local run."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import yaml

from tests.project import ROOT, SCHEDULED_PARAMS, assert_same_results, copy_project, run_env

pytestmark = [pytest.mark.slurm, pytest.mark.fault]
CLUSTER = ROOT / "tests/slurm_cluster.sh"
# The profile as shipped, fitted to this 2-core machine: the same training threads as a local run (so the
# numbers are bit-identical; prepare's shards are the same for any), no GPUs, and memory the node has.
FIT = ["--set-threads", "prepare=1", "pretrain=1", "train=1",
       "--set-resources", "train:gpu=0", "train:mem_mb=3000", "pretrain:gpu=0", "prepare:mem_mb=3000",
       "evaluate:gpu=0", "evaluate:mem_mb=3000", "evaluate_base:gpu=0", "evaluate_base:mem_mb=3000",
       # A scheduler on this machine answers at once: poll every second, not every 5 as on a busy cluster.
       "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """A running single-node cluster; its clients' environment. Stopped by process id afterwards."""
    directory = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(CLUSTER), "start", str(directory)], capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**run_env(), "SLURM_CONF": str(directory / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], capture_output=True, text=True, timeout=120)


def squeue(env: dict) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of every job the controller remembers; the plugin's comment names the rule."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%k"], env=env, capture_output=True, text=True, check=True)
    return [tuple(line.split("|", 2)) for line in out.stdout.splitlines()]


def test_grid_through_slurm_equals_a_local_run(slurm, snakemake_run, tmp_path):
    project = copy_project(tmp_path / "slurm", SCHEDULED_PARAMS)
    listing = yaml.safe_load((project / "workflow/grid.yaml").read_text())
    cells = list(listing["cells"])
    command = ["timeout", "-k", "10", "1200", sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm", *FIT]
    with open(project / "snakemake.log", "w") as log:
        run = subprocess.Popen(command, cwd=project, env=slurm, stdout=log, stderr=subprocess.STDOUT)
        # Pre-empt one training job once it has saved a state: scancel, as an administrator or the scheduler would.
        cancelled = None
        deadline = time.monotonic() + 900
        while cancelled is None:
            assert run.poll() is None, "the run ended before a training job could be cancelled"
            assert time.monotonic() < deadline, "no training job saved a state in time"
            for job, state, comment in squeue(slurm):
                cell = comment.removeprefix("rule_train_wildcards_")
                if state == "RUNNING" and cell in cells and (project / "state/runs" / cell / "state.json").exists():
                    subprocess.run(["scancel", job], env=slurm, check=True)
                    cancelled = (job, cell)
                    break
            time.sleep(0.5)
        run.wait(timeout=1200)
    output = (project / "snakemake.log").read_text()
    assert run.returncode == 0, output[-5000:]

    # Every job went through the scheduler: submitted with a SLURM job id, each with its SLURM log.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    # generate, tokenizer, prepare x 3 corpora in one part each (`assemble` runs locally), pretrain, select_step
    # of the one base checkpoint, train and evaluate of the one cell, evaluate_base, report, and the cancelled
    # job's retry (SCHEDULED_PARAMS: no benchmarks), and forecast (which says there is none: no cells to fit on).
    assert len(cells) == 1
    assert len(submitted) == 1 + 1 + 3 + 1 + 1 + 2 + 1 + 1 + 1 + 1, submitted
    assert len(list((project / ".snakemake/slurm_logs/rule_prepare").glob("*/*.log"))) == 3
    assert not (project / ".snakemake/slurm_logs/rule_assemble").exists()
    job, cell = cancelled
    states = {j: s for j, s, _ in squeue(slurm)}
    assert states.get(job) == "CANCELLED"
    retried = sorted((project / ".snakemake/slurm_logs/rule_train" / cell).glob("*.log"))
    assert len(retried) == 2, retried  # the cancelled job and its retry
    assert "resuming from step" in (project / "logs/train" / f"{cell}.log").read_text()

    # The same results as the local run of the same configuration.
    assert_same_results(project, snakemake_run, cells)
