"""Benchmarks with the LM Evaluation Harness (`lm-eval`): the harness loads the tasks, builds the
requests, runs the model and scores; this module only chooses what it runs and records what makes
a score comparable (weights, harness and task versions, dtype, batch size).

The demo cannot download task datasets, so `write_demo_tasks` writes two small tasks in the
harness's own format (a YAML file and a JSON-lines data file each) from a held-out demo domain:
`demo_next_word`, multiple choice among four words for the word that comes next, and
`demo_cloze`, the last word of a passage as LAMBADA asks it (Paperno et al. 2016).
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import yaml

from rewarm import config as cfg
from rewarm.data import demo
from rewarm.io import atomic_dir, plain_file_name

log = logging.getLogger(__name__)

PRIMARY_METRICS = ("acc_norm", "acc", "exact_match", "f1")
"""A task's score in the report's columns and average: the first of these it reports. acc_norm
first: the harness's length-normalised accuracy, what the Pythia and Ibrahim et al. 2024 tables
give for HellaSwag, ARC and OpenBookQA."""

CONTEXT_WORDS = 20
"""Words of context at most before a demo task's answer: about 30 tokens, so that the context fits
the tests' 64-token model and the demo's 128 whole (the harness would cut it from the left)."""
SHARED_SAMPLE = 2000
"""Upstream documents whose words count as known to the models (the demo's upstream train split
draws on the same generator)."""
CHOICES = 4
"""Choices of the next-word task: the word that follows and three others from the same documents."""

_WORD = re.compile(r"^[A-Za-z]+$")
_CHOICE = re.compile(r"^[a-z]{4,}$")


# -- the demo's tasks ------------------------------------------------------------------------------


def demo_task_docs(domain: str, documents: int, seed: int) -> dict[str, list[dict]]:
    """The demo tasks' examples, one of each per document, a pure function of the arguments.

    Answers and choices are words the training corpora also use (SHARED_SAMPLE upstream documents
    hold them): a held-out domain's own words (a town's name, `council`) were never seen in training,
    and no model could score above chance on them. next word: such a word, lower case, of four
    letters or more (not a sentence's first) at a seeded position, the words before it as context,
    and as choices it and three others of that kind from the same documents (so that no choice wins
    by being short: an untrained model scores about 1 in 4). cloze: the document's last word when it
    is such a word, the words before it as context. Contexts join the words with single spaces (a
    recipe's line breaks become spaces)."""
    shared = {w.strip(".,") for r in demo.generate_records("upstream", SHARED_SAMPLE, seed=0) for w in r["text"].split()}
    texts = [record["text"] for record in demo.generate_records(domain, documents, seed)]
    vocabulary = sorted({w.strip(".,") for t in texts for w in t.split() if _CHOICE.match(w.strip(".,"))} & shared)
    known = set(vocabulary)
    rng = random.Random(f"rewarm-demo-tasks-{domain}-{seed}")
    next_word, cloze = [], []
    for text in texts:
        words = text.split()
        positions = [i for i in range(4, len(words)) if words[i] in known and not words[i - 1].endswith(".")]
        if positions:
            i = rng.choice(positions)
            others = rng.sample([w for w in vocabulary if w != words[i]], CHOICES - 1)
            choices = [words[i], *others]  # vocabulary is sorted: the draw is the same on every machine
            rng.shuffle(choices)
            next_word.append({"context": " ".join(words[max(0, i - CONTEXT_WORDS):i]), "choices": choices,
                              "answer": choices.index(words[i])})
        last = words[-1].rstrip(".")
        if _WORD.match(last) and last in shared and len(words) > 4:
            cloze.append({"context": " ".join(words[-CONTEXT_WORDS - 1:-1]), "target": last})
    return {"demo_next_word": next_word, "demo_cloze": cloze}


def demo_task_config(name: str, data_file: str) -> dict:
    """A demo task in the harness's YAML task format, reading its examples from `data_file`."""
    common = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "doc_to_text": "context",
        "metadata": {"version": 1.0},
    }
    if name == "demo_next_word":
        return {**common, "output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "answer",
                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]}
    # A loglikelihood task's continuation is the target as written (the harness adds no delimiter, unlike
    # multiple choice): the word follows a space, as in the harness's own LAMBADA task.
    return {**common, "output_type": "loglikelihood", "doc_to_target": "{{' ' + target}}",
            "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}


def write_demo_tasks(config: cfg.Config, out_dir: str | Path) -> dict[str, int]:
    """The `tasks` stage: each demo task as `<out>/<task>.yaml` and `<out>/<task>.jsonl`, the YAML
    naming its data file by the path given (relative to the project, where the jobs run), so that
    `lm_eval run --include_path <out>` reads the same tasks; an empty directory without demo tasks.
    Returns examples per task."""
    spec = config.benchmark.demo_tasks if config.benchmark else None
    counts = {}
    with atomic_dir(out_dir, "tasks") as tmp:
        for name, docs in (demo_task_docs(spec.domain, spec.documents, spec.seed) if spec else {}).items():
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
            task = demo_task_config(name, f"{Path(out_dir).as_posix()}/{name}.jsonl")
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
            counts[name] = len(docs)
    return counts


# -- task files ------------------------------------------------------------------------------------


def check_task_dir(task_dir: str | Path, names: list[str]) -> list[str]:
    """Problems with the task files of `names` in `task_dir`, one per line, each naming its file:
    a missing or unreadable YAML, one that is not a task mapping of that name, or a data file
    it names that is not there. Checked before the harness runs, which would otherwise skip a bad
    file with a warning and then report the task as unknown."""
    problems = []
    for name in names:
        path = Path(task_dir) / f"{name}.yaml"
        if not path.is_file():
            problems.append(f"{path}: task file missing (written by `rewarm tasks`)")
            continue
        task = _read_task_file(path, Path(task_dir), problems)
        if task is None:
            continue
        if not isinstance(task, dict) or task.get("task") != name:
            problems.append(f"{path}: not a harness task named {name!r} (expected a mapping with `task: {name}`)")
            continue
        missing = [key for key in ("dataset_path", "output_type", "doc_to_text", "doc_to_target") if key not in task]
        if missing:
            problems.append(f"{path}: missing key{'s' * (len(missing) > 1)} {', '.join(missing)}")
        files = (task.get("dataset_kwargs") or {}).get("data_files") or {}
        for data_file in (files.values() if isinstance(files, dict) else [files]):
            if not Path(data_file).is_file():
                problems.append(f"{path}: data file {data_file} not found")
    return problems


def _read_task_file(path: Path, task_dir: Path, problems: list[str], seen: tuple = ()) -> dict | None:
    """A task file and what it includes, read as plain YAML: a tag such as `!function` (which makes the harness
    import and run Python named by the file) is refused, and so is an `include` of anything but another plain
    file of the tasks directory. None, with the problem said, when refused."""
    try:
        task = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        problems.append(f"{path}: not valid YAML, or a tag such as !function that would run code: {error}")
        return None
    included = task.get("include") if isinstance(task, dict) else None
    if included is None:
        return task
    if not plain_file_name(included) or not (task_dir / included).is_file() or included in seen:
        problems.append(f"{path}: include {included!r} refused: a task file may include only another file of {task_dir}, "
                        f"by its plain name, once")
        return None
    return task if _read_task_file(task_dir / included, task_dir, problems, (*seen, path.name)) is not None else None


# -- running the harness ---------------------------------------------------------------------------


def harness_dtype(precision: str) -> str:
    """The torch dtype the harness loads the weights in, for the run's precision."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]


def primary_metric(metrics: dict) -> str | None:
    """The metric a task is scored by (PRIMARY_METRICS), or None if it reports none of them."""
    return next((m for m in PRIMARY_METRICS if m in metrics), None)


def summarize(results: dict, fewshot: dict[str, int]) -> dict:
    """Per task: its version, few-shot count, examples, every metric (with its standard error) and
    the score; the average score over the tasks that have one. `results` is the harness's output."""
    tasks = {}
    for name in sorted(fewshot):
        metrics, errors = {}, {}
        for key, value in results["results"][name].items():  # "acc,none", "acc_stderr,none", "alias", ...
            metric, filtered, _ = key.partition(",")
            if filtered and isinstance(value, (int, float)):
                if metric.endswith("_stderr"):
                    errors[metric.removesuffix("_stderr")] = value
                else:
                    metrics[metric] = value
        score = primary_metric(metrics)
        tasks[name] = {
            "version": results["versions"].get(name),
            "num_fewshot": fewshot[name],
            "examples": results.get("n-samples", {}).get(name, {}).get("effective"),
            "metrics": metrics,
            "stderr": errors,
            "score": {"metric": score, "value": metrics[score]} if score else None,
        }
    scores = [t["score"]["value"] for t in tasks.values() if t["score"]]
    return {"tasks": tasks, "average": sum(scores) / len(scores) if scores else None}


HARNESS_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
"""What the harness's results file holds that its tools (`lm_eval.utils.make_table`, leaderboards) read;
its timings, dates and environment dump are left out, so that a rerun writes the same bytes."""


def write_harness_results(out_dir: str | Path, results: dict, samples: dict[str, list]) -> None:
    """The harness's own files: `results.json` (HARNESS_KEYS, in its structure) and, per task, the
    per-example outputs as `samples_<task>.jsonl` (what `log_samples` gives), written whole or not at
    all (`atomic_dir`)."""
    from lm_eval.utils import handle_non_serializable

    with atomic_dir(Path(out_dir), "benchmark") as tmp:
        (tmp / "results.json").write_text(json.dumps({k: results[k] for k in HARNESS_KEYS if k in results}, indent=2,
                                                      default=handle_non_serializable, sort_keys=True) + "\n")
        for task, rows in sorted(samples.items()):
            (tmp / f"samples_{task}.jsonl").write_text(
                "".join(json.dumps(row, default=handle_non_serializable, sort_keys=True) + "\n" for row in rows))


def run_benchmark(config: cfg.Config, model_dir: str | Path, task_dir: str | Path | None = None,
                  batch_size: int | None = None, harness_out: str | Path | None = None) -> dict:
    """The `benchmark` stage: the harness's tasks on a model directory, on the configuration's
    device and precision, with what makes the scores comparable. `harness_out`: a directory for the
    harness's own results and per-example outputs (`write_harness_results`), beside this summary."""
    spec = config.benchmark
    fewshot = dict(spec.tasks)
    local = [name for name in fewshot if name in cfg.DEMO_TASKS]
    if local:
        if task_dir is None:
            raise cfg.ConfigError(f"benchmark.tasks: {', '.join(local)} are demo tasks: pass their folder (--tasks)")
        problems = check_task_dir(task_dir, local)
        if problems:
            raise cfg.ConfigError("\n".join(problems))
    import lm_eval  # after the checks: importing the harness and transformers takes seconds
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from rewarm.checkpoints import check_fits, verify_weights
    from rewarm.data import tokenizer as tok
    from rewarm.runtime import pick_device, resolve_precision

    check_fits(model_dir, tok.load(model_dir))  # an embedding smaller than the tokenizer: an IndexError otherwise
    weights = verify_weights(model_dir)  # refused, naming the file, if altered or truncated
    device = pick_device(config.train.device)
    dtype = harness_dtype(resolve_precision(config.train.precision, device))
    batch = batch_size or spec.batch_size
    # Only the harness's own task index when a task needs it: indexing its thousands of tasks takes seconds.
    manager = TaskManager(include_path=str(task_dir) if local else None, include_defaults=len(local) < len(fewshot))
    model = HFLM(pretrained=str(model_dir), device=str(device), dtype=dtype, batch_size=batch, trust_remote_code=False)
    results, samples = {}, {}
    for shots in sorted(set(fewshot.values())):  # one harness call per few-shot count
        names = sorted(name for name, n in fewshot.items() if n == shots)
        out = lm_eval.simple_evaluate(model=model, tasks=names, num_fewshot=shots, limit=spec.limit, task_manager=manager,
                                      log_samples=harness_out is not None, bootstrap_iters=1000)
        for key in HARNESS_KEYS:
            if isinstance(out.get(key), dict):
                results.setdefault(key, {}).update(out[key])
        samples.update(out.get("samples") or {})
    if harness_out is not None:
        write_harness_results(harness_out, results, samples)
    return {
        "model": str(model_dir),
        "weights_sha256": weights,  # the configuration's too: the same weights in another architecture are another model
        "harness": {"package": "lm-eval", "version": lm_eval.__version__},
        "device": device.type,
        "dtype": dtype,
        "batch_size": batch,
        "limit": spec.limit,
        **summarize(results, fewshot),
    }
