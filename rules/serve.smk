if ENDPOINT_MODE:

    localrules:
        endpoint_file,

    rule endpoint_file:
        """The existing endpoint that stands for one cache setting (URL without credentials, model, key variable name)."""
        output:
            report(
                SERVER_FILE,
                caption="../report/endpoint_file.rst",
                category="Servers",
                subcategory="{mode}",
                labels={"cache setting": "{mode}"},
            ),
        log:
            "results/logs/endpoint_file_{mode}.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            endpoint=lambda w: TARGET["endpoints"][w.mode],
        script:
            "../scripts/endpoint_file.py"

else:

    localrules:
        server_script,

    rule server_script:
        """The exact server command of one cache setting, as the seed's executable script (port = $1)."""
        output:
            report(
                SERVER_FILE,
                caption="../report/server_script.rst",
                category="Servers",
                subcategory="{mode}",
                labels={"cache setting": "{mode}"},
            ),
        log:
            "results/logs/server_script_{mode}.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            spec=asdict(SERVER_SPEC),
        script:
            "../scripts/server_script.py"


if PLAN_FILE:

    rule calibrate:
        """A server start before the measured ones: times cold requests, plans the sweep to the time budget,
        and leaves the compile caches warm for both cache settings (a replicated target: one server, on the first
        replica's cores or GPU)."""
        input:
            script=SERVER_FILE.format(mode="no_prefix_cache"),
            prompts=MAIN_PROMPTS,
            model=model_inputs(),
            code=package_files("calibrate"),
        output:
            PLAN_FILE,
        log:
            server="results/logs/server_calibrate.log",
            calibrate="results/logs/calibrate.log",
        benchmark:
            "results/benchmarks/calibrate.tsv"
        conda:
            "../envs/pipeline.yaml"
        resources:
            gpu=1,
        params:
            points=POINTS,
            bench=BENCH,
            budget_s=TIME_BUDGET_S,
            engine=TARGET["engine"],
            host=config["server"]["host"],
            ready_timeout_s=config["server"]["ready_timeout_s"],
            served_name=MODEL["served_name"],
            replicas=asdict(REPLICA_SETTINGS),
        script:
            "../scripts/calibrate.py"


rule measure:
    """One server lifetime of one cache setting: start, wait ready, warm up, measure every point, tear down
    (endpoint mode: probe the existing endpoint and measure every point against it; a replicated target: every
    replica, and a router per pass, their logs beside the server log). Lifetimes run one after another in the
    interleaved order (`after`)."""
    input:
        script=SERVER_FILE,
        prompts=MAIN_PROMPTS,
        model=model_inputs(),
        plan=[PLAN_FILE] if PLAN_FILE else [],
        code=package_files("measure"),
        after=after_previous_lifetime,
    output:
        records=point_files("jsonl"),
        meta=point_files("meta.json"),
        info=LIFETIME_INFO,
    log:
        server="results/logs/server_{mode}_i{instance}.log",
        measure="results/logs/measure_{mode}_i{instance}.log",
        records="results/logs/records_{mode}_i{instance}.jsonl",
    benchmark:
        "results/benchmarks/measure_{mode}_i{instance}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=LIFETIME_GPUS,
    params:
        **measure_params(POINTS),
        replicas=asdict(REPLICA_SETTINGS),
    script:
        "../scripts/measure.py"


if KV_SHAPES:

    use rule server_script as server_script_kv with:
        output:
            "results/servers/serve_slm_{mode}_kv.sh",
        log:
            "results/logs/server_script_{mode}_kv.log",
        params:
            spec=asdict(KV_SPEC),

    use rule measure as measure_kv with:
        input:
            script="results/servers/serve_slm_{mode}_kv.sh",
            prompts=KV_PROMPTS,
            model=model_inputs(),
            plan=[],
            code=package_files("measure"),
            after=after_previous_kv_lifetime,
        output:
            records=point_files("jsonl", KV_POINTS, KV_LIFETIME),
            meta=point_files("meta.json", KV_POINTS, KV_LIFETIME),
            info=KV_INFO,
        log:
            server="results/logs/server_{mode}_kv.log",
            measure="results/logs/measure_{mode}_kv.log",
            records="results/logs/records_{mode}_kv.jsonl",
        benchmark:
            "results/benchmarks/measure_{mode}_kv.tsv"
        resources:
            gpu=1,
        params:
            **measure_params(KV_POINTS, kv=True),
            replicas={},
