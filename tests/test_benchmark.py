"""The LM Evaluation Harness on the demo's own tasks: the task files, the real harness on a tiny model
(no mock), its scores against a direct computation with torch, and bad task files refused by name."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from rewarm import benchmark
from rewarm import config as cfg
from rewarm import grid
from rewarm.data import demo
from tests.project import log_likelihoods, next_word_accuracy, rewarm, small_params

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def demo_config(**benchmark_overrides) -> cfg.Config:
    params = small_params()
    params["benchmark"] = {**params["benchmark"], **benchmark_overrides}
    return grid.from_dict(params)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The demo tasks of the test configuration, written where the jobs write them (data/tasks)."""
    root = tmp_path_factory.mktemp("tasks")
    benchmark.write_demo_tasks(demo_config(), root / "data/tasks")
    return root / "data/tasks"


def test_demo_tasks_are_written_in_the_harness_format(task_dir, monkeypatch, tmp_path):
    """Each task is a YAML the harness's own TaskManager indexes, with a JSON-lines data file; every
    next-word example's answer is the word that follows its context in a document of the domain."""
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(task_dir.parents[1])
    spec = demo_config().benchmark.demo_tasks
    # The examples' words are the documents' words, with each run of white space (recipes' line breaks) one space.
    texts = [" ".join(r["text"].split()) for r in demo.generate_records(spec.domain, spec.documents, spec.seed)]
    next_word = [json.loads(line) for line in (task_dir / "demo_next_word.jsonl").read_text().splitlines()]
    cloze = [json.loads(line) for line in (task_dir / "demo_cloze.jsonl").read_text().splitlines()]
    assert 0.8 * spec.documents <= len(next_word) <= spec.documents and 0.5 * spec.documents <= len(cloze) <= spec.documents
    for example in next_word:
        assert len(set(example["choices"])) == benchmark.CHOICES
        answer = example["choices"][example["answer"]]
        assert any(f"{example['context']} {answer}" in text for text in texts), example
    for example in cloze:
        assert any(text.rstrip(".").endswith(f"{example['context']} {example['target']}") for text in texts), example
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    assert set(cfg.DEMO_TASKS) <= set(manager.all_tasks)
    # The same files again, byte for byte (a pure function of the configuration).
    benchmark.write_demo_tasks(demo_config(), tmp_path / "again")
    for name in cfg.DEMO_TASKS:
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (task_dir / f"{name}.jsonl").read_bytes()
        task = yaml.safe_load((task_dir / f"{name}.yaml").read_text())
        assert task["task"] == name and task["dataset_kwargs"]["data_files"]["test"] == f"{task_dir.as_posix()}/{name}.jsonl"


def test_primary_metric_and_average():
    """The score is acc_norm where the task reports it, else acc; the average is their mean (by hand)."""
    results = {"results": {"a": {"acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.25, "alias": "a"},
                           "b": {"perplexity,none": 12.0, "acc,none": 0.75, "acc_stderr,none": 0.05}},
               "versions": {"a": 1.0, "b": 2.0}, "n-samples": {"a": {"effective": 4}, "b": {"effective": 8}}}
    out = benchmark.summarize(results, {"a": 0, "b": 5})
    assert out["tasks"]["a"]["score"] == {"metric": "acc_norm", "value": 0.25}
    assert out["tasks"]["b"]["score"] == {"metric": "acc", "value": 0.75}
    assert out["tasks"]["a"]["stderr"] == {"acc": 0.1} and out["tasks"]["b"]["num_fewshot"] == 5
    assert out["average"] == pytest.approx((0.25 + 0.75) / 2)
    assert benchmark.primary_metric({"perplexity": 3.0}) is None


def test_pipeline_scores_match_a_direct_computation(snakemake_run):
    """The harness's scores of the pipeline's own `benchmark_base` job equal the scores computed here
    from the model's log-probabilities (acc, acc_norm by characters, the cloze's greedy accuracy and
    perplexity, as the harness defines them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = snakemake_run / "checkpoints/base/final"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    length = model.config.max_position_embeddings
    recorded = json.loads((snakemake_run / "evals/benchmark/base/final.json").read_text())
    tasks = snakemake_run / "data/tasks"

    acc, acc_norm = next_word_accuracy(model, tokenizer, tasks / "demo_next_word.jsonl", length)
    metrics = recorded["tasks"]["demo_next_word"]["metrics"]
    assert metrics["acc"] == pytest.approx(acc)
    assert metrics["acc_norm"] == pytest.approx(acc_norm)

    examples = [json.loads(line) for line in (tasks / "demo_cloze.jsonl").read_text().splitlines()]
    pairs = [log_likelihoods(model, tokenizer, e["context"], " " + e["target"], length) for e in examples]
    metrics = recorded["tasks"]["demo_cloze"]["metrics"]
    assert metrics["acc"] == pytest.approx(sum(greedy for _, greedy in pairs) / len(pairs))
    assert metrics["perplexity"] == pytest.approx(math.exp(-sum(ll for ll, _ in pairs) / len(pairs)), rel=1e-5)
    # What makes the scores comparable is recorded with them.
    from rewarm.io import file_sha256
    import lm_eval

    assert recorded["weights_sha256"] == {name: file_sha256(model_dir / name) for name in ("config.json", "model.safetensors")}
    assert recorded["harness"]["version"] == lm_eval.__version__
    assert recorded["dtype"] == "float32" and recorded["batch_size"] == 16 and recorded["device"] == "cpu"
    assert {t["version"] for t in recorded["tasks"].values()} == {1.0}
    assert recorded["average"] == pytest.approx((metrics["acc"] + recorded["tasks"]["demo_next_word"]["metrics"]["acc_norm"]) / 2)


def test_scores_are_identical_across_reruns_and_batch_sizes(prepared_project, task_dir, monkeypatch):
    """Two runs give the same record; batch sizes 1 and 16 give the same accuracies and perplexities
    within float32 rounding (what the README reports about the harness and batch size)."""
    monkeypatch.chdir(task_dir.parents[1])
    config = demo_config(limit=12)
    model = prepared_project / "checkpoints/base/scratch"
    first = benchmark.run_benchmark(config, model, task_dir)
    assert benchmark.run_benchmark(config, model, task_dir) == first
    one = benchmark.run_benchmark(config, model, task_dir, batch_size=1)
    assert one["batch_size"] == 1 and first["batch_size"] == 16
    for name, task in first["tasks"].items():
        assert task["examples"] == 12
        for metric, value in task["metrics"].items():
            assert one["tasks"][name]["metrics"][metric] == pytest.approx(value, rel=1e-5), (name, metric)


def test_the_harness_own_files_are_kept_in_its_format(prepared_project, task_dir, monkeypatch, tmp_path):
    """Beside the summary, the harness's own results (lm_eval.utils.make_table reads them, as its
    leaderboards do) and every example's outputs (log_samples), the same bytes on a rerun."""
    from lm_eval.utils import make_table

    monkeypatch.chdir(task_dir.parents[1])
    config = demo_config(limit=6, tasks={"demo_next_word": 0, "demo_cloze": 2})
    model = prepared_project / "checkpoints/base/scratch"
    summary = benchmark.run_benchmark(config, model, task_dir, harness_out=tmp_path / "first")
    harness = json.loads((tmp_path / "first/results.json").read_text())
    table = make_table(harness)
    for name, task in summary["tasks"].items():
        row = next(line for line in table.splitlines() if line.startswith(f"|{name}"))
        assert f"{task['metrics']['acc']:.4f}" in row and f"|{task['num_fewshot']}|" in row.replace(" ", "")
    assert harness["n-shot"] == {"demo_next_word": 0, "demo_cloze": 2}
    for name in summary["tasks"]:
        samples = [json.loads(line) for line in (tmp_path / f"first/samples_{name}.jsonl").read_text().splitlines()]
        assert len(samples) == 6 and {"doc", "target", "resps"} <= set(samples[0])
    benchmark.run_benchmark(config, model, task_dir, harness_out=tmp_path / "again")
    for path in sorted((tmp_path / "first").iterdir()):
        if path.name != ".rewarm-output":
            assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


def test_tasks_with_different_few_shot_counts_each_get_theirs(prepared_project, task_dir, monkeypatch):
    """The paper's list mixes zero- and five-shot tasks: the stage runs the harness once per count.
    Each task's scores equal the harness's own, called directly with that task and count."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(task_dir.parents[1])
    config = demo_config(limit=8, tasks={"demo_next_word": 0, "demo_cloze": 2})
    model = prepared_project / "checkpoints/base/scratch"
    record = benchmark.run_benchmark(config, model, task_dir)
    assert {name: task["num_fewshot"] for name, task in record["tasks"].items()} == {"demo_next_word": 0, "demo_cloze": 2}
    direct = lm_eval.simple_evaluate(model=HFLM(pretrained=str(model), device="cpu", dtype="float32", batch_size=16),
                                     tasks=["demo_cloze"], num_fewshot=2, limit=8, bootstrap_iters=1000,
                                     task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    assert direct["n-shot"]["demo_cloze"] == 2
    compared = [key for key in direct["results"]["demo_cloze"] if key.endswith(",none") and "stderr" not in key]
    assert {"acc,none", "perplexity,none"} <= set(compared)
    for key in compared:
        value = direct["results"]["demo_cloze"][key]
        assert record["tasks"]["demo_cloze"]["metrics"][key.split(",")[0]] == pytest.approx(value, rel=1e-6), key
    zero = benchmark.run_benchmark(demo_config(limit=8, tasks={"demo_cloze": 0}), model, task_dir)["tasks"]["demo_cloze"]
    assert zero["metrics"] != record["tasks"]["demo_cloze"]["metrics"]  # two examples before each: another context


@pytest.mark.bad_input
@pytest.mark.parametrize("damage, message", [
    ("missing", "task file missing"),
    ("not yaml", "not valid YAML"),
    ("other task", "not a harness task named 'demo_cloze'"),
    ("no data", "data file"),
])
def test_a_bad_task_file_is_refused_naming_it(task_dir, tmp_path, monkeypatch, damage, message):
    """A task file missing or malformed (or naming a data file that is not there) is refused before
    the harness runs, naming the file."""
    copy = tmp_path / "data/tasks"
    shutil.copytree(task_dir, copy)
    monkeypatch.chdir(task_dir.parents[1])
    path = copy / "demo_cloze.yaml"
    if damage == "missing":
        path.unlink()
    elif damage == "not yaml":
        path.write_text("task: demo_cloze\n  dataset_path: [json\n")
    elif damage == "other task":
        path.write_text(path.read_text().replace("task: demo_cloze", "task: something_else"))
    else:
        path.write_text(path.read_text().replace("demo_cloze.jsonl", "absent.jsonl"))
    with pytest.raises(cfg.ConfigError) as refused:
        benchmark.run_benchmark(demo_config(), "unused-model-dir", copy)
    assert str(path) in str(refused.value) and message in str(refused.value)


@pytest.mark.bad_input
def test_the_command_refuses_a_missing_task_file_before_loading_anything(prepared_copy):
    """`rewarm benchmark` exits with the configuration error's code, naming the file, and writes nothing."""
    result = rewarm("benchmark", "--model", "checkpoints/base/scratch", "--tasks", "data/tasks", "--out", "evals/b.json",
                    cwd=prepared_copy, check=False)
    assert result.returncode == 2
    assert "data/tasks/demo_next_word.yaml: task file missing" in result.stderr
    assert not (prepared_copy / "evals/b.json").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("section, message", [
    ({"tasks": {"demo_cloze": -1}}, "benchmark.tasks.demo_cloze: few-shot examples must be an integer >= 0"),
    ({"tasks": {"demo_cloze": 0}, "demo_tasks": None}, "benchmark.tasks.demo_cloze: a demo task needs benchmark.demo_tasks"),
    ({"tasks": {"hellaswag": 0}, "batch_size": 0}, "benchmark.batch_size: 0 must be a positive integer"),
    ({"tasks": {"bad name!": 0}}, "benchmark.tasks.bad name!: not a harness task name"),
    ({"tasks": {"hellaswag": 0}, "unknown": 1}, "benchmark.unknown: unknown key"),
])
def test_bad_benchmark_settings_are_refused(section, message):
    params = small_params()
    params["benchmark"] = section
    with pytest.raises(cfg.ConfigError) as refused:
        grid.from_dict(params)
    assert message in str(refused.value)


def test_benchmarks_switch_off():
    """`benchmark: null` or no tasks: no benchmark jobs listed for either front end."""
    from rewarm.dvcfile import grid_listing

    for section in (None, {"tasks": {}}):
        params = small_params()
        params["benchmark"] = section
        listing = grid_listing(grid.from_dict(params))
        assert listing["benchmarking"] == [] and listing["benchmarked"] == [] and listing["benchmarked_base"] == []
    listing = grid_listing(grid.from_dict(small_params()))
    assert listing["benchmarking"] == ["tasks"] and len(listing["benchmarked"]) == len(listing["cells"])


@pytest.mark.bad_input
@pytest.mark.parametrize("task_extra, other, refused", [
    ({}, None, None),
    ({"include": "base.yaml"}, "metric_list:\n  - metric: acc\n", None),  # another plain file of the directory: fine
    ({"include": "/etc/evil.yaml"}, None, "include '/etc/evil.yaml' refused"),
    ({"include": "../evil.yaml"}, None, "include '../evil.yaml' refused"),
    ({"include": "base.yaml"}, "process_results: !function evil.run\n", "base.yaml: not valid YAML, or a tag such as !function"),
    ({"include": "demo_cloze.yaml"}, None, "include 'demo_cloze.yaml' refused"),  # itself
])
def test_task_files_include_only_plain_files_of_the_directory_and_run_no_code(tmp_path, task_extra, other, refused):
    """The harness imports and runs the Python a `!function` tag names, in a task file or in one it
    includes: a task may include only another plain file of the tasks directory, and no file may carry
    a tag. Checked before the harness is imported."""
    (tmp_path / "demo_cloze.jsonl").write_text(json.dumps({"text": "a", "target": "b"}) + "\n")
    task = {**benchmark.demo_task_config("demo_cloze", str(tmp_path / "demo_cloze.jsonl")), **task_extra}
    (tmp_path / "demo_cloze.yaml").write_text(yaml.safe_dump(task))
    if other is not None:
        (tmp_path / "base.yaml").write_text(other)
    problems = benchmark.check_task_dir(tmp_path, ["demo_cloze"])
    if refused is None:
        assert problems == []
    else:
        assert len(problems) == 1 and refused in problems[0], problems


def test_a_task_file_with_a_function_tag_is_refused(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\nprocess_results: !function evil.run\n")
    problems = benchmark.check_task_dir(tmp_path, ["t"])
    assert len(problems) == 1 and "t.yaml: not valid YAML, or a tag such as !function" in problems[0]
