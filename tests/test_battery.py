"""A battery of bad inputs that grows by itself (Hypothesis): random mutations of the configuration and random
JSON-lines records. Every outcome is either success or the project's own error (one line per problem, each
naming a key, or the file and line), never another exception, and skipping bad records never raises."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewarm import config as cfg
from rewarm import grid
from rewarm.data.sources import CorpusError, ReadStats, read_jsonl
from tests.project import small_params

pytestmark = pytest.mark.bad_input

BASE = small_params()

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["3e-4", "20k", "1%", "cosine", "upstream", "../x", "a\nb", "", " "]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3),
                      max_leaves=8)


def paths(tree, prefix=()):
    """Every key path in a nested mapping (sections and leaves)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))


PATHS = sorted(paths(BASE), key=lambda p: tuple(map(str, p)))


@st.composite
def mutated(draw):
    """The small configuration with one to three edits: a value replaced, a key deleted, or an unknown key added."""
    params = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = params
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return params


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_configuration_loads_or_is_refused_naming_keys(params):
    try:
        grid.from_dict(params)
    except cfg.ConfigError as error:
        header, *problems = str(error).split("\n  ")
        assert re.fullmatch(r"configuration: \d+ problems?:", header), header
        assert problems and all(": " in problem for problem in problems), str(error)


RECORDS = st.one_of(
    st.dictionaries(st.sampled_from(["text", "meta", "title"]), VALUES, max_size=3).map(json.dumps),
    VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
    st.sampled_from(['{"text": "a\\ud800"}', "[" * 5000 + "]" * 5000, '{"text": 1' + "0" * 5000 + "}", '{"text": "ok"}']),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(RECORDS, min_size=1, max_size=6))
def test_random_records_are_read_or_refused_naming_file_and_line(tmp_path, records):
    path = tmp_path / "random.jsonl"
    path.write_bytes("\n".join(r.replace("\n", " ") for r in records).encode("utf-8", "surrogatepass") + b"\n")
    try:
        texts = list(read_jsonl(path, "text", ReadStats()))
        assert all(isinstance(text, str) and text.strip() for text in texts)
    except CorpusError as error:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", str(error)), str(error)
    stats = ReadStats()
    kept = list(read_jsonl(path, "text", stats, on_bad_record="skip"))  # never raises
    assert stats.documents == len(kept) and stats.documents + stats.empty + stats.bad <= len(records)
    assert not math.isnan(stats.bad)
