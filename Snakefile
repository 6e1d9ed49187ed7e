# rewarm under Snakemake: wiring only. Stages are `rewarm` subcommands (src/rewarm/cli.py);
# `rewarm --help` explains each. Run: snakemake --cores 2
# Paper scale: snakemake --cores N --configfile config/paper.yaml

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/prepare.smk"


rule all:
    input:
        expand("data/tokens/{corpus}", corpus=CORPORA),
    default_target: True
