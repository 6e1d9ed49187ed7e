"""Base checkpoints: `select` from a hub cache, a local directory, the pre-training series and
scratch; the demo's `pretrain`; and refusal of incomplete or foreign model directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from rewarm import checkpoints
from rewarm import config as cfg
from rewarm import grid
from rewarm.data import tokenizer as tok
from tests.project import cell_of, rewarm, small_params, write_params


def select(project: Path, name: str, out: str, check: bool = True, extra: tuple[str, ...] = ()):
    return rewarm("select", "--name", name, "--tokenizer", "data/tokenizer", "--out", out, *extra, cwd=project, check=check)


def state_dicts_equal(a: Path, b: Path) -> bool:
    left = GPTNeoXForCausalLM.from_pretrained(str(a)).state_dict()
    right = GPTNeoXForCausalLM.from_pretrained(str(b)).state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.slow
def test_scratch_is_seeded_and_complete(prepared_copy):
    select(prepared_copy, "scratch", "checkpoints/base/again")
    base = prepared_copy / "checkpoints/base"
    assert (base / "again/model.safetensors").read_bytes() == (base / "scratch/model.safetensors").read_bytes()
    config = checkpoints.check_model_dir(base / "scratch")
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 2
    assert config["use_parallel_residual"] is True and config["tie_word_embeddings"] is False
    assert config["vocab_size"] == 1024
    assert tok.fingerprint(tok.load(base / "scratch")) == tok.fingerprint(tok.load(prepared_copy / "data/tokenizer"))
    params = small_params()
    params["checkpoints"]["scratch"]["seed"] = 1
    write_params(prepared_copy / "params.yaml", params)
    select(prepared_copy, "scratch", "checkpoints/base/other-seed")
    assert not state_dicts_equal(base / "scratch", base / "other-seed")


def test_scratch_with_gpt_neox_init_is_initialised_as_the_authors_runs(prepared_copy):
    """`init: gpt-neox` through `rewarm select`: GPT-NeoX's small_init, std sqrt(2 / (5 d)), on every weight matrix
    and wang_init, std 2 / (L sqrt(d)), on the attention and MLP output projections ([NX] 410M.yml). A Pythia-like
    shape large enough for the sample std to be within 3% (d = 128, L = 4: 0.0559 and 0.0442 by hand); biases 0,
    LayerNorms 1 and 0. The Hugging Face default (0.02 everywhere) is far from both."""
    import math

    params = small_params()
    params["model"] = {**params["model"], "hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512}
    params["checkpoints"]["scratch"]["init"] = "gpt-neox"
    write_params(prepared_copy / "params.yaml", params)
    select(prepared_copy, "scratch", "checkpoints/base/neox-init")
    model = GPTNeoXForCausalLM.from_pretrained(prepared_copy / "checkpoints/base/neox-init")
    small, wang = math.sqrt(2 / (5 * 128)), 2 / 4 / math.sqrt(128)
    assert (round(small, 4), round(wang, 4)) == (0.0559, 0.0442)
    matrices = 0
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(parameter) == 0, name
        elif "layernorm" in name or "layer_norm" in name:
            assert torch.all(parameter == 1), name
        else:
            expected = wang if name.endswith(("attention.dense.weight", "mlp.dense_4h_to_h.weight")) else small
            assert parameter.std().item() == pytest.approx(expected, rel=0.03), name
            matrices += 1
    assert matrices == 2 + 4 * 4  # input and output embeddings, four matrices per block


@pytest.mark.bad_input
def test_local_directory_is_copied_and_checked(prepared_copy, tmp_path):
    source = prepared_copy / "checkpoints/base/scratch"
    params = small_params()
    params["checkpoints"]["mine"] = {"type": "local", "path": str(source)}
    write_params(prepared_copy / "params.yaml", params)
    select(prepared_copy, "mine", "checkpoints/base/mine")
    assert state_dicts_equal(source, prepared_copy / "checkpoints/base/mine")

    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "model.safetensors").unlink()
    params["checkpoints"]["mine"]["path"] = str(broken)
    write_params(prepared_copy / "params.yaml", params)
    result = select(prepared_copy, "mine", "checkpoints/base/broken", check=False)
    assert result.returncode == 1
    assert f"{broken}: missing model.safetensors" in result.stderr
    assert not (prepared_copy / "checkpoints/base/broken").exists()


@pytest.mark.bad_input
def test_an_architecture_that_is_not_a_native_causal_lm_is_refused(prepared_copy, tmp_path):
    """An encoder-decoder (T5) or a model type transformers does not know (remote code, never run)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    foreign = tmp_path / "foreign"
    shutil.copytree(prepared_copy / "checkpoints/base/scratch", foreign)
    config = json.loads((foreign / "config.json").read_text())
    for model_type in ("t5", "my_own_lm"):
        assert model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        (foreign / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        with pytest.raises(checkpoints.CheckpointError, match=f"model_type '{model_type}' is not a causal LM that transformers"):
            checkpoints.check_model_dir(foreign)


def make_hub_cache(cache: Path, repo_id: str, revision: str, model_dir: Path) -> None:
    """A Hugging Face hub cache holding one revision of a repository, laid out as
    `snapshot_download` leaves it: refs/<revision> names a commit, snapshots/<commit>/ holds
    the files. Weights as pytorch_model.bin, as Pythia's older revisions ship them."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    model = GPTNeoXForCausalLM.from_pretrained(str(model_dir))
    torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(model_dir / name, snapshot / name)


def test_hub_revision_from_the_cache(prepared_copy, tmp_path, monkeypatch):
    """The real snapshot_download path, offline, against a cache of the hub's layout."""
    cache = tmp_path / "hub"
    source = prepared_copy / "checkpoints/base/scratch"
    make_hub_cache(cache, "EleutherAI/pythia-tiny", "step143000", source)
    params = small_params()
    params["checkpoints"]["pythia"] = {"type": "hub", "repo_id": "EleutherAI/pythia-tiny", "revision": "step143000"}
    write_params(prepared_copy / "params.yaml", params)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    select(prepared_copy, "pythia", "checkpoints/base/pythia")
    out = prepared_copy / "checkpoints/base/pythia"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))  # converted to safetensors
    assert state_dicts_equal(source, out)
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.model_type == "gpt_neox"


@pytest.mark.slow
def test_pretrain_series_and_selecting_from_it(prepared_copy):
    rewarm("pretrain", "--tokenizer", "data/tokenizer", "--train", "data/tokens/upstream/train",
           "--val", "data/tokens/upstream/val", "--state", "state/pretrain", "--out", "checkpoints/pretrain",
           "--logs", "runs/pretrain", cwd=prepared_copy)
    series_dir = prepared_copy / "checkpoints/pretrain"
    series = json.loads((series_dir / "series.json").read_text())
    assert series == {"revisions": ["step0", "step20", "step40"], "final": "step40", "tokens_per_step": 8 * 64}
    for revision in series["revisions"]:
        checkpoints.check_model_dir(series_dir / revision)
    rows = [json.loads(line) for line in (prepared_copy / "runs/pretrain/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val/upstream/loss"] < rows[0]["val/upstream/loss"] - 0.5  # it learned upstream (40 tiny steps: about 1 nat)
    assert not (prepared_copy / "state/pretrain").exists()
    # step0 is the seeded initialisation; the final step differs from it.
    assert not state_dicts_equal(series_dir / "step0", series_dir / "step40")
    for name, revision in (("early", "step20"), ("final", "step40")):
        select(prepared_copy, name, f"checkpoints/base/{name}", extra=("--pretrain", "checkpoints/pretrain"))
        assert state_dicts_equal(series_dir / revision, prepared_copy / "checkpoints/base" / name)


@pytest.mark.bad_input
def test_pretrain_revision_must_exist():
    params = small_params()
    params["checkpoints"]["mid"] = {"type": "pretrain", "revision": "step30"}
    with pytest.raises(cfg.ConfigError, match=r"checkpoints.mid.revision: 'step30' is not one of final, step0, step20"):
        grid.from_dict(params)


class PickleBomb:
    """Unpickling this creates a file: code a malicious `pytorch_model.bin` could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.fault
def test_pickle_with_code_in_weights_is_refused(prepared_copy, tmp_path):
    """Weights in a pickle (.bin) are read with weights_only=True: a pickle that runs code fails
    to load and its code never runs."""
    evil = tmp_path / "evil"
    shutil.copytree(prepared_copy / "checkpoints/base/scratch", evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"gpt_neox.embed_in.weight": PickleBomb(marker)}, evil / "pytorch_model.bin")
    with pytest.raises(Exception) as caught:
        checkpoints.materialize(evil, tmp_path / "out")
    assert "weights_only" in str(caught.value) or "Weights only load failed" in str(caught.value)
    assert not marker.exists()


@pytest.mark.fault
def test_remote_code_in_a_checkpoint_never_runs(prepared_copy, tmp_path):
    """A config naming custom code (`auto_map`) is loaded without trust_remote_code: the code is not imported."""
    sneaky = tmp_path / "sneaky"
    shutil.copytree(prepared_copy / "checkpoints/base/scratch", sneaky)
    marker = tmp_path / "imported"
    (sneaky / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((sneaky / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (sneaky / "config.json").write_text(json.dumps(config))
    checkpoints.write_checksums(sneaky)  # as a directory made elsewhere on purpose would carry them
    model = checkpoints.load_model(sneaky)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    out = tmp_path / "materialized"
    out.mkdir()
    checkpoints.materialize(sneaky, out)
    assert not marker.exists()


def edited_base(project: Path, name: str, **changes) -> str:
    """A copy of the scratch base checkpoint with its config.json edited."""
    base = project / "checkpoints/base" / name
    shutil.copytree(project / "checkpoints/base/scratch", base)
    config = json.loads((base / "config.json").read_text())
    config.update(changes)
    (base / "config.json").write_text(json.dumps(config))
    checkpoints.write_checksums(base)  # edited on purpose, checksums and all: the architecture is what is refused
    return f"checkpoints/base/{name}"


@pytest.mark.bad_input
@pytest.mark.parametrize("changes, message", [
    ({"vocab_size": 64}, "embedding has 64 rows, fewer than the tokenizer's 1024 ids"),
    ({"max_position_embeddings": 32}, "context of 32 tokens (max_position_embeddings) is shorter than the shards' sequences (64 tokens"),
    ({"model_type": "t5"}, "model_type 't5' is not a causal LM that transformers"),
])
def test_checkpoint_that_cannot_train_on_the_shards_is_refused(prepared_copy, changes, message):
    from tests.project import train_args

    base = edited_base(prepared_copy, "edited", **changes)
    cell = cell_of(prepared_copy)
    result = rewarm(*train_args(cell, base=base), cwd=prepared_copy, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (prepared_copy / "runs" / cell / "metrics.json").exists()
    # `evaluate` refuses it too, before loading the weights (it failed with an IndexError deep in the forward pass)
    evaluated = rewarm("evaluate", "--model", base, "--val", "upstream=data/tokens/upstream/val", "--out", "evals/edited.json",
                       cwd=prepared_copy, check=False)
    assert evaluated.returncode == 1 and "Traceback" not in evaluated.stderr, evaluated.stderr[-2000:]
    assert message.replace("the shards' sequences", "the sequences of data/tokens/upstream/val") in evaluated.stderr, evaluated.stderr[-2000:]
    assert not (prepared_copy / "evals/edited.json").exists()


@pytest.mark.bad_input
def test_tokenizer_other_than_the_shards_is_refused(prepared_copy, tmp_path):
    """A base checkpoint whose tokenizer is not the one the shards were made with."""
    from tests.project import cell_of, train_args

    base = prepared_copy / "checkpoints/base/other-tokenizer"
    shutil.copytree(prepared_copy / "checkpoints/base/scratch", base)
    other = tok.train_bpe(["a completely different corpus of words"] * 50, vocab_size=1024)
    tok.save_trained(other, tmp_path / "tok")
    for name in checkpoints.TOKENIZER_FILES:
        shutil.copy2(tmp_path / "tok" / name, base / name)
    cell = cell_of(prepared_copy)
    result = rewarm(*train_args(cell, base="checkpoints/base/other-tokenizer"), cwd=prepared_copy, check=False)
    assert result.returncode == 1 and "tokenizer" in result.stderr and "data/tokens/downstream/train" in result.stderr, result.stderr[-2000:]


# -- sharded weights, checksums, corrupt files ----------------------------------------------------


def sharded_copy(source: Path, dest: Path, shard_size: str = "40KB") -> Path:
    """The model of `source` saved by transformers in several safetensors files with their index
    (as the hub ships Pythia 2.8B and up), with the tokenizer files, and no checksums."""
    GPTNeoXForCausalLM.from_pretrained(str(source)).save_pretrained(str(dest), max_shard_size=shard_size)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(source / name, dest / name)
    return dest


def test_sharded_weights_are_selected_loaded_and_checksummed(prepared_copy, tmp_path):
    source = prepared_copy / "checkpoints/base/scratch"
    sharded = sharded_copy(source, tmp_path / "sharded")
    index = json.loads((sharded / checkpoints.WEIGHTS_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (sharded / "model.safetensors").exists()
    params = small_params()
    params["checkpoints"]["big"] = {"type": "local", "path": str(sharded)}
    write_params(prepared_copy / "params.yaml", params)
    select(prepared_copy, "big", "checkpoints/base/big")
    out = prepared_copy / "checkpoints/base/big"
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards and (out / checkpoints.WEIGHTS_INDEX).is_file()
    assert state_dicts_equal(source, out) and AutoModelForCausalLM.from_pretrained(str(out)).config.model_type == "gpt_neox"
    # The checksums are sha256sum's: every configuration and weight file, hashed by hashlib here.
    import hashlib

    lines = (out / checkpoints.CHECKSUMS).read_text().splitlines()
    expected = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ["config.json", checkpoints.WEIGHTS_INDEX, *shards]}
    assert {line.split("  ")[1]: line.split("  ")[0] for line in lines} == expected
    # Training and evaluation read it like a single-file model.
    model = checkpoints.load_model(out)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in checkpoints.load_model(source).parameters())


def test_hub_revision_with_bin_and_sharded_safetensors_takes_the_safetensors(prepared_copy, tmp_path, monkeypatch):
    """A revision with both formats: only the safetensors are fetched (the patterns leave the .bin
    out) and copied; the shards keep their index."""
    from huggingface_hub.file_download import DryRunFileInfo

    cache = tmp_path / "hub"
    source = prepared_copy / "checkpoints/base/scratch"
    make_hub_cache(cache, "EleutherAI/pythia-big", "step1", source)
    snapshot = next((cache / "models--EleutherAI--pythia-big/snapshots").iterdir())
    sharded_copy(source, snapshot)
    params = small_params()
    params["checkpoints"]["pythia"] = {"type": "hub", "repo_id": "EleutherAI/pythia-big", "revision": "step1"}
    write_params(prepared_copy / "params.yaml", params)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    select(prepared_copy, "pythia", "checkpoints/base/pythia")
    out = prepared_copy / "checkpoints/base/pythia"
    assert (out / checkpoints.WEIGHTS_INDEX).is_file() and not list(out.glob("*.bin")) and state_dicts_equal(source, out)

    files = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", checkpoints.WEIGHTS_INDEX,
             "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "tokenizer.json"]
    patterns = checkpoints.hub_patterns(files)
    assert "pytorch_model*.bin" not in patterns and "*.safetensors" in patterns
    assert "pytorch_model*.bin" in checkpoints.hub_patterns(["config.json", "pytorch_model.bin"])  # only .bin: take it
    sizes = dict(zip(files, [700, 4_000_000_000, 1_500_000_000, 30_000, 4_100_000_000, 1_600_000_000, 31_000, 2_000_000]))
    planned = [DryRunFileInfo(commit_hash="c", file_size=size, filename=name, local_path="", is_cached=name == "tokenizer.json",
                              will_download=name != "tokenizer.json") for name, size in sizes.items()]
    assert checkpoints.hub_download_bytes(planned, patterns) == 700 + 4_000_000_000 + 1_500_000_000 + 30_000  # the cached tokenizer is not counted


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_corrupt_weights_are_refused_naming_the_file(prepared_copy, damage):
    """A truncated or altered model.safetensors in a base checkpoint: `evaluate` and `train` refuse it
    by name (no raw safetensors traceback); a local directory without checksums is checked by
    reading its safetensors headers."""
    base = prepared_copy / "checkpoints/base/scratch"
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    for command in (("evaluate", "--model", str(base), "--tokens", "data/tokens", "--out", "evals/x.json"),
                    ("train", "--cell", cell_of(prepared_copy), "--base", str(base), "--train", "data/tokens/downstream/train",
                     "--val", "downstream=data/tokens/downstream/val", "--state", "state/x", "--out", "runs/x")):
        result = rewarm(*command, cwd=prepared_copy, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"{weights}: altered or truncated (its sha256 differs from weights.sha256)" in result.stderr
    if damage == "truncated":
        (base / checkpoints.CHECKSUMS).unlink()  # a directory from elsewhere: no checksums to compare
        params = small_params()
        params["checkpoints"]["mine"] = {"type": "local", "path": str(base)}
        write_params(prepared_copy / "params.yaml", params)
        result = select(prepared_copy, "mine", "checkpoints/base/mine", check=False)
        assert result.returncode == 1 and f"{weights}: unreadable safetensors file" in result.stderr, result.stderr[-2000:]
        assert not (prepared_copy / "checkpoints/base/mine").exists()


@pytest.mark.bad_input
def test_a_pickle_with_code_is_refused_as_unsafe_not_loaded(tmp_path):
    """An optimizer state whose checksum matches but that pickles a function (loading it would have to run code):
    refused naming the file as unsafe, and the message does not suggest loading it with weights_only=False."""
    import subprocess

    from rewarm.io import file_sha256
    from rewarm.io import UnsafeFileError

    path = tmp_path / checkpoints.OPTIMIZER_STATE
    torch.save({"state": {}, "hook": subprocess.run}, path)
    (tmp_path / checkpoints.OPTIMIZER_CHECKSUM).write_text(file_sha256(path) + "\n")
    with pytest.raises(UnsafeFileError) as caught:
        checkpoints.load_optimizer_state(tmp_path)
    assert str(caught.value).startswith(f"{path}: refused as unsafe") and "weights_only=False" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # torch's advice is not chained in


@pytest.mark.bad_input
def test_weights_missing_a_layer_are_refused_naming_the_tensors(prepared_copy):
    """config.json says 3 layers, the weights hold 2 (checksums rewritten, as a careless copy would): loading it
    is an error naming the missing tensors, not a model with a randomly initialised third layer."""
    base = prepared_copy / edited_base(prepared_copy, "short", num_hidden_layers=3)
    with pytest.raises(checkpoints.CheckpointError) as caught:
        checkpoints.load_model(base)
    message = str(caught.value)
    assert message.startswith(f"{base}: its weights do not match config.json: tensors missing: gpt_neox.layers.2.")
    assert "(12)" in message  # layer 2's 12 tensors: 2 LayerNorms (weight, bias) and 4 linear layers (weight, bias)


@pytest.mark.bad_input
@pytest.mark.parametrize("changes, listed", [
    ({"num_hidden_layers": 3}, "tensors missing: gpt_neox.layers.2."),
    ({"intermediate_size": 1024}, "tensors of the wrong shape: gpt_neox.layers.0.mlp.dense_4h_to_h.weight"),
])
def test_a_local_checkpoint_whose_weights_disagree_with_its_config_is_refused_at_select(prepared_copy, changes, listed):
    """Checked when it is selected, on the meta device (no weight loaded, whatever its size), not first in
    `evaluate` or `train`: the select job fails naming the tensors and writes no checkpoint."""
    source = edited_base(prepared_copy, "elsewhere", **changes)
    params = small_params(checkpoints={"mine": {"type": "local", "path": source}})
    write_params(prepared_copy / "params.yaml", params)
    result = rewarm("select", "--name", "mine", "--tokenizer", "data/tokenizer", "--out", "checkpoints/base/mine",
                    cwd=prepared_copy, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "its weights do not match config.json: " + listed in result.stderr, result.stderr[-2000:]
    assert not (prepared_copy / "checkpoints/base/mine").exists()


def test_model_directories_ask_for_no_key_value_cache(prepared_project, tmp_path):
    """What select and training write says `use_cache: false` (Pythia's says true: the harness's log-likelihood
    passes built a cache at their batch), its checksum updated: a forward pass with the defaults, as the harness
    makes, builds none, and the directory still verifies."""
    base = prepared_project / "checkpoints/base/scratch"
    assert json.loads((base / "config.json").read_text())["use_cache"] is False
    checkpoints.verify_weights(base)
    model = checkpoints.load_model(base)
    assert model(input_ids=torch.zeros((1, 8), dtype=torch.long)).past_key_values is None
    # A directory from elsewhere that asks for the cache: disabled, its checksum rewritten, its weights not re-hashed.
    other = tmp_path / "pythia-like"
    shutil.copytree(base, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "use_cache": True}))
    checkpoints.write_checksums(other)
    checkpoints.disable_cache(other)
    assert json.loads((other / "config.json").read_text())["use_cache"] is False
    checkpoints.verify_weights(other)
