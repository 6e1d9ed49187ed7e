"""The embedded demo's corpora: seeded generators of synthetic text with the Pile -> SlimPajama shift.

No third-party text is shipped. The shift the paper studies is mild: the Pile and SlimPajama draw on the
same kinds of sources (web pages, encyclopedia, code, books, papers, Q&A) in different proportions, and
SlimPajama overlaps the Pile. The demo builds the same structure in miniature:

- One general vocabulary and one grammar, shared by every kind of document.
- Source kinds, each with its own topics (pseudo-word names from its own syllables, its own topic words)
  and its own style: web pages, encyclopedia entries, code, books, papers (two fields), Q&A threads,
  court opinions, and, for the held-out domain, news reports and recipes.
- `upstream` (the Pile's role) and `downstream` (SlimPajama's) are mixtures of those kinds with the real
  corpora's weights, written with their set names in the real metadata fields (`meta.pile_set_name`,
  `meta.redpajama_set_name`), so mixture sampling works on them as on the real corpora.
- Web pages, the bulk of SlimPajama, talk partly about other things than the Pile's (later crawls:
  half of their topic names are new), and two of the Pile's kinds (biomedical papers, court opinions)
  are absent downstream: what continual pre-training learns and what it forgets.
- The train splits draw part of their encyclopedia, code, book, paper and Q&A documents from one shared
  pool, so some documents appear in both corpora; validation splits are fresh documents only.
- `news` is a third domain, never trained on: news reports and recipes in the same language.

Each document is generated from its own `random.Random` seeded by its identity (kind, namespace, index),
and Python's `random.Random` is deterministic for a given seed, so the same seed gives byte-identical
files and a pooled document is the same text in whichever corpus draws it.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from rewarm.config import DemoSource
from rewarm.data.sources import demo_path
from rewarm.io import atomic_dir

# -- the shared language: one vocabulary and grammar for every kind ----------------------------------

_GENERAL_NOUNS = (
    "time year people way day man woman child world life hand part place case week company system program "
    "question work number night point home water room mother area money story fact month lot study book eye job "
    "word business issue side kind head house service friend father power hour game line end member law car city "
    "community name team minute idea body information parent face level office door health person art history "
    "party result change morning reason research girl moment air teacher force education family group country "
    "problem school state student river road market table window light letter paper plan field"
).split()
_ADJECTIVES = (
    "new good first last long great little own other old right big high different small large next early young "
    "important few public bad same able local sure free better true whole strong clear recent main simple full "
    "special easy low open short dark warm quiet"
).split()
_VERBS = (  # past tense
    "found made took gave used told asked showed called kept left brought began held wrote ran moved paid met "
    "led built sent opened changed followed stopped created added reached described studied noted"
).split()
_ADVERBS = "also often only still never always already just quickly slowly finally again usually".split()
_PREPOSITIONS = "in on at with from for about near after before during under over through".split()


class _Lexicon:
    """Words with a Zipf-like frequency (word k has weight 1/(k+1)), as real vocabularies have."""

    def __init__(self, words: list[str]):
        self.words = words
        self.cumulative, total = [], 0.0
        for k in range(len(words)):
            total += 1.0 / (k + 1)
            self.cumulative.append(total)

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.words, cum_weights=self.cumulative)[0]


def _names(seed: str, syllables: list[str], size: int, min_syl: int = 2, max_syl: int = 3) -> list[str]:
    """Pseudo-word names from a kind's own syllables (its people, places, products, genes ...)."""
    if sum(len(syllables) ** k for k in range(min_syl, max_syl + 1)) < size:
        raise ValueError(f"{seed}: {len(syllables)} syllables make fewer than {size} names")
    rng, words, seen = random.Random(seed), [], set()
    while len(words) < size:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(min_syl, max_syl)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


_NOUN, _ADJ = _Lexicon(_GENERAL_NOUNS), _Lexicon(_ADJECTIVES)


class _Writer:
    """One kind's voice: the shared grammar filled with the kind's own names and topic words. With
    `borrowed` lexicons, a share of its names come from them (web pages mention everything)."""

    def __init__(self, names: list[str], topics: list[str], borrowed: list[list[str]] = (), borrow_share: float = 0.0):
        self.names, self.topics = _Lexicon(names), _Lexicon(topics)
        self.borrowed, self.borrow_share = [_Lexicon(b) for b in borrowed], borrow_share

    def name(self, r: random.Random) -> str:
        if self.borrowed and r.random() < self.borrow_share:
            return r.choice(self.borrowed).pick(r).capitalize()
        return self.names.pick(r).capitalize()

    def topic(self, r: random.Random) -> str:
        return self.topics.pick(r)

    def sentence(self, r: random.Random) -> str:
        """A general sentence of the shared grammar, about the kind's topics."""
        n, a, t, v = _NOUN.pick, _ADJ.pick, self.topic, r.choice
        frames = (
            lambda: f"The {a(r)} {t(r)} {v(_VERBS)} the {n(r)} of {self.name(r)}.",
            lambda: f"{self.name(r)} {v(_ADVERBS)} {v(_VERBS)} a {a(r)} {n(r)} {v(_PREPOSITIONS)} the {t(r)}.",
            lambda: f"In the {a(r)} {n(r)}, the {t(r)} was {v(_ADVERBS)} {v(_VERBS)} by {self.name(r)}.",
            lambda: f"This {t(r)} is {v(['also the', 'not the', 'the'])} {a(r)} {n(r)} {v(_PREPOSITIONS)} the {n(r)}.",
            lambda: f"A {t(r)} {v(_PREPOSITIONS)} {self.name(r)} {v(_VERBS)} the {a(r)} {t(r)} {v(_PREPOSITIONS)} the {n(r)}.",
        )
        return r.choice(frames)()


# Every kind's names, made once: web pages borrow from the others.
_NAMES = {
    "web": _names("web", ["bo", "sy", "wen", "ta", "pu", "lek", "mi", "sor", "zu", "hap", "ny", "gle", "fi", "rou", "ba", "tee"], 600),
    "encyclopedia": _names("encyclopedia", ["ka", "to", "ri", "an", "el", "mor", "then", "is", "ul", "dra", "gon", "ves"], 400),
    "code": _names("code", ["get", "set", "val", "buf", "idx", "len", "tmp", "key", "obj", "str", "num", "arr"], 300, 1, 3),
    "books": _names("books", ["al", "be", "ra", "na", "th", "es", "mar", "lin", "do", "ri", "cor", "wyn"], 200),
    "maths": _names("maths", ["ri", "em", "an", "ei", "ler", "gau", "hil", "bert", "fou", "cau", "chy"], 150),
    "biomedical": _names("biomedical", ["cy", "to", "ki", "ne", "pro", "tein", "gly", "co", "ase", "hem", "lo", "bin"], 300),
    "qa": _names("qa", ["lin", "ux", "py", "ser", "ver", "dat", "net", "win", "mac", "sql", "git", "bash"], 200, 1, 3),
    "legal": _names("legal", ["mc", "son", "ber", "wil", "ham", "ton", "ley", "gar", "der", "ford"], 200),
    "news": _names("news", ["ka", "ri", "sy", "ta", "nel", "vo", "mar", "lek", "ul", "fi", "ber", "ton"], 250),
    "recipes": _names("recipes", ["sal", "pe", "ron", "mi", "to", "ba", "gri", "lo", "chi", "na"], 150, 1, 3),
}
_WEB_KNOWN = 450
"""Names the Pile's web pages use (the first 450, most frequent first)."""
LATER_FROM_RANK, LATER_EVERY = 20, 3
"""A later crawl's names: the same ranking, with every third name from rank 20 on replaced by a new one
(new things to learn that are neither a few frequent words nor one cheap shift of word frequencies)."""
BORROW_SHARE = 0.25
"""Share of a web page's names taken from the other kinds' names (web pages mention every subject)."""


def _web_names(later: bool) -> list[str]:
    known, new = _NAMES["web"][:_WEB_KNOWN], iter(_NAMES["web"][_WEB_KNOWN:])
    if not later:
        return known
    return [next(new) if rank >= LATER_FROM_RANK and (rank - LATER_FROM_RANK) % LATER_EVERY == 0 else name
            for rank, name in enumerate(known)]


def _sentences(r: random.Random, count: tuple[int, int], frames: list[Callable[[], str]]) -> list[str]:
    """A document's body: between count[0] and count[1] sentences, each from one of the frames."""
    return [r.choice(frames)() for _ in range(r.randint(*count))]


# -- the kinds of documents -----------------------------------------------------------------------------

_WEB_TOPICS = ("product price review shop deal phone app hotel trip recipe garden game team match song movie show "
               "video post blog site page offer order delivery account photo event ticket class course").split()


def _web(later: bool, boilerplate: bool) -> Callable[[random.Random], str]:
    """Web pages. `later`: a later crawl, whose names are half new (SlimPajama's CommonCrawl and C4
    against the Pile's: see LATER_FROM_RANK); `boilerplate`: raw crawl with navigation text (Pile-CC, CommonCrawl) rather
    than cleaned text (OpenWebText2, C4)."""
    others = [names for kind, names in _NAMES.items() if kind not in ("web", "news", "recipes")]
    writer = _Writer(_web_names(later), _WEB_TOPICS, others, BORROW_SHARE)

    def make(r: random.Random) -> str:
        thing = writer.name(r)
        out = [f"{thing} {writer.topic(r)}: {r.choice(['our', 'my', 'the'])} {_ADJ.pick(r)} {r.choice(['guide', 'review', 'story', 'tips'])}"]
        out += _sentences(r, (3, 8), [
            lambda: writer.sentence(r),
            lambda: f"I {r.choice(['love', 'recommend', 'tried', 'bought', 'returned'])} the {thing} {writer.topic(r)} last "
                    f"{r.choice(['week', 'month', 'year'])} and it was {r.choice(['great', 'okay', 'awful', 'cheap', 'worth it'])}.",
            lambda: f"You can get a {_ADJ.pick(r)} {writer.topic(r)} from {writer.name(r)} for {r.randint(2, 99)} dollars.",
            lambda: f"Check out the {writer.topic(r)} of {writer.name(r)} {r.choice(_PREPOSITIONS)} the {_NOUN.pick(r)}!",
        ])
        if boilerplate:
            out.append(r.choice(["Click here to subscribe.", "Posted in News | Leave a comment", "Share this: Facebook Twitter",
                                 "Copyright 2019. All rights reserved.", "Read more >>"]))
        return "\n".join(out) if boilerplate else " ".join(out)

    return make


def _encyclopedia() -> Callable[[random.Random], str]:
    writer = _Writer(_NAMES["encyclopedia"],
                     "river mountain city province dynasty treaty language festival region village castle island".split())

    def make(r: random.Random) -> str:
        title, kind = writer.name(r), writer.topic(r)
        out = [f"{title}\n\n{title} is a {kind} in the region of {writer.name(r)}."]
        for _ in range(r.randint(3, 8)):
            year = r.randint(1100, 1990)
            out.append(r.choice([
                lambda: writer.sentence(r),
                lambda: f"It was {r.choice(_VERBS)} in {year} by {writer.name(r)} {writer.name(r)}.",
                lambda: f"According to the census of {year}, {title} had {r.randint(2, 900) * 100} inhabitants.",
                lambda: f"The {kind} is {r.randint(2, 99)} km from the {writer.topic(r)} of {writer.name(r)}.",
            ])())
        return " ".join(out)

    return make


def _code() -> Callable[[random.Random], str]:
    words = _Lexicon(_NAMES["code"])

    def make(r: random.Random) -> str:
        args = [words.pick(r) for _ in range(r.randint(1, 3))]
        lines = [f"def {words.pick(r)}_{words.pick(r)}({', '.join(args)}):",
                 f'    """Return the {_ADJ.pick(r)} {_NOUN.pick(r)} of {args[0]}."""', f"    result = {r.randint(0, 9)}"]
        for _ in range(r.randint(2, 6)):
            a, op = r.choice(args), r.choice(["+", "-", "*", "//", "%"])
            lines.append(r.choice([f"    result = result {op} {a}", f"    for i in range({a}):\n        result {op}= i",
                                   f"    if {a} > {r.randint(0, 99)}:\n        result = {a} {op} {r.randint(1, 9)}",
                                   f"    # {_ADJ.pick(r)} {_NOUN.pick(r)} of the {_NOUN.pick(r)}"]))
        lines.append("    return result")
        return "\n".join(lines) + "\n"

    return make


def _books() -> Callable[[random.Random], str]:
    writer = _Writer(_NAMES["books"],
                     "house door road forest letter horse sword ship window fire garden king".split())

    def make(r: random.Random) -> str:
        hero, friend = writer.name(r), writer.name(r)
        out = [f"Chapter {r.randint(1, 30)}\n"]
        out += _sentences(r, (4, 10), [
            lambda: writer.sentence(r),
            lambda: f"{hero} walked to the {writer.topic(r)} and looked at the {_ADJ.pick(r)} {_NOUN.pick(r)}.",
            lambda: f'"Where is the {writer.topic(r)}?" asked {friend}.',
            lambda: f"{friend} {r.choice(['laughed', 'smiled', 'waited', 'listened'])}, because the {writer.topic(r)} was {r.choice(_PREPOSITIONS)} the {_NOUN.pick(r)} again.",
            lambda: f'"We should go back," said {hero}, holding the {writer.topic(r)}.',
        ])
        return " ".join(out)

    return make


def _paper(field: str) -> Callable[[random.Random], str]:
    """Papers: `maths` (ArXiv) or `biomedical` (PubMed Central), each with its own terms."""
    if field == "maths":
        writer = _Writer(_NAMES["maths"],
                         "theorem lemma function space operator group manifold bound sequence series graph matrix".split())
        claims = [lambda r, s: f"Then the {writer.topic(r)} of {s} is bounded by {r.randint(2, 50)}{s} + {r.randint(2, 50)}.",
                  lambda r, s: f"By Lemma {r.randint(1, 40)}, the sum over {s} of g({s}) equals {r.randint(2, 900)}.",
                  lambda r, s: f"We prove that the {writer.name(r)} {writer.topic(r)} is {r.choice(['compact', 'finite', 'smooth', 'exact'])}."]
    else:
        writer = _Writer(_NAMES["biomedical"],
                         "protein gene cell patient tumor receptor dose trial tissue enzyme pathway mouse".split())
        claims = [lambda r, s: f"Expression of {writer.name(r)} in the {writer.topic(r)} increased by {r.randint(2, 90)} percent (p < 0.0{r.randint(1, 5)}).",
                  lambda r, s: f"A total of {r.randint(10, 900)} patients received {r.randint(1, 50)} mg of {writer.name(r)}.",
                  lambda r, s: f"The {writer.name(r)} {writer.topic(r)} binds the {writer.topic(r)} of {writer.name(r)}."]

    def make(r: random.Random) -> str:
        sym = r.choice("nmkpq")
        out = [f"Abstract. We study the {_ADJ.pick(r)} {writer.topic(r)} of {writer.name(r)}."]
        for _ in range(r.randint(3, 7)):
            out.append(writer.sentence(r) if r.random() < 0.3 else r.choice(claims)(r, sym))
        return " ".join(out)

    return make


def _qa() -> Callable[[random.Random], str]:
    writer = _Writer(_NAMES["qa"],
                     "error file server database package version command script config driver port query".split())

    def make(r: random.Random) -> str:
        thing = writer.name(r)
        return "\n".join([
            f"Q: How do I fix the {writer.topic(r)} in {thing} when the {writer.topic(r)} keeps {r.choice(['failing', 'crashing', 'hanging'])}?",
            f"A: Try restarting the {writer.topic(r)} and check the {_NOUN.pick(r)} of {writer.name(r)}.",
            f"A: {writer.sentence(r)} Updating {thing} to version {r.randint(1, 9)}.{r.randint(0, 20)} worked for me.",
            f"Q: Does it work with {writer.name(r)}?",
            f"A: {r.choice(['Yes', 'No', 'Only the new one'])}, the {writer.topic(r)} has been fine for {r.randint(1, 9)} months.",
        ][: r.randint(2, 5)])

    return make


def _legal() -> Callable[[random.Random], str]:
    writer = _Writer(_NAMES["legal"],
                     "court appeal defendant plaintiff motion statute contract judgment evidence claim jury witness".split())

    def make(r: random.Random) -> str:
        a, b = writer.name(r), writer.name(r)
        out = [f"{a} v. {b}, No. {r.randint(10, 99)}-{r.randint(100, 9999)}. OPINION."]
        out += _sentences(r, (3, 8), [
            lambda: writer.sentence(r),
            lambda: f"The {writer.topic(r)} filed a {writer.topic(r)} on {r.choice(['March', 'June', 'October'])} {r.randint(1, 28)}, {r.randint(1950, 2015)}.",
            lambda: f"We {r.choice(['affirm', 'reverse', 'remand'])} the {writer.topic(r)} of the {_ADJ.pick(r)} {writer.topic(r)}.",
        ])
        return " ".join(out)

    return make


def _news() -> Callable[[random.Random], str]:
    writer = _Writer(_NAMES["news"],
                     "council mayor vote plan budget police election bridge school hospital strike minister".split())
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]

    def make(r: random.Random) -> str:
        town = writer.name(r)
        out = [f"{town}, {r.choice(days)} - The {writer.topic(r)} of {town} voted on the {_ADJ.pick(r)} {writer.topic(r)}."]
        out += _sentences(r, (3, 8), [
            lambda: writer.sentence(r),
            lambda: f"Mayor {writer.name(r)} said the {writer.topic(r)} would cost {r.randint(2, 90)} million.",
            lambda: f"The vote passed {r.randint(5, 12)} to {r.randint(0, 4)} after a long debate on the {writer.topic(r)}.",
        ])
        return " ".join(out)

    return make


def _recipes() -> Callable[[random.Random], str]:
    ingredients = _Lexicon(_NAMES["recipes"])

    def make(r: random.Random) -> str:
        steps = [f"Recipe: {ingredients.pick(r)} {r.choice(['soup', 'stew', 'pie', 'salad', 'bread'])}", f"Serves {r.randint(2, 8)}.", ""]
        for i in range(r.randint(3, 7)):
            steps.append(f"{i + 1}. {r.choice(['Chop', 'Boil', 'Fry', 'Mix', 'Bake'])} {r.randint(1, 500)} g of "
                         f"{ingredients.pick(r)} for {r.randint(1, 45)} minutes {r.choice(_PREPOSITIONS)} the {_NOUN.pick(r)}.")
        return "\n".join(steps)

    return make


_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "web-crawl": _web(later=False, boilerplate=True), "web-clean": _web(later=False, boilerplate=False),
    "web-crawl-later": _web(later=True, boilerplate=True), "web-clean-later": _web(later=True, boilerplate=False),
    "encyclopedia": _encyclopedia(), "code": _code(), "books": _books(), "maths": _paper("maths"),
    "biomedical": _paper("biomedical"), "qa": _qa(), "legal": _legal(), "news": _news(), "recipes": _recipes(),
}

# Kinds whose train documents come partly from the pool both corpora draw on (SlimPajama overlaps the
# Pile in its curated sources), the share of them that does, and the pool's size per kind.
_POOLED = {"encyclopedia", "code", "books", "maths", "qa"}
POOL_SHARE = 0.3
POOL_SIZE = 1000

# Domain -> (metadata field, [(set name, kind, weight)]).
_DOMAINS: dict[str, tuple[str, list[tuple[str, str, float]]]] = {
    # The nine Pile parts with a kind here, at the Pile's own weights (Gao et al. 2020, Table 1, percent;
    # the same weights as config/paper.yaml's Pile validation mixture).
    "upstream": ("pile_set_name", [
        ("Pile-CC", "web-crawl", 18.11), ("PubMed Central", "biomedical", 14.40), ("Books3", "books", 12.07),
        ("OpenWebText2", "web-clean", 10.01), ("ArXiv", "maths", 8.96), ("Github", "code", 7.59),
        ("FreeLaw", "legal", 6.12), ("StackExchange", "qa", 5.13), ("Wikipedia (en)", "encyclopedia", 1.53)]),
    # SlimPajama's sampling percentages (Gupta et al. 2023, Table 1; config/paper.yaml's downstream mixture).
    "downstream": ("redpajama_set_name", [
        ("RedPajamaCommonCrawl", "web-crawl-later", 67.0), ("RedPajamaC4", "web-clean-later", 15.0),
        ("RedPajamaGithub", "code", 4.5), ("RedPajamaBook", "books", 4.5), ("RedPajamaWikipedia", "encyclopedia", 4.5),
        ("RedPajamaArXiv", "maths", 2.5), ("RedPajamaStackExchange", "qa", 2.0)]),
    "news": ("source", [("News", "news", 60.0), ("Recipes", "recipes", 40.0)]),
}


def set_names(domain: str) -> dict[str, str]:
    """A domain's set names -> the kind of document each holds."""
    return {name: kind for name, kind, _ in _DOMAINS[domain][1]}


def document(kind: str, namespace: str, index: int) -> str:
    """One document, determined by its identity alone."""
    return _MAKERS[kind](random.Random(f"rewarm-demo-{kind}-{namespace}-{index}"))


def generate_records(domain: str, documents: int, seed: int, pooled: bool = False) -> Iterator[dict]:
    """`documents` records in the shipping format of the domain's real corpus. With `pooled` (train
    splits), a share of the documents of the curated kinds come from the pool both corpora draw on."""
    meta_key, parts = _DOMAINS[domain]
    rng = random.Random(f"rewarm-demo-{domain}-{seed}")
    names, weights = [p[0] for p in parts], [p[2] for p in parts]
    kinds = set_names(domain)
    for index in range(documents):
        name = rng.choices(names, weights)[0]
        kind = kinds[name]
        if pooled and kind in _POOLED and rng.random() < POOL_SHARE:
            text = document(kind, "pool", rng.randrange(POOL_SIZE))
        else:
            text = document(kind, f"{domain}-{seed}", index)
        yield {"text": text, "meta": {meta_key: name}}


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
    `<out_dir>/<corpus>/<split>.jsonl.zst`, or `<split>-<i>-of-<n>.jsonl.zst` in `files` files (an
    empty directory if there are none). Train splits
    draw on the shared pool; validation splits are fresh documents only."""
    counts = {}
    with atomic_dir(out_dir, "generate") as tmp:
        for (corpus, split), source in config.sources().items():
            if isinstance(source, DemoSource):
                records = generate_records(source.domain, source.documents, source.seed, pooled=split == "train")
                counts[f"{corpus}/{split}"] = 0
                for file in range(source.files):  # consecutive documents, the files as even as they can be
                    path = demo_path(tmp, corpus, split, file, source.files)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    size = (file + 1) * source.documents // source.files - file * source.documents // source.files
                    counts[f"{corpus}/{split}"] += write_jsonl_zst(itertools.islice(records, size), path)
    return counts
