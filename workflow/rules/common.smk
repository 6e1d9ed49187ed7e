# Configuration validation and path helpers shared by the rules.
# The configuration is validated by the same code the CLI uses, before any job starts:
# a bad key stops the workflow here with every problem listed.

import shlex
import sys

from rewarm import config as rewarm_config
from rewarm import grid as rewarm_grid
from rewarm import plan as rewarm_plan
from rewarm.data.sources import source_files

# Files Snakemake merged into `config`: params.yaml, then any --configfile, in order.
# Each job gets the same list, so the CLI sees exactly the configuration validated here.
PARAMS_FILES = ["params.yaml", *[str(f) for f in workflow.overwrite_configfiles]]
PARAMS = " ".join(f"--params {shlex.quote(f)}" for f in PARAMS_FILES)  # quoted: a file name may hold a space

try:
    # The files themselves, merged as the CLI merges them (a source or checkpoint that changes type
    # is replaced, `name: null` removes one), so every job sees exactly what is validated here.
    CONFIG = rewarm_grid.load(PARAMS_FILES)
except rewarm_config.ConfigError as error:
    sys.exit(f"rewarm: invalid configuration\n{error}")

CORPORA = list(CONFIG.corpora)
# Each corpus is tokenized in prepare.parts independent jobs (`prepare`), then joined (`assemble`).
PARTS = [str(part) for part in range(CONFIG.prepare.parts)]
EVAL_CORPORA = CONFIG.eval_corpora()  # upstream, downstream and any extra held-out corpus
CHECKPOINTS = list(CONFIG.checkpoints)
# Base checkpoints taken from the demo's own pre-training series (`select_step`), and the others (`select`).
STEPPED = rewarm_grid.series_checkpoints(CONFIG)
# Checkpoints that are another cell's final state (`select_cell`: a sequence of datasets).
CONTINUED = rewarm_grid.continued(CONFIG)
SELECTED = [name for name in CHECKPOINTS if name not in STEPPED and name not in CONTINUED]
# Base checkpoints `evaluate_base` measures: a continued cell's final state is already its `evaluate`'s.
EVALUATED_BASE = [name for name in CHECKPOINTS if name not in CONTINUED]
CELLS = rewarm_grid.cells(CONFIG)
# A cell that only stops earlier than another with the same settings is read from that run.
TRAINED_BY = rewarm_grid.trained_by(CONFIG)
TRAINED = [cell for cell in CELLS if TRAINED_BY[cell] == cell]
PREFIXES = [cell for cell in CELLS if TRAINED_BY[cell] != cell]
RECORDS = rewarm_grid.records(CONFIG)
# The cells the continual pre-training law is fitted on (`forecast`; none: it says there is no forecast).
FORECAST_FIT = rewarm_grid.forecast_cells(CONFIG)
# Early stopping (forecast.halving): the cells it decides, with their rung's step (none: off).
HALVING_POOL = rewarm_grid.halving_pool(CONFIG)
# Benchmarks (LM Evaluation Harness): every cell and evaluated base checkpoint, when tasks are declared.
BENCHMARKED = list(CELLS) if CONFIG.benchmarking() else []
BENCHMARKED_BASE = EVALUATED_BASE if CONFIG.benchmarking() else []
# What a benchmark job depends on: a change to the tasks, limit or batch size re-runs it.
BENCHMARK_SPEC = rewarm_config.to_dict(CONFIG.benchmark) if CONFIG.benchmarking() else None
# GPUs per training and evaluation job: one when the configuration asks for a GPU (train.device:
# cuda, as at paper scale), none otherwise; the slurm profile and --set-resources override it, and a
# local run limits concurrent GPU jobs with --resources gpu=<GPUs on the machine>.
JOB_GPUS = 1 if CONFIG.train.device == "cuda" else 0
# An evaluation job's wall-clock limit, from its validation tokens (a 410M model on 2 x 22.6M tokens: 60 min).
EVALUATE_MINUTES = rewarm_plan.evaluation_minutes(CONFIG, CONFIG.tokenizer.vocab_size)
# A select job's memory, from the model's size: converting .bin weights holds the model twice over.
SELECT_MB = rewarm_plan.select_memory_mb(CONFIG, CONFIG.tokenizer.vocab_size)  # trained cell -> the shorter cells it records, with their steps


def one_of(names):
    """A wildcard constraint matching exactly these names (none: a pattern that never matches, since
    an empty constraint would match anything)."""
    return "|".join(names) or "(?!)"


wildcard_constraints:
    corpus=one_of(CORPORA),
    part=one_of(PARTS),
    checkpoint=one_of(CHECKPOINTS),
    cell=one_of(CELLS),


def corpus_params(wildcards):
    """The corpus's section of the configuration: a change to it re-runs its `prepare` job."""
    return rewarm_config.to_dict(CONFIG.corpora[wildcards.corpus])


def corpus_local_files(wildcards):
    """Local JSON-lines files a corpus reads (demo sources come from `generate`)."""
    corpus = CONFIG.corpora[wildcards.corpus]
    return [
        str(path)
        for split, source in corpus.splits().items()
        if source.type == "jsonl"
        for path in source_files(source, wildcards.corpus, split, "data/raw")
    ]


def demo_generator_params():
    """What the demo generator depends on (not budgets such as max_tokens, which only `prepare` reads)."""
    return {
        f"{corpus}/{split}": {"domain": source.domain, "documents": source.documents, "seed": source.seed, "files": source.files}
        for (corpus, split), source in CONFIG.sources().items()
        if source.type == "demo"
    }


def checkpoint_spec(wildcards):
    """A checkpoint's entry in the configuration: a change to it re-runs its `select` job."""
    return rewarm_config.to_dict(CONFIG.checkpoints[wildcards.checkpoint])


def cell_base(wildcards):
    return f"checkpoints/base/{CELLS[wildcards.cell].checkpoint}"


def cell_params(wildcards):
    """A digest of a cell's resolved parameters and of the shorter cells its run records: a change re-runs
    that cell (`rewarm grid` prints them; Snakemake would print a changed dict whole, for every cell)."""
    rung = HALVING_POOL.get(wildcards.cell)
    return rewarm_config.digest({**rewarm_config.to_dict(CELLS[wildcards.cell]), "records": RECORDS.get(wildcards.cell, {}),
                                 **({"rung": rung} if rung else {})})


def cell_halving(wildcards):
    """Under early stopping, the `halve` stage's directory for the cells it decides (no input otherwise)."""
    return ["halving"] if wildcards.cell in HALVING_POOL else []


def cell_halving_flag(wildcards):
    return " --halving halving" if wildcards.cell in HALVING_POOL else ""


def cell_train_corpus(wildcards):
    """The corpus a cell trains on: downstream, upstream again (no shift), or the next dataset of a sequence."""
    return CELLS[wildcards.cell].train_corpus


def cell_train_tokens(wildcards):
    return f"data/tokens/{cell_train_corpus(wildcards)}"


def continued_run(wildcards):
    """The run directory of the cell a `cell` checkpoint continues: its training is a dependency."""
    return f"runs/{CONTINUED[wildcards.checkpoint].cell}"


def prefix_run(wildcards):
    """The run a shorter cell is read from."""
    return f"runs/{TRAINED_BY[wildcards.cell]}"


def prefix_run_records(wildcards):
    """What the shorter cell reads of that run: its records at the stops, and its configuration."""
    return [f"{prefix_run(wildcards)}/stops", f"{prefix_run(wildcards)}/config.json"]


TORCHRUN_GRACE = 540
"""Seconds torchrun waits, after passing a SIGTERM on to its processes, before it kills them
(TORCH_ELASTIC_SHUTDOWN_TIMEOUT; torch's default is 30): time for every process to finish its step
and the state to be saved, within the 10 minutes the slurm profile's --signal=TERM@600 leaves."""


def train_launcher(wildcards, resources, threads):
    """`rewarm`; `torchrun` with one process per GPU when the job has more than one (resources.gpu,
    e.g. --set-resources train:gpu=4); on several nodes (resources.nodes, with gres: gpu:<per node>),
    one `torchrun` agent per node started by `srun`, the agents meeting at a rendezvous (c10d) on
    the job's first node, named by the job's id; srun is given the job's CPUs per task (SLURM 22.05
    and later no longer pass them on, and each agent would get one CPU). DDP or FSDP inside the job:
    train.parallel."""
    nodes = int(resources.get("nodes", 1) or 1)
    if nodes > 1:
        gres = str(resources.get("gres", "") or "")
        try:
            per_node = rewarm_plan.gres_gpus(gres)
        except ValueError:
            per_node = 0
        if not per_node:
            raise ValueError(f"train: a job on {nodes} nodes needs its GPUs per node as gres: gpu:<count> "
                             f"(and gpu: 0, since the plugin's gpu is the job's total), not gres={gres!r}")
        head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
        return (f"srun --nodes {nodes} --ntasks-per-node 1 --cpus-per-task {threads} env TORCH_ELASTIC_SHUTDOWN_TIMEOUT={TORCHRUN_GRACE} torchrun --nnodes {nodes} --nproc_per_node {per_node}"
                f" --rdzv-backend c10d --rdzv-endpoint {head}:${{REWARM_RDZV_PORT:-29500}} --rdzv-id $SLURM_JOB_ID -m rewarm")
    gpus = int(resources.get("gpu", 0) or 0)
    if gpus > 1:
        return f"env TORCH_ELASTIC_SHUTDOWN_TIMEOUT={TORCHRUN_GRACE} torchrun --standalone --nproc_per_node {gpus} -m rewarm"
    return "rewarm"
