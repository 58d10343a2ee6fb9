rule charts:
    """Altair charts, PNG and SVG through vl-convert (no network)."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        shapes="results/shape_requests.csv",
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
    script:
        "../scripts/charts.py"
