"""config/paper.yaml with its real shapes, offline: a randomly initialised Pythia-410M-shaped model
(built by `select` from a local config.json with Pythia-410M's published dimensions), a local
tokenizer loaded through the `pretrained` path, and stand-ins for the corpora made of demo text.
On CPU: one training step of one 2048-token sequence, peak memory against `rewarm plan`'s estimate. On a
GPU (tests marked `gpu`, left out loudly where there is none): a few hundred steps of a paper
cell's shape, with tokens/s, MFU and peak GPU memory against plan."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewarm import grid
from rewarm import plan
from rewarm.data import demo
from rewarm.data import tokenizer as tok
from tests.project import ROOT, run_env

pytestmark = pytest.mark.slow
PYTHIA_410M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "max_position_embeddings": 2048, "vocab_size": 50304}
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (an H200 has the same)


class PaperProject:
    """A project directory with params.yaml, config/paper.yaml and a stand-in file over them,
    prepared up to the base checkpoint, ready to train its one cell."""

    def __init__(self, root: Path, records: int, train: dict):
        from transformers import GPTNeoXConfig

        self.root = root
        # Stand-ins: two long documents per split, in the corpora's JSON-lines format, made of demo text.
        texts = []
        for seed, domain in ((11, "downstream"), (12, "upstream")):
            rows = [r["text"] for r in demo.generate_records(domain, records, seed=seed)]
            texts += [" ".join(rows[i::2]) for i in range(2)]
        for name, pair in (("down", texts[:2]), ("up", texts[2:])):
            (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in pair))
        # A local tokenizer directory and a Pythia-410M config.json: what the hub would give, offline.
        tok.save_trained(tok.train_bpe(texts, vocab_size=4096), root / "pythia-tokenizer")
        (root / "pythia-410m").mkdir()
        GPTNeoXConfig(**PYTHIA_410M, rotary_pct=0.25, use_parallel_residual=True,
                      tie_word_embeddings=False).save_pretrained(root / "pythia-410m")
        standin = {
            "tokenizer": {"type": "pretrained", "name_or_path": "pythia-tokenizer", "revision": None},
            "corpora": {c: {s: {"type": "jsonl", "path": f"{f}.jsonl"} for s in ("train", "val")}
                        for c, f in (("upstream", "up"), ("downstream", "down"))},
            "checkpoints": {"final": {"type": "scratch", "seed": 0, "config": "pythia-410m", "revision": None},
                            "early": None, "mid": None, "scratch": None},
            "train": train,
            "grid": {"studies": {"one_step": {"vary": {"checkpoint": ["final"]}}}},
            "forecast": {"fit": []},  # one cell: nothing to forecast
        }
        (root / "standin.yaml").write_text(yaml.safe_dump(standin))
        (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        (root / "paper.yaml").write_text((ROOT / "config/paper.yaml").read_text())
        self.params = ["--params", "params.yaml", "--params", "paper.yaml", "--params", "standin.yaml"]
        self.rewarm("tokenizer", "--out", "data/tokenizer")
        for corpus in ("upstream", "downstream"):
            self.rewarm("prepare", "--corpus", corpus, "--tokenizer", "data/tokenizer", "--out", f"data/tokens/{corpus}")
        self.rewarm("select", "--name", "final", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/final")
        self.cell = json.loads(self.rewarm("grid", "--format", "json").stdout).popitem()[0]
        self.run_dir = root / "runs" / self.cell
        self.config = grid.load([root / "params.yaml", root / "paper.yaml", root / "standin.yaml"], base_dir=root)

    def rewarm(self, command: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "rewarm", command, *self.params, *args], cwd=self.root,
                                env=run_env(), capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    def train(self, *args: str, val: tuple[str, ...] = ("upstream", "downstream")) -> subprocess.CompletedProcess:
        vals = [arg for corpus in val for arg in ("--val", f"{corpus}=data/tokens/{corpus}/val")]
        return self.rewarm("train", "--cell", self.cell, "--base", "checkpoints/base/final",
                           "--train", "data/tokens/downstream/train", *vals, "--state", f"state/runs/{self.cell}",
                           "--out", f"runs/{self.cell}", *args)

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()]

    def estimate(self, micro_batch: int) -> tuple[int, int]:
        """(parameters, plan's peak-memory estimate for this micro-batch)."""
        parameters = plan.parameter_count(self.config.model, 50304)
        return parameters, plan.peak_memory(parameters, self.config.model, 50304, 2048, micro_batch)


def check_paper_shapes(project: PaperProject) -> None:
    manifest = json.loads((project.root / "data/tokens/downstream/train/manifest.json").read_text())
    assert manifest["seq_len"] == 2048 and manifest["sequences"] >= 2 and manifest["dtype"] == "uint16"
    config = json.loads((project.run_dir / "model/config.json").read_text())
    assert {k: config[k] for k in PYTHIA_410M} == PYTHIA_410M
    assert project.estimate(1)[0] == 405_334_016


# The paper's schedule spans 297B tokens; these few steps have their own schedule (and no dense early evaluation).
ONE_SCHEDULE = {"schedule_tokens": None, "decay_end_tokens": None, "early_eval_every": None, "early_eval_steps": 0}


def test_one_step_of_the_paper_config_on_cpu(tmp_path):
    project = PaperProject(tmp_path, records=400, train={
        "tokens": 2048, "batch_sequences": 1, "micro_batch_sequences": 1, "eval_every": 1, "eval_tokens": 2048,
        "device": "cpu", "compile": False, **ONE_SCHEDULE, "precision": "fp32"})
    # One validation corpus: each evaluation of a 2,048-token sequence at this size takes seconds on 2 cores.
    project.train("--threads", "2", val=("downstream",))
    # The largest resident set of any child so far: the training step's (select holds one copy of the weights).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    check_paper_shapes(project)
    rows = project.rows()
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["tokens"] == 2048
    assert 8.0 < rows[0]["val/downstream/loss"] < 12.0  # a random model over 50,304 ids: about ln(50304) = 10.8
    parameters, estimate = project.estimate(1)
    print(f"\npaper-scale step on CPU: peak RSS {peak / 1e9:.2f} GB; plan's GPU estimate for micro-batch 1: {estimate / 1e9:.2f} GB "
          f"(weights, gradients and Adam moments alone: {16 * parameters / 1e9:.2f} GB)")
    # Float32 weights, gradients and both Adam moments are really resident (16 bytes per parameter),
    # and the whole is within the estimate doubled (CPU keeps float32 activations where a GPU keeps bf16).
    assert 16 * parameters < peak < 2 * estimate


def peak_gpu_memory(stderr: str) -> float:
    """Bytes, from the line `rewarm train` logs at the end of a run on a GPU."""
    match = re.search(r"peak GPU memory ([0-9.]+) GB", stderr)
    assert match, f"no peak GPU memory line in the training log:\n{stderr[-3000:]}"
    return float(match.group(1)) * 1e9


def test_peak_gpu_memory_line_is_read():
    assert peak_gpu_memory("x: peak GPU memory 25.12 GB (torch.cuda.max_memory_allocated on rank 0)") == 25.12e9
    with pytest.raises(AssertionError, match="no peak GPU memory line"):
        peak_gpu_memory("no such line")


@pytest.mark.gpu
def test_a_few_hundred_paper_steps_on_a_gpu(tmp_path):
    """300 steps of 16 x 2048 tokens (micro-batch 8, bf16 autocast, torch.compile as paper.yaml
    sets it) on demo text: the loss falls, and tokens/s, MFU and peak memory are printed next to
    plan's figures; the measured peak must be within a factor of 1.5 of plan's estimate."""
    steps, batch, micro = 300, 16, 8
    project = PaperProject(tmp_path, records=6000, train={
        "tokens": steps * batch * 2048, "batch_sequences": batch, "micro_batch_sequences": micro, "eval_every": 100,
        "eval_tokens": 8 * 2048, "save_every": 100, "device": "cuda", "compile": True, **ONE_SCHEDULE,
        "precision": "bf16"})
    result = project.train()
    check_paper_shapes(project)
    rows = project.rows()
    assert rows[-1]["step"] == steps and rows[-1]["val/downstream/loss"] < rows[0]["val/downstream/loss"] - 1.0
    parameters, estimate = project.estimate(micro)
    peak = peak_gpu_memory(result.stderr)
    rate = rows[-1]["tokens_per_s"]  # the last interval: compilation is behind it
    mfu = 6 * parameters * rate / H100_BF16_PEAK
    print(f"\npaper-shaped cell on GPU, {steps} steps of {batch} x 2048 tokens (micro-batch {micro}): {rate:,.0f} tokens/s, "
          f"MFU {mfu:.1%} of 989 TFLOP/s (plan assumes 40%); peak GPU memory {peak / 1e9:.2f} GB, plan's estimate "
          f"{estimate / 1e9:.2f} GB (measured / estimate {peak / estimate:.2f})")
    assert estimate / 1.5 < peak < 1.5 * estimate

    # `rewarm evaluate` runs where the model runs: on the GPU, bf16, a batch that fills it.
    evaluated = project.rewarm("evaluate", "--model", f"runs/{project.cell}/model", "--tokens", "data/tokens",
                               "--out", "evals/final.json")
    logged = re.findall(r"(\w+): (\d+) tokens on (cuda:\d) \(bf16, (\d+) sequences per pass\) in [0-9.]+ s: (\d+) tokens/s",
                        evaluated.stderr)
    assert {corpus for corpus, *_ in logged} == {"upstream", "downstream"}, evaluated.stderr[-3000:]
    free_batch = plan.eval_batch(parameters, 1024, 50304, 2048, __import__("torch").cuda.get_device_properties(0).total_memory)
    assert all(int(batch) == free_batch for *_, batch, _ in logged)
    results = json.loads((project.root / "evals/final.json").read_text())
    assert results["downstream"]["loss"] == pytest.approx(rows[-1]["val/downstream/loss"], rel=0.1)  # whole split vs sample
    print(f"evaluation on GPU: " + ", ".join(f"{corpus} {int(rate):,} tokens/s ({batch} sequences per pass)"
                                             for corpus, _, _, batch, rate in logged))


@pytest.mark.gpu
def test_fsdp_on_one_gpu_in_bf16(tmp_path):
    """The paper-shaped cell under FSDP (train.parallel: fsdp) on one GPU with bf16 (units gathered in
    bf16, gradients reduced in float32): the loss falls, a sharded state is saved on the way, the
    gathered model loads in transformers, and the peak memory is within a factor of 1.5 of plan's
    FSDP estimate for one GPU."""
    from transformers import AutoModelForCausalLM

    steps, batch, micro = 60, 16, 8
    project = PaperProject(tmp_path, records=3000, train={
        "tokens": steps * batch * 2048, "batch_sequences": batch, "micro_batch_sequences": micro, "eval_every": 30,
        "eval_tokens": 8 * 2048, "save_every": 30, "device": "cuda", "compile": False, **ONE_SCHEDULE,
        "precision": "bf16", "parallel": "fsdp"})
    result = project.train()
    rows = project.rows()
    assert rows[-1]["step"] == steps and rows[-1]["val/downstream/loss"] < rows[0]["val/downstream/loss"] - 1.0
    parameters, _ = project.estimate(micro)
    estimate = plan.fsdp_memory(parameters, project.config.model, 50304, 2048, micro, 1)
    peak = peak_gpu_memory(result.stderr)
    rate = rows[-1]["tokens_per_s"]
    print(f"\nFSDP on one GPU, bf16, {steps} steps of {batch} x 2048 tokens: {rate:,.0f} tokens/s, MFU "
          f"{6 * parameters * rate / H100_BF16_PEAK:.1%}; peak GPU memory {peak / 1e9:.2f} GB, plan's FSDP estimate "
          f"{estimate / 1e9:.2f} GB (measured / estimate {peak / estimate:.2f})")
    assert estimate / 1.5 < peak < 1.5 * estimate
    model = AutoModelForCausalLM.from_pretrained(str(project.run_dir / "model"))
    assert sum(p.numel() for p in model.parameters()) == parameters
