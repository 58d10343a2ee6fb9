rule report:
    """prefix_caching_results.md, every number and result sentence computed from this run's data."""
    input:
        template=REPORT_TEMPLATE,
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        # Every contrast with its verdict (the contrasts rule, prefixbench.verdicts): the verdict table's rows.
        contrasts=lambda w: ["results/contrasts.csv"] if rules.has("contrasts") else [],
        shapes="results/shape_requests.csv",
        shape_points="results/shape_points.csv",
        trace_capacity="results/trace_capacity.csv",
        # Across replicas (empty files for one server): per policy and point, the policies' contrasts, the simulator.
        replica_points="results/replica_points.csv",
        replica_contrasts="results/replica_contrasts.csv",
        routing_sim="results/routing_sim.csv",
        routing_curve="results/routing_curve.csv",
        # Issue 24: the second KV tier's section, written by rules/offload.smk ([] where the run has no tier).
        offload=OFFLOAD_SECTION if "OFFLOAD_SECTION" in globals() else [],
        info=SERVER_INFOS,
        scripts=expand(SERVER_FILE, mode=MODES),
        prompts=MAIN_PROMPTS + KV_PROMPTS,
        charts=CHARTS,
        calibration=[PLAN_FILE] if PLAN_FILE else [],
        code=package_files("report"),
        model=model_inputs(),
    output:
        report(
            "results/prefix_caching_results.md",
            caption="../report/results.rst",
            category="Report",
            labels={"document": "prefix_caching_results.md"},
        ),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        target=TARGET_NAME,
        model=MODEL,
        block_size=TARGET["block_size"],
        slo=config["benchmark"]["slo"],
        max_tokens=BENCH["max_tokens"],
        shapes={n: asdict(s) for n, s in SHAPES.items()},
    script:
        "../scripts/report.py"
