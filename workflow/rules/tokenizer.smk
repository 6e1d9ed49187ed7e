rule tokenizer:
    """The demo's byte-level BPE (trained on upstream train), or the base model's tokenizer."""
    input:
        raw="data/raw",
    output:
        directory("data/tokenizer"),
    params:
        config=PARAMS,
        tokenizer=rewarm_config.to_dict(CONFIG.tokenizer),
        source=rewarm_config.to_dict(CONFIG.corpora["upstream"].train),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/tokenizer.log",
    benchmark:
        "logs/benchmarks/tokenizer.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "rewarm tokenizer {params.config} --raw {input.raw} --out {output} 2> {log}"
