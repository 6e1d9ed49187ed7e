rule select:
    """A named base checkpoint as a Hugging Face model directory (hub revision, local
    directory, a step of the demo's pre-training, or freshly initialised)."""
    input:
        tokenizer="data/tokenizer",
        pretrain=checkpoint_pretrain_input,
    output:
        directory("checkpoints/base/{checkpoint}"),
    params:
        config=PARAMS,
        spec=checkpoint_spec,
        model=rewarm_config.to_dict(CONFIG.model),
        pretrain=lambda wildcards, input: f"--pretrain {input.pretrain}" if input.pretrain else "",
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
        " {params.pretrain} --out {output} 2> {log}"
