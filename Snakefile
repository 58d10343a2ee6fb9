# prefixbench: what vLLM's automatic prefix caching buys on repeated-prefix traffic.
# Run: snakemake --cores 1 --resources gpu=1   (see README.md)

# The default config, unless a complete one is given (`--configfile config/test.yaml`); a
# --configfile is merged key by key, so a smaller config could not drop the default's regimes.
if not config.get("regimes"):

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/design.smk"
include: "rules/inputs.smk"


report: "report/workflow.rst"


wildcard_constraints:
    mode="|".join(MODES),
    regime="|".join(REGIMES),
    shape="|".join(SHAPES) or "none",
    instance=r"\d+",


# Cheap steps run beside Snakemake; on a cluster only `measure` (and model conversion) become jobs.
localrules:
    all,
    prompts,
    shape_prompts,
    aggregate,
    regime_table,
    charts,
    report,
    html_report,
    contrasts,
    results_json,


include: "rules/model.smk"
include: "rules/prompts.smk"
include: "rules/serve.smk"
include: "rules/offload.smk"
include: "rules/aggregate.smk"
include: "rules/charts.smk"
include: "rules/report.smk"
include: "rules/html.smk"
include: "rules/results.smk"


rule all:
    default_target: True
    input:
        "results/prefix_caching_results.md",
        "results/prefix_caching_results.html",
        "results/summary.csv",
        CHARTS,
        REGIME_TABLES,
        "results/contrasts.csv",
        "results/results.json",
        OFFLOAD_OUTPUTS,
