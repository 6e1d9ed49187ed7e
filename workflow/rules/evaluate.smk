rule evaluate:
    """A cell's final model on every sequence of each validation split (extra held-out corpora too),
    on the device the configuration chooses (train.device: a GPU when the job has one)."""
    input:
        model="runs/{cell}/model",
        tokens=expand("data/tokens/{corpus}", corpus=EVAL_CORPORA),
    output:
        "evals/cells/{cell}.json",
    params:
        config=PARAMS,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/evaluate/{cell}.log",
    benchmark:
        "logs/benchmarks/evaluate/{cell}.tsv"
    threads: 1  # dvc.yaml passes the same --threads
    resources:
        mem_mb=4000,
        runtime=EVALUATE_MINUTES,  # scaled to the validation tokens (rewarm.plan.evaluation_minutes)
        gpu=JOB_GPUS,  # on a GPU: bf16 and a batch that fills it; the slurm profile gives it one, as training
    shell:
        "rewarm evaluate {params.config} --model {input.model} --tokens data/tokens --threads {threads} --out {output} 2> {log}"


# A base checkpoint on each validation split: the "0 tokens" point of its cells (a checkpoint that is
# another cell's final state is that cell's evaluation, evals/cells/<cell>.json). The same job as
# `evaluate` on another model: the rule is evaluate's, with its own files.
use rule evaluate as evaluate_base with:
    wildcard_constraints:
        checkpoint=one_of(EVALUATED_BASE),
    input:
        model="checkpoints/base/{checkpoint}",
        tokens=expand("data/tokens/{corpus}", corpus=EVAL_CORPORA),
    output:
        "evals/base/{checkpoint}.json",
    log:
        "logs/evaluate_base/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/evaluate_base/{checkpoint}.tsv"
