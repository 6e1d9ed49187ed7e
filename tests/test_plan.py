"""Paper scale: config/paper.yaml merged over params.yaml, `rewarm plan` against hand-computed
numbers for Pythia-410M, the merged configuration for DVC, and the full grid in a dry run."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from rewarm import config as cfg
from rewarm import grid
from rewarm import plan
from rewarm.config import loading
from tests.project import ROOT, rewarm
from tests.project import copy_project, snakemake

PAPER = [ROOT / "params.yaml", ROOT / "config/paper.yaml"]


def test_paper_config_is_the_papers_grid():
    config = grid.load(PAPER)
    assert list(config.corpora) == ["upstream", "downstream"]  # the demo's extra corpus is removed
    assert config.corpora["upstream"].train.type == "hf" and config.corpora["downstream"].val.path == "cerebras/SlimPajama-627B"
    # The deduplicated model, as the authors' run names say (config/paper.yaml says why)
    assert config.checkpoints["final"] == cfg.HubCheckpoint(type="hub", repo_id="EleutherAI/pythia-410m-deduped", revision="step143000")
    assert config.prepare.seq_len == 2048 and config.tokenizer.name_or_path == "EleutherAI/pythia-410m-deduped"
    assert config.checkpoints["scratch"].init == "gpt-neox" and config.train.loss_scale_window == 1000
    assert cfg.min_lr(config.train) == pytest.approx(0.1 * config.train.max_lr)
    assert config.train.weight_decay == 0.1 and config.train.batch_sequences == 1104 and config.train.precision == "fp16"
    cells = grid.cells(config)
    assert len(cells) == 17
    assert {c.max_lr for c in cells.values()} == {1.5e-4, 3e-4, 6e-4, 3e-5}
    assert {c.checkpoint for c in cells.values()} == {"step10000", "step27000", "final", "scratch"}
    assert {config.checkpoints[c].revision for c in ("step10000", "step27000", "final")} == {"step10000", "step27000", "step143000"}


def test_the_five_studies_expand_to_the_papers_cells():
    """Each study of [G] section 4 as the paper ran it, read off the paper by hand."""
    config = grid.load(PAPER)
    cells, studies = grid.cells(config), grid.studies(config)
    steps_per = lambda tokens: tokens // (1104 * 2048)  # noqa: E731
    def described(names):
        return sorted((cells[n].checkpoint, cells[n].max_lr, cells[n].schedule, cells[n].warmup_fraction, cells[n].train_corpus,
                       steps_per(cells[n].tokens)) for n in names)
    s50, s240 = 22_114, 106_148  # 50B and 240B tokens in steps of 1104 x 2048
    assert described(studies["warmup"]) == sorted(("final", 3e-4, "neox-floored-cosine", w, "downstream", s50) for w in (0.0, 0.005, 0.01, 0.02))
    assert described(studies["max_lr"]) == sorted([("final", lr, "neox-floored-cosine", 0.01, "downstream", s240) for lr in (1.5e-4, 3e-4, 6e-4)]
                                                  + [("final", 3e-5, "constant", 0.0, "downstream", s240)])
    assert described(studies["scratch"]) == sorted(("scratch" if i else "final", 3e-4, "neox-floored-cosine", 0.01, "downstream", s240) for i in (0, 1))
    assert described(studies["same_data"]) == sorted([("final", lr, "neox-floored-cosine", 0.01, "upstream", s50) for lr in (1.5e-4, 3e-4, 6e-4)]
                                                     + [("final", 3e-5, "constant", 0.0, "upstream", s50)])
    assert described(studies["checkpoints"]) == sorted((c, 3e-4, "neox-floored-cosine", w, "downstream", s50)
                                                       for c in ("step10000", "step27000", "final") for w in (0.0, 0.01))
    # Every cell: one schedule of 131,296 steps over the 296.86B-token dataset ([NX] train-iters), no separate decay
    # end; the Pile runs: 181,793 steps, as their names say ([NX] configs/load/wu_001_lr*_pile.yml).
    for run in cells.values():
        length = 181_793 if run.train_corpus == "upstream" else 131_296
        assert cfg.schedule_steps(run, 2048) == length and cfg.decay_steps(run, 2048) == length
    # The warm-up study's 1% cell is the max-LR study's 3e-4 cell stopped at 50B: trained once.
    shared = {n: r for n, r in grid.trained_by(config).items() if n != r}
    assert shared == {"ckpt-final_lr-3e-4_warm-1e-2_sched-neox-floored-cosine_replay-0_tokens-50B":
                      "ckpt-final_lr-3e-4_warm-1e-2_sched-neox-floored-cosine_replay-0_tokens-240B"}


def test_plan_matches_hand_computed_numbers_for_pythia_410m():
    config = grid.load(PAPER)
    result = plan.plan(config, vocab_size=50304, mfu=0.4, peak_tflops=989.0, concurrent=2)
    d, layers, vocab, seq, micro, batch = 1024, 24, 50304, 2048, 6, 1104
    # Per layer: QKV (d x 3d + 3d), output (d x d + d), MLP (d x 4d + 4d, 4d x d + d), two LayerNorms (4d);
    # plus the final LayerNorm (2d) and untied input and output embeddings (2 V d).
    parameters = layers * (12 * d * d + 13 * d) + 2 * d + 2 * vocab * d
    assert parameters == 405_334_016 == result.parameters  # Pythia-410M's published count
    # fp32 weights, gradients, Adam moments and autocast's half copies (18 bytes); activations; logits in
    # half precision, their float32 copy for the loss and its gradient (10 bytes each).
    memory = 18 * parameters + 34 * seq * micro * d * layers + 10 * seq * micro * vocab
    total_hours = 0.0
    for budget, steps in ((50_000_000_000, 22_114), (240_000_000_000, 106_148)):
        tokens = steps * batch * seq
        assert tokens <= budget < tokens + batch * seq
        flops = 6 * parameters * tokens
        hours = flops / (0.4 * 989e12) / 3600
        group = [c for c in result.cells if c.steps == steps]
        for cell in group:
            assert cell.tokens == tokens and cell.flops == pytest.approx(flops, rel=1e-12)
            assert cell.gpu_hours == pytest.approx(hours, rel=1e-12) and cell.memory_bytes == memory
        total_hours += hours * sum(c.run == c.name for c in group)
    # 17 cells: 12 of 50B (one read from a 240B run) and 5 of 240B: 16 runs are paid for.
    assert len(result.cells) == 17 and len(result.runs) == 16
    assert result.gpu_hours == pytest.approx(total_hours) and total_hours == pytest.approx((11 * 22_114 + 5 * 106_148) * hours / 106_148)
    assert result.shard_bytes == 2 * (50_000_000_000 + 22_609_920 + 240_000_000_000 + 22_609_920)
    # Evaluation: forward passes (2 x parameters x tokens). A 50B run evaluates at step 0, every 100 steps,
    # every 50 over the first 2,626 and at its end (22,114), 22,609,920 tokens on each of 2 corpora; each
    # cell's `evaluate` job reads both validation budgets; the cell read from a 240B run only that job.
    evaluations = len({0, *range(100, 22_115, 100), *range(50, 2_627, 50), 22_114})
    assert evaluations == 1 + 221 + 52 - 26 + 1
    eval_hours = lambda tokens: 2 * parameters * tokens / (0.4 * 989e12) / 3600  # noqa: E731
    job = 2 * 22_609_920
    fifty = next(c for c in result.cells if c.steps == 22_114 and c.run == c.name)
    assert fifty.eval_tokens == evaluations * 2 * 22_609_920 + job
    assert fifty.eval_gpu_hours == pytest.approx(eval_hours(evaluations * 2 * 22_609_920 + job), rel=1e-12)
    shared = next(c for c in result.cells if c.run != c.name)
    assert shared.eval_tokens == job and result.base_eval_gpu_hours == pytest.approx(4 * eval_hours(job))
    # Four base checkpoints, 17 cells' models plus the shared one recorded in its run, two states at once.
    assert result.checkpoint_bytes == 4 * parameters * (4 + 17 + 1) + 3 * 4 * parameters * 2


def test_plan_command_prints_every_cell(tmp_path):
    out = rewarm("plan", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--mfu", "0.5", cwd=tmp_path).stdout
    assert "405,334,016 parameters; 17 cells in 5 studies, 16 training runs" in out and "MFU 50%" in out
    for study in ("warmup", "max_lr", "scratch", "same_data", "checkpoints"):
        assert f"study {study}\n" in out
    # 50B cells (22,114 steps of 1104 x 2048), listed once per study they are in; the shared one says where it is read from.
    assert out.count("49,999,577,088") == 4 + 4 + 6 and out.count("(read from ckpt-final_lr-3e-4_warm-1e-2_sched-neox-floored-cosine_replay-0_tokens-240B)") == 2
    assert "total, 16 runs" in out and "disk: shards" in out


def test_plan_under_the_slurm_profile_gives_each_run_its_jobs_and_refuses_what_cannot_finish(tmp_path):
    """The shipped SLURM profile finishes every paper run (training jobs of 24 h on 8 GPUs, 4 submissions);
    on one GPU a 240B-token run needs 19 jobs and the plan refuses before anything runs."""
    import math

    parameters, seq, batch, eval_tokens = 405_334_016, 2048, 1104, 22_609_920
    cell = "ckpt-final_lr-6e-4_warm-1e-2_sched-neox-floored-cosine_replay-0_tokens-240B"  # no shorter cell recorded
    steps = 106_148
    evaluations = len({0, *range(100, steps + 1, 100), *range(50, 2_627, 50), steps})
    flops = 6 * parameters * steps * batch * seq + 2 * parameters * evaluations * 2 * eval_tokens
    gpu_hours = flops / (0.4 * 989e12) / 3600
    profile = ROOT / "workflow/profiles/slurm"
    out = rewarm("plan", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--profile", str(profile), cwd=tmp_path).stdout
    jobs = math.ceil(gpu_hours / 8 * 60 / (1440 - 15))  # 15 minutes of each job do not train
    assert jobs == 3 and f"{cell} {gpu_hours / 8:.1f} {jobs}" in [" ".join(line.split()) for line in out.splitlines()], out[-3000:]
    assert "training jobs of 1440 min on 8 GPUs, submitted up to 4 times (retries 3)" in out and "in 3 of 4 jobs" in out

    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["set-resources"]["train"]["gpu"] = 1
    (tmp_path / "one-gpu").mkdir()
    (tmp_path / "one-gpu/config.yaml").write_text(yaml.safe_dump(settings))
    refused = rewarm("plan", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--profile", str(tmp_path / "one-gpu"),
                     cwd=tmp_path, check=False)
    one_gpu = math.ceil(gpu_hours * 60 / (1440 - 15))
    assert one_gpu == 19 and refused.returncode == 2
    assert f"5 run(s) cannot finish: ckpt-final_lr-15e-5_warm-1e-2_sched-neox-floored-cosine_replay-0_tokens-240B needs {one_gpu} " \
           "training jobs" in refused.stderr and "the profile submits a job at most 4 times" in refused.stderr, refused.stderr


@pytest.mark.bad_input
def test_a_profile_without_a_usable_runtime_is_refused_naming_the_key(tmp_path):
    (tmp_path / "config.yaml").write_text("retries: 2\nset-resources:\n  train:\n    runtime: 10\n")
    refused = rewarm("plan", "--params", str(PAPER[0]), "--profile", str(tmp_path), cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "runtime must be more than 15 minutes" in refused.stderr and "Traceback" not in refused.stderr


# Pythia's published parameter counts (the EleutherAI/pythia README's table) and its shapes:
# (layers, model dimension, vocabulary rows); Ibrahim et al.'s 10B is not published with a count.
PYTHIA = {"pythia-410m": (405_334_016, 24, 1024, 50304), "pythia-1b": (1_011_781_632, 16, 2048, 50304),
          "pythia-1.4b": (1_414_647_808, 24, 2048, 50304), "pythia-2.8b": (2_775_208_960, 32, 2560, 50304),
          "pythia-6.9b": (6_857_302_016, 32, 4096, 50432), "pythia-12b": (11_846_072_320, 36, 5120, 50688)}


def test_memory_per_gpu_under_ddp_and_fsdp_for_the_published_sizes(tmp_path):
    """`rewarm plan --sizes`: every Pythia size with its published parameter count, the memory per GPU
    under DDP and FSDP by the formulas written out here, and which one fits on 8 GPUs of 80 GB."""
    seq, micro, gpus, budget = 2048, 6, 8, 80e9
    verdicts = {}
    for name, (count, layers, d, vocab) in PYTHIA.items():
        model, rows = plan.size_model(name)
        assert plan.parameter_count(model, rows) == count == layers * (12 * d * d + 13 * d) + 2 * d + 2 * vocab * d
        activations_and_logits = 34 * seq * micro * d * layers + 10 * seq * micro * vocab
        ddp = 18 * count + activations_and_logits
        root, block = 2 * vocab * d + 2 * d, 12 * d * d + 13 * d
        fsdp = -(-16 * count // gpus) + 2 * root + 4 * block + 6 * block + activations_and_logits
        assert plan.peak_memory(count, model, rows, seq, micro) == ddp
        assert plan.fsdp_memory(count, model, rows, seq, micro, gpus) == fsdp
        # Activation checkpointing: each layer's bf16 input (2 bytes an element) and one layer recomputed (34).
        kept = (2 * layers + 34) * seq * micro * d
        assert plan.peak_memory(count, model, rows, seq, micro, checkpointing=True) == ddp - 34 * seq * micro * d * layers + kept
        assert plan.fsdp_memory(count, model, rows, seq, micro, gpus, checkpointing=True) == fsdp - 34 * seq * micro * d * layers + kept
        verdicts[name] = "DDP and FSDP" if ddp <= budget else "FSDP (train.parallel: fsdp)" if fsdp <= budget else "other"
    # 18 bytes per parameter: DDP stops below 2.8B on an 80 GB GPU; FSDP over 8 takes 6.9B.
    assert verdicts == {"pythia-410m": "DDP and FSDP", "pythia-1b": "DDP and FSDP", "pythia-1.4b": "DDP and FSDP",
                        "pythia-2.8b": "FSDP (train.parallel: fsdp)", "pythia-6.9b": "FSDP (train.parallel: fsdp)",
                        "pythia-12b": "other"}
    out = rewarm("plan", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--sizes", cwd=tmp_path).stdout
    assert "micro-batch of 6 x 2048 tokens, DDP and FSDP over 8 GPUs of 80.0 GB" in out
    for name, verdict in verdicts.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert f"{PYTHIA[name][0]:,}" in line and (verdict in line if verdict != "other" else "micro_batch_sequences <=" in line)
    assert "ibrahim-10b" in out
    # The grid's own verdict: Pythia-410M fits under DDP on one GPU; a 6.9B model at the same settings needs FSDP.
    one = plan.plan(grid.load(PAPER), 50304, 0.4, 989.0, gpus=1)
    grid_out = plan.render(one, 0.4, 989.0, "", gpus=1, gpu_bytes=int(80e9))
    assert "with 1 GPU of 80.0 GB per cell, the grid fits under DDP" in grid_out and "FSDP mem/GPU" in grid_out
    big = ROOT / "config/pythia-6.9b.yaml"  # the README's example of switching the studies to another size
    config = grid.load([*PAPER, big])
    assert config.train.parallel == "fsdp" and config.checkpoints["final"].repo_id == "EleutherAI/pythia-6.9b-deduped"
    assert all(cell.batch_sequences % (8 * cell.micro_batch_sequences) == 0 for cell in grid.cells(config).values())
    big_out = plan.render(plan.plan(config, config.tokenizer.vocab_size, 0.4, 989.0, gpus=8), 0.4, 989.0, "", gpus=8, gpu_bytes=int(80e9))
    assert "6,857,302,016 parameters" in big_out and "with 8 GPUs of 80.0 GB per cell, the grid needs FSDP" in big_out


def test_merged_configuration_for_dvc(tmp_path):
    rewarm("params", "--params", str(PAPER[0]), "--params", str(PAPER[1]), "--write", "merged.yaml", cwd=tmp_path)
    assert grid.load(tmp_path / "merged.yaml") == grid.load(PAPER)


@pytest.mark.parametrize("override, check", [
    ({"corpora": {"news": None}}, lambda c: "news" not in c.corpora),
    ({"corpora": {"upstream": {"val": {"type": "jsonl", "path": "params.yaml"}}}},
     lambda c: c.corpora["upstream"].val == cfg.JsonlSource(type="jsonl", path="params.yaml")),
    ({"checkpoints": {"early": {"type": "scratch", "seed": 3}}}, lambda c: c.checkpoints["early"] == cfg.ScratchCheckpoint(type="scratch", seed=3)),
    ({"train": {"warmup_fraction": None, "warmup_steps": 5}}, lambda c: c.train.warmup_fraction is None and c.train.warmup_steps == 5),
])
def test_later_files_replace_changed_types_and_remove_null_entries(tmp_path, override, check):
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(override))
    assert check(grid.load([ROOT / "params.yaml", tmp_path / "over.yaml"], base_dir=ROOT))


def test_a_later_mixture_replaces_the_earlier_whole():
    """config/paper.yaml's Pile validation mixture (22 parts) replaced by one of two SlimPajama parts: the
    weights are the later file's only, not the union; `mixture: null` removes SlimPajama's training mixture."""
    over = {"corpora": {"upstream": {"val": {"mixture": {"field": "meta.redpajama_set_name", "weights": {"RedPajamaC4": 1.0, "RedPajamaArXiv": 3.0}}}},
                        "downstream": {"train": {"mixture": None}}}}
    merged = loading.deep_merge(yaml.safe_load((ROOT / "config/paper.yaml").read_text()), over)
    assert len(yaml.safe_load((ROOT / "config/paper.yaml").read_text())["corpora"]["upstream"]["val"]["mixture"]["weights"]) == 22
    assert merged["corpora"]["upstream"]["val"]["mixture"] == over["corpora"]["upstream"]["val"]["mixture"]
    assert merged["corpora"]["upstream"]["val"]["max_tokens"] == 22_609_920  # the rest of the source still merges
    assert merged["corpora"]["downstream"]["train"]["mixture"] is None


def test_dry_run_shows_the_full_paper_grid(tmp_path):
    project = copy_project(tmp_path / "paper")
    (project / "config").mkdir()
    (project / "config/paper.yaml").write_text((ROOT / "config/paper.yaml").read_text())
    planned = snakemake("-n", "--quiet", "rules", "--configfile", "config/paper.yaml", cwd=project).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in planned.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["train"] == 16 and counts["prefix"] == 1 and counts["evaluate"] == 17 and counts["select"] == 4
    # Each corpus in parts (prepare.parts 32), each part its own job; their joining runs locally.
    assert counts["prepare"] == 2 * 32 and counts["assemble"] == 2
    assert "pretrain" not in counts  # the checkpoints come from the hub
    # Ibrahim et al. 2024's harness tasks on every final model and base checkpoint; no demo tasks to write
    # beyond the (empty) task directory.
    assert counts["benchmark"] == 17 and counts["benchmark_base"] == 4 and counts["tasks"] == 1


@pytest.mark.slow
def test_paper_grid_evaluates_on_gpus_under_the_slurm_profile(tmp_path):
    """Under the SLURM profile, evaluation jobs get a GPU and the training jobs' memory, with a runtime
    from their validation tokens (evaluation_minutes: 2 x 405M x 45.2M FLOPs at 100 TFLOP/s, x3, +15)."""
    project = copy_project(tmp_path / "paper")
    (project / "config").mkdir()
    (project / "config/paper.yaml").write_text((ROOT / "config/paper.yaml").read_text())
    printed = {}

    def jobs(*args: str) -> list[tuple[str, str]]:
        planned = snakemake("-n", *args, cwd=project)
        printed[args] = planned.stdout + planned.stderr
        return re.findall(r"^rule (evaluate|evaluate_base|benchmark|benchmark_base|train):\n(?:    .*\n)*?    resources: (.*)$",
                          planned.stdout + planned.stderr, re.MULTILINE)

    # Without a profile's settings too: the paper's device (cuda) gives every training and evaluation job a GPU.
    local = jobs("--configfile", "config/paper.yaml")
    assert len(local) == 2 * (17 + 4) + 16 and all("gpu=1" in resources for _, resources in local)
    demo = jobs()
    assert demo and all("gpu=0" in resources for _, resources in demo)  # the demo's device is auto: none asked for
    slurm = jobs("--profile", "workflow/profiles/slurm", "--configfile", "config/paper.yaml")
    found = {rule: sum(r == rule for r, _ in slurm) for rule in ("evaluate", "evaluate_base", "benchmark", "benchmark_base", "train")}
    assert found == {"evaluate": 17, "evaluate_base": 4, "benchmark": 17, "benchmark_base": 4, "train": 16}
    for rule, resources in slurm:  # training on a node's 8 GPUs (rewarm plan --profile: every run finishes)
        gpus, signal = ("gpu=8", "slurm_extra=--signal=TERM@600") if rule == "train" else ("gpu=1", "")
        assert gpus in resources and signal in resources and "mem_mb=64000" in resources, (rule, resources)
    # The corpora's parts are separate cluster jobs (prepare.parts 32 each, with the profile's memory and
    # time); `assemble` joins them on the submitting node.
    text = printed[("--profile", "workflow/profiles/slurm", "--configfile", "config/paper.yaml")]
    parts = re.findall(r"^rule prepare:\n(?:    .*\n)*?    wildcards: corpus=(\w+), part=(\d+)\n(?:    .*\n)*?    resources: (.*)$",
                       text, re.MULTILINE)
    assert sorted((corpus, int(part)) for corpus, part, _ in parts) == [(c, p) for c in ("downstream", "upstream") for p in range(32)]
    assert all("mem_mb=16000" in resources and "runtime=720" in resources for _, _, resources in parts), parts[0]
    assert len(re.findall(r"^(?:local)?rule assemble:", text, re.MULTILINE)) == 2  # local: the SLURM test checks it
    # A select job holds the model in float32 and the .bin file's tensors (8 bytes a parameter) and 4 GB more.
    selects = re.findall(r"^rule select:\n(?:    .*\n)*?    resources: (.*)$", text, re.MULTILINE)
    assert len(selects) == 4 and all(f"mem_mb={math.ceil(8 * 405_334_016 / 1e6) + 4000}," in r for r in selects), selects[:1]
    minutes = max(60, int(3 * 2 * 405_334_016 * 2 * 22_609_920 / 100e12 / 60) + 15)
    assert all(f"runtime={minutes}" in r for rule, r in slurm if rule.startswith("evaluate"))
    import dataclasses

    config = grid.load(PAPER)
    deeper = dataclasses.replace(config, model=dataclasses.replace(config.model, num_layers=24 * 40))
    assert plan.evaluation_minutes(config, 50304) == minutes < plan.evaluation_minutes(deeper, 50304)  # the limit follows the model


IBRAHIM = [*PAPER, ROOT / "config/ibrahim2024.yaml"]


def test_ibrahim_config_is_their_studies():
    """config/ibrahim2024.yaml: Table 2's replay shares and the union baseline, and the infinite schedules
    with the authors' values ([NX] adam_infcos_lr3e-4_3e-5_wu-001.yml), over three datasets in sequence."""
    config = grid.load(IBRAHIM)
    cells = grid.cells(config)
    studies = grid.studies(config)
    assert [cells[n].replay_fraction for n in studies["replay"]] == [0.0, 0.005, 0.01, 0.05, 0.1, 0.5, 0.5]
    union = cells[studies["replay"][-1]]
    # [NX] train-iters: 132,366 per 300B dataset, 264,732 for the union, 44,229 per 100B split (1104 x 2048 tokens each)
    assert union.checkpoint == "scratch" and union.tokens == 2 * cells[studies["replay"][0]].tokens == 264_732 * 1104 * 2048
    assert cells[studies["replay"][0]].tokens == 132_366 * 1104 * 2048
    assert {cells[n].tokens for s in ("infinite_cosine", "infinite_inv_sqrt") for n in studies[s]} == {44_229 * 1104 * 2048}
    # [NX] slim_pajama_300B.yml: the SlimPajama weights of their runs
    weights = config.corpora["downstream"].train.mixture.weights
    assert {k: round(v, 2) for k, v in weights.items()} == {
        "RedPajamaCommonCrawl": 52.09, "RedPajamaC4": 26.69, "RedPajamaGithub": 5.22, "RedPajamaArXiv": 4.43,
        "RedPajamaBook": 4.20, "RedPajamaWikipedia": 4.00, "RedPajamaStackExchange": 3.37}
    for name in studies["replay"]:
        run = cells[name]
        assert (run.max_lr, run.min_lr, run.warmup_fraction, run.schedule) == (3e-4, 3e-5, 0.01, "neox-cosine")
        assert run.schedule_tokens is None and run.decay_end_tokens is None  # re-decayed over the run itself
    for study, shape in (("infinite_cosine", "infinite-cosine"), ("infinite_inv_sqrt", "infinite-inv-sqrt")):
        first, second, third = (cells[n] for n in studies[study])
        assert {c.schedule for c in (first, second, third)} == {shape} and {c.constant_lr for c in (first, second, third)} == {1.65e-4}
        assert [c.train_corpus for c in (first, second, third)] == ["split1", "split2", "split3"]
        assert (first.cooldown_end_fraction, first.warmup_fraction, third.constant_end_fraction) == (0.6, 0.01, 0.85)
        assert second.warmup_fraction == third.warmup_fraction == 0.0 == second.cooldown_end_fraction
        continued = grid.continued(config)
        assert continued[second.checkpoint].cell == studies[study][0] and continued[third.checkpoint].cell == studies[study][1]
        assert continued[second.checkpoint].optimizer


def test_ibrahim_plan_and_dry_run(tmp_path):
    """The authors' iteration counts ([NX]): 132,366 steps per 300B dataset, the union 264,732, a 100B split
    44,229. 13 runs. The dry run chains the datasets: 4 select_cell jobs."""
    args = [a for path in IBRAHIM for a in ("--params", str(path))]
    out = rewarm("plan", *args, cwd=tmp_path).stdout
    assert "405,334,016 parameters; 13 cells in 3 studies, 13 training runs" in out
    assert out.count(" 132,366 ") == 6 and out.count(" 264,732 ") == 1 and out.count(" 44,229 ") == 6
    ten_b = rewarm("plan", *args, "--params", str(ROOT / "config/ibrahim2024-10b.yaml"), cwd=tmp_path).stdout
    # By hand: 36 layers x (QKV 4608 x 13824 + 13824, out 4608^2 + 4608, MLP 2 x 4608 x 18432 + 18432 + 4608,
    # 2 LayerNorms 4 x 4608) = 36 x 254,863,872, + final LayerNorm 9,216 + untied in/out embeddings 2 x 50,304 x 4608.
    assert 36 * 254_863_872 + 9_216 + 2 * 50_304 * 4_608 == 9_638_710_272
    assert "9,638,710,272 parameters" in ten_b
    project = copy_project(tmp_path / "ibrahim")
    (project / "config").mkdir()
    for name in ("paper.yaml", "ibrahim2024.yaml"):
        (project / "config" / name).write_text((ROOT / "config" / name).read_text())
    planned = snakemake("-n", "--quiet", "rules", "--configfile", "config/paper.yaml", "config/ibrahim2024.yaml", cwd=project).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in planned.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["train"] == 13 and counts["select_cell"] == 4 and counts["select"] == 2 and counts["prepare"] == 5 * 32


@pytest.mark.parametrize("layers, hidden, heads, intermediate, vocab", [(2, 64, 4, 256, 320), (3, 96, 6, 200, 512), (1, 32, 2, 48, 258)])
def test_parameter_count_by_formula_equals_the_model_transformers_builds(layers, hidden, heads, intermediate, vocab):
    """`plan.parameter_count` counts by formula, so that planning imports no torch; transformers'
    own GPT-NeoX, built on the meta device, counts the same (an MLP not 4 x hidden included)."""
    from rewarm import checkpoints

    model = cfg.ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=128)
    counted = checkpoints.parameter_count(checkpoints.architecture(model, vocab))
    assert plan.parameter_count(model, vocab) == counted


def test_olmo2_plan_counts_olmo2_1b_by_hand():
    """config/olmo2-1b.yaml: OLMo 2 1B's parameters by hand from its config.json (untied embeddings of
    100,352 rows x 2,048, a final RMSNorm; per layer four 2048 x 2048 attention projections, three
    2048 x 8192 SwiGLU projections, two RMSNorms and the query and key norms of 2,048 each)."""
    config = grid.load([*PAPER, ROOT / "config/olmo2-1b.yaml"])
    root = 2 * 100_352 * 2_048 + 2_048
    block = 4 * 2_048 * 2_048 + 3 * 2_048 * 8_192 + 2 * 2_048 + 2 * 2_048
    assert plan.parameter_count(config.model, config.tokenizer.vocab_size) == root + 16 * block == 1_484_916_736
    assert plan.unit_parameters(config.model, config.tokenizer.vocab_size, root + 16 * block) == (root, block)


def test_llama_plan_counts_tinyllama_by_hand_and_swaps_the_corpora():
    """config/llama-1b.yaml: TinyLlama 1.1B's parameters by hand from its config.json (untied embeddings of
    32,000 rows x 2,048, a final RMSNorm; per layer the query and output projections 2048 x 2048, key and
    value 2048 x 256 (4 groups of 64), three 2048 x 5632 SwiGLU projections and two RMSNorms), the model's
    published 1,100,048,384; its checkpoints study in the order of tokens seen; SlimPajama upstream."""
    config = grid.load([*PAPER, ROOT / "config/llama-1b.yaml"])
    root = 2 * 32_000 * 2_048 + 2_048
    block = 2 * 2_048 * 2_048 + 2 * 2_048 * 256 + 3 * 2_048 * 5_632 + 2 * 2_048
    assert plan.parameter_count(config.model, config.tokenizer.vocab_size) == root + 22 * block == 1_100_048_384
    assert "step10000" not in config.checkpoints and "step27000" not in config.checkpoints
    cells = grid.cells(config)
    studied = [cells[n].checkpoint for n in grid.studies(config)["checkpoints"] if n.endswith("warm-0_sched-neox-floored-cosine_replay-0_tokens-50B")]
    assert studied == ["step50k", "step240k", "final"]
    upstream, downstream = config.corpora["upstream"], config.corpora["downstream"]
    assert upstream.val.path == upstream.train.path == "cerebras/SlimPajama-627B" and len(upstream.val.mixture.weights) == 7
    assert downstream.train.path == "monology/pile-uncopyrighted" and downstream.train.mixture is None
    assert len(downstream.val.mixture.weights) == 22  # the Pile's own parts only, not merged with SlimPajama's

