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
        source="",  # select_step: --pretrain, select_cell: --run
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/select/{checkpoint}.log",
    benchmark:
        "logs/benchmarks/select/{checkpoint}.tsv"
    threads: 1
    resources:
        mem_mb=SELECT_MB,  # from the model's size (rewarm.plan.select_memory_mb)
        runtime=60,
    shell:
        "rewarm select {params.config} --name {wildcards.checkpoint} --tokenizer {input.tokenizer}{params.source} --out {output} 2> {log}"


# (Demo) a named base checkpoint taken from a step of the demo's own pre-training series.
use rule select as select_step with:
    wildcard_constraints:
        checkpoint=one_of(STEPPED),
    input:
        tokenizer="data/tokenizer",
        pretrain="checkpoints/pretrain",
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        model=rewarm_config.to_dict(CONFIG.model),
        source=" --pretrain checkpoints/pretrain",


# A checkpoint that is another cell's final state (with its optimizer state when asked): the next
# dataset of a sequence continues from it. That cell's training is this job's input.
use rule select as select_cell with:
    wildcard_constraints:
        checkpoint=one_of(CONTINUED),
    input:
        tokenizer="data/tokenizer",
        model=lambda wildcards: f"{continued_run(wildcards)}/model",
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        source=lambda wildcards: f" --run {continued_run(wildcards)}",
