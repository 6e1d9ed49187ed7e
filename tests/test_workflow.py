"""The real `snakemake` and `dvc repro` on the embedded demo, in a temporary copy of the project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewarm.data import sources
from tests.conftest import ROOT, rewarm, run_env, small_params, write_params

PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc", ".dvcignore", ".gitignore"]


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


def run(*command: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def snakemake(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "snakemake", *args, cwd=cwd, check=check)


def digests(root: Path) -> dict[str, str]:
    """sha256 of every data file under root (Snakemake's directory markers are not data)."""
    return {
        str(p.relative_to(root)): sources.file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory) -> Path:
    """The whole pipeline under Snakemake on the small configuration (same stages, tiny sizes)."""
    project = copy_project(tmp_path_factory.mktemp("snakemake"), small_params(train={"checkpoint": "final"}))
    snakemake("--cores", "2", cwd=project)
    return project


def test_grid_file_for_dvc_is_up_to_date(tmp_path):
    """dvc.yaml reads the cells from workflow/grid.yaml; it must match params.yaml."""
    project = copy_project(tmp_path / "grid")
    rewarm("grid", "--write", "fresh.yaml", cwd=project)
    assert (project / "fresh.yaml").read_text() == (ROOT / "workflow/grid.yaml").read_text(), "run `rewarm grid --write workflow/grid.yaml`"


def test_snakemake_runs_the_chain_to_a_trained_cell(snakemake_run):
    cell = cell_name(snakemake_run)
    run_dir = snakemake_run / "runs" / cell
    for name in ("metrics.json", "metrics.jsonl", "config.json", "model/model.safetensors", "dvclive/metrics.json"):
        assert (run_dir / name).is_file(), name
    series = yaml.safe_load((snakemake_run / "checkpoints/pretrain/series.json").read_text())
    assert series["final"] == "step40"
    assert (snakemake_run / "checkpoints/base/scratch/model.safetensors").is_file()
    assert "train" in (snakemake_run / f"logs/train/{cell}.log").read_text()


def cell_name(project: Path) -> str:
    return next(iter(yaml.safe_load((project / "workflow/grid.yaml").read_text())["cells"]))


def test_snakemake_builds_every_corpus_and_split(snakemake_run):
    for corpus in ("upstream", "downstream"):
        for split in ("train", "val"):
            split_dir = snakemake_run / "data/tokens" / corpus / split
            assert (split_dir / "manifest.json").is_file()
            assert list(split_dir.glob("shard-*.arrow"))
    assert (snakemake_run / "data/tokenizer/tokenizer.json").is_file()
    assert (snakemake_run / "logs/benchmarks/prepare/upstream.tsv").is_file()
    assert "upstream/train" in (snakemake_run / "logs/prepare/upstream.log").read_text()
    # Up to date: a dry run has nothing to do.
    assert "Nothing to be done" in snakemake("-n", cwd=snakemake_run).stdout


def test_dvc_repro_gives_the_same_outputs(snakemake_run, tmp_path):
    project = copy_project(tmp_path / "dvc", small_params(train={"checkpoint": "final"}))
    run("git", "init", "-q", cwd=project)
    # A repository with a commit, as users have (DVCLive asks git for the current revision).
    run("git", "add", "-A", cwd=project)
    run("git", "-c", "user.name=rewarm", "-c", "user.email=rewarm@localhost", "commit", "-qm", "project", cwd=project)
    run("dvc", "repro", cwd=project)
    assert digests(project / "data/tokens") == digests(snakemake_run / "data/tokens")
    assert digests(project / "data/tokenizer") == digests(snakemake_run / "data/tokenizer")
    assert digests(project / "checkpoints") == digests(snakemake_run / "checkpoints")
    cell = cell_name(project)
    for name in ("model/model.safetensors", "metrics.json"):
        assert sources.file_sha256(project / "runs" / cell / name) == sources.file_sha256(snakemake_run / "runs" / cell / name)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    expected = {"generate", "tokenizer", "prepare@upstream", "prepare@downstream", "pretrain", "select@early",
                "select@final", "select@scratch", f"train@{cell}"}
    assert expected <= set(lock["stages"])
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=project).stdout


def test_changed_budget_reruns_only_that_corpus_and_what_follows(snakemake_run, tmp_path):
    project = tmp_path / "edited"
    shutil.copytree(snakemake_run, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["corpora"]["downstream"]["train"]["max_tokens"] = 5_000
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    planned = snakemake("-n", "--printshellcmds", cwd=project).stdout
    assert "--corpus downstream" in planned and "rewarm train" in planned
    for untouched in ("--corpus upstream", "rewarm generate", "rewarm pretrain", "rewarm select"):
        assert untouched not in planned, untouched


def test_bad_parameter_stops_snakemake_before_any_job(tmp_path):
    project = copy_project(tmp_path / "bad")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["seq_len"] = -1
    params["corpora"]["upstream"]["train"]["type"] = "parquet"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = snakemake("--cores", "2", cwd=project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "prepare.seq_len: -1 must be a positive integer" in output
    assert "corpora.upstream.train.type: 'parquet' is not one of 'demo', 'jsonl', 'hf'" in output
    assert not (project / "data").exists()
