"""The real `snakemake` and `dvc repro` on the embedded demo, in a temporary copy of the project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewarm.data import sources
from tests.conftest import ROOT, run_env

PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc", ".dvcignore", ".gitignore"]


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
        else:
            shutil.copy2(source, dest / name)
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
    project = copy_project(tmp_path_factory.mktemp("snakemake"))
    snakemake("--cores", "2", cwd=project)
    return project


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


def test_dvc_repro_gives_the_same_shards(snakemake_run, tmp_path):
    project = copy_project(tmp_path / "dvc")
    run("git", "init", "-q", cwd=project)
    run("dvc", "repro", cwd=project)
    assert digests(project / "data/tokens") == digests(snakemake_run / "data/tokens")
    assert digests(project / "data/tokenizer") == digests(snakemake_run / "data/tokenizer")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert {"generate", "tokenizer", "prepare@upstream", "prepare@downstream"} <= set(lock["stages"])
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=project).stdout


def test_changed_budget_reruns_only_that_corpus(snakemake_run, tmp_path):
    project = tmp_path / "edited"
    shutil.copytree(snakemake_run, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["corpora"]["downstream"]["train"]["max_tokens"] = 50_000
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = snakemake("-n", "--quiet", "rules", cwd=project).stdout
    assert "prepare" in dry
    planned = snakemake("-n", "--printshellcmds", cwd=project).stdout
    assert "--corpus downstream" in planned
    assert "--corpus upstream" not in planned and "rewarm generate" not in planned


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
