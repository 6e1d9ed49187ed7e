"""The configuration: shipped files load, and every kind of bad value is refused at once."""

from __future__ import annotations

import pytest

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import resolve_glob
from tests.project import ROOT, small_params


def test_shipped_params_load_into_dataclasses():
    config = cfg.load(ROOT / "params.yaml", base_dir=ROOT)
    assert isinstance(config.prepare, cfg.PrepareConfig)
    assert set(config.corpora) >= {"upstream", "downstream"}
    assert all(isinstance(s, cfg.DemoSource) for s in config.sources().values())
    assert config.sources()[("upstream", "train")].domain == "upstream"


def test_round_trip_through_dict():
    config = cfg.from_dict(small_params())
    assert cfg.from_dict(cfg.to_dict(config)) == config


@pytest.mark.bad_input
def test_every_problem_is_reported_in_one_error(tmp_path):
    params = small_params(
        prepare={"seq_len": -4, "shard_size": 10, "batch_documents": "many"},
        tokenizer={"type": "bpe"},
    )
    params["corpora"]["upstream"]["train"] = {"type": "csv", "path": "x.csv"}
    params["corpora"]["downstream"]["val"] = {"type": "jsonl", "path": "nowhere/*.jsonl.zst"}
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(params, base_dir=tmp_path, origin="params.yaml")
    message = str(caught.value)
    expected = [
        "prepare.seq_len: -4 must be a positive integer",
        "prepare.shard_size: unknown key (allowed: seq_len, shard_sequences, batch_documents, on_bad_record, parts, workers)",
        "prepare.batch_documents: expected int, got 'many' (str)",
        "tokenizer.type: 'bpe' is not one of 'train', 'pretrained'",
        "corpora.upstream.train.type: 'csv' is not one of 'demo', 'jsonl', 'hf'",
        "corpora.downstream.val.path: 'nowhere/*.jsonl.zst' matches no file",
    ]
    for line in expected:
        assert line in message, f"missing {line!r} in:\n{message}"
    assert message.startswith("params.yaml: ")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "override, expected",
    [
        ({"corpora": {"upstream": {"train": {"documents": 0}}}}, "corpora.upstream.train.documents: 0 must be a positive integer"),
        ({"corpora": {"upstream": {"train": {"max_tokens": -1}}}}, "corpora.upstream.train.max_tokens: -1 must be a positive integer"),
        ({"corpora": {"upstream": {"train": {"domain": "sports"}}}}, "corpora.upstream.train.domain: 'sports' is not one of"),
        ({"corpora": {"upstream": {"train": {"seed": True}}}}, "corpora.upstream.train.seed: expected int, got True (bool)"),
        ({"corpora": {"upstream": {"test": {"type": "demo"}}}}, "corpora.upstream.test: unknown key (allowed: train, val)"),
        ({"corpora": {"../etc": {"val": {"type": "demo", "domain": "upstream", "documents": 1}}}}, "corpora.../etc: corpus name must match"),
        ({"checkpoints": {"../../etc": {"type": "scratch"}}}, "checkpoints.../../etc: checkpoint name must match"),
        ({"checkpoints": {"x; rm -rf ~": {"type": "scratch"}}}, "checkpoints.x; rm -rf ~: checkpoint name must match"),
        ({"corpora": {"/abs": {"val": {"type": "demo", "domain": "news", "documents": 1}}}}, "corpora./abs: corpus name must match"),
        # A newline would split Snakemake's shell commands and file names; `$` in a regular expression lets one through.
        ({"corpora": {"news\n": {"val": {"type": "demo", "domain": "news", "documents": 1}}}}, "corpora.news\n: corpus name must match"),
        ({"checkpoints": {"scratch\n": {"type": "scratch"}}}, "checkpoints.scratch\n: checkpoint name must match"),
        ({"tokenizer": {"type": "pretrained"}}, "tokenizer.name_or_path: required when tokenizer.type is 'pretrained'"),
        ({"tokenizer": {"vocab_size": 100}}, "tokenizer.vocab_size: 100 must be in [258, 1048576]"),
        ({"prepare": {"on_bad_record": "ignore"}}, "prepare.on_bad_record: 'ignore' is not one of 'error', 'skip'"),
        ({"stages": {}}, "stages: unknown key (allowed: corpora, tokenizer, prepare, model, pretrain, checkpoints, train, grid, benchmark, logging, report, forecast)"),
    ],
)
def test_bad_value_names_key_and_allowed(override, expected):
    with pytest.raises(cfg.ConfigError, match=None) as caught:
        cfg.from_dict(small_params(**override))
    assert expected in str(caught.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("override, expected", [
    # a number YAML reads as something else is a type error, reported before any cross-check can trip on it
    ({"train": {"max_lr": "3e-4"}}, "train.max_lr: expected float, got '3e-4' (str)"),
    ({"prepare": {"seq_len": "64"}}, "prepare.seq_len: expected int, got '64' (str)"),
    ({"train": {"tokens": "20k"}}, "train.tokens: expected int, got '20k' (str)"),
    ({"train": {"warmup_fraction": "1%"}}, "train.warmup_fraction: expected float, got '1%' (str)"),
    # every number is finite: NaN and infinity are refused wherever a number goes
    ({"train": {"grad_clip": float("nan")}}, "train.grad_clip: nan is not a finite number"),
    ({"train": {"max_lr": float("nan")}}, "train.max_lr: nan is not a finite number"),
    ({"train": {"eps": float("inf")}}, "train.eps: inf is not a finite number"),
    ({"train": {"weight_decay": float("-inf")}}, "train.weight_decay: -inf is not a finite number"),
    ({"corpora": {"downstream": {"train": {"max_tokens": 1000, "mixture": {"field": "meta.redpajama_set_name",
                                                                          "weights": {"RedPajamaC4": float("inf")}}}}}},
     "corpora.downstream.train.mixture.weights.RedPajamaC4: inf is not a finite number"),
    ({"train": {"seed": -1}}, "train.seed: -1 must be >= 0 (a seed)"),
    ({"checkpoints": {"scratch": {"type": "scratch", "seed": -3}}}, "checkpoints.scratch.seed: -3 must be >= 0 (a seed)"),
    # a name YAML reads as a number
    ({"corpora": {123: {"val": {"type": "demo", "domain": "news", "documents": 1}}}}, "corpora.123: the name 123 is a int, not a string"),
])
def test_wrong_types_and_non_finite_numbers_are_named_not_tracebacks(override, expected):
    with pytest.raises(cfg.ConfigError) as caught:
        grid.from_dict(small_params(**override))
    assert expected in str(caught.value), str(caught.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_a_tracker_without_its_package_is_refused_before_any_job(monkeypatch, tracker):
    """`logging.tensorboard: true` (or `wandb`) where the package cannot be imported (hidden here as Python
    hides a module: None in sys.modules) is a configuration error naming the key and the install, not an
    ImportError in the first training job."""
    import sys

    assert getattr(cfg.from_dict(small_params(logging={tracker: True})).logging, tracker)
    monkeypatch.setitem(sys.modules, tracker, None)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(small_params(logging={tracker: True}))
    assert f"logging.{tracker}: true needs the {tracker} package" in str(caught.value)
    assert f"pip install 'rewarm[{tracker}]'" in str(caught.value)
    assert not getattr(cfg.from_dict(small_params()).logging, tracker)  # off by default: nothing needed


@pytest.mark.bad_input
def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """Nine levels of nine aliases each expand to 9^9 (387 million) values: refused by size, in well under
    a second, with a bounded message."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("train:\n  bomb:\n" + "".join(f"    {line}\n" for line in levels))
    with pytest.raises(cfg.ConfigError) as caught:
        grid.load([ROOT / "params.yaml", path], base_dir=ROOT)
    message = str(caught.value)
    assert "bomb.yaml: expands to " in message and "values through YAML aliases (at most 1,000,000): refused" in message
    assert len(message) < 500
    assert cfg.expanded_size({"a": [1, [2, 3]], "b": "c"}) == 1 + 2 + (1 + 1 + (1 + 2)) + 1  # by hand: keys count too


@pytest.mark.bad_input
def test_upstream_and_downstream_are_required():
    params = small_params()
    del params["corpora"]["downstream"]
    params["corpora"]["upstream"].pop("val")
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(params)
    assert "corpora.downstream: required corpus missing" in str(caught.value)
    assert "corpora.upstream: needs both a `train` and a `val` source" in str(caught.value)


@pytest.mark.bad_input
def test_source_without_type_is_refused():
    params = small_params(corpora={"upstream": {"train": {"path": "a.jsonl"}}})
    params["corpora"]["upstream"]["train"].pop("type")
    with pytest.raises(cfg.ConfigError, match=r"corpora.upstream.train.type: no type is not one of 'demo', 'jsonl', 'hf'"):
        cfg.from_dict(params)


def test_jsonl_glob_resolves_relative_to_project(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("b.jsonl.zst", "a.jsonl.zst"):
        (tmp_path / "raw" / name).write_bytes(b"")
    params = small_params(corpora={"upstream": {"train": {"type": "jsonl", "path": "raw/*.jsonl.zst"}}})
    params["corpora"]["upstream"]["train"] = {"type": "jsonl", "path": "raw/*.jsonl.zst", "max_tokens": 1e6}
    config = cfg.from_dict(params, base_dir=tmp_path)
    source = config.corpora["upstream"].train
    assert source.max_tokens == 1_000_000 and isinstance(source.max_tokens, int)
    assert [p.name for p in resolve_glob(source.path, tmp_path)] == ["a.jsonl.zst", "b.jsonl.zst"]


def test_later_files_override_earlier(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "params.yaml").read_text())
    extra = tmp_path / "extra.yaml"
    extra.write_text("prepare:\n  seq_len: 64\n")
    config = cfg.load([base, extra])
    assert config.prepare.seq_len == 64
    assert config.prepare.shard_sequences == cfg.load(base).prepare.shard_sequences


@pytest.mark.bad_input
def test_unreadable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("prepare: [unclosed\n")
    with pytest.raises(cfg.ConfigError, match=r"params.yaml: not valid YAML"):
        cfg.load(bad)
    with pytest.raises(cfg.ConfigError, match=r"configuration file not found"):
        cfg.load(tmp_path / "missing.yaml")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "train, expected",
    [
        ({"warmup_steps": 40, "warmup_fraction": None}, "train.warmup_steps: 40 must be in [0, 40) (the decay ends at step 40)"),
        ({"schedule_tokens": 10240}, "train.schedule_tokens: 10240 is shorter than the run (tokens = 20480)"),
        ({"schedule_tokens": 40960, "decay_end_tokens": 81920}, "train.decay_end_tokens: 81920 must be within the schedule"),
        ({"schedule_tokens": 40960, "decay_end_tokens": 100}, "train.decay_end_tokens: 100 must be within the schedule"),
        ({"warmup_fraction": 0.5, "schedule_tokens": 40960, "decay_end_tokens": 20480},
         "train.warmup_fraction: 0.5 of the schedule's 80 steps does not end before the decay does (step 40)"),
        ({"precision": "fp8"}, "train.precision: 'fp8' is not one of 'auto', 'bf16', 'fp16', 'fp32'"),
        ({"train_corpus": "news"}, "train.train_corpus: 'news' is not a corpus with a train split (have: upstream, downstream)"),
        ({"early_eval_every": 0}, "train.early_eval_every: 0 must be a positive integer"),
        ({"min_lr": 1.0}, "train.min_lr: 1.0 must be in [0, max_lr = 0.002]"),
        ({"batch_sequences": 6}, "train.batch_sequences: 6 is not divisible by micro_batch_sequences (4)"),
        ({"schedule": "step"}, "train.schedule: 'step' is not one of 'cosine', 'constant', 'linear', 'wsd', 'infinite-cosine', "
                               "'infinite-inv-sqrt', 'rex', 'neox-floored-cosine', 'neox-cosine'"),
        ({"schedule": "neox-floored-cosine", "schedule_tokens": 40960, "decay_end_tokens": 20480},
         "train.decay_end_tokens: schedule neox-floored-cosine has no separate decay end"),
        ({"loss_scale_window": 0}, "train.loss_scale_window: 0 must be a positive integer"),
        ({"schedule_tokens": 40960, "decay_end_tokens": 20480, "warmup_fraction": 0.1}, None),
        ({"optimizer": "sgd"}, "train.optimizer: 'sgd' is not one of 'adamw', 'radam'"),
        ({"schedule": "infinite-cosine"}, "train.constant_lr: schedule infinite-cosine needs constant_lr > 0"),
        ({"cooldown_end_fraction": 0.9, "constant_end_fraction": 0.8}, "train.cooldown_end_fraction: 0.9 is after constant_end_fraction (0.8)"),
        ({"timescale": 0}, "train.timescale: 0.0 must be > 0"),
        ({"replay_fraction": 1.5}, "train.replay_fraction: 1.5 must be in [0, 1]"),
        ({"checkpoint": "nowhere"}, "train.checkpoint: 'nowhere' is not one of early, final, scratch"),
        ({"tokens": 100}, "train.tokens: 100 is less than one batch (8 x 64 tokens)"),
        ({"warmup_steps": 3}, "train.warmup_steps: give warmup_steps or warmup_fraction, not both"),
    ],
)
def test_bad_training_parameters(train, expected):
    if expected is None:  # the same values are fine for a schedule with a decay end
        cfg.from_dict(small_params(train=train))
        return
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(small_params(train=train))
    assert expected in str(caught.value)


@pytest.mark.bad_input
def test_model_must_hold_the_sequence_length():
    with pytest.raises(cfg.ConfigError, match=r"model.max_position_embeddings: 32 is shorter than prepare.seq_len \(64\)"):
        cfg.from_dict(small_params(model={"max_position_embeddings": 32}))


@pytest.mark.bad_input
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  max_lr: 1.0e-3\nprepare:\n  seq_len: 64\ntrain:\n  tokens: 100\n")
    with pytest.raises(cfg.ConfigError, match=r"key 'train' is given twice \(first on line 1, again on line 5\)"):
        cfg.load(path)


def test_a_digest_changes_with_any_value_and_not_with_key_order():
    """Snakemake's parameters are digests (`digest`): equal settings give equal digests whatever the order
    of their keys, and any changed value gives another."""
    params = small_params()
    config = cfg.from_dict(params)
    assert cfg.digest(cfg.from_dict(dict(reversed(list(params.items())))).train) == cfg.digest(config.train)
    assert cfg.digest({"a": 1, "b": {"c": [2, 3], "d": None}}) == cfg.digest({"b": {"d": None, "c": [2, 3]}, "a": 1})
    assert cfg.digest({"a": 1, "b": {"c": [2, 3]}}) != cfg.digest({"a": 1, "b": {"c": [3, 2]}})
    assert cfg.digest(cfg.from_dict(small_params(train={"seed": 7})).train) != cfg.digest(config.train)
    assert len(cfg.digest(config.train)) == 16 and int(cfg.digest(config.train), 16) >= 0
