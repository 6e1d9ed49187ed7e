"""The embedded demo's corpora: seeded, in the real corpora's formats, and clearly different."""

from __future__ import annotations

import collections
import json
import re

from rewarm.data import demo
from rewarm.data.sources import ReadStats, read_jsonl


def test_same_seed_same_bytes_other_seed_other_documents(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.jsonl.zst", "b.jsonl.zst", "c.jsonl.zst"))
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=5), a)
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=5), b)
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=6), c)
    assert a.read_bytes() == b.read_bytes()
    texts_a = list(read_jsonl(a, "text", ReadStats()))
    texts_c = list(read_jsonl(c, "text", ReadStats()))
    assert len(texts_a) == 200 and len(set(texts_a) & set(texts_c)) < 5


def test_records_use_pile_and_slimpajama_metadata():
    up = list(demo.generate_records("upstream", 300, seed=0))
    down = list(demo.generate_records("downstream", 300, seed=0))
    assert {r["meta"]["pile_set_name"] for r in up} == {"Wikipedia (en)", "Github", "ArXiv"}
    assert {r["meta"]["redpajama_set_name"] for r in down} == {"RedPajamaCommonCrawl", "RedPajamaBook", "RedPajamaStackExchange"}
    assert all(isinstance(r["text"], str) and r["text"].strip() for r in up + down)


def words(records) -> collections.Counter:
    return collections.Counter(w for r in records for w in re.findall(r"[a-z]+", r["text"].lower()))


def test_domains_have_clearly_different_distributions():
    up = words(demo.generate_records("upstream", 500, seed=0))
    up_other_seed = words(demo.generate_records("upstream", 500, seed=1))
    down = words(demo.generate_records("downstream", 500, seed=0))

    def overlap(p: collections.Counter, q: collections.Counter) -> float:
        """Share of probability mass the two word distributions have in common (1 = identical)."""
        total_p, total_q = sum(p.values()), sum(q.values())
        return sum(min(p[w] / total_p, q[w] / total_q) for w in p.keys() & q.keys())

    assert overlap(up, up_other_seed) > 0.85  # train and validation: one distribution
    assert overlap(up, down) < 0.35  # upstream and downstream: clearly different
    news = list(demo.generate_records("news", 500, seed=0))
    assert {r["meta"]["source"] for r in news} == {"News", "Recipes"}
    assert overlap(words(news), up) < 0.35 and overlap(words(news), down) < 0.35  # a third domain


def test_news_domain_shares_subwords_with_both_others():
    """The held-out domain sits between the two: its words are built from syllables of each."""
    def bigrams(records):
        return {t[i:i + 2] for r in records for w in re.findall(r"[a-z]{4,}", r["text"].lower()) for t in [w] for i in range(len(t) - 1)}

    news, up, down = (bigrams(demo.generate_records(d, 300, seed=0)) for d in ("news", "upstream", "downstream"))
    assert len(news & up) > 0.3 * len(news) and len(news & down) > 0.3 * len(news)


def test_generate_stage_writes_every_demo_source(tmp_path):
    from rewarm import config as cfg
    from tests.conftest import small_params

    config = cfg.from_dict(small_params())
    counts = demo.generate(config, tmp_path / "raw")
    assert counts == {"upstream/train": 600, "upstream/val": 60, "downstream/train": 600, "downstream/val": 60, "news/val": 30}
    first = json.loads(next(iter(read_lines(tmp_path / "raw" / "downstream" / "val.jsonl.zst"))))
    assert "redpajama_set_name" in first["meta"]
    assert not list(tmp_path.glob("raw.partial-*"))


def read_lines(path):
    from rewarm.data.sources import iter_lines

    return (line for _, line in iter_lines(path))
