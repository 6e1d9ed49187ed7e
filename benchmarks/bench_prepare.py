"""Benchmark of the `prepare` stage, measured side by side in one run on the same texts.

Prints tokens/s of:
  - the raw ceiling: `tokenizers.Tokenizer.encode_batch` on texts already in memory, same
    tokenizer, same thread count (goal: `prepare` as one part reaches >= 0.85 of it);
  - `prepare` as one part (read .jsonl.zst, tokenize, pack, write Arrow shards + manifest) with
    1 and 2 workers, in one process each;
  - `prepare` as 2 parts run at once, 1 worker each (two processes, as two jobs would; the corpus
    ships in 2 files, one per part), timed from the first part's start to the last part's end;
  - the reader alone (decompress, split lines, parse JSON), the rate at which one thread feeds
    the tokenizer;
  - the usual route: `datasets.load_dataset("json")` -> `.map(batched=True)` -> `save_to_disk`.
Then, from the per-core rate of the parts, the wall time of tokenizing 297B tokens (the paper's
SlimPajama schedule) on 8 nodes of 64 cores. Each figure is the best of --repeats runs. Thread
pools are sized per process, so every worker count runs in its own subprocess.

    python benchmarks/bench_prepare.py [--documents 30000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER_TOKENS = 297e9  # Gupta et al. 2023's SlimPajama schedule
CLUSTER_CORES = 8 * 64


def make_corpus(work: Path, documents: int) -> tuple[Path, Path]:
    """The demo's upstream documents in 2 files (2 units), and a demo tokenizer trained on them."""
    from rewarm.data import demo
    from rewarm.data import tokenizer as tok

    corpus = work / "corpus"
    corpus.mkdir()
    records = demo.generate_records("upstream", documents, seed=0)
    half = documents // 2
    demo.write_jsonl_zst((next(records) for _ in range(half)), corpus / "part-0.jsonl.zst")
    demo.write_jsonl_zst(records, corpus / "part-1.jsonl.zst")
    tokenizer_dir = work / "tokenizer"
    texts = (r["text"] for r in demo.generate_records("upstream", min(documents, 10000), seed=0))
    tok.save_trained(tok.train_bpe(texts, vocab_size=4096), tokenizer_dir)
    return corpus, tokenizer_dir


def bench_config(corpus: Path, parts: int):
    from rewarm import config as cfg

    return cfg.from_dict({
        "tokenizer": {"type": "train", "vocab_size": 4096},
        "prepare": {"seq_len": 2048, "shard_sequences": 1024, "batch_documents": 512, "parts": parts},
        "model": {"max_position_embeddings": 2048},
        "corpora": {"upstream": {"train": {"type": "jsonl", "path": str(corpus / "*.jsonl.zst")},
                                 "val": {"type": "jsonl", "path": str(corpus / "part-0.jsonl.zst")}},
                    "downstream": {"train": {"type": "jsonl", "path": str(corpus / "part-0.jsonl.zst")},
                                   "val": {"type": "jsonl", "path": str(corpus / "part-0.jsonl.zst")}}},
    })


def prepare_train(config, tokenizer_dir: Path, out: Path, part: int | None) -> None:
    """`prepare` of the upstream corpus's train split only (as one part, or part `part`)."""
    import dataclasses

    from rewarm import prepare

    train_only = dataclasses.replace(config.corpora["upstream"], val=None)
    config = dataclasses.replace(config, corpora={**config.corpora, "upstream": train_only})
    prepare.prepare_corpus(config, "upstream", tokenizer_dir, "unused", out, part=part)


def measure_rewarm(corpus: Path, tokenizer_dir: Path, out: Path, repeats: int) -> dict:
    """In this process (its thread pool already sized): ceiling, reader and prepare, alternating."""
    from rewarm.data import sources
    from rewarm.data import tokenizer as tok

    tokenizer = tok.load(tokenizer_dir)
    files = sorted(corpus.glob("*.jsonl.zst"))
    config = bench_config(corpus, parts=1)
    ceiling, fast, reader, packed, tokens, texts = [], [], [], [], 0, []
    for attempt in range(repeats):
        start = time.perf_counter()
        texts = [text for path in files for text in sources.read_jsonl(path, "text", sources.ReadStats())]
        reader.append(time.perf_counter() - start)
        start = time.perf_counter()
        encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        ceiling.append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        fast.append(time.perf_counter() - start)
        tokens = sum(len(e.ids) for e in encodings) + len(texts)  # + one EOS per document
        start = time.perf_counter()
        prepare_train(config, tokenizer_dir, out / f"run{attempt}", part=None)
        packed.append(time.perf_counter() - start)
    return {"tokens": tokens, "documents": len(texts), "chars": sum(map(len, texts)),
            "ceiling_s": min(ceiling), "fast_s": min(fast), "prepare_s": min(packed), "reader_s": min(reader)}


def measure_part(corpus: Path, tokenizer_dir: Path, out: Path, part: int, go: Path) -> dict:
    """One of 2 parts, started when `go` appears (both processes loaded): its start and end times."""
    from rewarm.data import tokenizer as tok

    tok.load(tokenizer_dir)  # imports done before the start
    config = bench_config(corpus, parts=2)
    go.with_name(f"{go.name}.ready{part}").touch()
    while not go.exists():
        time.sleep(0.001)
    start = time.time()
    prepare_train(config, tokenizer_dir, out, part=part)
    return {"start": start, "end": time.time()}


def measure_datasets(corpus: Path, tokenizer_dir: Path, out: Path, repeats: int) -> dict:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    times = []
    for attempt in range(repeats):
        cache = out / f"cache{attempt}"
        start = time.perf_counter()
        dataset = datasets.load_dataset("json", data_files=sorted(map(str, corpus.glob("*.jsonl.zst"))), split="train",
                                        cache_dir=str(cache))
        tokenized = dataset.map(
            lambda batch: tokenizer(batch["text"], add_special_tokens=False),
            batched=True, remove_columns=dataset.column_names,
        )
        tokenized.save_to_disk(str(out / f"saved{attempt}"))
        times.append(time.perf_counter() - start)
    return {"datasets_s": min(times)}


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.part is not None:
        print(json.dumps(measure_part(Path(args.corpus), Path(args.tokenizer), out, args.part, Path(args.go))))
        return
    result = measure_rewarm(Path(args.corpus), Path(args.tokenizer), out / "rewarm", args.repeats)
    if args.with_datasets:
        result.update(measure_datasets(Path(args.corpus), Path(args.tokenizer), out / "datasets", args.repeats))
    print(json.dumps(result))


def worker_env(workers: int) -> dict:
    return dict(os.environ, RAYON_NUM_THREADS=str(workers), TOKENIZERS_PARALLELISM="true" if workers > 1 else "false")


def child_command(corpus: Path, tokenizer_dir: Path, out: Path) -> list[str]:
    return [sys.executable, __file__, "--child", "--corpus", str(corpus), "--tokenizer", str(tokenizer_dir), "--out", str(out)]


def run_child(workers: int, corpus: Path, tokenizer_dir: Path, work: Path, repeats: int, with_datasets: bool) -> dict:
    command = child_command(corpus, tokenizer_dir, work / f"w{workers}") + ["--repeats", str(repeats)]
    if with_datasets:
        command.append("--with-datasets")
    done = subprocess.run(command, env=worker_env(workers), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_parts(corpus: Path, tokenizer_dir: Path, work: Path, repeats: int) -> float:
    """Seconds for 2 parts run at once, 1 worker each, from the first start to the last end (best of runs)."""
    walls = []
    for attempt in range(repeats):
        go = work / f"go{attempt}"
        processes = [subprocess.Popen(child_command(corpus, tokenizer_dir, work / f"parts{attempt}" / str(part))
                                      + ["--part", str(part), "--go", str(go)],
                                      env=worker_env(1), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                     for part in (0, 1)]
        # Both load their imports and tokenizer, say so, then wait for `go`.
        while not all(go.with_name(f"{go.name}.ready{part}").exists() for part in (0, 1)):
            if any(process.poll() is not None for process in processes):
                raise SystemExit("a part failed before it started")
            time.sleep(0.01)
        go.touch()
        times = [json.loads(process.communicate()[0].strip().splitlines()[-1]) for process in processes]
        if any(process.returncode for process in processes):
            raise SystemExit("a part failed")
        walls.append(max(t["end"] for t in times) - min(t["start"] for t in times))
    return min(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=30000, help="demo upstream documents to tokenize (default: 30000)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per figure (default: 3)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"),
                        help="directory for prepare.json, the raw figures (default: benchmarks/results)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-datasets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        corpus, tokenizer_dir = make_corpus(work, args.documents)
        results = {w: run_child(w, corpus, tokenizer_dir, work, args.repeats, with_datasets=w == 2) for w in (1, 2)}
        results["parts_s"] = run_parts(corpus, tokenizer_dir, work, args.repeats)
    report(results, Path(args.results))


def report(results: dict, out: Path) -> None:
    one, two, parts_s = results[1], results[2], results["parts_s"]
    tokens = one["tokens"]
    rate = lambda seconds: tokens / seconds  # noqa: E731
    print(f"corpus: {one['documents']} demo documents in 2 files, {one['chars'] / 1e6:.1f} M characters, {tokens / 1e6:.2f} M tokens "
          f"(vocab 4096, seq_len 2048); {os.cpu_count()} CPUs; best of runs")
    print(f"{'route':50s} {'threads':>7s} {'tokens/s':>12s}  ratio")
    rows = []
    for workers, r in ((1, one), (2, two)):
        rows += [
            ("encode_batch ceiling (texts in memory)", workers, r["ceiling_s"], ""),
            ("encode_batch_fast (no offsets, in memory)", workers, r["fast_s"], ""),
            ("prepare, one part (.jsonl.zst -> Arrow shards)", workers, r["prepare_s"],
             f"{r['ceiling_s'] / r['prepare_s']:.2f} of encode_batch, {r['fast_s'] / r['prepare_s']:.2f} of _fast"),
        ]
    rows += [
        ("prepare, 2 parts at once, 1 worker each", 2, parts_s,
         f"{two['ceiling_s'] / parts_s:.2f} of encode_batch, {two['fast_s'] / parts_s:.2f} of _fast (2 threads)"),
        ("reader alone (zstd, lines, JSON)", 1, one["reader_s"], f"{one['chars'] / one['reader_s'] / 1e6:.0f} M characters/s"),
        ("datasets json -> map(batched) -> save_to_disk", 2, two["datasets_s"], f"prepare is {two['datasets_s'] / two['prepare_s']:.2f}x faster"),
    ]
    for name, workers, seconds, ratio in rows:
        print(f"{name:50s} {workers:7d} {rate(seconds):12,.0f}  {ratio}")
    print(f"prepare, 2 workers vs 1: {one['prepare_s'] / two['prepare_s']:.2f}x; 2 parts vs one part of 2 workers: "
          f"{two['prepare_s'] / parts_s:.2f}x")
    per_core = rate(parts_s) / 2
    hours = PAPER_TOKENS / (per_core * CLUSTER_CORES) / 3600
    print(f"per core (2 parts at once): {per_core:,.0f} tokens/s; 297B tokens on 8 nodes x 64 cores (one part per core, "
          f"this tokenizer and text): about {hours:.1f} h")
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
