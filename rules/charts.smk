rule charts:
    """Altair charts: PNG and SVG through vl-convert (no network), and each chart's Vega-Lite spec with its data
    inline (NAME.vl.json) for the HTML report."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        shapes="results/shape_requests.csv",
        # Every contrast with its verdict (the contrasts rule, verdicts.contrast_rows), for the forest plot.
        contrasts="results/contrasts.csv",
        # Every request: the TTFT distributions and the intervals of the ideal chart's means.
        records=all_point_files("jsonl"),
        trace_capacity="results/trace_capacity.csv",
        # A replicated run's per policy and point table and the simulator's curve (empty files for one server).
        replica_points="results/replica_points.csv",
        routing_curve="results/routing_curve.csv",
        kv_prompts=KV_PROMPTS,  # their block hashes: the cache model's hit rate at other KV sizes
        calibration=[PLAN_FILE] if PLAN_FILE else [],  # its cold requests: the ideal's fit, as in the report
        code=package_files("charts"),
        model=model_inputs(),
    output:
        CHART_OUTPUTS,
    log:
        "results/logs/charts.log",
    benchmark:
        "results/benchmarks/charts.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        outdir=lambda w, output: os.path.dirname(output[0]),
        names=CHART_NAMES,
        slo=config["benchmark"]["slo"],
        model_dir=lambda w, input: input.model[0] if input.model else "",
        block_size=TARGET["block_size"],
        # The KV cache's bytes per value (capacities in GiB): the server's dtype and any --kv-cache-dtype.
        dtype=SERVER_SPEC.dtype if SERVER_SPEC else "auto",
        server_args=list(SERVER_SPEC.extra_args) if SERVER_SPEC else [],
        policy=ROUTER.primary if ROUTER else None,  # behind a router, the records of the primary policy
    script:
        "../scripts/charts.py"
