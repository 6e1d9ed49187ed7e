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
        evaluations="runs/{cell}/metrics.jsonl",
        upstream_curve="runs/{cell}/curves/upstream.csv",
        downstream_curve="runs/{cell}/curves/downstream.csv",
        live=directory("runs/{cell}/dvclive"),
        config="runs/{cell}/config.json",
    params:
        config=PARAMS,
        cell=cell_params,
        launcher=train_launcher,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/train/{cell}.log",
    benchmark:
        "logs/benchmarks/train/{cell}.tsv"
    threads: 1  # independent cells run side by side; dvc.yaml passes the same --threads
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=0,  # GPUs per training job: the slurm profile sets it (set-resources)
    shell:
        "{params.launcher} train {params.config} --cell {wildcards.cell} --base {input.base}"
        " --train {input.downstream}/train --replay {input.upstream}/train"
        " --val upstream={input.upstream}/val --val downstream={input.downstream}/val"
        " --state state/runs/{wildcards.cell} --out runs/{wildcards.cell} --threads {threads} 2> {log}"
