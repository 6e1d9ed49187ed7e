"""The package's layering, read from its own imports (an AST pass over src/, function-local imports
included): a module imports only from its own layer or lower ones, and no import circle exists, so
each layer can be read, tested and replaced without the ones above it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rewarm import modules
from tests.project import ROOT

SRC = ROOT / "src"

LAYERS = [
    ("leaves: the package's version, files, learning-rate schedules, import graph, work done ahead in a thread",
     {"rewarm", "rewarm.io", "rewarm.schedules", "rewarm.modules", "rewarm.prefetch"}),
    ("configuration schema", {"rewarm.config.schema"}),
    ("a run's derived values", {"rewarm.config.steps"}),
    ("configuration checks and loading", {"rewarm.config.checks", "rewarm.config.loading", "rewarm.config"}),
    ("grid: cells, names, studies", {"rewarm.grid"}),
    ("data: sources, tokenizer, packing, shards, demo corpus", {"rewarm.data", "rewarm.data.sources", "rewarm.data.tokenizer",
                                                               "rewarm.data.packing", "rewarm.data.shards", "rewarm.data.demo"}),
    ("model families: shapes and parameter counts", {"rewarm.families"}),
    ("costs: FLOPs, memory, time", {"rewarm.plan"}),
    ("model and runtime: checkpoints, devices, process groups, training state, metric logs",
     {"rewarm.checkpoints", "rewarm.runtime", "rewarm.state", "rewarm.metrics"}),
    ("measuring: perplexity, harness benchmarks", {"rewarm.evaluate", "rewarm.benchmark"}),
    ("training loop", {"rewarm.train"}),
    ("the continual pre-training law", {"rewarm.law"}),
    ("the report's parts: measures, the papers' findings, figures", {"rewarm.report.measures", "rewarm.report.findings", "rewarm.report.labels",
                                                                      "rewarm.report.figures"}),
    ("stages", {"rewarm.prepare", "rewarm.pretrain", "rewarm.report", "rewarm.adopt", "rewarm.forecast"}),
    ("command line and front-end files", {"rewarm.cli", "rewarm.__main__", "rewarm.dvcfile"}),
]
LAYER = {module: level for level, (_, modules) in enumerate(LAYERS) for module in modules}


def graph() -> dict[str, set[str]]:
    return modules.graph(SRC / "rewarm")


def test_every_module_has_a_layer():
    """A new module is placed in the table above (and so in a layer) before it lands."""
    assert sorted(set(graph()) - set(LAYER)) == []
    assert sorted(set(LAYER) - set(graph())) == []  # nor does the table name a module that is gone


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{module} ({LAYERS[LAYER[module]][0]}) imports {target} ({LAYERS[LAYER[target]][0]})"
              for module, targets in graph().items() for target in sorted(targets) if LAYER[target] > LAYER[module]]
    assert upward == []


def test_no_import_circle():
    """Within a layer modules may import each other, but never in a circle."""
    edges = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_checker_sees_an_upward_and_a_circular_import(tmp_path):
    """The AST pass itself: a function-local import from a higher layer is found, as is a circle."""
    package = tmp_path / "rewarm"
    (package / "data").mkdir(parents=True)
    for name in ("__init__", "io", "train", "data/__init__", "data/shards"):
        (package / f"{name}.py").write_text("")
    (package / "io.py").write_text("import os\n\ndef f():\n    from rewarm import train\n    from rewarm.data.shards import X\n")
    (package / "train.py").write_text("from rewarm.io import f\n")
    edges = modules.graph(package)
    assert edges["rewarm.io"] == {"rewarm.train", "rewarm.data.shards"} and edges["rewarm.train"] == {"rewarm.io"}
    assert modules.closure(["rewarm.data.shards"], package) == {"rewarm", "rewarm.data", "rewarm.data.shards"}
    assert LAYER["rewarm.train"] > LAYER["rewarm.config"]


@pytest.mark.parametrize("code", [
    # what parsing the Snakefile does (workflow/rules/common.smk): the configuration, its cells, job minutes
    "from rewarm import grid, plan\nfrom rewarm.data.sources import source_files\nconfig = grid.load(['params.yaml'])\n"
    "grid.cells(config), grid.records(config), grid.trained_by(config), grid.continued(config)\n"
    "assert plan.evaluation_minutes(config, config.tokenizer.vocab_size) >= 60\n",
    # `rewarm --help`
    "import contextlib, io\nfrom rewarm import cli\nwith contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
    "    cli.main(['--help'])\n",
])
def test_planning_imports_no_torch(code):
    """Snakemake parses the Snakefile, and `rewarm --help` answers, without importing torch or
    transformers (seconds each, on every dry run and at every job's start)."""
    check = code + "import sys\nprint(sorted(m for m in ('torch', 'transformers', 'datasets', 'lm_eval') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip().splitlines()[-1] == "[]"
