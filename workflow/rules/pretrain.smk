rule pretrain:
    """(Demo) a tiny GPT-NeoX pre-trained on upstream, saved as a Pythia-style step<N> series.
    Its resumable state lives in state/pretrain, outside the output, so a killed job resumes."""
    input:
        tokenizer="data/tokenizer",
        upstream="data/tokens/upstream",
    output:
        series=directory("checkpoints/pretrain"),
        logs=directory("runs/pretrain"),
    params:
        config=PARAMS,
        model=rewarm_config.to_dict(CONFIG.model),
        pretrain=rewarm_config.to_dict(CONFIG.pretrain),
    conda:
        "../envs/rewarm.yaml"
    log:
        "logs/pretrain.log",
    benchmark:
        "logs/benchmarks/pretrain.tsv"
    threads: 1  # dvc.yaml passes the same --threads; one thread beside the union baseline's cell beats two alone
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    shell:
        "rewarm pretrain {params.config} --tokenizer {input.tokenizer} --train {input.upstream}/train"
        " --val {input.upstream}/val --state state/pretrain --out {output.series} --logs {output.logs} --threads {threads} 2> {log}"
