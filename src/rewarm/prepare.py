"""The `prepare` stage: one corpus's documents into packed Arrow shards, per split.

Output: `<out>/<split>/shard-<unit>-<k>.arrow` and `<out>/<split>/manifest.json` for
each split of the corpus, written under a temporary name and renamed when complete.

A split is read as units (its input files, or a streamed dataset's shards), each packed
on its own: a corpus can be prepared in parts (`prepare.parts`, contiguous groups of
units, `rewarm prepare --part p`), as independent jobs, then assembled (`rewarm
assemble`) into the same shards and manifest as one `prepare` of the whole. Within a
job, parallelism is the tokenizer's own thread pool (`encode_batch`) while a thread
reads ahead; documents are batched in a fixed size, so the output does not depend on
the worker count either.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from rewarm import config as cfg
from rewarm.data import sources
from rewarm.data import tokenizer as tok
from rewarm.data.packing import SCHEMA_VERSION, MixtureBudget, Packer, ShardWriter, token_dtype
from rewarm.data.shards import MANIFEST, SHARD_ENTRY
from rewarm.io import atomic_dir, check_free_space, check_replaceable, file_sha256, object_schema, plain_file_name, read_checked_json, write_json
from rewarm.prefetch import prefetch

log = logging.getLogger(__name__)


def set_workers(workers: int) -> None:
    """Size the tokenizer's thread pool. Must run before the first tokenization in the
    process: `tokenizers` reads RAYON_NUM_THREADS once, when its pool starts."""
    os.environ["RAYON_NUM_THREADS"] = str(max(1, workers))
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if workers > 1 else "false"


PART = "part.json"
"""A part's record of one split (`<part dir>/<split>/part.json`), read by `assemble`."""
_COUNT = {"type": "integer", "minimum": 0}
PART_SCHEMA = object_schema({
    "schema_version": {"type": "integer"}, "corpus": {"type": "string"}, "split": {"type": "string"},
    "parts": {"type": "integer", "minimum": 1}, "part": _COUNT, "units_total": _COUNT, "seq_len": {"type": "integer", "minimum": 1},
    "dtype": {"type": "string"}, "tokenizer": {"type": "object"},
    "source": object_schema({"description": {"type": "string"}, "config": {"type": "object"}}),
    "units": {"type": "array", "items": object_schema({
        "unit": _COUNT, "name": {"type": "string"}, "file": {"type": ["object", "null"]}, "target_tokens": {"type": ["integer", "null"]},
        **{key: _COUNT for key in ("documents_read", "documents_skipped_empty", "records_skipped_bad", "tokens_written",
                                   "tokens_dropped", "sequences")},
        "shards": {"type": "array", "items": SHARD_ENTRY},
    })},
})
"""What `assemble` reads of a part's record (checked on read: a field missing is named, not a KeyError)."""


def prepare_corpus(
    config: cfg.Config, corpus: str, tokenizer_dir: str | Path, raw_dir: str | Path, out_dir: str | Path,
    base_dir: str | Path = ".", part: int | None = None,
) -> dict[str, dict]:
    """Tokenize and pack `corpus`. `part` None: every unit of every split, written with its
    manifest (what `assemble` writes from the parts); returns the manifests by split. `part` p:
    only that part's units (`prepare.parts`), with a `part.json` per split for `assemble`; returns those."""
    if corpus not in config.corpora:
        raise cfg.ConfigError(f"corpus {corpus!r} is not in the configuration (have: {', '.join(config.corpora)})")
    check_replaceable(out_dir, "prepare")  # before reading anything
    parts = config.prepare.parts
    if part is not None and not 0 <= part < parts:
        raise cfg.ConfigError(f"--part: {part} is not a part of this configuration (prepare.parts is {parts}: 0 to {parts - 1})")
    tokenizer = tok.load(tokenizer_dir)
    splits = {split: sources.SplitSource(source, corpus, split, raw_dir, base_dir)
              for split, source in config.corpora[corpus].splits().items()}
    chosen = {split: [s.units[i] for i in (range(len(s.units)) if part is None else sources.part_units(len(s.units), parts, part))]
              for split, s in splits.items()}
    itemsize = token_dtype(tok.vocab_size(tokenizer)).itemsize
    estimates = [0 if s.files and not chosen[split] else estimate_bytes(s.source, [u.file for u in chosen[split] if u.file], itemsize)
                 for split, s in splits.items()]  # (a part with none of a split's files writes nothing of it)
    if None in estimates:
        log.info("%s: disk space not checked (a streamed dataset's size is unknown without max_tokens)", corpus)
    else:
        check_free_space(out_dir, sum(estimates), f"prepare {corpus}")
    if part is not None:
        log.info("%s: part %d of %d: %s", corpus, part, parts,
                 "; ".join(f"{split} units {_span(chosen[split])} of {len(s.units)}" for split, s in splits.items()))
    results = {}
    with atomic_dir(out_dir, "prepare") as tmp:
        for split, split_source in splits.items():
            split_dir = tmp / split
            split_dir.mkdir()
            partial = prepare_units(split_source, chosen[split], tokenizer, config.prepare, split_dir, corpus, split)
            if part is None:
                results[split] = merge(split_source.source, [partial])
                write_json(split_dir / MANIFEST, results[split])
            else:
                results[split] = {**partial, "part": part, "parts": parts}
                write_json(split_dir / PART, results[split])
    return results


def assemble(config: cfg.Config, corpus: str, part_dirs: list[str | Path], out_dir: str | Path) -> dict[str, dict]:
    """The split directories of a corpus from its parts' directories (`prepare --part`): each
    split's shards (hard links where the filesystem allows, else copies) and its manifest, the same
    as `prepare` of the whole corpus writes. Every part must be there, each once."""
    if corpus not in config.corpora:
        raise cfg.ConfigError(f"corpus {corpus!r} is not in the configuration (have: {', '.join(config.corpora)})")
    check_replaceable(out_dir, "prepare")  # before reading anything
    parts = config.prepare.parts
    splits = config.corpora[corpus].splits()
    found: dict[int, Path] = {}
    partials: dict[str, list[dict]] = {split: [] for split in splits}
    for part_dir in map(Path, part_dirs):
        for split in splits:
            path = part_dir / split / PART
            if not path.is_file():
                raise sources.CorpusError(f"{path}: missing (run `rewarm prepare --corpus {corpus} --part N` for this part first)")
            record = read_checked_json(path, PART_SCHEMA, "part record")
            if record.get("schema_version") != SCHEMA_VERSION or record.get("corpus") != corpus or record.get("parts") != parts:
                raise sources.CorpusError(
                    f"{path}: a part of {record.get('corpus')!r} in {record.get('parts')} parts (schema {record.get('schema_version')}); "
                    f"expected {corpus!r} in {parts} parts (prepare.parts), schema {SCHEMA_VERSION}")
            outside = [shard.get("file") for unit in record.get("units", []) for shard in unit.get("shards", [])
                       if not plain_file_name(shard.get("file"))]
            if outside:
                raise sources.CorpusError(f"{path}: shard {outside[0]!r} is not a file name inside {path.parent} (refused: a "
                                          f"part names only the shards beside it)")
            if found.setdefault(record["part"], part_dir) != part_dir:
                raise sources.CorpusError(f"{part_dir}: part {record['part']} is also {found[record['part']]}")
            partials[split].append({**record, "dir": str(part_dir / split)})
    missing = sorted(set(range(parts)) - set(found))
    if missing:
        raise sources.CorpusError(f"{corpus}: parts {', '.join(map(str, missing))} of {parts} not given (have: {', '.join(map(str, part_dirs))})")
    manifests = {}
    with atomic_dir(out_dir, "prepare") as tmp:
        for split, source in splits.items():
            manifest = merge(source, sorted(partials[split], key=lambda r: r["part"]))
            split_dir = tmp / split
            split_dir.mkdir()
            by_file = {shard["file"]: Path(record["dir"]) for record in partials[split] for unit in record["units"] for shard in unit["shards"]}
            for shard in manifest["shards"]:
                source_path = by_file[shard["file"]] / shard["file"]
                if not source_path.is_file() or source_path.stat().st_size != shard["bytes"]:
                    raise sources.CorpusError(f"{source_path}: missing or not the size its part recorded ({shard['bytes']} bytes)")
                _link(source_path, split_dir / shard["file"])
            write_json(split_dir / MANIFEST, manifest)
            manifests[split] = manifest
    log.info("%s: assembled from %d parts into %s", corpus, parts, out_dir)
    return manifests


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(source, target)


def _span(units: list[sources.Unit]) -> str:
    if not units:
        return "none"
    return f"{units[0].index}" if len(units) == 1 else f"{units[0].index}-{units[-1].index}"


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


def unit_budgets(split_source: sources.SplitSource, seq_len: int) -> list[tuple[int, int] | None]:
    """Each unit's share of the split's budget, proportional to its size (a dataset's shards:
    equal): (whole sequences, summing to max_tokens // seq_len; tokens, summing to max_tokens, which
    a mixture shares among its parts). None for every unit without a budget."""
    max_tokens = split_source.source.max_tokens
    if max_tokens is None:
        return [None] * len(split_source.units)
    weights = [unit.weight for unit in split_source.units]
    return list(zip(sources.allocate(max_tokens // seq_len, weights), sources.allocate(max_tokens, weights)))


def prepare_units(
    split_source: sources.SplitSource, units: list[sources.Unit], tokenizer, settings: cfg.PrepareConfig, out_dir: Path,
    corpus: str, split: str,
) -> dict:
    """Read, tokenize and pack these units of one split into `out_dir`, each unit on its own;
    returns the record `merge` makes a manifest of."""
    source = split_source.source
    budgets = unit_budgets(split_source, settings.seq_len)
    records = [prepare_unit(split_source, unit, budgets[unit.index], tokenizer, settings, out_dir, f"{corpus}/{split}")
               for unit in units]
    return {
        "schema_version": SCHEMA_VERSION,
        "corpus": corpus,
        "split": split,
        "units_total": len(split_source.units),
        "tokenizer": {
            "fingerprint": tok.fingerprint(tokenizer),
            "vocab_size": tok.vocab_size(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "document_prefix": tok.document_prefix(tokenizer),  # before every document (a family's BOS), then EOS after
        },
        "source": {"description": sources.describe(source, split_source.files), "config": cfg.to_dict(source)},
        "seq_len": settings.seq_len,
        "dtype": str(token_dtype(tok.vocab_size(tokenizer))),
        "units": records,
    }


def prepare_unit(
    split_source: sources.SplitSource, unit: sources.Unit, share: tuple[int, int] | None, tokenizer, settings: cfg.PrepareConfig,
    out_dir: Path, label: str,
) -> dict:
    """Pack one unit: its documents, each followed by EOS, cut into rows; its shards are
    `shard-<unit>-<k>.arrow`. Stops at the unit's share of the budget (`unit_budgets`)."""
    source = split_source.source
    dtype = token_dtype(tok.vocab_size(tokenizer))
    budget_rows = None if share is None else share[0]
    budget = None if share is None else budget_rows * settings.seq_len
    packer = Packer(settings.seq_len, tokenizer.eos_token_id, dtype, budget, prefix=tok.document_prefix(tokenizer))
    writer = ShardWriter(out_dir, settings.seq_len, dtype, settings.shard_sequences, prefix=f"shard-{unit.index:05d}")
    mixture = MixtureBudget(source.mixture.weights, share[1]) if source.mixture else None
    stats = sources.ReadStats()
    backend = tokenizer.backend_tokenizer
    start = time.perf_counter()
    empty = bad = 0
    if budget_rows != 0:
        documents = split_source.read(unit, stats, settings.on_bad_record, source.mixture.field if mixture else None)
        desc = f"prepare {label}" + (f" {unit.index + 1}/{len(split_source.units)}" if len(split_source.units) > 1 else "")
        with tqdm(desc=desc, unit=" docs", mininterval=1.0, dynamic_ncols=True) as bar:
            # Three stages at once: a thread reads and parses ahead, a thread encodes (the tokenizer's pool
            # works while the GIL is free), this thread packs and writes the batch before.
            encoded = (_encode(backend, batch, skipped) for batch, skipped in prefetch(_batches(documents, settings.batch_documents, stats), name="prepare-read"))
            for batch, skipped, ids in prefetch(encoded, depth=2, name="prepare-encode"):
                empty, bad = skipped
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
    elapsed = time.perf_counter() - start
    if shards or packer.documents:
        log.info("%s %s: %d documents -> %d sequences in %d shards (%d empty, %d bad skipped; %d tokens dropped) at %.0f tokens/s",
                 label, unit.name, packer.documents, packer.rows_out, len(shards), empty, bad, packer.dropped_tokens(),
                 packer.tokens_in / max(elapsed, 1e-9))
    for example in stats.bad_examples:
        log.warning("skipped bad record: %s", example)
    return {
        "unit": unit.index,
        "name": unit.name,
        "file": None if unit.file is None else {"name": unit.file.name, "size": unit.file.stat().st_size,
                                                "sha256": file_sha256(unit.file)},
        "target_tokens": budget,
        "budget_reached": packer.done or (mixture is not None and mixture.full),
        "documents_read": packer.documents,
        "documents_skipped_empty": empty,
        "records_skipped_bad": bad,
        "bad_examples": stats.bad_examples,
        "tokens_written": packer.rows_out * settings.seq_len,
        "tokens_dropped": packer.dropped_tokens(),
        "sequences": packer.rows_out,
        **({"mixture": mixture.summary()} if mixture else {}),
        "shards": [{"file": name, "rows": rows, "bytes": (out_dir / name).stat().st_size, "sha256": file_sha256(out_dir / name)}
                   for name, rows in shards],
    }


def merge(source: cfg.Source, partials: list[dict]) -> dict:
    """A split's manifest from its parts' records (in part order): every unit exactly once, made
    with one tokenizer and these settings; the counts summed, the shards in unit order."""
    first = partials[0]
    corpus, split = first["corpus"], first["split"]
    label = f"{corpus}/{split}"
    for record in partials:
        for key in ("tokenizer", "seq_len", "dtype", "units_total"):
            if record[key] != first[key]:
                raise sources.CorpusError(f"{label}: parts differ in {key} ({record[key]} against {first[key]}): prepare them again")
        if record["source"]["config"] != cfg.to_dict(source):
            raise sources.CorpusError(f"{label}: a part was prepared from another source configuration "
                                      f"({record['source']['config']}); prepare the parts again")
    units = sorted((unit for record in partials for unit in record["units"]), key=lambda unit: unit["unit"])
    if [unit["unit"] for unit in units] != list(range(first["units_total"])):
        raise sources.CorpusError(f"{label}: the parts hold units {[unit['unit'] for unit in units]}, "
                                  f"expected each of 0 to {first['units_total'] - 1} once")
    total = lambda key: sum(unit[key] for unit in units)  # noqa: E731
    description = first["source"]["description"]
    if total("documents_read") == 0:
        raise sources.CorpusError(f"{label}: no documents read from {description} (empty source?)")
    files = [unit["file"] for unit in units if unit["file"] is not None]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "corpus": corpus,
        "split": split,
        "tokenizer": first["tokenizer"],
        "source": {"description": description, "fingerprint": sources.fingerprint_of(source, files), "config": cfg.to_dict(source)},
        "documents_read": total("documents_read"),
        # Documents the budget left unread are neither read nor skipped.
        "documents_skipped": total("documents_skipped_empty") + total("records_skipped_bad"),
        "documents_skipped_empty": total("documents_skipped_empty"),
        "records_skipped_bad": total("records_skipped_bad"),
        "tokens_written": total("tokens_written"),
        "tokens_dropped": total("tokens_dropped"),
        "sequences": total("sequences"),
        "seq_len": first["seq_len"],
        "dtype": first["dtype"],
        **({"mixture": {"field": source.mixture.field, **_merge_mixtures([unit["mixture"] for unit in units])}} if source.mixture else {}),
        # Each unit (input file, or dataset shard) is packed on its own; a budget is shared in proportion to size.
        "units": [{key: unit[key] for key in ("unit", "name", "target_tokens", "documents_read", "tokens_written", "sequences")}
                  for unit in units],
        "shards": [shard for unit in units for shard in unit["shards"]],
    }
    log.info("%s: %d documents -> %d sequences of %d tokens in %d shards from %d units (%d empty, %d bad skipped; %d tokens dropped)",
             label, manifest["documents_read"], manifest["sequences"], manifest["seq_len"], len(manifest["shards"]), len(units),
             manifest["documents_skipped_empty"], manifest["records_skipped_bad"], manifest["tokens_dropped"])
    short = [unit for unit in units if unit["target_tokens"] is not None and not unit["budget_reached"]]
    if source.max_tokens is not None and short:
        log.warning("%s: %d of %d units ended before their share of the budget (%s): %d of max_tokens %d tokens written",
                    label, len(short), len(units), ", ".join(unit["name"] for unit in short[:5]) + (", ..." if len(short) > 5 else ""),
                    manifest["tokens_written"], source.max_tokens)
    if source.mixture is not None:
        mixture = manifest["mixture"]
        absent = [name for name, drawn in mixture["parts"].items() if drawn["documents"] == 0]
        if absent:  # the whole source was read (a part that is not full keeps it reading): the name occurs nowhere
            seen = ", ".join(f"{name} ({count:,})" for name, count in mixture["other_parts"].items()) or "none other"
            raise sources.CorpusError(f"{label}: mixture part{'s' * (len(absent) > 1)} {', '.join(map(repr, absent))} never occur"
                                      f"{'s' * (len(absent) == 1)} in field {source.mixture.field} of {description}, read "
                                      f"to its end; the other values found, with their documents: {seen} "
                                      f"(corpora.*.mixture.weights: a misspelled name?)")
        for name, drawn in mixture["parts"].items():
            log.info("%s: part %s: %d documents, %d tokens (share %.4f, weight %g)", label, name, drawn["documents"],
                     drawn["tokens"], drawn["share"], drawn["weight"])
        short_parts = {name: f"{drawn['tokens']:,} of {drawn['target_tokens']:,} tokens" for name, drawn in mixture["parts"].items()
                       if drawn["tokens"] < drawn["target_tokens"]}
        if short_parts and manifest["tokens_written"] < (source.max_tokens // first["seq_len"]) * first["seq_len"]:
            log.warning("%s: the source ended before these parts reached their share: %s", label,
                        "; ".join(f"{p} {t}" for p, t in short_parts.items()))
    return manifest


def _merge_mixtures(summaries: list[dict]) -> dict:
    """One mixture summary from the units' (MixtureBudget.summary): targets, tokens and documents summed."""
    parts: dict[str, dict] = {}
    for summary in summaries:
        for name, drawn in summary["parts"].items():
            into = parts.setdefault(name, {"weight": drawn["weight"], "target_tokens": 0, "tokens": 0, "share": 0.0, "documents": 0})
            for key in ("target_tokens", "tokens", "documents"):
                into[key] += drawn[key]
    total = sum(drawn["tokens"] for drawn in parts.values()) or 1
    for drawn in parts.values():
        drawn["share"] = drawn["tokens"] / total
    others: dict[str, int] = {}
    for summary in summaries:
        for name, count in summary.get("other_parts", {}).items():
            others[name] = others.get(name, 0) + count
    return {"parts": parts, "other_documents_skipped": sum(summary["other_documents_skipped"] for summary in summaries),
            "other_parts": dict(sorted(others.items()))}


def _add_mixed(packer: Packer, mixture: MixtureBudget, ids: list[list[int]], parts: list[str | None]):
    """Pack the documents whose part still has budget; documents the packer did not take (its
    budget was reached in this batch) are given back, so the manifest counts what was written."""
    admitted = [(doc, part) for doc, part in zip(ids, parts) if mixture.admit(part, len(doc) + packer.frame)]
    before = packer.documents
    rows = packer.add([doc for doc, _ in admitted])
    for doc, part in admitted[packer.documents - before:]:
        mixture.give_back(part, len(doc) + packer.frame)
    return rows


PIECE_CHARS = 1 << 20
"""A document longer than this (1,048,576 characters) is encoded a piece at a time: the tokenizer holds
about 135 bytes a character while it encodes (a 48 MB record took 6.5 GB), so a piece bounds that to about
140 MB whatever the record's length. Pieces end before a space that starts a word, where the byte-level
pre-tokenizer splits anyway, so the ids are those of the whole document (a piece with no such space in its
last half is cut at the limit)."""


def pieces(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """`text` cut into pieces of at most `limit` characters, each cut before a space that starts a word
    (a space followed by something other than whitespace), looked for in the piece's last half."""
    out, start = [], 0
    while len(text) - start > limit:
        end = start + limit
        cut = text.rfind(" ", start + limit // 2, end)
        while cut != -1 and text[cut + 1].isspace():  # inside a run of whitespace: the regex splits before its last space
            cut = text.rfind(" ", start + limit // 2, cut)
        cut = end if cut == -1 else cut
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _encode(backend, batch: list, skipped: tuple[int, int], limit: int = PIECE_CHARS) -> tuple[list, tuple[int, int], list[list[int]]]:
    texts = [text for text, _ in batch]
    long = {i for i, text in enumerate(texts) if len(text) > limit}
    encodings = backend.encode_batch_fast([text for i, text in enumerate(texts) if i not in long], add_special_tokens=False)
    ids = iter([e.ids for e in encodings])
    return batch, skipped, [
        [token for piece in pieces(text, limit) for token in backend.encode(piece, add_special_tokens=False).ids]
        if i in long else next(ids) for i, text in enumerate(texts)]


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
