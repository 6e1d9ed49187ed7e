rule train:
    """One grid cell: the base checkpoint re-warmed on downstream data (or upstream again),
    evaluated on both corpora as it trains; it also records the shorter cells of the same run
    (runs/<cell>/stops). Resumable state lives in state/runs/<cell>, outside the outputs."""
    wildcard_constraints:
        cell=one_of(TRAINED),
    input:
        base=cell_base,
        upstream="data/tokens/upstream",
        downstream="data/tokens/downstream",
        corpus=cell_train_tokens,
        halving=cell_halving,
    output:
        model=directory("runs/{cell}/model"),
        metrics="runs/{cell}/metrics.json",
        evaluations="runs/{cell}/metrics.jsonl",
        upstream_curve="runs/{cell}/curves/upstream.csv",
        downstream_curve="runs/{cell}/curves/downstream.csv",
        live=directory("runs/{cell}/dvclive"),
        config="runs/{cell}/config.json",
        stops=directory("runs/{cell}/stops"),
    params:
        config=PARAMS,
        cell=cell_params,
        launcher=train_launcher,
        halving=cell_halving_flag,
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
        gpu=JOB_GPUS,  # GPUs per training job (more: torchrun); the slurm profile sets it (set-resources)
    shell:
        # exec: the training process replaces the job's shell, so a scheduler's SIGTERM reaches it alone and
        # the job ends when it has saved, not when the shell dies of the signal.
        "exec {params.launcher} train {params.config} --cell {wildcards.cell} --base {input.base}"
        " --train {input.corpus}/train --replay {input.upstream}/train"
        " --val upstream={input.upstream}/val --val downstream={input.downstream}/val"
        " --state state/runs/{wildcards.cell} --out runs/{wildcards.cell} --threads {threads}{params.halving} 2> {log}"


rule prefix:
    """A cell that only stops earlier than a longer run with the same settings: its run directory,
    read from what that run recorded at the cell's stopping point (no training)."""
    wildcard_constraints:
        cell=one_of(PREFIXES),
    input:
        prefix_run_records,
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
        run=prefix_run,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/prefix/{cell}.log",
    benchmark:
        "logs/benchmarks/prefix/{cell}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "rewarm prefix {params.config} --cell {wildcards.cell} --run {params.run} --out runs/{wildcards.cell} 2> {log}"
