"""Tokenizers: the demo's own byte-level BPE, or a base checkpoint's (Pythia's GPT-NeoX-20B BPE).

Either way the result is a Hugging Face tokenizer directory (`tokenizer.json`,
`tokenizer_config.json`, ...) that every later stage loads with `AutoTokenizer`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from rewarm.data import sources
from rewarm.io import atomic_dir

# Pythia's special tokens and their ids: <|endoftext|> is 0 (EOS and BOS), <|padding|> is 1.
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE like GPT-NeoX-20B's, trained on `texts`.

    Deterministic: the same texts in the same order give a byte-identical tokenizer.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_trained(tokenizer: Tokenizer, out_dir: str | Path) -> None:
    """Save in Hugging Face format, loadable with `AutoTokenizer.from_pretrained`."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=2048,
    )
    wrapped.save_pretrained(str(out_dir))


def save_pretrained(name_or_path: str, revision: str | None, out_dir: str | Path) -> None:
    """Copy a base model's tokenizer (hub id at a revision, or a local directory) into `out_dir`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{name_or_path}: only fast (tokenizers-backed) tokenizers are supported")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no EOS token, needed to separate packed documents")
    tokenizer.save_pretrained(str(out_dir))


# The class names `save_trained` writes into tokenizer_config.json (transformers 5 names the plain
# fast tokenizer TokenizersBackend; PreTrainedTokenizerFast is its alias).
PLAIN_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load(tokenizer_dir: str | Path):
    """The Hugging Face tokenizer saved in `tokenizer_dir`, as `AutoTokenizer` loads it. For the plain
    fast tokenizer (the demo's own) its class is loaded directly: the same object, without the Auto
    classes, which import torch (2 s of a `prepare` job that never uses it)."""
    config_file = Path(tokenizer_dir) / "tokenizer_config.json"
    named = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    if named in PLAIN_CLASSES:
        from transformers import PreTrainedTokenizerFast as Loader
    else:
        from transformers import AutoTokenizer as Loader

    tokenizer = Loader.from_pretrained(str(tokenizer_dir), use_fast=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer has no EOS token, needed to separate packed documents")
    return tokenizer


def document_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before every text it encodes with its special tokens (its post-processor, or
    `add_bos_token`: Llama's BOS): packing puts them before every document, as the family was pre-trained
    (Llama 3: BOS + document + EOS). None for GPT-NeoX (Pythia), whose documents are separated by EOS alone."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON, its EOS id and the ids it puts before every document
    (`document_prefix`, when there are any): shards and models must agree on it, so shards packed
    without a family's BOS are refused for a model that was pre-trained with it."""
    backend = tokenizer.backend_tokenizer
    digest = hashlib.sha256(backend.to_str().encode("utf-8"))
    digest.update(f"eos={tokenizer.eos_token_id}".encode())
    prefix = document_prefix(tokenizer)
    if prefix:  # (the fingerprints of tokenizers without one are those of earlier versions)
        digest.update(f"prefix={prefix}".encode())
    return digest.hexdigest()


def vocab_size(tokenizer) -> int:
    """Number of token ids, added tokens included (`len(tokenizer)`)."""
    return len(tokenizer)


def build(config, raw_dir: str | Path, out_dir: str | Path, base_dir: str | Path = ".") -> None:
    """The `tokenizer` stage: train the demo's BPE on the upstream train split, or copy
    the configured base model's tokenizer, into the Hugging Face directory `out_dir`."""
    settings = config.tokenizer
    with atomic_dir(out_dir, "tokenizer") as tmp:
        if settings.type == "pretrained":
            save_pretrained(settings.name_or_path, settings.revision, tmp)
            return
        source = config.corpora["upstream"].train
        files = sources.source_files(source, "upstream", "train", raw_dir, base_dir)
        texts = sources.read_documents(source, files, sources.ReadStats(), config.prepare.on_bad_record)
        if settings.train_documents is not None:
            texts = itertools.islice(texts, settings.train_documents)
        save_trained(train_bpe(texts, settings.vocab_size), tmp)
