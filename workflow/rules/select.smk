rule select:
    """A named base checkpoint as a Hugging Face model directory: a hub revision, a local
    directory, or freshly initialised (no pre-training needed)."""
    wildcard_constraints:
        checkpoint=one_of(SELECTED),
    input:
        tokenizer="data/tokenizer",
    output:
        directory("checkpoints/base/{checkpoint}"),
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        model=rewarm_config.to_dict(CONFIG.model),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/select/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/select/{checkpoint}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "rewarm select {params.config} --name {wildcards.checkpoint} --tokenizer {input.tokenizer} --out {output} 2> {log}"


rule select_step:
    """(Demo) a named base checkpoint taken from a step of the demo's own pre-training series."""
    wildcard_constraints:
        checkpoint=one_of(STEPPED),
    input:
        tokenizer="data/tokenizer",
        pretrain="checkpoints/pretrain",
    output:
        directory("checkpoints/base/{checkpoint}"),
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        model=rewarm_config.to_dict(CONFIG.model),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/select/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/select/{checkpoint}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "rewarm select {params.config} --name {wildcards.checkpoint} --tokenizer {input.tokenizer}"
        " --pretrain {input.pretrain} --out {output} 2> {log}"


rule select_cell:
    """A checkpoint that is another cell's final state (with its optimizer state when asked): the
    next dataset of a sequence continues from it. That cell's training is this job's input."""
    wildcard_constraints:
        checkpoint=one_of(CONTINUED),
    input:
        tokenizer="data/tokenizer",
        model=lambda wildcards: f"{continued_run(wildcards)}/model",
    output:
        directory("checkpoints/base/{checkpoint}"),
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        run=continued_run,
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/select/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/select/{checkpoint}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "rewarm select {params.config} --name {wildcards.checkpoint} --tokenizer {input.tokenizer}"
        " --run {params.run} --out {output} 2> {log}"
