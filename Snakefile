# rewarm under Snakemake: wiring only. Stages are `rewarm` subcommands (src/rewarm/cli.py);
# `rewarm --help` explains each. Run: snakemake --cores 2
# Paper scale: snakemake --cores N --configfile config/paper.yaml

configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/halving.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/forecast.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports",
    default_target: True


onerror:
    # With --keep-going, the cells that finished still get a report, and those that failed (a
    # diverged loss, say) are listed in it as failed; the next run retries them.
    shell(f"rewarm report {PARAMS} --runs runs --evals evals --out reports --partial 2> logs/report-partial.log || true")
