"""Shared fixtures: a throwaway tokenizer trained in-process (as nanochat's tests do), demo
corpora written to temporary files, the small project prepared once, the whole pipeline run once
under Snakemake; and the markers' hooks. Helpers live in tests/project.py (no test module here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rewarm.data import demo
from rewarm.data import tokenizer as tok
from tests.project import SECRET, TEST_FORECAST, TEST_PARAMS, copy_of, copy_project, rewarm, run_env, small_params, snakemake, write_params

# No test may reach the network: the hub clients fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def demo_texts() -> list[str]:
    return [r["text"] for r in demo.generate_records("upstream", 400, seed=7)]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, demo_texts) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_trained(tok.train_bpe(demo_texts, vocab_size=1024), out)
    return out


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    return tok.load(tokenizer_dir)


@pytest.fixture(scope="session")
def small_project(tmp_path_factory) -> Path:
    """A project directory with the small demo generated and its tokenizer trained (read-only for tests)."""
    root = tmp_path_factory.mktemp("project")
    write_params(root / "params.yaml", small_params())
    rewarm("generate", "--out", "data/raw", cwd=root)
    rewarm("tokenizer", "--out", "data/tokenizer", cwd=root)
    return root


@pytest.fixture
def project_copy(tmp_path, small_project) -> Path:
    """A writable copy of the small project."""
    return copy_of(small_project, tmp_path)


@pytest.fixture(scope="session")
def prepared_project(small_project, tmp_path_factory) -> Path:
    """The small project with both corpora prepared and the scratch checkpoint selected (read-only)."""
    root = tmp_path_factory.mktemp("prepared")
    shutil.copytree(small_project, root, dirs_exist_ok=True)
    for corpus in ("upstream", "downstream"):
        rewarm("prepare", "--corpus", corpus, "--tokenizer", "data/tokenizer", "--out", f"data/tokens/{corpus}", cwd=root)
    rewarm("select", "--name", "scratch", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/scratch", cwd=root)
    return root


@pytest.fixture
def prepared_copy(tmp_path, prepared_project) -> Path:
    """A writable copy of the prepared project."""
    return copy_of(prepared_project, tmp_path)


@pytest.fixture(scope="session")
def snakemake_run(tmp_path_factory) -> Path:
    """The whole pipeline under Snakemake on the small configuration (same stages, tiny sizes),
    with secrets in the environment, as a user logged in to the hub and a DVC remote has."""
    project = copy_project(tmp_path_factory.mktemp("snakemake"), {**TEST_PARAMS, "forecast": TEST_FORECAST})
    env = {**run_env(), "HF_TOKEN": SECRET, "HUGGING_FACE_HUB_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET}
    result = snakemake("--cores", "2", cwd=project, env=env)
    (project / "snakemake-output.log").write_text(result.stdout + result.stderr)
    return project


SLURM_MISSING = shutil.which("slurmctld") is None or shutil.which("sbatch") is None


def gpu_missing() -> bool:
    import torch

    return not torch.cuda.is_available()


# marker -> (whether what its tests need is missing here, the summary's line when they are left out)
NEEDS = {
    "slurm": (lambda: SLURM_MISSING, "SLURM IS NOT INSTALLED HERE: {n} slurm test(s) NOT RUN "
                                     "(bash tests/slurm_cluster.sh install needs apt-get and root)"),
    "node": (lambda: shutil.which("node") is None, "NODE.JS IS NOT INSTALLED HERE: {n} node test(s) NOT RUN "
                                                    "(they render Vega as a browser would: apt-get install nodejs)"),
    "gpu": (gpu_missing, "NO CUDA DEVICE HERE: {n} gpu test(s) NOT RUN (run `python -m pytest -m gpu -s` on a machine with one)"),
}
LEFT_OUT = "left out here, needs {marker}"
"""The reason a test whose marker's requirement is missing is skipped with; the summary counts them."""


# Fixtures that run a whole pipeline or several training processes: a test that uses one is `slow`.
HEAVY_FIXTURES = {"snakemake_run", "torchrun_run", "fsdp_run"}
def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `slurm` need a SLURM installation (scripts/setup.sh --with-slurm installs one
    where apt-get and root are at hand), tests marked `gpu` a CUDA device; without them they are
    skipped, and the summary says so in capitals. A test that uses one of the HEAVY_FIXTURES or runs
    SLURM is `slow`: the fast tier (`-m "not slow"`) leaves it out. With `-n 2` (pytest-xdist, the
    README's test command), tests go to whichever worker is free (`--dist load`): each worker that runs a
    test of the Snakemake run makes that run once (grouping them on one worker, `--dist loadgroup`,
    measured slower: its worker then ran the pipeline, DVC and SLURM tests one after another)."""
    missing = {marker for marker, (is_missing, _) in NEEDS.items() if any(marker in item.keywords for item in items) and is_missing()}
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if HEAVY_FIXTURES & fixtures or "slurm" in item.keywords:
            item.add_marker(pytest.mark.slow)
        for marker in missing & set(item.keywords):
            item.add_marker(pytest.mark.skip(reason=LEFT_OUT.format(marker=marker)))


def pytest_terminal_summary(terminalreporter) -> None:
    """Counts of the faults injected and survived and the bad inputs tried and refused (each
    parametrized case counts once): the figures issue 6 asks for, from this very run."""
    lines = []
    for marker, tried, held in (("fault", "faults injected", "survived"), ("bad_input", "bad inputs tried", "refused")):
        outcomes = [r.outcome for status in ("passed", "failed") for r in terminalreporter.stats.get(status, [])
                    if getattr(r, "when", "") == "call" and marker in r.keywords]
        if outcomes:
            lines.append(f"{tried}: {len(outcomes)}, {held}: {outcomes.count('passed')}")
    skipped = [str(getattr(r, "longrepr", "")) for r in terminalreporter.stats.get("skipped", [])]
    for marker, (_, banner) in NEEDS.items():
        left_out = sum(LEFT_OUT.format(marker=marker) in reason for reason in skipped)
        if left_out:
            terminalreporter.write_sep("!", banner.format(n=left_out))
    if lines:
        terminalreporter.write_sep("-", "faults and bad inputs")
        for line in lines:
            terminalreporter.write_line(line)
