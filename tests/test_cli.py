"""The command line as a user meets it, and the project's two documented commands."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, rewarm


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
