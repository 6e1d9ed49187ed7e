rule generate:
    """The embedded demo's synthetic corpora, as Pile/SlimPajama-format .jsonl.zst."""
    output:
        directory("data/raw"),
    params:
        config=PARAMS,
        demo={
            f"{corpus}/{split}": rewarm_config.to_dict(source)
            for (corpus, split), source in CONFIG.sources().items()
            if source.type == "demo"
        },
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
