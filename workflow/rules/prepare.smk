rule prepare:
    """One corpus tokenized and packed into Arrow shards, per split."""
    input:
        raw="data/raw",
        tokenizer="data/tokenizer",
        files=corpus_local_files,
    output:
        directory("data/tokens/{corpus}"),
    params:
        config=PARAMS,
        corpus=corpus_params,
        prepare=rewarm_config.to_dict(CONFIG.prepare),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/prepare/{corpus}.log",
    benchmark:
        "logs/benchmarks/prepare/{corpus}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "rewarm prepare {params.config} --corpus {wildcards.corpus} --tokenizer {input.tokenizer}"
        " --raw {input.raw} --out {output} --workers {threads} 2> {log}"
