rule html_report:
    """prefix_caching_results.html: the markdown report as one page that needs no network, its charts drawn by
    Vega-Lite from their specs (the PNG where a chart has none)."""
    input:
        markdown="results/prefix_caching_results.md",
        charts=CHARTS,  # every file chart_specs declares per chart: the PNGs and, where declared, the .vl.json specs
        code=package_files("html_report"),
    output:
        "results/prefix_caching_results.html",
    log:
        "results/logs/html_report.log",
    benchmark:
        "results/benchmarks/html_report.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        charts_dir=lambda w, input: os.path.dirname(input.charts[0]),
    script:
        "../scripts/html_report.py"
