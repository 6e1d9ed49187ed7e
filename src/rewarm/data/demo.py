"""The embedded demo's corpora: two seeded generators of synthetic text.

No third-party text is shipped. Each domain has its own pseudo-word lexicon (built
from its own syllables), its own sentence templates and its own document kinds,
so a model trained on one sees a clearly different distribution in the other:
that gap is what re-warming on the downstream corpus trades against forgetting.

`upstream` mimics the Pile (encyclopedia entries, code, maths) and is written with
Pile metadata (`pile_set_name`); `downstream` mimics SlimPajama (web reviews,
stories, Q&A) with `redpajama_set_name`. `news` is a third, held-out domain (news
reports and recipes) whose words are built from syllables of both: a model is never
trained on it, and its perplexity shows how re-warming moves a domain in between. Python's `random.Random` is
deterministic for a given seed, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

_FUNCTION_WORDS = "the a of in and to is was with for on by as that it from at which this".split()


class _Lexicon:
    """Pseudo-words from a domain's syllables, with a Zipf-like frequency (word k has weight 1/(k+1))."""

    def __init__(self, rng: random.Random, syllables: list[str], size: int, min_syl: int, max_syl: int):
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < size:
            word = "".join(rng.choice(syllables) for _ in range(rng.randint(min_syl, max_syl)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        self.cumulative = []
        total = 0.0
        for k in range(size):
            total += 1.0 / (k + 1)
            self.cumulative.append(total)

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.words, cum_weights=self.cumulative)[0]


def _upstream_kinds(rng: random.Random) -> list[tuple[str, float, Callable[[random.Random], str]]]:
    syl = ["ka", "to", "ri", "an", "el", "mor", "then", "is", "ul", "dra", "gon", "ves", "pha", "lin", "or", "qua"]
    nouns = _Lexicon(rng, syl, 400, 2, 3)
    places = _Lexicon(rng, syl, 120, 2, 4)
    people = _Lexicon(rng, syl, 150, 2, 3)
    categories = ["river", "mountain", "city", "province", "dynasty", "treaty", "mineral", "language", "festival", "order"]
    verbs = ["founded", "described", "named", "surveyed", "governed", "studied", "restored", "abandoned"]

    def encyclopedia(r: random.Random) -> str:
        title = places.pick(r).capitalize()
        cat = r.choice(categories)
        out = [f"{title}\n\n{title} is a {cat} in the region of {places.pick(r).capitalize()}."]
        for _ in range(r.randint(3, 9)):
            year = r.randint(1100, 1990)
            out.append(
                r.choice(
                    [
                        f"It was {r.choice(verbs)} in {year} by {people.pick(r).capitalize()} {people.pick(r).capitalize()}.",
                        f"The {nouns.pick(r)} of {title} is {r.choice(['known', 'noted', 'recorded'])} for its {nouns.pick(r)} and {nouns.pick(r)}.",
                        f"In {year}, the {cat} was {r.choice(verbs)} after the {nouns.pick(r)} of {places.pick(r).capitalize()}.",
                        f"According to the census of {year}, {title} had {r.randint(2, 900) * 100} inhabitants.",
                        f"Its {nouns.pick(r)} is {r.randint(2, 99)} km from the {nouns.pick(r)} of {places.pick(r).capitalize()}.",
                    ]
                )
            )
        return " ".join(out)

    def code(r: random.Random) -> str:
        name = f"{nouns.pick(r)}_{nouns.pick(r)}"
        args = [nouns.pick(r) for _ in range(r.randint(1, 3))]
        lines = [f"def {name}({', '.join(args)}):", f'    """Return the {nouns.pick(r)} of {args[0]}."""']
        acc = "result"
        lines.append(f"    {acc} = {r.randint(0, 9)}")
        for _ in range(r.randint(2, 6)):
            a = r.choice(args)
            op = r.choice(["+", "-", "*", "//", "%"])
            stmt = r.choice(
                [
                    f"    {acc} = {acc} {op} {a}",
                    f"    for i in range({a}):\n        {acc} {op}= i",
                    f"    if {a} > {r.randint(0, 99)}:\n        {acc} = {a} {op} {r.randint(1, 9)}",
                ]
            )
            lines.append(stmt)
        lines.append(f"    return {acc}")
        return "\n".join(lines) + "\n"

    def maths(r: random.Random) -> str:
        sym = r.choice("nmkpq")
        out = [f"Theorem {r.randint(1, 40)}. Let {sym} be an integer with {sym} > {r.randint(1, 9)}."]
        for _ in range(r.randint(3, 7)):
            a, b = r.randint(2, 50), r.randint(2, 50)
            out.append(
                r.choice(
                    [
                        f"Then the {nouns.pick(r)} of {sym} is bounded by {a}{sym} + {b}.",
                        f"We prove that f({sym}) = {a}{sym}^2 - {b} for every {nouns.pick(r)} {sym}.",
                        f"By Lemma {a}, the sum over {sym} of g({sym}) equals {a * b}.",
                        f"Hence {sym} divides {a * b} whenever {sym} is a {nouns.pick(r)} prime.",
                    ]
                )
            )
        return " ".join(out)

    return [("Wikipedia (en)", 0.5, encyclopedia), ("Github", 0.3, code), ("ArXiv", 0.2, maths)]


def _downstream_kinds(rng: random.Random) -> list[tuple[str, float, Callable[[random.Random], str]]]:
    syl = ["bo", "sy", "wen", "ta", "pu", "lek", "mi", "sor", "zu", "hap", "ny", "gle", "fi", "rou", "ba", "tee"]
    products = _Lexicon(rng, syl, 300, 2, 3)
    names = _Lexicon(rng, syl, 120, 2, 2)
    things = _Lexicon(rng, syl, 300, 1, 3)
    feelings = ["love", "hate", "recommend", "regret", "enjoy", "returned", "adore", "tolerate"]
    rooms = ["kitchen", "garden", "station", "market", "attic", "harbour", "library", "bakery"]

    def review(r: random.Random) -> str:
        item = products.pick(r)
        out = [f"Review: the {item} ({r.randint(1, 5)} stars)", ""]
        for _ in range(r.randint(3, 8)):
            out.append(
                r.choice(
                    [
                        f"I bought this {item} last {r.choice(['week', 'month', 'year'])} and I {r.choice(feelings)} it.",
                        f"Honestly the {things.pick(r)} is {r.choice(['great', 'awful', 'okay', 'so cheap', 'too loud'])}!!",
                        f"My {r.choice(['wife', 'dad', 'roommate', 'kid'])} says the {things.pick(r)} broke after {r.randint(2, 30)} days.",
                        f"Shipping took {r.randint(1, 14)} days, would {r.choice(['buy again', 'not buy again'])}.",
                        f"Pro tip: use it with a {products.pick(r)} lol",
                    ]
                )
            )
        return "\n".join(out)

    def story(r: random.Random) -> str:
        hero, friend = names.pick(r).capitalize(), names.pick(r).capitalize()
        out = [f"Chapter {r.randint(1, 30)}\n"]
        for _ in range(r.randint(4, 10)):
            out.append(
                r.choice(
                    [
                        f'{hero} walked into the {r.choice(rooms)} and looked for the {things.pick(r)}.',
                        f'"Where is my {things.pick(r)}?" asked {friend}.',
                        f"{friend} laughed, because the {things.pick(r)} was under the {things.pick(r)} again.",
                        f"It was raining over the {r.choice(rooms)} when {hero} finally smiled.",
                        f'"We should go back," said {hero}, holding the {things.pick(r)}.',
                    ]
                )
            )
        return " ".join(out)

    def qa(r: random.Random) -> str:
        item = products.pick(r)
        return "\n".join(
            [
                f"Q: How do I fix my {item} when the {things.pick(r)} keeps {r.choice(['beeping', 'leaking', 'blinking'])}?",
                f"A: Try unplugging the {things.pick(r)} for {r.randint(2, 60)} seconds.",
                f"A: Same problem here, I replaced the {things.pick(r)} and it worked.",
                f"Q: Does it work with a {products.pick(r)}?",
                f"A: {r.choice(['Yes', 'No', 'Only the new one'])}, mine has been fine for {r.randint(1, 9)} months.",
            ][: r.randint(2, 5)]
        )

    return [("RedPajamaCommonCrawl", 0.5, review), ("RedPajamaBook", 0.3, story), ("RedPajamaStackExchange", 0.2, qa)]


def _news_kinds(rng: random.Random) -> list[tuple[str, float, Callable[[random.Random], str]]]:
    # Half the syllables from each of the other domains: tokens overlap with both, words with neither.
    syl = ["ka", "ri", "mor", "ul", "gon", "pha", "or", "sy", "ta", "lek", "sor", "hap", "fi", "ba", "nel", "vo"]
    topics = _Lexicon(rng, syl, 250, 2, 3)
    towns = _Lexicon(rng, syl, 100, 2, 3)
    people = _Lexicon(rng, syl, 120, 2, 2)
    ingredients = _Lexicon(rng, syl, 150, 1, 2)
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

    def report(r: random.Random) -> str:
        town = towns.pick(r).capitalize()
        out = [f"{town}, {r.choice(days)} - The council of {town} voted on the {topics.pick(r)} plan."]
        for _ in range(r.randint(3, 8)):
            out.append(
                r.choice(
                    [
                        f"Mayor {people.pick(r).capitalize()} said the {topics.pick(r)} would cost {r.randint(2, 90)} million.",
                        f"Residents of {towns.pick(r).capitalize()} protested against the new {topics.pick(r)}.",
                        f"The vote passed {r.randint(5, 12)} to {r.randint(0, 4)} after a long debate on the {topics.pick(r)}.",
                        f"Officials expect the {topics.pick(r)} to open in {r.randint(2025, 2040)}.",
                    ]
                )
            )
        return " ".join(out)

    def recipe(r: random.Random) -> str:
        dish = f"{ingredients.pick(r)} {r.choice(['soup', 'stew', 'pie', 'salad', 'bread'])}"
        steps = [f"Recipe: {dish}", f"Serves {r.randint(2, 8)}.", ""]
        for i in range(r.randint(3, 7)):
            steps.append(f"{i + 1}. {r.choice(['Chop', 'Boil', 'Fry', 'Mix', 'Bake'])} {r.randint(1, 500)} g of "
                         f"{ingredients.pick(r)} for {r.randint(1, 45)} minutes.")
        return "\n".join(steps)

    return [("News", 0.6, report), ("Recipes", 0.4, recipe)]


_DOMAINS = {
    "upstream": (_upstream_kinds, "pile_set_name"),
    "downstream": (_downstream_kinds, "redpajama_set_name"),
    "news": (_news_kinds, "source"),
}


def generate_records(domain: str, documents: int, seed: int) -> Iterator[dict]:
    """`documents` records in the shipping format of the domain's real corpus."""
    # The lexicon depends only on the domain, so train and validation share it;
    # the seed only changes which documents are drawn.
    lexicon_rng = random.Random(f"rewarm-demo-lexicon-{domain}")
    make_kinds, meta_key = _DOMAINS[domain]
    kinds = make_kinds(lexicon_rng)
    rng = random.Random(f"rewarm-demo-{domain}-{seed}")
    names = [k[0] for k in kinds]
    weights = [k[1] for k in kinds]
    makers = {k[0]: k[2] for k in kinds}
    for _ in range(documents):
        subset = rng.choices(names, weights)[0]
        yield {"text": makers[subset](rng), "meta": {meta_key: subset}}


def write_jsonl_zst(records, path: str | Path) -> int:
    """Write records as zstd-compressed JSON lines (with frame checksums); returns the count."""
    count = 0
    compressor = zstandard.ZstdCompressor(level=10, write_checksum=True)
    with open(path, "wb") as f, compressor.stream_writer(f) as writer:
        for record in records:
            writer.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
    return count


def generate(config, out_dir: str | Path) -> dict[str, int]:
    """The `generate` stage: write every demo source of the configuration to
    `<out_dir>/<corpus>/<split>.jsonl.zst` (an empty directory if there are none)."""
    from rewarm.config import DemoSource
    from rewarm.data.sources import demo_path
    from rewarm.io import atomic_dir

    counts = {}
    with atomic_dir(out_dir) as tmp:
        for (corpus, split), source in config.sources().items():
            if isinstance(source, DemoSource):
                path = demo_path(tmp, corpus, split)
                path.parent.mkdir(parents=True, exist_ok=True)
                counts[f"{corpus}/{split}"] = write_jsonl_zst(generate_records(source.domain, source.documents, source.seed), path)
    return counts
