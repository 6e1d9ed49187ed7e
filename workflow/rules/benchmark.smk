# Benchmarks with the LM Evaluation Harness (benchmark.tasks in params.yaml); with no tasks, or
# `benchmark: null`, there are no such jobs and the report has no benchmark columns.


rule tasks:
    """The benchmark jobs' task files: the demo's own tasks in the harness's task format, written
    from a held-out demo domain so that the harness runs offline (an empty directory where every
    task is the harness's)."""
    output:
        directory("data/tasks"),
    params:
        config=PARAMS,
        spec=rewarm_config.to_dict(CONFIG.benchmark.demo_tasks) if CONFIG.demo_tasks() else None,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/tasks.log",
    benchmark:
        "logs/benchmarks/tasks.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "rewarm tasks {params.config} --out {output} 2> {log}"


rule benchmark:
    """The harness's tasks on a cell's final model, on the device the configuration chooses (a GPU
    when the job has one, in its precision)."""
    input:
        model="runs/{cell}/model",
        tasks="data/tasks",
    output:
        json="evals/benchmark/cells/{cell}.json",
        harness=directory("evals/benchmark/cells/{cell}.harness"),  # the harness's own results and samples
    params:
        config=PARAMS,
        spec=BENCHMARK_SPEC,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/benchmark/{cell}.log",
    benchmark:
        "logs/benchmarks/benchmark/{cell}.tsv"
    threads: 1  # dvc.yaml passes the same --threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=JOB_GPUS,
    shell:
        "rewarm benchmark {params.config} --model {input.model} --tasks {input.tasks} --threads {threads} --out {output.json}"
        " --harness-out {output.harness} 2> {log}"


# The harness's tasks on a base checkpoint: where each cell started from. The same job as
# `benchmark` on another model: the rule is benchmark's, with its own files.
use rule benchmark as benchmark_base with:
    wildcard_constraints:
        checkpoint=one_of(EVALUATED_BASE),
    input:
        model="checkpoints/base/{checkpoint}",
        tasks="data/tasks",
    output:
        json="evals/benchmark/base/{checkpoint}.json",
        harness=directory("evals/benchmark/base/{checkpoint}.harness"),
    log:
        "logs/benchmark_base/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/benchmark_base/{checkpoint}.tsv"
