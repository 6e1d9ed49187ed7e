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
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports",
    default_target: True
