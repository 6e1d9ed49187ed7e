"""Benchmark of the `prepare` stage, measured side by side in one run on the same texts.

Prints tokens/s of:
  - the raw ceiling: `tokenizers.Tokenizer.encode_batch` on texts already in memory,
    same tokenizer, same thread count (goal: prepare >= 0.85 of it);
  - `prepare` (read .jsonl.zst, tokenize, pack, write Arrow shards + manifest) with 1 and 2 workers;
  - the usual route: `datasets.load_dataset("json")` -> `.map(batched=True)` -> `save_to_disk`
    (goal: prepare is faster).
Each figure is the best of --repeats runs. Thread pools are sized per process, so every
worker count runs in its own subprocess.

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


def make_corpus(work: Path, documents: int) -> tuple[Path, Path]:
    from rewarm.data import demo
    from rewarm.data import tokenizer as tok

    corpus = work / "upstream.jsonl.zst"
    demo.write_jsonl_zst(demo.generate_records("upstream", documents, seed=0), corpus)
    tokenizer_dir = work / "tokenizer"
    texts = (r["text"] for r in demo.generate_records("upstream", min(documents, 10000), seed=0))
    tok.save_trained(tok.train_bpe(texts, vocab_size=4096), tokenizer_dir)
    return corpus, tokenizer_dir


def measure_rewarm(corpus: Path, tokenizer_dir: Path, out: Path, repeats: int) -> dict:
    """In this process (its thread pool already sized): ceiling and prepare, alternating."""
    from rewarm import config as cfg
    from rewarm import prepare
    from rewarm.data import sources
    from rewarm.data import tokenizer as tok

    tokenizer = tok.load(tokenizer_dir)
    texts = list(sources.read_jsonl(corpus, "text", sources.ReadStats()))
    source = cfg.JsonlSource(type="jsonl", path=str(corpus))
    settings = cfg.PrepareConfig(seq_len=2048, shard_sequences=1024, batch_documents=512)
    ceiling, fast, packed, tokens = [], [], [], 0
    for attempt in range(repeats):
        start = time.perf_counter()
        encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        ceiling.append(time.perf_counter() - start)
        start = time.perf_counter()
        tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        fast.append(time.perf_counter() - start)
        tokens = sum(len(e.ids) for e in encodings) + len(texts)  # + one EOS per document
        split_dir = out / f"run{attempt}"
        split_dir.mkdir(parents=True)
        start = time.perf_counter()
        prepare.prepare_split(source, [corpus], tokenizer, settings, split_dir, "bench", "train")
        packed.append(time.perf_counter() - start)
    return {"tokens": tokens, "documents": len(texts), "chars": sum(map(len, texts)),
            "ceiling_s": min(ceiling), "fast_s": min(fast), "prepare_s": min(packed)}


def measure_datasets(corpus: Path, tokenizer_dir: Path, out: Path, repeats: int) -> dict:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    times = []
    for attempt in range(repeats):
        cache = out / f"cache{attempt}"
        start = time.perf_counter()
        dataset = datasets.load_dataset("json", data_files=str(corpus), split="train", cache_dir=str(cache))
        tokenized = dataset.map(
            lambda batch: tokenizer(batch["text"], add_special_tokens=False),
            batched=True, remove_columns=dataset.column_names,
        )
        tokenized.save_to_disk(str(out / f"saved{attempt}"))
        times.append(time.perf_counter() - start)
    return {"datasets_s": min(times)}


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    result = measure_rewarm(Path(args.corpus), Path(args.tokenizer), out / "rewarm", args.repeats)
    if args.with_datasets:
        result.update(measure_datasets(Path(args.corpus), Path(args.tokenizer), out / "datasets", args.repeats))
    print(json.dumps(result))


def run_child(workers: int, corpus: Path, tokenizer_dir: Path, work: Path, repeats: int, with_datasets: bool) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers), TOKENIZERS_PARALLELISM="true" if workers > 1 else "false")
    command = [sys.executable, __file__, "--child", "--corpus", str(corpus), "--tokenizer", str(tokenizer_dir),
               "--out", str(work / f"w{workers}"), "--repeats", str(repeats)]
    if with_datasets:
        command.append("--with-datasets")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        corpus, tokenizer_dir = make_corpus(work, args.documents)
        results = {w: run_child(w, corpus, tokenizer_dir, work, args.repeats, with_datasets=w == 2) for w in (1, 2)}
    report(results, Path(args.results))


def report(results: dict, out: Path) -> None:
    one, two = results[1], results[2]
    tokens = one["tokens"]
    rate = lambda seconds: tokens / seconds  # noqa: E731
    print(f"corpus: {one['documents']} demo documents, {one['chars'] / 1e6:.1f} M characters, {tokens / 1e6:.2f} M tokens "
          f"(vocab 4096, seq_len 2048); {os.cpu_count()} CPUs; best of runs")
    print(f"{'route':44s} {'workers':>7s} {'tokens/s':>12s}  ratio")
    # prepare tokenizes with encode_batch_fast (no character offsets), so that ceiling is shown too.
    rows = []
    for workers, r in ((1, one), (2, two)):
        rows += [
            ("encode_batch ceiling (texts in memory)", workers, r["ceiling_s"], ""),
            ("encode_batch_fast (no offsets, in memory)", workers, r["fast_s"], ""),
            ("prepare (.jsonl.zst -> Arrow shards)", workers, r["prepare_s"],
             f"{r['ceiling_s'] / r['prepare_s']:.2f} of encode_batch, {r['fast_s'] / r['prepare_s']:.2f} of _fast"),
        ]
    rows += [
        ("datasets json -> map(batched) -> save_to_disk", 2, two["datasets_s"], f"prepare is {two['datasets_s'] / two['prepare_s']:.2f}x faster"),
    ]
    for name, workers, seconds, ratio in rows:
        print(f"{name:44s} {workers:7d} {rate(seconds):12,.0f}  {ratio}")
    print(f"prepare, 2 workers vs 1: {one['prepare_s'] / two['prepare_s']:.2f}x")
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
