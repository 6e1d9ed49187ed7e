"""config/paper.yaml with its real shapes on CPU, offline: a randomly initialised Pythia-410M-shaped
model (built by `select` from a local config.json with Pythia-410M's published dimensions), a local
tokenizer loaded through the `pretrained` path, 2-document stand-ins for the corpora, and one
training step of 2 x 2048 tokens; peak memory is compared with `rewarm plan`'s estimate."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
import yaml

from rewarm import plan
from rewarm.data import demo
from rewarm.data import tokenizer as tok
from tests.conftest import ROOT, run_env

pytestmark = pytest.mark.slow
PYTHIA_410M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "max_position_embeddings": 2048, "vocab_size": 50304}


def test_one_step_of_the_paper_config_on_cpu(tmp_path):
    from transformers import GPTNeoXConfig

    # Stand-ins: two long documents per split (each ~3,000+ tokens), in the corpora's JSON-lines format.
    records = list(demo.generate_records("downstream", 400, seed=11)) + list(demo.generate_records("upstream", 400, seed=12))
    texts = [" ".join(r["text"] for r in records[i::4]) for i in range(4)]
    for name, pair in (("up", texts[:2]), ("down", texts[2:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in pair))
    # A local tokenizer directory and a Pythia-410M config.json: what the hub would give, offline.
    tok.save_trained(tok.train_bpe(texts, vocab_size=4096), tmp_path / "pythia-tokenizer")
    (tmp_path / "pythia-410m").mkdir()
    GPTNeoXConfig(**PYTHIA_410M, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False).save_pretrained(tmp_path / "pythia-410m")

    standin = {
        "tokenizer": {"type": "pretrained", "name_or_path": "pythia-tokenizer", "revision": None},
        "corpora": {c: {s: {"type": "jsonl", "path": f"{f}.jsonl"} for s in ("train", "val")} for c, f in (("upstream", "up"), ("downstream", "down"))},
        "checkpoints": {"final": {"type": "scratch", "seed": 0, "config": "pythia-410m", "revision": None},
                        "early": None, "mid": None, "scratch": None},
        "train": {"tokens": 2 * 2048, "batch_sequences": 2, "micro_batch_sequences": 1, "eval_every": 1, "eval_tokens": 2048,
                  "device": "cpu", "compile": False},
        "grid": {"sweeps": {"checkpoint": ["final"], "max_lr": [3.0e-4], "warmup_fraction": [0.01]}, "extra": []},
    }
    (tmp_path / "standin.yaml").write_text(yaml.safe_dump(standin))
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "paper.yaml").write_text((ROOT / "config/paper.yaml").read_text())
    params = ["--params", "params.yaml", "--params", "paper.yaml", "--params", "standin.yaml"]

    def rewarm(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "rewarm", *args], cwd=tmp_path, env=run_env(), capture_output=True,
                                text=True, timeout=1500)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    rewarm("tokenizer", *params, "--out", "data/tokenizer")
    for corpus in ("upstream", "downstream"):
        rewarm("prepare", *params, "--corpus", corpus, "--tokenizer", "data/tokenizer", "--out", f"data/tokens/{corpus}")
    manifest = json.loads((tmp_path / "data/tokens/downstream/train/manifest.json").read_text())
    assert manifest["seq_len"] == 2048 and manifest["sequences"] >= 2 and manifest["dtype"] == "uint16"
    rewarm("select", *params, "--name", "final", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/final")
    cell = json.loads(rewarm("grid", *params, "--format", "json").stdout).popitem()[0]
    rewarm("train", *params, "--cell", cell, "--base", "checkpoints/base/final", "--train", "data/tokens/downstream/train",
           "--val", "upstream=data/tokens/upstream/val", "--val", "downstream=data/tokens/downstream/val",
           "--state", f"state/runs/{cell}", "--out", f"runs/{cell}", "--threads", "2")
    # The largest resident set of any child so far: the training step's (select holds one copy of the weights).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux

    config = json.loads((tmp_path / "runs" / cell / "model/config.json").read_text())
    assert {k: config[k] for k in PYTHIA_410M} == PYTHIA_410M
    rows = [json.loads(line) for line in (tmp_path / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["tokens"] == 4096
    assert 8.0 < rows[0]["val/downstream/loss"] < 12.0  # a random model over 50,304 ids: about ln(50304) = 10.8

    from rewarm import config as cfg

    merged = cfg.load([tmp_path / "params.yaml", tmp_path / "paper.yaml", tmp_path / "standin.yaml"], base_dir=tmp_path)
    parameters = plan.parameter_count(merged.model, 50304)
    assert parameters == 405_334_016
    estimate = plan.peak_memory(parameters, merged.model, 50304, 2048, 1)
    print(f"\npaper-scale step on CPU: peak RSS {peak / 1e9:.2f} GB; plan's GPU estimate for micro-batch 1: {estimate / 1e9:.2f} GB "
          f"(weights, gradients and Adam moments alone: {16 * parameters / 1e9:.2f} GB)")
    # Float32 weights, gradients and both Adam moments are really resident (16 bytes per parameter),
    # and the whole is within the estimate doubled (CPU keeps float32 activations where a GPU keeps bf16).
    assert 16 * parameters < peak < 2 * estimate
