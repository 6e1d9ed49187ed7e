rule rung:
    """Early stopping (forecast.halving): a cell's first forecast.halving.fraction of steps, its curve so far
    in rungs/<cell>; the state stays in state/runs/<cell>, where `train` goes on from it."""
    wildcard_constraints:
        cell=one_of(HALVING_POOL),
    input:
        base=cell_base,
        upstream="data/tokens/upstream",
        downstream="data/tokens/downstream",
        corpus=cell_train_tokens,
    output:
        directory("rungs/{cell}"),
    params:
        config=PARAMS,
        cell=cell_params,
        launcher=train_launcher,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/rung/{cell}.log",
    benchmark:
        "logs/benchmarks/rung/{cell}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=JOB_GPUS,
    shell:
        "exec {params.launcher} rung {params.config} --cell {wildcards.cell} --base {input.base}"
        " --train {input.corpus}/train --replay {input.upstream}/train"
        " --val upstream={input.upstream}/val --val downstream={input.downstream}/val"
        " --state state/runs/{wildcards.cell} --out {output} --threads {threads} 2> {log}"


rule halve:
    """Early stopping: the law fitted on every rung at once; the cells forecast within forecast.halving.margin
    of the best go on to their end, the others end at their rung (halving/halving.json)."""
    input:
        expand("rungs/{cell}", cell=HALVING_POOL),
    output:
        directory("halving"),
    params:
        config=PARAMS,
        # what decides: the margin, the objective's weight and the law's decay (not the rest of `forecast`)
        halving=rewarm_config.digest({"halving": CONFIG.forecast.halving, "weight": CONFIG.forecast.search.upstream_weight,
                                      "decay": CONFIG.forecast.decay}),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/halve.log",
    benchmark:
        "logs/benchmarks/halve.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "rewarm halve {params.config} --rungs rungs --out {output} 2> {log}"
