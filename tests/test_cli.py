"""The command line as a user meets it, and the project's two documented commands."""

from __future__ import annotations

import re

import pytest

from tests.project import ROOT, rewarm


def test_help_lists_every_stage(tmp_path):
    out = rewarm("--help", cwd=tmp_path).stdout
    for stage in ("generate", "tokenizer", "prepare"):
        assert re.search(rf"^\s+{stage}\s", out, re.MULTILINE), stage
    prepare_help = rewarm("prepare", "--help", cwd=tmp_path).stdout
    assert "--workers" in prepare_help and "identical for any count" in prepare_help


@pytest.mark.bad_input
def test_missing_params_file_is_a_clear_error(tmp_path):
    result = rewarm("generate", "--out", "raw", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "params.yaml: configuration file not found" in result.stderr


@pytest.mark.bad_input
@pytest.mark.parametrize("stage", ["evaluate", "train"])
def test_a_val_without_its_name_is_a_usage_error(stage, tmp_path):
    result = rewarm(stage, "--val", "data/tokens/upstream/val", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --val: expected NAME=PATH, got 'data/tokens/upstream/val'" in result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(b for b in blocks if "pytest" in b)
    main_command = next(b for b in blocks if "snakemake" in b)
    assert test_command in (ROOT / ".ci/run").read_text()
    assert blocks.index(main_command) < blocks.index(test_command) <= 1  # the README opens with the two commands


def test_ranks_under_torchrun_share_the_jobs_threads(monkeypatch):
    """Snakemake passes the job's threads; the torchrun processes of a node share them instead of each
    taking all (8 threads over 4 local ranks: 2 each; never fewer than 1)."""
    import torch

    from rewarm.cli import _set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        _set_threads(8)
        assert torch.get_num_threads() == 2
        _set_threads(3)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        _set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_grid_lists_a_grid_without_studies_and_stops_quietly_when_its_reader_goes(tmp_path):
    """`rewarm grid` on a configuration that declares no studies (its `train` section alone, as the
    test grid) lists that cell; piped into `head`, it ends without a traceback or "Broken pipe"."""
    import shutil
    import subprocess
    import sys

    shutil.copy(ROOT / ".test/params.yaml", tmp_path / "params.yaml")
    listed = rewarm("grid", cwd=tmp_path).stdout
    assert listed.startswith("study train: The reference cell (no studies declared)\n  ckpt-") and listed.count("\n") == 2
    # Into a reader that is gone before the listing is written (`true` reads nothing and exits at once,
    # long before Python has started): the write fails with EPIPE, as into a `head` that has had enough.
    script = f"{shlex_quote(sys.executable)} -m rewarm grid --params {shlex_quote(str(ROOT / 'params.yaml'))} | true"
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert piped.stderr == "" and piped.returncode == 0, piped.stderr


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_set_overrides_one_setting_through_the_same_checks(tmp_path):
    """`--set SECTION.KEY=VALUE` after the files, for a one-off run (as litgpt's --train.max_lr): the value
    read as YAML (6e-4 a number, as a command line means it), checked with the rest; a wrong key or a
    malformed override is refused naming it, before anything runs."""
    import shutil

    import yaml

    shutil.copy(ROOT / ".test/params.yaml", tmp_path / "params.yaml")
    merged = yaml.safe_load(rewarm("params", "--set", "train.max_lr=6e-4", "--set", "train.schedule=constant",
                                   "--set", "prepare.seq_len=32", cwd=tmp_path).stdout)
    assert merged["train"]["max_lr"] == 6e-4 and merged["train"]["schedule"] == "constant" and merged["prepare"]["seq_len"] == 32
    unknown = rewarm("params", "--set", "train.max_lrr=6e-4", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and "--set train.max_lrr=6e-4: 1 problem:\n  train.max_lrr: unknown key" in unknown.stderr
    wrong = rewarm("params", "--set", "train.schedule=sideways", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "train.schedule" in wrong.stderr and "cosine" in wrong.stderr  # the allowed values listed
    malformed = rewarm("params", "--set", "train", cwd=tmp_path, check=False)
    assert malformed.returncode == 2 and "--set 'train': expected SECTION.KEY=VALUE" in malformed.stderr
    assert "Traceback" not in unknown.stderr + wrong.stderr + malformed.stderr
