rule generate:
    """The embedded demo's synthetic corpora, as Pile/SlimPajama-format .jsonl.zst."""
    output:
        directory("data/raw"),
    params:
        config=PARAMS,
        demo=demo_generator_params(),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/generate.log",
    benchmark:
        "logs/benchmarks/generate.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "rewarm generate {params.config} --out {output} 2> {log}"
