"""One very long record, tokenized as `prepare` does: whole (one tokenizer call) against a piece at a time
(`prepare.PIECE_CHARS`), side by side, each in a fresh process. Prints each one's peak resident memory
growth and seconds, the ratio, and whether the ids are identical.

    python benchmarks/bench_long_record.py [--million-chars 6.7]

The tokenizer is the demo's BPE, trained here on demo text; the record is words separated by spaces.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import hashlib, json, random, resource, sys, time
from rewarm.data import tokenizer as tok
from rewarm import prepare
backend = tok.load(sys.argv[1]).backend_tokenizer
rng = random.Random(0)
words = ["alpha", "beta", "gamma", "delta", "it's", "1999", "naive", "(x)", "  "]
text = " ".join(rng.choice(words) for _ in range(int(float(sys.argv[3]) * 1e6 / 6)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if sys.argv[2] == "whole":
    ids = backend.encode(text, add_special_tokens=False).ids
else:
    ids = prepare._encode(backend, [(text, None)], (0, 0))[2][0]
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"chars": len(text), "ids": len(ids), "digest": hashlib.sha256(str(ids).encode()).hexdigest(),
                  "peak_bytes": grown, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--million-chars", type=float, default=6.7, help="length of the record (default: 6.7 million characters)")
    args = parser.parse_args()
    from rewarm.data import demo
    from rewarm.data import tokenizer as tok

    work = Path(tempfile.mkdtemp(prefix="bench-long-record-"))
    texts = [r["text"] for r in demo.generate_records("upstream", 2000, seed=1)]
    tok.save_trained(tok.train_bpe(texts, vocab_size=4096), work / "tokenizer")
    runs = {mode: json.loads(subprocess.run([sys.executable, "-c", MEASURE, str(work / "tokenizer"), mode, str(args.million_chars)],
                                            capture_output=True, text=True, check=True).stdout)
            for mode in ("whole", "pieces")}
    for mode, run in runs.items():
        print(f"{mode:>7}: {run['chars'] / 1e6:.1f}M characters -> {run['ids']:,} ids; peak memory growth "
              f"{run['peak_bytes'] / 2**20:,.0f} MiB ({run['peak_bytes'] / run['chars']:.0f} bytes a character); {run['seconds']:.1f} s")
    print(f"peak memory, pieces vs whole: {runs['pieces']['peak_bytes'] / max(runs['whole']['peak_bytes'], 1):.2f}x; "
          f"ids identical: {runs['pieces']['digest'] == runs['whole']['digest']}")


if __name__ == "__main__":
    main()
