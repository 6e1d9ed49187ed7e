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
from rewarm.data import tokenizer as tok
from tests.conftest import rewarm, small_params, write_params


def select(project: Path, name: str, out: str, check: bool = True, extra: tuple[str, ...] = ()):
    return rewarm("select", "--name", name, "--tokenizer", "data/tokenizer", "--out", out, *extra, cwd=project, check=check)


def state_dicts_equal(a: Path, b: Path) -> bool:
    left = GPTNeoXForCausalLM.from_pretrained(str(a)).state_dict()
    right = GPTNeoXForCausalLM.from_pretrained(str(b)).state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


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


def test_foreign_architecture_is_refused(prepared_copy, tmp_path):
    foreign = tmp_path / "llama-ish"
    shutil.copytree(prepared_copy / "checkpoints/base/scratch", foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["model_type"] = "llama"
    (foreign / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoints.CheckpointError, match="model_type 'llama', expected 'gpt_neox'"):
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
    assert rows[-1]["val/upstream/loss"] < rows[0]["val/upstream/loss"] - 1.0  # it learned upstream
    assert not (prepared_copy / "state/pretrain").exists()
    # step0 is the seeded initialisation; the final step differs from it.
    assert not state_dicts_equal(series_dir / "step0", series_dir / "step40")
    for name, revision in (("early", "step20"), ("final", "step40")):
        select(prepared_copy, name, f"checkpoints/base/{name}", extra=("--pretrain", "checkpoints/pretrain"))
        assert state_dicts_equal(series_dir / revision, prepared_copy / "checkpoints/base" / name)


def test_pretrain_revision_must_exist():
    params = small_params()
    params["checkpoints"]["mid"] = {"type": "pretrain", "revision": "step30"}
    with pytest.raises(cfg.ConfigError, match=r"checkpoints.mid.revision: 'step30' is not one of final, step0, step20"):
        cfg.from_dict(params)
