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
