rule prompts:
    """Tokenizer-exact prompts of one prefix regime, every reuse level, re-tokenized and checked."""
    input:
        tokenizer=tokenizer_inputs(),
        code=package_files("prompts"),
    output:
        "results/prompts/{regime}.jsonl",
    log:
        "results/logs/prompts/{regime}.log",
    benchmark:
        "results/benchmarks/prompts_{regime}.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        regime=lambda w: asdict(REGIMES[w.regime]),
        questions=QUESTIONS,
        tokenizer=lambda w, input: input.tokenizer[0] if input.tokenizer else pbconfig.tokenizer_source(TARGET),
        block_size=TARGET["block_size"],
        align_to_block=config["align_to_block"],
        seed=config["seed"],
    script:
        "../scripts/prompts.py"


rule shape_prompts:
    """Tokenizer-exact prompts of one workload shape, with each prompt's KV block hashes and its expected hits."""
    input:
        tokenizer=tokenizer_inputs(),
        data=lambda w: SHAPE_DATA[w.shape],
        code=package_files("shape_prompts"),
    output:
        "results/prompts/shapes/{shape}.jsonl",
    log:
        "results/logs/prompts/shape_{shape}.log",
    benchmark:
        "results/benchmarks/shape_prompts_{shape}.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        shape=lambda w: asdict(SHAPES[w.shape]),
        questions=QUESTIONS,
        tokenizer=lambda w, input: input.tokenizer[0] if input.tokenizer else pbconfig.tokenizer_source(TARGET),
        block_size=TARGET["block_size"],
        seed=config["seed"],
        max_model_len=lambda w: (KV_SPEC.max_model_len if w.shape in KV_SHAPES else TARGET["max_model_len"]),
        max_tokens=BENCH["max_tokens"],
    script:
        "../scripts/shape_prompts.py"
