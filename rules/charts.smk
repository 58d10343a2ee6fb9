from prefixbench.chart_specs import BY_NAME as CHART_SPECS, chart_files, chart_names

CHART_NAMES = chart_names(rates=bool(RATES), shapes=bool(SHAPES))  # prefixbench.chart_specs registers them
CHARTS = chart_files(CHART_NAMES)


def chart_output(path):
    """A chart output; the PNGs are filed in Snakemake's report (`--report`)."""
    name = os.path.basename(path).split(".")[0]
    if not path.endswith(".png"):
        return path
    return report(path, caption=f"../{CHART_SPECS[name].caption}", category="Charts", labels={"chart": name.replace("_", " ")})


CHART_OUTPUTS = [chart_output(f) for f in CHARTS]


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
