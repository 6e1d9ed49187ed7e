rule report:
    """Tables, figures and findings across the grid: reports/report.md and report.html."""
    input:
        cells=expand("evals/cells/{cell}.json", cell=CELLS),
        base=expand("evals/base/{checkpoint}.json", checkpoint=EVALUATED_BASE),
        curves=expand("runs/{cell}/metrics.jsonl", cell=CELLS),
        benchmarks=expand("evals/benchmark/cells/{cell}.json", cell=BENCHMARKED),
        benchmarks_base=expand("evals/benchmark/base/{checkpoint}.json", checkpoint=BENCHMARKED_BASE),
        forecast="forecast",
    output:
        # `snakemake --report report.html` attaches the figures and the report itself.
        report(
            directory("reports"),
            patterns=["figures/{name}.png", "{name}.html", "{name}.csv"],
            caption="../report/figure.rst",
            category="Re-warming report",
            labels={"file": "{name}"},
        ),
    params:
        config=PARAMS,
        grid=rewarm_config.digest(CONFIG.grid),  # a digest: Snakemake prints a changed parameter whole
        benchmark=BENCHMARK_SPEC,
        report=rewarm_config.digest(CONFIG.report),  # how it is drawn (the figures' token axes)
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "rewarm report {params.config} --runs runs --evals evals --forecast forecast --out {output} 2> {log}"
