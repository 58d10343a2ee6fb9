rule charts:
    """Altair charts, PNG and SVG through vl-convert (no network)."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        code=package_files("charts"),
    output:
        CHARTS,
    conda:
        "../envs/pipeline.yaml"
    log:
        "results/logs/charts.log",
    params:
        outdir=lambda w, output: os.path.dirname(output[0]),
        names=CHART_NAMES,
        slo=config["benchmark"].get("slo", {}),
    script:
        "../scripts/draw_charts.py"
