"""Paper scale: config/paper.yaml merged over params.yaml, `rewarm plan` against hand-computed
numbers for Pythia-410M, the merged configuration for DVC, and the full grid in a dry run."""

from __future__ import annotations

import pytest
import yaml

from rewarm import config as cfg
from rewarm import plan
from tests.conftest import ROOT, rewarm
from tests.test_workflow import copy_project, snakemake

PAPER = [ROOT / "params.yaml", ROOT / "config/paper.yaml"]


def test_paper_config_is_the_papers_grid():
    config = cfg.load(PAPER)
    assert list(config.corpora) == ["upstream", "downstream"]  # the demo's extra corpus is removed
    assert config.corpora["upstream"].train.type == "hf" and config.corpora["downstream"].val.path == "cerebras/SlimPajama-627B"
    assert config.checkpoints["final"] == cfg.HubCheckpoint(type="hub", repo_id="EleutherAI/pythia-410m", revision="step143000")
    assert config.prepare.seq_len == 2048 and config.tokenizer.name_or_path == "EleutherAI/pythia-410m"
    assert cfg.min_lr(config.train) == pytest.approx(0.1 * config.train.max_lr)
    cells = cfg.cells(config)
    assert len(cells) == 10
    assert {c.max_lr for c in cells.values()} == {1.5e-4, 3e-4, 6e-4, 3e-5}
    assert {c.checkpoint for c in cells.values()} == {"early", "mid", "final", "scratch"}


def test_plan_matches_hand_computed_numbers_for_pythia_410m():
    config = cfg.load(PAPER)
    result = plan.plan(config, vocab_size=50304, mfu=0.4, peak_tflops=989.0, concurrent=2)
    d, layers, vocab, seq, micro = 1024, 24, 50304, 2048, 16
    # Per layer: QKV (d x 3d + 3d), output (d x d + d), MLP (d x 4d + 4d, 4d x d + d), two LayerNorms (4d);
    # plus the final LayerNorm (2d) and untied input and output embeddings (2 V d).
    parameters = layers * (12 * d * d + 13 * d) + 2 * d + 2 * vocab * d
    assert parameters == 405_334_016 == result.parameters  # Pythia-410M's published count
    steps = 45_000_000_000 // (1024 * seq)
    tokens = steps * 1024 * seq
    assert (steps, tokens) == (21_457, 44_998_590_464)
    flops = 6 * parameters * tokens
    hours = flops / (0.4 * 989e12) / 3600
    memory = 16 * parameters + 34 * seq * micro * d * layers + 6 * seq * micro * vocab
    for cell in result.cells:
        assert (cell.steps, cell.tokens) == (steps, tokens)
        assert cell.flops == pytest.approx(flops, rel=1e-12) and cell.gpu_hours == pytest.approx(hours, rel=1e-12)
        assert cell.memory_bytes == memory
    assert result.gpu_hours == pytest.approx(10 * hours)
    assert result.shard_bytes == 2 * (100_000_000 + 20_000_000 + 50_000_000_000 + 20_000_000)
    assert result.checkpoint_bytes == 4 * parameters * (4 + 10) + 3 * 4 * parameters * 2


def test_plan_command_prints_every_cell(tmp_path):
    out = rewarm("plan", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--mfu", "0.5", cwd=tmp_path).stdout
    assert "405,334,016 parameters; 10 cells" in out and "MFU 50%" in out
    assert out.count("44,998,590,464") == 10 and "total" in out and "disk: shards" in out


def test_merged_configuration_for_dvc(tmp_path):
    rewarm("params", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--write", "merged.yaml", cwd=tmp_path)
    assert cfg.load(tmp_path / "merged.yaml") == cfg.load(PAPER)


@pytest.mark.parametrize("override, check", [
    ({"corpora": {"news": None}}, lambda c: "news" not in c.corpora),
    ({"corpora": {"upstream": {"val": {"type": "jsonl", "path": "params.yaml"}}}},
     lambda c: c.corpora["upstream"].val == cfg.JsonlSource(type="jsonl", path="params.yaml")),
    ({"checkpoints": {"early": {"type": "scratch", "seed": 3}}}, lambda c: c.checkpoints["early"] == cfg.ScratchCheckpoint(type="scratch", seed=3)),
    ({"train": {"warmup_fraction": None, "warmup_steps": 5}}, lambda c: c.train.warmup_fraction is None and c.train.warmup_steps == 5),
])
def test_later_files_replace_changed_types_and_remove_null_entries(tmp_path, override, check):
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(override))
    assert check(cfg.load([ROOT / "params.yaml", tmp_path / "over.yaml"], base_dir=ROOT))


def test_dry_run_shows_the_full_paper_grid(tmp_path):
    project = copy_project(tmp_path / "paper")
    (project / "config").mkdir()
    (project / "config/paper.yaml").write_text((ROOT / "config/paper.yaml").read_text())
    planned = snakemake("-n", "--quiet", "rules", "--configfile", "config/paper.yaml", cwd=project).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in planned.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["train"] == 10 and counts["evaluate"] == 10 and counts["select"] == 4 and counts["prepare"] == 2
    assert "pretrain" not in counts  # the checkpoints come from the hub
