"""The embedded demo's corpora: seeded, in the real corpora's formats, a mild shift between two
mixtures of the same kinds of sources (as the Pile and SlimPajama), with shared documents."""

from __future__ import annotations

import collections
import json
import math
import re

import yaml

from rewarm import grid
from rewarm.data import demo
from rewarm.data.sources import ReadStats, read_jsonl, read_jsonl_parts
from tests.project import ROOT


def test_same_seed_same_bytes_other_seed_other_documents(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.jsonl.zst", "b.jsonl.zst", "c.jsonl.zst"))
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=5), a)
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=5), b)
    demo.write_jsonl_zst(demo.generate_records("upstream", 200, seed=6), c)
    assert a.read_bytes() == b.read_bytes()
    texts_a = list(read_jsonl(a, "text", ReadStats()))
    texts_c = list(read_jsonl(c, "text", ReadStats()))
    assert len(texts_a) == 200 and len(set(texts_a) & set(texts_c)) < 5


def paper_weights(corpus: str) -> dict[str, float]:
    """The real corpora's part weights, as config/paper.yaml's validation mixtures declare them (from the papers'
    tables: the Pile's component weights, SlimPajama's seven sets at Gupta et al.'s Table 1 shares; the authors'
    training file leaves two of them out)."""
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    return paper["corpora"][corpus]["val"]["mixture"]["weights"]


def shares(records, key: str) -> collections.Counter:
    return collections.Counter(r["meta"][key] for r in records)


def test_downstream_is_slimpajama_mixed_as_the_paper_sampled_it():
    """Every SlimPajama part, named as in `meta.redpajama_set_name`, at Table 1's sampling percentages."""
    n = 6000
    counts = shares(demo.generate_records("downstream", n, seed=0), "redpajama_set_name")
    weights = paper_weights("downstream")
    assert set(counts) == set(weights)
    total = sum(weights.values())
    for part, weight in weights.items():
        p = weight / total
        assert abs(counts[part] / n - p) < 4 * math.sqrt(p * (1 - p) / n), part  # within 4 binomial standard deviations


def test_upstream_is_the_pile_parts_at_the_piles_relative_weights():
    """Pile parts named as in `meta.pile_set_name`, each at its weight relative to the others drawn."""
    n = 6000
    counts = shares(demo.generate_records("upstream", n, seed=0), "pile_set_name")
    weights = paper_weights("upstream")
    assert set(counts) <= set(weights) and len(counts) >= 8
    total = sum(weights[part] for part in counts)
    for part in counts:
        p = weights[part] / total
        assert abs(counts[part] / n - p) < 4 * math.sqrt(p * (1 - p) / n), part


def test_the_two_corpora_draw_on_the_same_kinds_of_sources():
    """Web, encyclopedia, code, books, papers and Q&A are in both (as in the Pile and SlimPajama)."""
    up, down = demo.set_names("upstream"), demo.set_names("downstream")
    for kind in ("encyclopedia", "code", "books", "maths", "qa"):
        assert kind in up.values() and kind in down.values()
    web = {"web-crawl", "web-clean", "web-crawl-later", "web-clean-later"}
    assert web & set(up.values()) and web & set(down.values())


def words(records) -> collections.Counter:
    return collections.Counter(w for r in records for w in re.findall(r"[a-z]+", r["text"].lower()))


def overlap(p: collections.Counter, q: collections.Counter) -> float:
    """Share of probability mass two word distributions have in common (1 = identical)."""
    total_p, total_q = sum(p.values()), sum(q.values())
    return sum(min(p[w] / total_p, q[w] / total_q) for w in p.keys() & q.keys())


def test_a_mild_shift_one_language_other_proportions():
    up = words(demo.generate_records("upstream", 1500, seed=0))
    up_other_seed = words(demo.generate_records("upstream", 1500, seed=1))
    down = words(demo.generate_records("downstream", 1500, seed=0))
    news = words(demo.generate_records("news", 1500, seed=0))
    same, shifted = overlap(up, up_other_seed), overlap(up, down)
    assert same > 0.9  # train and validation: one distribution
    assert 0.5 < shifted < same - 0.1  # the two corpora share most of their words, not all
    assert min(overlap(news, up), overlap(news, down)) > 0.25  # the held-out domain speaks the same language
    general = set(demo._GENERAL_NOUNS)
    assert general <= set(up) and general <= set(down) and general <= set(news)  # one shared vocabulary


def test_later_web_pages_keep_the_ranking_and_replace_every_third_name_from_rank_20():
    pile, later = demo._web_names(later=False), demo._web_names(later=True)
    assert len(pile) == len(later) == 450
    changed = [rank for rank, (a, b) in enumerate(zip(pile, later)) if a != b]
    assert changed == list(range(20, 450, 3))  # 144 new names, none among the 20 most frequent
    assert not set(later[r] for r in changed) & set(pile)


def test_train_splits_share_documents_validation_splits_do_not():
    """SlimPajama overlaps the Pile: both train splits draw part of their curated documents from one
    pool. Validation documents are fresh, so no validation text is in either train split."""
    up_train = {r["text"] for r in demo.generate_records("upstream", 3000, seed=1, pooled=True)}
    down_train = {r["text"] for r in demo.generate_records("downstream", 3000, seed=3, pooled=True)}
    up_val = {r["text"] for r in demo.generate_records("upstream", 300, seed=2)}
    down_val = {r["text"] for r in demo.generate_records("downstream", 300, seed=4)}
    # Expected about 15 shared: e.g. books, 3000 x 4.5% x 0.3 = 40 downstream draws from a pool of 1000 of which
    # upstream's 3000 x 14.4% x 0.3 = 130 draws cover 12%, about 5; the other pooled kinds add about 10.
    assert len(up_train & down_train) >= 8
    assert not (up_val | down_val) & (up_train | down_train)
    unpooled = {r["text"] for r in demo.generate_records("downstream", 3000, seed=3)}
    assert len(up_train & unpooled) < 5  # without the pool, the corpora share next to nothing


def test_generate_stage_writes_every_demo_source_with_readable_parts(tmp_path):
    from tests.project import small_params

    config = grid.from_dict(small_params())
    counts = demo.generate(config, tmp_path / "raw")
    assert counts == {"upstream/train": 600, "upstream/val": 60, "downstream/train": 600, "downstream/val": 60, "news/val": 30}
    path = tmp_path / "raw" / "downstream" / "val.jsonl.zst"
    parts = collections.Counter(part for _, part in read_jsonl_parts(path, "text", ReadStats(), part_field="meta.redpajama_set_name"))
    assert sum(parts.values()) == 60 and set(parts) <= set(paper_weights("downstream")) and "RedPajamaCommonCrawl" in parts
    # upstream/train ships in 3 files: together, the documents of one generation, in order, split 200 / 200 / 200.
    files = [tmp_path / "raw" / "upstream" / f"train-0000{i}-of-00003.jsonl.zst" for i in range(3)]
    lines = [[json.loads(line) for line in read_lines(path)] for path in files]
    assert [len(file) for file in lines] == [200, 200, 200]
    assert [record for file in lines for record in file] == list(demo.generate_records("upstream", 600, 1, pooled=True))
    assert lines[0][0]["meta"]["pile_set_name"] in paper_weights("upstream")
    assert sorted(p.name for p in (tmp_path / "raw" / "upstream").iterdir()) == [p.name for p in files] + ["val.jsonl.zst"]
    assert not list(tmp_path.glob("raw.partial-*"))


def read_lines(path):
    from rewarm.data.sources import iter_lines

    return (line for _, line in iter_lines(path))
