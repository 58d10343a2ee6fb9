if ENDPOINT_MODE:

    localrules:
        endpoint_file,

    rule endpoint_file:
        """The existing endpoint that stands for one cache setting (URL without credentials, model, key variable name)."""
        output:
            report(SERVER_FILE, caption="../report/endpoint_file.rst", category="Servers", subcategory="{mode}",
                   labels={"cache setting": "{mode}"}),
        conda:
            "../envs/pipeline.yaml"
        log:
            "results/logs/endpoint_file_{mode}.log",
        params:
            endpoint=lambda w: TARGET["endpoints"][w.mode],
        script:
            "../scripts/write_endpoint_file.py"

else:

    localrules:
        server_script,

    rule server_script:
        """The exact server command of one cache setting, as the seed's executable script (port = $1)."""
        output:
            report(SERVER_FILE, caption="../report/server_script.rst", category="Servers", subcategory="{mode}",
                   labels={"cache setting": "{mode}"}),
        conda:
            "../envs/pipeline.yaml"
        log:
            "results/logs/server_script_{mode}.log",
        params:
            spec=asdict(SERVER_SPEC),
        script:
            "../scripts/write_server_script.py"


rule measure:
    """One server lifetime per cache setting: start, wait ready, warm up, measure every point, tear down
    (endpoint mode: probe the existing endpoint and measure every point against it)."""
    input:
        script=SERVER_FILE,
        prompts=expand("results/prompts/{regime}.jsonl", regime=REGIMES),
        model=model_inputs(),
        code=package_files("measure", "client", "server", "metrics", "endpoint"),
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
        host=config.get("server", {}).get("host", "127.0.0.1"),
        ready_timeout_s=config.get("server", {}).get("ready_timeout_s", 900),
        served_name=MODEL["served_name"],
        python=TARGET.get("python", ""),
        target=TARGET_NAME,
        model=MODEL,
        endpoint=lambda w: TARGET["endpoints"][w.mode] if ENDPOINT_MODE else {},
        description=TARGET.get("description", ""),
    resources:
        gpu=1,
    script:
        "../scripts/measure_mode.py"
