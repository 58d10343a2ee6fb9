rule contrasts:
    """Every contrast the run measured, one row each with its interval, MDE and the claim rule's verdict: the one table
    the report's verdict table, the contrast chart and results.json read (prefixbench.verdicts)."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        shape_points="results/shape_points.csv",
        info=SERVER_INFOS,  # whether the cache off was forced misses on one deployment (no flag cost then)
        code=package_files("contrasts"),
    output:
        "results/contrasts.csv",
    log:
        "results/logs/contrasts.log",
    benchmark:
        "results/benchmarks/contrasts.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/contrasts.py"


rule results_json:
    """results.json: the setup, every point, every contrast and the cache-model checks, validated against
    config/schema/results.schema.json before it is written (prefixbench.results_file; read by `prefixbench compare`)."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        contrasts="results/contrasts.csv",
        shape_points="results/shape_points.csv",
        # A replicated run's `replicas` section (empty files for one server; prefixbench.replicas_analysis).
        replica_points="results/replica_points.csv",
        replica_contrasts="results/replica_contrasts.csv",
        routing_sim="results/routing_sim.csv",
        info=SERVER_INFOS,
        schema=os.path.join(workflow.basedir, "config", "schema", "results.schema.json"),  # the clone's, from any working directory
        code=package_files("results_json"),
    output:
        "results/results.json",
    log:
        "results/logs/results_json.log",
    benchmark:
        "results/benchmarks/results_json.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        target=TARGET_NAME,
        model=MODEL,
        block_size=TARGET["block_size"],
        max_tokens=BENCH["max_tokens"],
        dtype=DTYPE_CHOICE.dtype if DTYPE_CHOICE else TARGET.get("dtype"),
        config=config,
    script:
        "../scripts/results_json.py"
