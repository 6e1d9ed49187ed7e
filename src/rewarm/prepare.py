"""The `prepare` stage: one corpus's documents into packed Arrow shards, per split.

Output: `<out>/<split>/shard-*.arrow` and `<out>/<split>/manifest.json` for each
split of the corpus, written under a temporary name and renamed when complete.
Parallelism is the tokenizer's own thread pool (`encode_batch`); documents are
batched in a fixed size, so the output does not depend on the worker count.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from rewarm import config as cfg
from rewarm.data import sources
from rewarm.data import tokenizer as tok
from rewarm.data.packing import SCHEMA_VERSION, MixtureBudget, Packer, ShardWriter, token_dtype
from rewarm.data.shards import MANIFEST
from rewarm.io import atomic_dir, check_free_space, write_json

log = logging.getLogger(__name__)


def set_workers(workers: int) -> None:
    """Size the tokenizer's thread pool. Must run before the first tokenization in the
    process: `tokenizers` reads RAYON_NUM_THREADS once, when its pool starts."""
    os.environ["RAYON_NUM_THREADS"] = str(max(1, workers))
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if workers > 1 else "false"


def prepare_corpus(
    config: cfg.Config, corpus: str, tokenizer_dir: str | Path, raw_dir: str | Path, out_dir: str | Path, base_dir: str | Path = "."
) -> dict[str, dict]:
    """Tokenize and pack every split of `corpus`; returns the manifests by split."""
    if corpus not in config.corpora:
        raise cfg.ConfigError(f"corpus {corpus!r} is not in the configuration (have: {', '.join(config.corpora)})")
    tokenizer = tok.load(tokenizer_dir)
    splits = {split: (source, sources.source_files(source, corpus, split, raw_dir, base_dir))
              for split, source in config.corpora[corpus].splits().items()}
    itemsize = token_dtype(tok.vocab_size(tokenizer)).itemsize
    estimates = [estimate_bytes(source, files, itemsize) for source, files in splits.values()]
    if None in estimates:
        log.info("%s: disk space not checked (a streamed dataset's size is unknown without max_tokens)", corpus)
    else:
        check_free_space(out_dir, sum(estimates), f"prepare {corpus}")
    manifests = {}
    with atomic_dir(out_dir) as tmp:
        for split, (source, files) in splits.items():
            split_dir = tmp / split
            split_dir.mkdir()
            manifests[split] = prepare_split(source, files, tokenizer, config.prepare, split_dir, corpus, split)
    return manifests


# Upper estimates of what a source holds: zstd packs JSON lines of text about 4x, and a BPE token
# (Pythia's, or the demo's) covers about 3 bytes of text or more.
ZSTD_RATIO = 4
BYTES_PER_TOKEN = 3


def estimate_bytes(source: cfg.Source, files: list[Path], itemsize: int) -> int | None:
    """Bytes the shards of one split will take at most (None: unknown, a streamed dataset without a budget)."""
    tokens = None
    if files:
        text = sum(f.stat().st_size * (ZSTD_RATIO if f.suffix == ".zst" else 1) for f in files)
        tokens = text // BYTES_PER_TOKEN
    if source.max_tokens is not None:
        tokens = source.max_tokens if tokens is None else min(tokens, source.max_tokens)
    return None if tokens is None else tokens * itemsize


def prepare_split(
    source: cfg.Source, files: list[Path], tokenizer, settings: cfg.PrepareConfig, out_dir: Path, corpus: str, split: str
) -> dict:
    """Read, tokenize and pack one split into `out_dir`; write and return its manifest."""
    label = f"{corpus}/{split}"
    dtype = token_dtype(tok.vocab_size(tokenizer))
    packer = Packer(settings.seq_len, tokenizer.eos_token_id, dtype, source.max_tokens)
    writer = ShardWriter(out_dir, settings.seq_len, dtype, settings.shard_sequences)
    mixture = MixtureBudget(source.mixture.weights, source.max_tokens) if source.mixture else None
    stats = sources.ReadStats()
    documents = sources.read_parts(source, files, stats, settings.on_bad_record, source.mixture.field if mixture else None)
    backend = tokenizer.backend_tokenizer
    start = time.perf_counter()
    empty = bad = 0
    with tqdm(desc=f"prepare {label}", unit=" docs", mininterval=1.0, dynamic_ncols=True) as bar:
        for batch, skipped in _prefetch(_batches(documents, settings.batch_documents, stats)):
            empty, bad = skipped
            encodings = backend.encode_batch_fast([text for text, _ in batch], add_special_tokens=False)
            ids = [e.ids for e in encodings]
            if mixture is None:
                writer.add(packer.add(ids))
            else:
                writer.add(_add_mixed(packer, mixture, ids, [part for _, part in batch]))
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.update(len(batch))
            bar.set_postfix(tokens=packer.rows_out * settings.seq_len, tok_s=f"{packer.tokens_in / elapsed:,.0f}", refresh=False)
            if packer.done or (mixture is not None and mixture.full):
                break  # budget reached: counts stay as of this batch (the reader thread may be ahead)
        else:
            empty, bad = stats.empty, stats.bad
    shards = writer.close()
    if packer.documents == 0:
        raise sources.CorpusError(f"{label}: no documents read from {sources.describe(source, files)} (empty source?)")
    elapsed = time.perf_counter() - start
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "corpus": corpus,
        "split": split,
        "tokenizer": {
            "fingerprint": tok.fingerprint(tokenizer),
            "vocab_size": tok.vocab_size(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
        },
        "source": {
            "description": sources.describe(source, files),
            "fingerprint": sources.fingerprint(source, files),
            "config": cfg.to_dict(source),
        },
        "documents_read": packer.documents,
        # Documents the budget left unread are neither read nor skipped.
        "documents_skipped": empty + bad,
        "documents_skipped_empty": empty,
        "records_skipped_bad": bad,
        "tokens_written": packer.rows_out * settings.seq_len,
        "tokens_dropped": packer.dropped_tokens(),
        "sequences": packer.rows_out,
        "seq_len": settings.seq_len,
        "dtype": str(dtype),
        **({"mixture": {"field": source.mixture.field, **mixture.summary()}} if mixture else {}),
        "shards": [
            {"file": name, "rows": rows, "bytes": (out_dir / name).stat().st_size, "sha256": sources.file_sha256(out_dir / name)}
            for name, rows in shards
        ],
    }
    write_json(out_dir / MANIFEST, manifest)
    log.info(
        "%s: %d documents -> %d sequences of %d tokens in %d shards (%d empty, %d bad skipped; %d tokens dropped) at %.0f tokens/s",
        label, packer.documents, packer.rows_out, settings.seq_len, len(shards), empty, bad,
        packer.dropped_tokens(), packer.tokens_in / max(elapsed, 1e-9),
    )
    for example in stats.bad_examples:
        log.warning("skipped bad record: %s", example)
    if mixture is not None:
        short = {part: f"{mixture.tokens[part]:,} of {budget:,} tokens" for part, budget in mixture.budget.items()
                 if mixture.tokens[part] < budget}
        for part, drawn in mixture.summary()["parts"].items():
            log.info("%s: part %s: %d documents, %d tokens (share %.4f, weight %g)", label, part, drawn["documents"],
                     drawn["tokens"], drawn["share"], drawn["weight"])
        if short and not packer.done:
            log.warning("%s: the source ended before these parts reached their share: %s", label, "; ".join(f"{p} {t}" for p, t in short.items()))
    return manifest


def _add_mixed(packer: Packer, mixture: MixtureBudget, ids: list[list[int]], parts: list[str | None]):
    """Pack the documents whose part still has budget; documents the packer did not take (its
    budget was reached in this batch) are given back, so the manifest counts what was written."""
    admitted = [(doc, part) for doc, part in zip(ids, parts) if mixture.admit(part, len(doc) + 1)]
    before = packer.documents
    rows = packer.add([doc for doc, _ in admitted])
    for doc, part in admitted[packer.documents - before:]:
        mixture.give_back(part, len(doc) + 1)
    return rows


def _batches(documents: Iterator, size: int, stats: sources.ReadStats) -> Iterator[tuple[list, tuple[int, int]]]:
    """Fixed-size batches of (text, part), each with the (empty, bad) counts skipped up to its end."""
    batch: list = []
    for text in documents:
        batch.append(text)
        if len(batch) == size:
            yield batch, (stats.empty, stats.bad)
            batch = []
    if batch:
        yield batch, (stats.empty, stats.bad)


def _prefetch(items: Iterator, depth: int = 4) -> Iterator:
    """Read and parse the next batches in a thread while the tokenizer (which releases
    the GIL) works on the current one. Order is kept; errors are re-raised in the
    caller's thread, after the batches read before them."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=produce, name="prepare-reader", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
