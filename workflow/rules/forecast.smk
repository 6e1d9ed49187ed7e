rule forecast:
    """The continual pre-training law (Wang, Tissue et al. 2025) fitted on forecast.fit's cells, forecasting
    every other cell on both corpora, measured against those that ran; a schedule search: forecast/."""
    input:
        curves=expand("runs/{cell}/metrics.jsonl", cell=FORECAST_FIT),
        cells=expand("evals/cells/{cell}.json", cell=CELLS),
        base=expand("evals/base/{checkpoint}.json", checkpoint=EVALUATED_BASE),
    output:
        directory("forecast"),
    params:
        config=PARAMS,
        forecast=rewarm_config.digest(CONFIG.forecast),
        grid=rewarm_config.digest(CONFIG.grid),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/forecast.log",
    benchmark:
        "logs/benchmarks/forecast.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "rewarm forecast {params.config} --runs runs --evals evals --out {output} 2> {log}"
