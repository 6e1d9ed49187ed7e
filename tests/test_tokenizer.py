"""Tokenizers: the demo's BPE is deterministic and loads as a Hugging Face tokenizer; a
pretrained one is taken from a model directory with AutoTokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from transformers import AutoTokenizer

from rewarm.data import tokenizer as tok
from tests.project import run_env

TRAIN_IN_SUBPROCESS = """
import sys
from rewarm.data import demo, tokenizer as tok
texts = (r["text"] for r in demo.generate_records("upstream", 300, seed=3))
tok.save_trained(tok.train_bpe(texts, vocab_size=800), sys.argv[1])
"""


def test_same_corpus_gives_byte_identical_tokenizer_files(tmp_path):
    # Separate processes: Rust hash maps are seeded per process, so this is where
    # non-determinism would show.
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(tmp_path / name)], check=True, env=run_env())
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_demo_tokenizer_is_a_hugging_face_tokenizer(tokenizer_dir, demo_texts):
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(hf) == 1024
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == 0
    assert hf.pad_token == "<|padding|>" and hf.pad_token_id == 1
    for text in demo_texts[:20]:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert tok.EOS_TOKEN not in hf.convert_ids_to_tokens(ids)
        assert hf.decode(ids) == text  # byte-level BPE loses nothing


def test_pretrained_tokenizer_from_a_model_directory(tmp_path, tokenizer_dir, hf_tokenizer):
    """Paper scale loads the base checkpoint's tokenizer; a local directory with the same
    files as a hub snapshot takes the same AutoTokenizer path."""
    model_dir = tmp_path / "pythia-like"
    shutil.copytree(tokenizer_dir, model_dir)
    (model_dir / "config.json").write_text('{"model_type": "gpt_neox"}')
    out = tmp_path / "copied"
    tok.save_pretrained(str(model_dir), None, out)
    assert tok.fingerprint(tok.load(out)) == tok.fingerprint(hf_tokenizer)


def test_fingerprint_changes_with_the_tokenizer(tmp_path, demo_texts, hf_tokenizer):
    other = tmp_path / "other"
    tok.save_trained(tok.train_bpe(demo_texts, vocab_size=900), other)
    assert tok.fingerprint(tok.load(other)) != tok.fingerprint(hf_tokenizer)


def test_load_gives_what_auto_tokenizer_gives(tmp_path, tokenizer_dir):
    """`load` skips the Auto classes for the plain fast tokenizer (the demo's): the same class, ids,
    special tokens and fingerprint as AutoTokenizer; a tokenizer of another class (here a GPT-NeoX
    one, as Pythia's) still goes through AutoTokenizer."""
    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    loaded = tok.load(tokenizer_dir)
    assert type(loaded) is type(auto)
    assert (tok.fingerprint(loaded), len(loaded), loaded.eos_token_id) == (tok.fingerprint(auto), len(auto), auto.eos_token_id)
    assert loaded("a packed document", add_special_tokens=False)["input_ids"] == auto("a packed document", add_special_tokens=False)["input_ids"]
    neox = tmp_path / "neox"
    shutil.copytree(tokenizer_dir, neox)
    config = json.loads((neox / "tokenizer_config.json").read_text())
    (neox / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPTNeoXTokenizer"}))
    assert type(tok.load(neox)) is type(AutoTokenizer.from_pretrained(str(neox))) is not type(auto)
