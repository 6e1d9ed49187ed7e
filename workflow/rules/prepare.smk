# `assemble` only hard-links the parts' shards and writes the manifests: it runs where Snakemake runs,
# not as a cluster job.
localrules:
    assemble,


rule prepare:
    """One part of a corpus tokenized and packed into Arrow shards, per split: the part's units
    (input files, or a dataset's shards; contiguous groups, prepare.parts of them)."""
    input:
        raw="data/raw",
        tokenizer="data/tokenizer",
        files=corpus_local_files,
    output:
        directory("data/parts/{corpus}/{part}"),
    params:
        config=PARAMS,
        corpus=corpus_params,
        prepare=rewarm_config.to_dict(CONFIG.prepare),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/prepare/{corpus}-{part}.log",
    benchmark:
        "logs/benchmarks/prepare/{corpus}-{part}.tsv"
    threads: CONFIG.prepare.workers  # dvc.yaml passes the same --workers (the shards do not depend on it)
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "rewarm prepare {params.config} --corpus {wildcards.corpus} --part {wildcards.part} --tokenizer {input.tokenizer}"
        " --raw {input.raw} --out {output} --workers {threads} 2> {log}"


rule assemble:
    """A corpus's splits joined from its parts: shards hard-linked, one manifest per split, as one
    `rewarm prepare` of the whole corpus writes them."""
    input:
        expand("data/parts/{{corpus}}/{part}", part=PARTS),
    output:
        directory("data/tokens/{corpus}"),
    params:
        config=PARAMS,
        corpus=corpus_params,
        prepare=rewarm_config.to_dict(CONFIG.prepare),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/assemble/{corpus}.log",
    benchmark:
        "logs/benchmarks/assemble/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "rewarm assemble {params.config} --corpus {wildcards.corpus} --parts {input} --out {output} 2> {log}"
