# rewarm under Snakemake: wiring only. Stages are `rewarm` subcommands (src/rewarm/cli.py);
# `rewarm --help` explains each. Run: snakemake --cores 2
# Paper scale: snakemake --cores N --configfile config/paper.yaml

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        expand("data/tokens/{corpus}", corpus=CORPORA),
        expand("checkpoints/base/{checkpoint}", checkpoint=CHECKPOINTS),
        expand("runs/{cell}/metrics.json", cell=CELLS),
    default_target: True
