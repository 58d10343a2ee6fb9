rule server_script:
    """The exact server command of one cache setting, as the seed's executable script (port = $1)."""
    output:
        report("results/servers/serve_slm_{mode}.sh", caption="../report/server_script.rst",
               category="Servers", subcategory="{mode}", labels={"cache setting": "{mode}"}),
    conda:
        "../envs/pipeline.yaml"
    log:
        "results/logs/server_script_{mode}.log",
    params:
        spec=asdict(SERVER_SPEC),
    script:
        "../scripts/write_server_script.py"


rule measure:
    """One server lifetime per cache setting: start, wait ready, warm up, measure every point, tear down."""
    input:
        script="results/servers/serve_slm_{mode}.sh",
        prompts=expand("results/prompts/{regime}.jsonl", regime=REGIMES),
        model=model_inputs(),
        code=package_files("measure", "client", "server", "metrics"),
    output:
        records=point_files("jsonl"),
        meta=point_files("meta.json"),
        info="results/raw/{mode}/server.json",
    conda:
        "../envs/pipeline.yaml"
    log:
        server="results/logs/server_{mode}.log",
        measure="results/logs/measure_{mode}.log",
        records="results/logs/records_{mode}.jsonl",
    params:
        points=POINTS,
        bench=BENCH,
        host=SERVER_SPEC.host,
        ready_timeout_s=config.get("server", {}).get("ready_timeout_s", 900),
        served_name=MODEL["served_name"],
        python=TARGET["python"],
        target=TARGET_NAME,
        model=MODEL,
    resources:
        gpu=1,
    script:
        "../scripts/measure_mode.py"
