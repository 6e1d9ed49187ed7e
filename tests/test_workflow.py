"""The real `snakemake` and `dvc repro` on the embedded demo, in a temporary copy of the project."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from rewarm import config as cfg
from rewarm import grid
from rewarm.io import file_sha256
from tests.project import (
    FRONT_END_PARAMS,
    ROOT,
    TEST_GRID,
    TEST_PARAMS,
    copy_project,
    digests,
    git_commit,
    grid_file,
    reference_report,
    rewarm,
    run,
    small_params,
    snakemake,
    write_params,
)


def studies_of(project: Path) -> dict[str, list[str]]:

    return grid.studies(grid.load(project / "params.yaml"))


def test_grid_file_for_dvc_is_up_to_date(tmp_path):
    """dvc.yaml reads the cells from workflow/grid.yaml; it must match params.yaml."""
    project = copy_project(tmp_path / "grid")
    (project / "workflow/grid.yaml").unlink()
    (project / "workflow/plots/dvc.yaml").unlink()
    rewarm("grid", "--write", "workflow/grid.yaml", cwd=project)
    for name in ("workflow/grid.yaml", "workflow/plots/dvc.yaml"):
        assert (project / name).read_text() == (ROOT / name).read_text(), "run `rewarm grid --write workflow/grid.yaml`"


def test_dvc_yaml_is_generated_from_the_stage_table(tmp_path):
    """dvc.yaml is `rewarm dvcfile`'s output, written afresh into a copy: the same bytes as the committed one."""
    project = copy_project(tmp_path / "dvcfile")
    (project / "dvc.yaml").unlink()
    rewarm("dvcfile", "--write", "dvc.yaml", cwd=project)
    assert (project / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text(), "run `rewarm dvcfile --write dvc.yaml`"


@pytest.mark.slow
def test_each_dvc_stage_depends_on_the_code_its_command_runs():
    """A stage's src/ dependencies hold every file of ours that Python itself loads for the stage's
    modules (read from sys.modules after importing them in a fresh interpreter, not from our AST pass):
    `evaluate` runs checkpoints.load_model, so checkpoints.py is among its dependencies."""
    from rewarm import dvcfile

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in dvcfile.STAGES:
        code = [*stage.code, "rewarm.grid"]
        script = ("import sys, json\n" + "".join(f"import {m}\n" for m in code)
                  + "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'rewarm')))")
        loaded = json.loads(run(sys.executable, "-c", script, cwd=ROOT).stdout)
        body = stages[stage.name].get("do", stages[stage.name])
        deps = {str(ROOT / d) for d in body["deps"] if d.startswith("src/")}
        assert {str(Path(f).resolve()) for f in loaded} <= deps, stage.name
    evaluate = stages["evaluate"]["do"]["deps"]
    assert "src/rewarm/checkpoints.py" in evaluate and "src/rewarm/report.py" not in evaluate


def test_snakemake_runs_every_cell_of_the_grid(snakemake_run):
    listing = grid_file(snakemake_run)
    cells = listing["cells"]
    assert len(cells) == 10 and len(listing["trained"]) == 9 and len(listing["prefixes"]) == 1
    half = next(iter(listing["prefixes"]))
    assert listing["prefixes"][half]["run"] == "ckpt-final_lr-2e-3_warm-5e-2_sched-cosine_replay-0_tokens-20480"
    assert json.loads((snakemake_run / "runs" / half / "config.json").read_text())["read_from"]["step"] == 20
    upstream = next(c for c, s in cells.items() if s["train_corpus"] == "upstream")
    trained_on = json.loads((snakemake_run / "runs" / upstream / "config.json").read_text())["inputs"]["train"]
    assert trained_on == manifest(snakemake_run, "upstream", "train")["source"]["fingerprint"]  # the Pile again, no shift
    for cell, settings in cells.items():
        run_dir = snakemake_run / "runs" / cell
        recorded = json.loads((run_dir / "config.json").read_text())
        assert recorded["train"] == settings  # each cell trained with its own settings
        lrs = [float(line.split("\t")[1]) for line in (run_dir / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]]
        # a continuation of an infinite schedule starts in its constant phase: no re-warming
        continues = settings["schedule"].startswith("infinite-") and settings["cooldown_end_fraction"] == 0
        assert max(lrs) == pytest.approx(settings["constant_lr"] if continues else settings["max_lr"])
        for name in ("metrics.json", "metrics.jsonl", "curves/upstream.csv", "curves/downstream.csv", "config.json",
                     "model/model.safetensors", "dvclive/metrics.json"):
            assert (run_dir / name).is_file(), (cell, name)
    report = (snakemake_run / "reports/report.md").read_text()
    assert all(cell in report for cell in cells)
    assert "The latest checkpoint is the best start downstream" in report and "## How the stability gap was measured" in report
    assert all(f"## Study {study}" in report for study in TEST_GRID["studies"])
    for figure in ("study_checkpoint.png", "study_max_lr.png", "learning_rates.png"):
        data = (snakemake_run / "reports/figures" / figure).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, figure
    assert "<table>" in (snakemake_run / "reports/report.html").read_text()
    results = {row["cell"]: row for row in csv.DictReader((snakemake_run / "reports/results.csv").open())}
    # A row per cell with its short label and the settings in which the test grid's cells differ (read from
    # workflow/grid.yaml); settings that every cell shares are left out.
    columns = list(next(iter(results.values())))
    assert columns[:2] == ["cell", "label"] and {"checkpoint", "max_lr", "warmup_fraction", "schedule", "train_corpus", "tokens"} <= set(columns)
    assert not {"batch_sequences", "seed", "device", "eval_every"} & set(columns)
    for name, settings in cells.items():
        assert {k: results[name][k] for k in columns if k in settings} == {k: "" if v is None else str(v) for k, v in settings.items() if k in columns}
    assert results[half]["label"] == "half: max LR 2e-3"
    for name in cells:
        evaluation = json.loads((snakemake_run / "evals/cells" / f"{name}.json").read_text())
        # Every corpus with a validation split, the extra held-out one (`news`) included, on whole splits.
        assert set(evaluation) == {"upstream", "downstream", "news"}
        assert evaluation["upstream"]["sequences"] > 0 and evaluation["downstream"]["ppl"] > 1
        assert evaluation["news"]["sequences"] == manifest(snakemake_run, "news", "val")["sequences"]
        assert float(results[name]["news_ppl"]) == evaluation["news"]["ppl"]
    assert "| news ppl |" in report and "news change (loss)" in report
    # Benchmark columns from the harness's results, one per task and their average, for cells and base checkpoints.
    assert "| demo_cloze (acc) | demo_next_word (acc_norm) | benchmark avg |" in report
    for name in cells:
        scores = json.loads((snakemake_run / "evals/benchmark/cells" / f"{name}.json").read_text())
        assert float(results[name]["bench_average"]) == scores["average"]
        assert float(results[name]["bench_demo_cloze"]) == scores["tasks"]["demo_cloze"]["metrics"]["acc"]
    assert {p.stem for p in (snakemake_run / "evals/benchmark/base").glob("*.json")} == {"early", "final", "scratch"}
    # A sentence per study of three cells or more on whether the two rankings agree.
    assert report.count("The benchmark ranking ") + report.count("The benchmark does not tell") == 3, report
    assert "Benchmark columns: the LM Evaluation Harness (lm-eval " in report


def test_a_sequence_of_three_datasets_continues_cell_after_cell(snakemake_run):
    """Each dataset's cell starts where the one before ended: its first evaluation (step 0) is exactly
    the previous cell's last, on the same validation samples, which only holds when the previous cell
    trained first (the dependency); it trains on its own corpus, carries the optimizer state, and never
    re-warms. The last one anneals to min_lr (Ibrahim et al. 2024's infinite schedule)."""
    listing = grid_file(snakemake_run)
    first, second, third = studies_of(snakemake_run)["sequence"]
    assert listing["continued"] == {"after_first": {"cell": first}, "after_second": {"cell": second}}
    evals = {name: [json.loads(r) for r in (snakemake_run / "runs" / name / "metrics.jsonl").read_text().splitlines()]
             for name in (first, second, third)}
    for before, after in ((first, second), (second, third)):
        for corpus in ("upstream", "downstream"):
            assert evals[after][0][f"val/{corpus}/loss"] == evals[before][-1][f"val/{corpus}/loss"]
        assert (snakemake_run / "runs" / before / "model/optimizer.pt").is_file()
        log = (snakemake_run / "logs/train" / f"{after}.log").read_text()
        assert "optimizer state carried over from the continued cell" in log
    assert not (snakemake_run / "runs" / third / "model/optimizer.pt").exists()  # nothing continues the last one
    trained_on = {name: json.loads((snakemake_run / "runs" / name / "config.json").read_text())["inputs"]["train"]
                  for name in (first, second, third)}
    assert trained_on == {first: manifest(snakemake_run, "downstream", "train")["source"]["fingerprint"],
                          second: manifest(snakemake_run, "later", "train")["source"]["fingerprint"],
                          third: manifest(snakemake_run, "upstream", "train")["source"]["fingerprint"]}
    lrs = {name: [row["lr"] for row in evals[name]] for name in evals}
    assert lrs[second] == [1e-3] * len(lrs[second])  # the constant phase throughout
    assert lrs[third][0] == 1e-3 and lrs[third][-1] == pytest.approx(2e-4)  # annealed to 0.1 x max_lr


def manifest(project: Path, corpus: str, split: str) -> dict:
    return json.loads((project / "data/tokens" / corpus / split / "manifest.json").read_text())


def test_figures_draw_the_logged_numbers(snakemake_run):
    """Each figure's drawn values (read back from its lines into <figure>.json) equal the metrics."""
    figures = snakemake_run / "reports/figures"
    cells = grid_file(snakemake_run)["cells"]
    drawn = {}
    for sweep in ("checkpoint", "max_lr"):
        panels = json.loads((figures / f"study_{sweep}.json").read_text())["panels"]
        # Both studies draw the from-scratch cell: in panels of its own beneath the pre-trained starts'.
        assert [panel["title"] for panel in panels] == ["upstream validation loss", "downstream validation loss",
                                                        "upstream validation loss, from scratch included",
                                                        "downstream validation loss, from scratch included"]
        for panel, corpus in zip(panels, ("upstream", "downstream") * 2):
            for line in panel["lines"]:
                cell, _, mark = line["cell"].partition(":")
                rows = [json.loads(r) for r in (snakemake_run / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
                if mark == "final":  # the final model's whole validation split, at the curve's end
                    whole = json.loads((snakemake_run / "evals/cells" / f"{cell}.json").read_text())[corpus]["loss"]
                    assert line["x"] == [rows[-1]["tokens"] / 1e9] and line["y"] == pytest.approx([whole], rel=1e-12)
                    continue
                assert line["x"] == pytest.approx([r["tokens"] / 1e9 for r in rows], rel=1e-12)  # billions (no report scale set)
                assert line["y"] == pytest.approx([r[f"val/{corpus}/loss"] for r in rows], rel=1e-12)
                drawn.setdefault(sweep, set()).add(cell)
        # The trajectory (the paper's Figs. 4 and 6): downstream against upstream perplexity, the start and
        # the end of each warm-up marked (warm-up 5% of 40 steps = 2 steps: the first evaluation after it is step 10).
        lines = {line["cell"]: line for line in json.loads((figures / f"trajectory_{sweep}.json").read_text())["panels"][0]["lines"]}
        for cell in drawn[sweep]:
            if cells[cell]["checkpoint"] == "scratch":  # left out of the trajectory, as in the paper's figures
                assert cell not in lines and f"{cell}:start" not in lines
                continue
            rows = [json.loads(r) for r in (snakemake_run / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
            assert lines[cell]["x"] == pytest.approx([r["val/downstream/ppl"] for r in rows], rel=1e-12)
            assert lines[cell]["y"] == pytest.approx([r["val/upstream/ppl"] for r in rows], rel=1e-12)
            if cells[cell]["warmup_fraction"]:
                step10 = next(r for r in rows if r["step"] == 10)
                assert lines[f"{cell}:warmup_end"]["x"] == pytest.approx([step10["val/downstream/ppl"]], rel=1e-12)
        start = next(line for name, line in lines.items() if name.endswith(":start"))
        first = json.loads((snakemake_run / "runs" / start["cell"].split(":")[0] / "metrics.jsonl").read_text().splitlines()[0])
        assert start["x"] == pytest.approx([first["val/downstream/ppl"]], rel=1e-12)
    # Each study's cells, and the baselines drawn in every study: the constant-LR cell and the from-scratch cell.
    studies = studies_of(snakemake_run)
    baselines = {c for c, s in cells.items() if s["schedule"] == "constant" or s["checkpoint"] == "scratch"}
    assert drawn["checkpoint"] == set(studies["checkpoint"]) | baselines and len(drawn["checkpoint"]) == 4
    assert drawn["max_lr"] == set(studies["max_lr"]) | baselines and len(drawn["max_lr"]) == 4
    lines = json.loads((figures / "learning_rates.json").read_text())["panels"][0]["lines"]
    assert {line["cell"] for line in lines} == set(cells)
    for line in lines:
        logged = (snakemake_run / "runs" / line["cell"] / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]
        assert line["x"] == [float(r.split("\t")[0]) for r in logged]
        assert line["y"] == [float(r.split("\t")[1]) for r in logged]


def test_snakemake_report_attaches_the_figures(snakemake_run, tmp_path):
    """`snakemake --report` writes its self-contained HTML with every figure embedded, byte for byte."""
    out = tmp_path / "snakemake-report.html"
    snakemake("--report", str(out), cwd=snakemake_run)
    text = out.read_text()
    for figure in sorted((snakemake_run / "reports/figures").glob("*.png")):
        match = re.search(rf"data:image/png;charset=utf8;filename={re.escape(figure.name)};base64,([A-Za-z0-9+/=]+)", text)
        assert match, figure.name
        assert base64.b64decode(match.group(1)) == figure.read_bytes()
    assert "Re-warming report" in text and "Gupta et al. 2023" in text
    cell = cell_name(snakemake_run)
    config = json.loads((snakemake_run / "runs" / cell / "config.json").read_text())
    assert config["cell"] == cell and config["code"]["rewarm"] and len(config["inputs"]["base_weights"]) == 64
    assert config["inputs"]["tokenizer"] and config["inputs"]["train"] and config["inputs"]["val/upstream"]
    series = yaml.safe_load((snakemake_run / "checkpoints/pretrain/series.json").read_text())
    assert series["final"] == "step40"
    assert (snakemake_run / "checkpoints/base/scratch/model.safetensors").is_file()
    assert "train" in (snakemake_run / f"logs/train/{cell}.log").read_text()


def cell_name(project: Path) -> str:
    return next(iter(yaml.safe_load((project / "workflow/grid.yaml").read_text())["cells"]))


def test_snakemake_builds_every_corpus_and_split(snakemake_run):
    for corpus in ("upstream", "downstream"):
        for split in ("train", "val"):
            split_dir = snakemake_run / "data/tokens" / corpus / split
            assert (split_dir / "manifest.json").is_file()
            assert list(split_dir.glob("shard-*.arrow"))
    assert (snakemake_run / "data/tokenizer/tokenizer.json").is_file()
    # In parts (.test/params.yaml: 2), each its own job with its log, then assembled.
    for part in (0, 1):
        assert (snakemake_run / f"logs/benchmarks/prepare/upstream-{part}.tsv").is_file()
        assert "upstream/train" in (snakemake_run / f"logs/prepare/upstream-{part}.log").read_text()
        assert (snakemake_run / f"data/parts/upstream/{part}/train/part.json").is_file()
    assert "assembled from 2 parts" in (snakemake_run / "logs/assemble/upstream.log").read_text()
    # The parts Snakemake ran side by side give every byte of one `prepare` of the whole corpus.
    whole = snakemake_run.parent / "whole-upstream"
    rewarm("prepare", "--corpus", "upstream", "--tokenizer", "data/tokenizer", "--out", str(whole), cwd=snakemake_run)
    assert digests(whole) == digests(snakemake_run / "data/tokens/upstream")
    # Up to date: a dry run has nothing to do.
    assert "Nothing to be done" in snakemake("-n", cwd=snakemake_run).stdout


def test_dvc_repro_gives_the_same_outputs(snakemake_run, tmp_path):
    """`dvc repro` of FRONT_END_PARAMS: every output equals the Snakemake run's of the same cells."""
    project = copy_project(tmp_path / "dvc", FRONT_END_PARAMS)
    git_commit(project, "project")
    run("dvc", "repro", cwd=project)
    assert digests(project / "data/tokens") == digests(snakemake_run / "data/tokens")
    assert digests(project / "data/tokenizer") == digests(snakemake_run / "data/tokenizer")
    listing = grid_file(project)
    cells = listing["cells"]
    checkpoints = digests(project / "checkpoints")
    assert checkpoints == {k: v for k, v in digests(snakemake_run / "checkpoints").items() if k in checkpoints}
    assert {k.split("/")[1] for k in checkpoints if k.startswith("base/")} == {"final", "scratch", "after_first", "after_second"}
    for cell in cells:
        for name in ("model/model.safetensors", "metrics.json", "curves/upstream.csv", "curves/downstream.csv"):
            left, right = project / "runs" / cell / name, snakemake_run / "runs" / cell / name
            assert file_sha256(left) == file_sha256(right), (cell, name)
    evals = digests(project / "evals")
    assert evals == {k: v for k, v in digests(snakemake_run / "evals").items() if k in evals}
    assert {k for k in evals if k.startswith("cells/")} == {f"cells/{cell}.json" for cell in cells}
    summaries = {k for k in evals if k.startswith("benchmark/cells/") and ".harness/" not in k}
    assert summaries == {f"benchmark/cells/{cell}.json" for cell in cells}
    # Beside each summary, the harness's own results (the same bytes as Snakemake's run: compared above).
    assert {k for k in evals if k.startswith("benchmark/cells/") and k.endswith(".harness/results.json")} == {
        f"benchmark/cells/{cell}.harness/results.json" for cell in cells}
    assert (project / "reports/report.md").read_text() == reference_report(project, snakemake_run)
    forecast = json.loads((project / "forecast/forecast.json").read_text())  # `rewarm forecast` under DVC, on its two cells
    assert forecast["enabled"] and len(forecast["fit_cells"]) == 2 and set(forecast["cells"]) == set(grid.cells(grid.load([project / "params.yaml"])))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    corpora = ("upstream", "downstream", "news", "later")
    expected = {"generate", "tokenizer", *(f"prepare@{corpus}-0" for corpus in corpora),
                *(f"assemble@{corpus}" for corpus in corpora), "pretrain@series",
                "select_step@final", "select@scratch", "select_cell@after_first", "select_cell@after_second",
                *(f"train@{cell}" for cell in listing["trained"]),
                *(f"prefix@{cell}" for cell in listing["prefixes"]), *(f"evaluate@{cell}" for cell in cells),
                *(f"evaluate_base@{name}" for name in ("final", "scratch")), "forecast", "report",  # not the continued cells' ends
                "tasks@tasks", *(f"benchmark@{cell}" for cell in cells), *(f"benchmark_base@{name}" for name in ("final", "scratch"))}
    assert expected == set(lock["stages"])
    # The sequence's dependencies, as DVC recorded them: each select_cell on the continued cell's model.
    first, second, _ = studies_of(project)["sequence"]
    for stage, cell in (("select_cell@after_first", first), ("select_cell@after_second", second)):
        assert f"runs/{cell}/model" in {dep["path"] for dep in lock["stages"][stage]["deps"]}
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=project).stdout
    plots = json.loads(run("dvc", "plots", "show", "--json", cwd=project).stdout)["data"]
    assert {f"runs/{cell}/curves/{corpus}.csv" for cell in cells for corpus in ("upstream", "downstream")} <= set(plots)
    # Top-level plots overlay the cells of each sweep (with the baselines) and all cells, per corpus.
    assert {f"{group}_{corpus}" for group in ("all_cells", "study_checkpoint", "study_half")
            for corpus in ("upstream", "downstream")} <= set(plots)
    values = plots["study_checkpoint_downstream"][0]["content"]["data"]["values"]
    sweep = set(studies_of(project)["checkpoint"])
    def shown_cell(value: dict) -> str:  # DVC shows the file names without their common prefix
        return value["filename"].split("/curves/")[0].split("/")[-1]

    assert {shown_cell(v) for v in values} == sweep
    for cell in sweep:
        logged = [json.loads(r) for r in (project / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
        shown = [v for v in values if shown_cell(v) == cell]
        assert [float(v["tokens"]) for v in shown] == [r["tokens"] for r in logged]
        assert [float(v["ppl"]) for v in shown] == pytest.approx([r["val/downstream/ppl"] for r in logged], rel=1e-6)

    # A remote holds everything: a fresh clone pulls it and has nothing to reproduce.
    remote = tmp_path / "remote"
    run("dvc", "remote", "add", "-d", "store", str(remote), cwd=project)
    git_commit(project, "results")
    run("dvc", "push", cwd=project)
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    run("dvc", "pull", cwd=clone)
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=clone).stdout
    assert "Data and pipelines are up to date" in run("dvc", "repro", cwd=clone).stdout
    assert digests(clone / "runs") == digests(project / "runs")

    # DVC experiments on the same params: an override reaches the cells, `dvc exp show` lists it.
    run("git", "config", "user.name", "rewarm", cwd=clone)
    run("git", "config", "user.email", "rewarm@localhost", cwd=clone)
    # One cell's stage as the target (DVC runs stages one after another: all nine again would take minutes).
    run("dvc", "exp", "run", "-S", "train.eval_every=20", f"train@{cell_name(clone)}", cwd=clone)
    rows = [json.loads(line) for line in (clone / "runs" / cell_name(clone) / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 20, 40]
    # `dvc exp show` lists the experiment; in the views of docs/front-ends.md, only what it changed is a few columns
    # (of hundreds: every parameter and every cell's metrics), the changed parameter among them; and a column per
    # cell of its downstream loss.
    def header(*args: str) -> list[str]:
        return next(csv.reader(io.StringIO(run("dvc", "exp", "show", "--csv", *args, cwd=clone).stdout)))

    changed = header("--only-changed")
    assert len(changed) < 20 and any(c.endswith("train.eval_every") for c in changed), changed
    per_cell = header("--drop", ".*", "--keep", r"Experiment|evals/cells/.*:downstream\.loss")
    assert sorted(c for c in per_cell if c.startswith("evals/")) == sorted(f"evals/cells/{c}.json:downstream.loss" for c in cells)


def planned_jobs(project: Path) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job `snakemake -n` plans."""
    text = snakemake("-n", "--cores", "1", cwd=project).stdout
    blocks = re.split(r"^(?:local)?rule (\w+):$", text, flags=re.MULTILINE)
    jobs = set()
    for rule, body in zip(blocks[1::2], blocks[2::2]):
        wildcards = re.search(r"^    wildcards: (.*)$", body, re.MULTILINE)
        jobs.add((rule, wildcards.group(1) if wildcards else ""))
    return jobs


def check_adopt_after_pull(project: Path, clone: Path, tmp_path: Path) -> None:
    """Issue 29: after `dvc pull`, `rewarm adopt` lets Snakemake take DVC's outputs as done. Then `snakemake -n`
    plans nothing; adding one cell plans that cell's jobs and the report; a clone that pulled one cell's
    stage with its dependencies plans only what it lacks. Nothing is changed in the files."""
    assert len(planned_jobs(clone)) > 20  # without it: pulled files have the times of the pull and no metadata
    rewarm("adopt", cwd=clone)
    assert planned_jobs(clone) == set()
    assert digests(clone / "runs") == digests(project / "runs") and digests(clone / "evals") == digests(project / "evals")
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=clone).stdout
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["grid"]["studies"]["extra"] = {"vary": {"max_lr": [7e-4]}}  # a learning rate no cell has
    write_params(clone / "params.yaml", params)
    (added,) = set(json.loads(rewarm("grid", "--format", "json", cwd=clone).stdout)) - set(grid_file(clone)["cells"])
    assert planned_jobs(clone) == {("train", f"cell={added}"), ("evaluate", f"cell={added}"), ("benchmark", f"cell={added}"),
                                   ("forecast", ""), ("report", ""), ("all", "")}
    run("git", "checkout", "params.yaml", cwd=clone)

    partial = tmp_path / "partial"
    run("git", "clone", "-q", str(project), str(partial), cwd=tmp_path)
    listing = grid_file(partial)
    cell = next(iter(listing["trained"]))
    run("dvc", "pull", "--with-deps", f"train@{cell}", cwd=partial)
    rewarm("adopt", cwd=partial)
    planned = planned_jobs(partial)
    assert {w.removeprefix("cell=") for rule, w in planned if rule == "train"} == set(listing["trained"]) - {cell}
    assert ("evaluate", f"cell={cell}") in planned  # not pulled: its stage comes after train@<cell>
    assert not {job for job in planned if job[0] in ("generate", "tokenizer", "pretrain")}  # pulled as train@<cell>'s deps
    # An output that differs from dvc.lock is never taken as done.
    (partial / "runs" / cell / "metrics.json").write_text("{}")
    refused = rewarm("adopt", cwd=partial, check=False)
    assert refused.returncode == 1 and f"train@{cell}: output runs/{cell}/metrics.json differs from dvc.lock" in refused.stderr


def test_dvc_commit_after_snakemake_leaves_nothing_to_do(snakemake_run, tmp_path):
    project = tmp_path / "committed"
    shutil.copytree(snakemake_run, project, symlinks=True)
    shutil.rmtree(project / ".snakemake")
    git_commit(project, "project")
    run("dvc", "commit", "--force", cwd=project)
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=project).stdout
    assert "Data and pipelines are up to date" in run("dvc", "repro", cwd=project).stdout
    # `dvc metrics show`: each cell's whole-split evaluation (evals/cells/<cell>.json), not the in-training sample.
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(shown.values()))["data"]
    cell = next(p.stem for p in (project / "evals/cells").glob("*.json"))
    whole = json.loads((project / f"evals/cells/{cell}.json").read_text())
    assert files[f"evals/cells/{cell}.json"]["data"]["downstream"]["loss"] == whole["downstream"]["loss"]
    assert not [name for name in files if name.startswith("runs/")]
    # A row per cell and per base checkpoint, as docs/front-ends.md shows it.
    assert set(files) == {f"evals/cells/{c}.json" for c in grid_file(project)["cells"]} | {f"evals/base/{b}.json" for b in ("early", "final", "scratch")}
    # The round trip of issue 29: the lock and a remote, then a fresh clone that pulls and adopts.
    run("dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"), cwd=project)
    git_commit(project, "results")
    run("dvc", "push", cwd=project)
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    run("dvc", "pull", cwd=clone)
    check_adopt_after_pull(project, clone, tmp_path)


def snakemake_outputs(project: Path) -> set[tuple[str, str]]:
    """(rule, output path) of every job in Snakemake's DAG."""
    summary = snakemake("--summary", cwd=project).stdout.splitlines()
    rows = [line.split("\t") for line in summary[1:] if "\t" in line]
    return {(row[2], row[0]) for row in rows}


def dvc_outputs(project: Path) -> set[tuple[str, str]]:
    """(stage group, output path) of every stage in dvc.yaml."""
    script = (
        "import json; from dvc.repo import Repo; r = Repo('.');"
        "print(json.dumps([[s.addressing.split('@')[0], str(o.def_path)] for s in r.index.stages for o in s.outs]))"
    )
    return {tuple(pair) for pair in json.loads(run(sys.executable, "-c", script, cwd=project).stdout)}


def snakemake_commands(project: Path) -> list[str]:
    """Every job's shell command in Snakemake's dry run on 2 cores (the README's; jobs' threads are
    capped by the cores), without its log redirection, nor the `exec` with which the train rule's shell
    hands its place to the command (a scheduler's signal then reaches the command alone)."""
    planned = snakemake("-n", "--printshellcmds", "--cores", "2", cwd=project)
    lines = [line.replace("Shell command: exec rewarm ", "Shell command: rewarm ", 1)
             for line in (planned.stdout + planned.stderr).splitlines()]
    commands = [line.removeprefix("Shell command: ") for line in lines if line.startswith("Shell command: rewarm ")]
    return sorted(re.sub(r" 2> \S+$", "", " ".join(c.split())) for c in commands)


def dvc_commands(project: Path) -> list[str]:
    """Every stage's command in dvc.yaml, as DVC runs it."""
    script = "import json; from dvc.repo import Repo; print(json.dumps([s.cmd for s in Repo('.').index.stages]))"
    return sorted(" ".join(c.split()) for c in json.loads(run(sys.executable, "-c", script, cwd=project).stdout))


def paper_params(*more: str) -> dict:
    """config/paper.yaml (and `more` files of config/) merged over params.yaml, as `rewarm params --write
    params.yaml` gives DVC."""

    return cfg.to_dict(grid.load([ROOT / "params.yaml", ROOT / "config/paper.yaml", *(ROOT / "config" / m for m in more)]))


@pytest.mark.parametrize("params, counts", [(None, (27, 1)), (TEST_PARAMS, (10, 1)), (paper_params(), (17, 1)),
                                            (paper_params("olmo2-1b.yaml"), (17, 1)), (paper_params("llama-1b.yaml"), (17, 1)),
                                            ({**TEST_PARAMS, "benchmark": None}, (10, 1))],
                         ids=["demo", "test-grid", "paper", "olmo2-1b", "llama-1b", "no-benchmarks"])
def test_snakemake_and_dvc_run_the_same_commands(tmp_path, params, counts):
    """The two front ends run the same jobs with the same arguments: every command, compared as text
    (and so, at paper scale, neither pre-trains: the checkpoints come from the hub)."""
    project = copy_project(tmp_path / "front-ends", params)
    run("git", "init", "-q", cwd=project)
    snakemake_side, dvc_side = snakemake_commands(project), dvc_commands(project)
    if params is not None and params["prepare"]["workers"] > 2:
        # Snakemake gives a part job at most its 2 cores (the shards do not depend on the worker count).
        dvc_side = sorted(c.replace(f" --workers {params['prepare']['workers']}", " --workers 2") for c in dvc_side)
    assert snakemake_side == dvc_side, "\n".join(sorted(set(snakemake_side) ^ set(dvc_side)))
    # Each corpus in prepare.parts part jobs, then assembled from exactly those parts.

    config = grid.load(project / "params.yaml")
    parts = sorted(re.search(r"--corpus (\S+) --part (\d+) ", c).groups() for c in dvc_side if c.startswith("rewarm prepare "))
    assert parts == sorted((corpus, str(p)) for corpus in config.corpora for p in range(config.prepare.parts))
    assembled = [c for c in dvc_side if c.startswith("rewarm assemble ")]
    assert len(assembled) == len(config.corpora) and all(
        c.split("--parts ")[1].split(" --out")[0].split() == [f"data/parts/{c.split('--corpus ')[1].split()[0]}/{p}" for p in range(config.prepare.parts)]
        for c in assembled)
    assert snakemake_outputs(project) == dvc_outputs(project)
    pretrains = [c for c in dvc_side if c.startswith("rewarm pretrain ")]
    assert len(pretrains) == (0 if params is not None and params["tokenizer"]["type"] == "pretrained" else 1)
    cells = {c.split("--cell ")[1].split()[0] for c in dvc_side if c.startswith(("rewarm train ", "rewarm prefix "))}
    listed = json.loads(rewarm("grid", "--format", "json", cwd=project).stdout)
    assert cells == set(listed) and len(cells) == counts[0]
    prefixes = {c.split("--cell ")[1].split()[0] for c in dvc_side if c.startswith("rewarm prefix ")}
    assert prefixes == set(grid_file(project)["prefixes"]) and len(prefixes) == counts[1]
    evaluated = {c.split("--model ")[1].split()[0] for c in dvc_side if c.startswith("rewarm evaluate ")}
    assert len(evaluated) == counts[0] + len(listed_checkpoints(project))
    # The same models benchmarked, when the configuration has tasks; with `benchmark: null`, no benchmark job at all.
    benchmarked = {c.split("--model ")[1].split()[0] for c in dvc_side if c.startswith("rewarm benchmark ")}
    on = params is None or params.get("benchmark") is not None
    assert benchmarked == (evaluated if on else set())
    assert sum(c.startswith("rewarm tasks ") for c in dvc_side) == int(on)


def listed_checkpoints(project: Path) -> list[str]:
    """The base checkpoints `evaluate_base` measures: not those that are another cell's end (already evaluated)."""

    return [n for n, spec in grid.load(project / "params.yaml").checkpoints.items() if not isinstance(spec, cfg.CellCheckpoint)]


@pytest.mark.bad_input
def test_a_configuration_file_name_with_a_space_reaches_the_jobs_whole(tmp_path):
    """`snakemake --configfile 'my extra.yaml'`: every job's command quotes the file names it passes on."""
    project = copy_project(tmp_path / "space", small_params())
    (project / "my extra.yaml").write_text("prepare:\n  workers: 1\n")
    done = snakemake("--cores", "1", "--printshellcmds", "data/raw", "--configfile", "my extra.yaml", cwd=project)
    assert f"--params params.yaml --params '{project / 'my extra.yaml'}' --out data/raw" in done.stdout + done.stderr
    assert (project / "data/raw/upstream").is_dir()


def test_dry_run_of_a_100_cell_grid(tmp_path):
    """A 100-cell cross product plans in seconds (the time is printed, not asserted)."""
    grid = {"studies": {"big": {"vary": {"max_lr": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3], "warmup_fraction": [0.0, 0.005, 0.01, 0.02, 0.05],
                                         "schedule": ["cosine", "linear", "wsd", "rex"]}}}}
    project = copy_project(tmp_path / "big", small_params(grid=grid))
    assert len(json.loads(rewarm("grid", "--format", "json", cwd=project).stdout)) == 100
    start = time.perf_counter()
    planned = snakemake("-n", "--quiet", "rules", cwd=project).stdout
    elapsed = time.perf_counter() - start
    counts = {line.split()[0]: line.split()[1] for line in planned.splitlines() if len(line.split()) == 2}
    assert counts["train"] == "100"
    print(f"dry run of a 100-cell grid: {elapsed:.1f} s")


@pytest.mark.slow
def test_lint_and_profiles_dry_run(tmp_path):
    project = copy_project(tmp_path / "lint")
    assert "Congratulations" in snakemake("--lint", cwd=project).stdout + snakemake("--lint", cwd=project).stderr
    for profile in ("workflow/profiles/default", "workflow/profiles/slurm"):
        planned = snakemake("--profile", profile, "-n", "--quiet", "rules", cwd=project).stdout
        counts = {line.split()[0]: line.split()[1] for line in planned.splitlines() if len(line.split()) == 2}
        assert counts["train"] == "26" and counts["pretrain"] == "1" and counts["report"] == "1", profile


def test_changed_cell_reruns_only_that_cell(snakemake_run, tmp_path):
    project = tmp_path / "one-cell"
    shutil.copytree(snakemake_run, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["grid"]["studies"]["max_lr"]["baselines"][0]["max_lr"] = 3e-4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    planned = snakemake("-n", "--printshellcmds", cwd=project).stdout
    commands = [line.replace("exec rewarm ", "rewarm ", 1) for line in planned.splitlines()
                if line.startswith(("Shell command: rewarm ", "Shell command: exec rewarm "))]
    # The new cell trains, is evaluated and benchmarked, the forecast (which forecasts every cell) and the report
    # are redone; nothing else.
    cell = "ckpt-final_lr-3e-4_warm-0_sched-constant_replay-0_tokens-20480"
    assert len(commands) == 5 and f"--cell {cell}" in commands[0], planned[-3000:]
    assert sorted(c.split()[3] for c in commands[1:3]) == ["benchmark", "evaluate"] and all(f"runs/{cell}/model" in c for c in commands[1:3])
    assert "rewarm forecast" in commands[3] and "rewarm report" in commands[4]
    # The report's grid and each cell's settings are parameters as digests: a changed one is printed as two
    # short strings (before, now), not as the whole grid's dict twice (kilobytes per job).
    changed = re.findall(r"Params have changed since last execution[^;\n]*", planned)
    assert changed and all(len(reason) < 300 for reason in changed) and "'studies'" not in planned, changed


def test_training_jobs_with_several_gpus_launch_torchrun(tmp_path):
    """A training job given more than one GPU runs under torchrun, one process per GPU; one GPU or none: rewarm."""
    project = copy_project(tmp_path / "gpus")
    planned = snakemake("-n", "--printshellcmds", "--set-resources", "train:gpu=4", cwd=project)
    commands = [line for line in (planned.stdout + planned.stderr).splitlines() if " train --params" in line]
    # torchrun waits 9 minutes (not its default 30 s) for its processes to save after passing a SIGTERM on.
    launch = "env TORCH_ELASTIC_SHUTDOWN_TIMEOUT=540 torchrun --standalone --nproc_per_node 4 -m rewarm train"
    assert len(commands) == 26 and all(launch in c for c in commands), commands[:1]
    planned = snakemake("-n", "--printshellcmds", "--set-resources", "train:gpu=1", cwd=project)
    commands = [line for line in (planned.stdout + planned.stderr).splitlines() if " train --params" in line]
    assert len(commands) == 26 and not any("torchrun" in c for c in commands)
    # Several nodes: srun starts one torchrun agent per node; the agents meet on the job's first node.
    # Each agent gets the job's CPUs (srun no longer inherits --cpus-per-task), shared by its ranks (--threads).
    planned = snakemake("-n", "--printshellcmds", "--set-resources", "train:nodes=2", "train:tasks=2", "train:mpi=srun",
                        "train:gres=gpu:8", "train:gpu=0", "--set-threads", "train=32", "--cores", "32", cwd=project)
    commands = [line for line in (planned.stdout + planned.stderr).splitlines() if " train --params" in line]
    launch = ('srun --nodes 2 --ntasks-per-node 1 --cpus-per-task 32 env TORCH_ELASTIC_SHUTDOWN_TIMEOUT=540 torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint '
              '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):${REWARM_RDZV_PORT:-29500} --rdzv-id $SLURM_JOB_ID '
              '-m rewarm train')
    assert len(commands) == 26 and all(launch in c and "--threads 32 2>" in c for c in commands), commands[:1]
    refused = snakemake("-n", "--set-resources", "train:nodes=2", "train:gpu=8", cwd=project, check=False)
    assert refused.returncode != 0 and "needs its GPUs per node as gres: gpu:<count>" in refused.stdout + refused.stderr
