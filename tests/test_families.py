"""Issue 33, part: re-warming causal LMs of other families than GPT-NeoX, as transformers knows them
natively (no remote code). Tiny random models built from each family's own config class: the parameter
count and FSDP's blocks read from the model itself; and, through the real command line, a local
checkpoint of each family selected, trained, evaluated and loaded back with AutoModelForCausalLM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, Olmo2Config, Olmo2ForCausalLM,
    Qwen2Config, Qwen2ForCausalLM,
)

from rewarm import checkpoints, families, grid, plan, runtime
from rewarm import config as cfg
from rewarm.config.checks import check_model
from tests.project import kill_job, next_word_accuracy, rewarm, run_env, small_params, train_args, write_params

SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 64, "vocab_size": 1024}
# Each family's config class, its model class, and where its blocks are (read here by attribute, not by rewarm's search).
FAMILIES = {
    "gpt_neox": (GPTNeoXConfig(**SHAPE), GPTNeoXForCausalLM, lambda m: list(m.gpt_neox.layers)),
    "llama": (LlamaConfig(**SHAPE, num_key_value_heads=2), LlamaForCausalLM, lambda m: list(m.model.layers)),  # grouped-query attention
    "qwen2": (Qwen2Config(**SHAPE, num_key_value_heads=2), Qwen2ForCausalLM, lambda m: list(m.model.layers)),
    "olmo2": (Olmo2Config(**SHAPE, num_key_value_heads=4), Olmo2ForCausalLM, lambda m: list(m.model.layers)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_parameters_and_blocks_are_read_from_the_model(family):
    config, cls, layers = FAMILIES[family]
    model = cls(config)
    assert checkpoints.model_class(config.model_type) is cls
    assert checkpoints.parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert runtime.decoder_layers(model) == layers(model) and len(layers(model)) == 2


# Shapes for the `model` section: plain, grouped-query attention with tied embeddings, and heads of their own width.
SHAPES = [dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=96),
          dict(hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=80, tie_word_embeddings=True),
          dict(hidden_size=48, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=40, intermediate_size=64)]


def test_the_schema_names_every_family_there_is():
    import typing

    named = typing.get_args(typing.get_type_hints(cfg.ModelConfig)["model_type"])
    assert set(named) == set(families.FAMILIES)


# GPT-NeoX has one key and value head per query head, hidden_size / num_heads wide (the checks refuse others).
CASES = [(family, shape) for family in sorted(families.FAMILIES) for shape in range(len(SHAPES))
         if family != "gpt_neox" or not {"num_kv_heads", "head_dim"} & set(SHAPES[shape])]


@pytest.mark.parametrize("family, shape", CASES)
def test_plan_counts_each_family_as_transformers_builds_it(family, shape):
    """The `model` section of each family, built by transformers (meta device): `plan`'s formula gives its
    parameters, FSDP's root unit holds what is outside the decoder layers and a block what one layer has."""
    model = cfg.ModelConfig(model_type=family, max_position_embeddings=64, **SHAPES[shape])
    assert check_model(model, seq_len=64) == []
    vocab = 320
    with torch.device("meta"):
        built = checkpoints.model_class(family)(checkpoints.architecture(model, vocab))
    assert built.config.model_type == family and built.config.tie_word_embeddings == model.tie_word_embeddings
    total = sum(p.numel() for p in built.parameters())
    assert plan.parameter_count(model, vocab) == total
    layers = runtime.decoder_layers(built)
    assert len(layers) == model.num_layers
    (per_layer,) = {sum(p.numel() for p in layer.parameters()) for layer in layers}
    assert plan.unit_parameters(model, vocab, total) == (total - model.num_layers * per_layer, per_layer)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2", "olmo2"])
def test_a_local_checkpoint_of_another_family_is_selected_trained_and_evaluated(prepared_copy, family):
    config, cls, _ = FAMILIES[family]
    torch.manual_seed(0)
    source = prepared_copy / f"local-{family}"
    checkpoints.save_model_dir(cls(config), prepared_copy / "data/tokenizer", source)
    params = small_params(checkpoints={"mine": {"type": "local", "path": str(source)}},
                          train={"checkpoint": "mine", "tokens": 4096, "eval_every": 4, "save_every": 2})
    write_params(prepared_copy / "params.yaml", params)
    cell = next(iter(grid.cells(grid.from_dict(params))))
    rewarm("select", "--name", "mine", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/mine", cwd=prepared_copy)
    rewarm(*train_args(cell, base="checkpoints/base/mine"), cwd=prepared_copy)
    rows = [json.loads(line) for line in (prepared_copy / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 4, 8]
    assert rows[-1]["val/downstream/loss"] < rows[0]["val/downstream/loss"]  # it learns
    trained = AutoModelForCausalLM.from_pretrained(str(prepared_copy / "runs" / cell / "model"))
    assert type(trained) is cls and trained.config.num_key_value_heads == config.num_key_value_heads
    rewarm("evaluate", "--model", f"runs/{cell}/model", "--val", "downstream=data/tokens/downstream/val", "--out", "evals/mine.json",
           cwd=prepared_copy)
    result = json.loads((prepared_copy / "evals/mine.json").read_text())
    # The whole split after training: about the in-training sample's loss (16 of its sequences).
    assert result["downstream"]["loss"] == pytest.approx(rows[-1]["val/downstream/loss"], abs=0.5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "olmo2"])
def test_a_scratch_checkpoint_of_the_model_section_is_of_its_family(tokenizer_dir, tmp_path, family):
    """A `scratch` checkpoint without `config` builds the `model` section's family (here with grouped-query
    attention and tied embeddings), with the tokenizer's vocabulary, and AutoModelForCausalLM loads it back."""
    model = cfg.ModelConfig(model_type=family, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                            tie_word_embeddings=True, rope_theta=500000.0)
    checkpoints.init_scratch(cfg.ScratchCheckpoint(type="scratch", seed=3), model, tokenizer_dir, tmp_path / "scratch")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "scratch"))
    assert type(loaded) is FAMILIES[family][1]
    assert (loaded.config.num_key_value_heads, loaded.config.tie_word_embeddings) == (2, True)
    assert loaded.config.rope_parameters["rope_theta"] == 500000.0
    assert loaded.config.vocab_size == 1024  # the tokenizer's 1,024 ids, a multiple of 64 already
    assert sum(p.numel() for p in loaded.parameters()) == plan.parameter_count(model, 1024)


def torchrun(cell: str, base: str) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rewarm",
            *train_args(cell, base=base)]


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("family", ["llama", "qwen2", "olmo2"])
def test_another_family_under_ddp_and_fsdp_killed_and_resumed_then_benchmarked(prepared_project, tmp_path, family):
    """A tiny model of the family (Llama and Qwen2 with grouped-query attention) over 2 gloo processes: under
    DDP uninterrupted; under FSDP (its decoder layers sharded) uninterrupted, and killed with SIGKILL after a
    sharded save and resumed. The resumed run is bit for bit the uninterrupted one; FSDP and DDP agree up to
    floating-point order (1e-4, as GPT-NeoX's in test_train.py); the gathered model loads back as the
    family's, and the harness's accuracy on the demo's next-word task equals the one computed from its
    log-likelihoods."""
    from transformers import AutoTokenizer

    config, cls, _ = FAMILIES[family]
    runs = {}
    for name in ("ddp", "fsdp-whole", "fsdp"):  # the last killed and resumed
        parallel = name.split("-")[0]
        project = tmp_path / name
        shutil.copytree(prepared_project, project, symlinks=True)
        torch.manual_seed(0)
        checkpoints.save_model_dir(cls(config), project / "data/tokenizer", project / family)
        params = small_params(checkpoints={"mine": {"type": "local", "path": family}},
                              train={"checkpoint": "mine", "parallel": parallel, "eval_every": 10, "save_every": 10})
        write_params(project / "params.yaml", params)
        cell = next(iter(grid.cells(grid.from_dict(params, base_dir=project))))
        rewarm("select", "--name", "mine", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/mine", cwd=project)
        state = project / "state/runs" / cell / "state.json"
        with open(tmp_path / f"{name}.log", "w") as log:
            agent = subprocess.Popen(torchrun(cell, "checkpoints/base/mine"), cwd=project, env=run_env(), stderr=log)
            if name == "fsdp":  # killed once it has saved a sharded state
                deadline = time.monotonic() + 300
                while not (state.exists() and json.loads(state.read_text())["step"] >= 10):
                    assert agent.poll() is None, "training finished before it could be killed"
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                kill_job(agent)
                assert json.loads(state.read_text())["sharded"]
                agent = subprocess.Popen(torchrun(cell, "checkpoints/base/mine"), cwd=project, env=run_env(), stderr=log)
            assert agent.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        runs[name] = project / "runs" / cell
    assert "resuming from step" in (tmp_path / "fsdp.log").read_text()
    rows = {p: [json.loads(line) for line in (runs[p] / "metrics.jsonl").read_text().splitlines()] for p in runs}
    assert [r["step"] for r in rows["fsdp"]] == [r["step"] for r in rows["ddp"]] == [0, 10, 20, 30, 40]
    # Killed and resumed: bit for bit the uninterrupted FSDP run, its curve and its gathered weights.
    losses = ("train_loss", "val/upstream/loss", "val/downstream/loss")
    assert [[r[k] for k in losses] for r in rows["fsdp"]] == [[r[k] for k in losses] for r in rows["fsdp-whole"]]
    assert (runs["fsdp"] / "model/model.safetensors").read_bytes() == (runs["fsdp-whole"] / "model/model.safetensors").read_bytes()
    for a, b in zip(rows["fsdp"], rows["ddp"]):
        for key in losses:
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    model = AutoModelForCausalLM.from_pretrained(str(runs["fsdp"] / "model")).eval()
    assert type(model) is cls and model.config.num_key_value_heads == config.num_key_value_heads

    project = runs["fsdp"].parents[1]
    rewarm("tasks", "--out", "data/tasks", cwd=project)
    rewarm("benchmark", "--model", f"runs/{runs['fsdp'].name}/model", "--tasks", "data/tasks", "--out", f"evals/{family}.json", cwd=project)
    recorded = json.loads((project / f"evals/{family}.json").read_text())["tasks"]["demo_next_word"]["metrics"]
    tokenizer = AutoTokenizer.from_pretrained(str(runs["fsdp"] / "model"))
    acc, _ = next_word_accuracy(model, tokenizer, project / "data/tasks/demo_next_word.jsonl", model.config.max_position_embeddings)
    assert recorded["acc"] == pytest.approx(acc)

