import os
import signal
import sys
from dataclasses import asdict

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("8.0")

SCRIPTS_DIR = os.path.join(workflow.basedir, "scripts")
sys.path.insert(0, SCRIPTS_DIR)

from prefixbench import MODES  # noqa: E402
from prefixbench import config as pbconfig  # noqa: E402
from prefixbench.design import kv_order, previous_slot, server_infos, slot_order  # noqa: E402
from prefixbench.shapes import KINDS  # noqa: E402

validate(config, "../config/schema/config.schema.yaml")


def stop_now(signum, frame):
    """SIGTERM (kill, a service manager, a CI runner) stops the run at once, as Ctrl-C does.

    Snakemake's own handler waits for running jobs to finish (a `measure` job can take an hour); this
    one passes the signal to every process of the run, whose `finally` blocks tear the servers down
    and keep what was measured, then lets Snakemake clean up as after Ctrl-C."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    raise KeyboardInterrupt


onstart:
    signal.signal(signal.SIGTERM, stop_now)


try:
    TARGET_NAME = pbconfig.target_name(config)
    TARGET = config["targets"][TARGET_NAME]
    pbconfig.check(config, TARGET)
except pbconfig.ConfigError as exc:
    raise WorkflowError(f"Invalid configuration: {exc}") from None

ENDPOINT_MODE = pbconfig.is_endpoint(TARGET)
MODEL = pbconfig.model_of(TARGET)
REGIMES = pbconfig.regimes(config)
# Workload shapes (multi-turn, prefix pools, KV overflow, trace replay): one regime each, with per-request predictions.
SHAPES = pbconfig.shapes(config)
KV_SHAPES = [n for n, s in SHAPES.items() if KINDS[s.kind].kv_capacity(s)]
MAIN_SHAPES = [n for n in SHAPES if n not in KV_SHAPES]
KV_BLOCKS = pbconfig.kv_capacity(config)
QUESTIONS = pbconfig.questions(config)
CONCURRENCY = sorted(config["benchmark"]["concurrency"])
# A CPU target's dtype follows this machine's CPU flags (`auto`: bfloat16 only where the CPU computes it natively).
DTYPE_CHOICE = pbconfig.dtype_choice(TARGET_NAME, TARGET)
SERVER_SPEC = None if ENDPOINT_MODE else pbconfig.server_spec(config, TARGET, DTYPE_CHOICE)
# The kv_overflow shapes run in lifetimes of their own, on the same server with a deliberately small KV cache.
KV_SPEC = pbconfig.kv_server_spec(SERVER_SPEC, KV_BLOCKS, TARGET["block_size"]) if KV_BLOCKS and SERVER_SPEC else None
# What stands for each cache setting: the server script prefixbench runs, or the existing endpoint it measures.
SERVER_FILE = "results/servers/endpoint_{mode}.json" if ENDPOINT_MODE else "results/servers/serve_slm_{mode}.sh"
BENCH = asdict(pbconfig.bench_settings(config))
# With a time budget, a calibration start times the server and plans how many requests each point sends.
TIME_BUDGET_S = config["benchmark"].get("time_budget_s")
PLAN_FILE = "results/calibration.json" if TIME_BUDGET_S and not ENDPOINT_MODE else None
RATES = sorted(config["benchmark"]["request_rates"])
# Server lifetimes per cache setting, run interleaved in a counterbalanced order (prefixbench.design).
INSTANCES = config["benchmark"]["instances"]
SLOTS = slot_order(INSTANCES, config["seed"])
# Every measurement point of one server lifetime: (regime, reuse %, concurrency, request rate);
# closed-loop points have rate 0, open-loop points concurrency 0.
POINTS = [
    (name, reuse, conc, rate)
    for name, regime in REGIMES.items()
    for reuse in regime.reuse_pcts
    for conc, rate in [(c, 0.0) for c in CONCURRENCY] + [(0, r) for r in RATES]
] + [
    # A shape is one level (reuse 100: every request follows the shape's own sharing) at its kind's loads.
    (name, 100, conc, rate)
    for name in MAIN_SHAPES
    for conc, rate in KINDS[SHAPES[name].kind].loads(SHAPES[name], CONCURRENCY, RATES)
]
# The small-KV lifetimes (kv_overflow: each working set one at a time, so the cache model can be exact).
KV_POINTS = [
    (name, 100, conc, rate)
    for name in KV_SHAPES
    for conc, rate in KINDS[SHAPES[name].kind].loads(SHAPES[name], CONCURRENCY, RATES)
]


def prompt_file(name):
    """Where a regime's or a shape's prompts are written."""
    return f"results/prompts/shapes/{name}.jsonl" if name in SHAPES else f"results/prompts/{name}.jsonl"


MAIN_PROMPTS = [prompt_file(n) for n in list(REGIMES) + MAIN_SHAPES]
KV_PROMPTS = [prompt_file(n) for n in KV_SHAPES]
REPORT_TEMPLATE = config.get("report_template") or os.path.join(
    SCRIPTS_DIR, "prefixbench", "templates", "prefix_caching_results.md.j2"
)
CHART_NAMES = (
    ["ttft_vs_concurrency", "throughput_vs_p95", "speedup", "ideal"]
    + (["open_loop"] if RATES else [])
    + (["shapes"] if SHAPES else [])
)
CHARTS = [f"results/charts/{n}.{ext}" for n in CHART_NAMES for ext in ("png", "svg")]


def chart_output(path):
    """A chart output; the PNGs are filed in Snakemake's report (`--report`)."""
    name = os.path.basename(path).split(".")[0]
    if not path.endswith(".png"):
        return path
    return report(path, caption=f"../report/charts/{name}.rst", category="Charts", labels={"chart": name.replace("_", " ")})


CHART_OUTPUTS = [chart_output(f) for f in CHARTS]
REGIME_TABLES = [f"results/tables/{r}/{m}.csv" for r in REGIMES for m in MODES]


def point_files(suffix, points=None, lifetime="i{instance}"):
    """Per-point outputs of one server lifetime (the {mode} and {instance} wildcards are kept)."""
    return [
        f"results/raw/{{mode}}/{lifetime}/{r}/reuse{u}_{f'rate{q:g}' if q else f'c{c}'}.{suffix}"
        for r, u, c, q in (POINTS if points is None else points)
    ]


# The small-KV lifetimes run after the main ones, off and on in the order the seed's first pair used.
KV_ORDER = kv_order(SLOTS) if KV_SHAPES else []
SERVER_INFOS = server_infos(SLOTS, KV_ORDER)


def all_point_files(suffix):
    main = [f.format(mode=m, instance=i) for m, i in SLOTS for f in point_files(suffix)]
    return main + [f.format(mode=m) for m in KV_ORDER for f in point_files(suffix, KV_POINTS, "kv")]


def after_previous_kv_lifetime(wildcards):
    """The lifetime before this small-KV one: the last main lifetime, or the other setting's small-KV one."""
    at = KV_ORDER.index(wildcards.mode)
    return [SERVER_INFOS[len(SLOTS) - 1 + at]]


def after_previous_lifetime(wildcards):
    """The server lifetime that runs just before this one: the interleaved order is a chain in the DAG."""
    prev = previous_slot(wildcards.mode, int(wildcards.instance), INSTANCES, config["seed"])
    return [f"results/raw/{prev[0]}/i{prev[1]}/server.json"] if prev else []


def model_inputs():
    """Model folders the pipeline builds itself; hub ids and user paths are not Snakemake files."""
    if MODEL["source"] in ("smollm2_package", "dummy"):
        return [MODEL["path"]]
    return []


def tokenizer_inputs():
    source = pbconfig.tokenizer_source(TARGET)
    return [source] if source in model_inputs() else []


def package_files(script):
    """The package modules the rule's edge script runs, derived from its imports: editing one reruns the rule."""
    return pbconfig.script_closure(os.path.join(SCRIPTS_DIR, f"{script}.py"))
