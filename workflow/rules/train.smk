rule train:
    """One grid cell: the base checkpoint re-warmed on downstream data, evaluated on both
    corpora as it trains. Resumable state lives in state/runs/<cell>, outside the outputs."""
    input:
        base=cell_base,
        upstream="data/tokens/upstream",
        downstream="data/tokens/downstream",
    output:
        model=directory("runs/{cell}/model"),
        metrics="runs/{cell}/metrics.json",
        curves="runs/{cell}/metrics.jsonl",
        live=directory("runs/{cell}/dvclive"),
        config="runs/{cell}/config.json",
    params:
        config=PARAMS,
        cell=cell_params,
    log:
        "logs/train/{cell}.log",
    benchmark:
        "logs/benchmarks/train/{cell}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "rewarm train {params.config} --cell {wildcards.cell} --base {input.base}"
        " --train {input.downstream}/train --replay {input.upstream}/train"
        " --val upstream={input.upstream}/val --val downstream={input.downstream}/val"
        " --state state/runs/{wildcards.cell} --out runs/{wildcards.cell} 2> {log}"
