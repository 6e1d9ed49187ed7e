"""Shared fixtures: a throwaway tokenizer trained in-process (as nanochat's tests do), demo
corpora written to temporary files, and a helper that runs the real `rewarm` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewarm import config as cfg
from rewarm import grid
from rewarm.data import demo
from rewarm.data import tokenizer as tok

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# No test may reach the network: the hub clients fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


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


def copy_of(source: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(source, dest)
    return dest


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


def train_args(cell: str, base: str = "checkpoints/base/scratch", out: str | None = None, state: str | None = None) -> list[str]:
    return [
        "train", "--cell", cell, "--base", base,
        "--train", "data/tokens/downstream/train", "--replay", "data/tokens/upstream/train",
        "--val", "upstream=data/tokens/upstream/val", "--val", "downstream=data/tokens/downstream/val",
        "--state", state or f"state/runs/{cell}", "--out", out or f"runs/{cell}",
    ]


def cell_of(project: Path) -> str:
    return next(iter(grid.cells(cfg.load(project / "params.yaml"))))


# A hub token and remote credentials set for the whole-pipeline run: no file it writes may hold them.
SECRET = "hf_rewarmTestSecret0123456789"


@pytest.fixture(scope="session")
def snakemake_run(tmp_path_factory) -> Path:
    """The whole pipeline under Snakemake on the small configuration (same stages, tiny sizes),
    with secrets in the environment, as a user logged in to the hub and a DVC remote has."""
    from tests.test_workflow import TEST_PARAMS, copy_project, snakemake

    project = copy_project(tmp_path_factory.mktemp("snakemake"), TEST_PARAMS)
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
    "gpu": (gpu_missing, "NO CUDA DEVICE HERE: {n} gpu test(s) NOT RUN (run `python -m pytest -m gpu -s` on a machine with one)"),
}


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `slurm` need a SLURM installation (scripts/setup.sh --with-slurm installs one
    where apt-get and root are at hand), tests marked `gpu` a CUDA device; without them they are
    left out, and the summary says so in capitals."""
    for marker, (missing, _) in NEEDS.items():
        left_out = [item for item in items if marker in item.keywords]
        if left_out and missing():
            items[:] = [item for item in items if marker not in item.keywords]
            config.hook.pytest_deselected(items=left_out)
            setattr(config, f"_rewarm_{marker}_left_out", len(left_out))


def pytest_terminal_summary(terminalreporter) -> None:
    """Counts of the faults injected and survived and the bad inputs tried and refused (each
    parametrized case counts once): the figures issue 6 asks for, from this very run."""
    lines = []
    for marker, tried, held in (("fault", "faults injected", "survived"), ("bad_input", "bad inputs tried", "refused")):
        outcomes = [r.outcome for status in ("passed", "failed") for r in terminalreporter.stats.get(status, [])
                    if getattr(r, "when", "") == "call" and marker in r.keywords]
        if outcomes:
            lines.append(f"{tried}: {len(outcomes)}, {held}: {outcomes.count('passed')}")
    for marker, (_, banner) in NEEDS.items():
        left_out = getattr(terminalreporter.config, f"_rewarm_{marker}_left_out", 0)
        if left_out:
            terminalreporter.write_sep("!", banner.format(n=left_out))
    if lines:
        terminalreporter.write_sep("-", "faults and bad inputs")
        for line in lines:
            terminalreporter.write_line(line)
