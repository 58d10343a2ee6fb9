# The run's configuration as globals: validated, checked, and turned into the settings every rule reads; where each
# regime's and shape's prompts are written; the charts it draws (registered in prefixbench.chart_specs). The
# experiment design is in design.smk, the input functions in inputs.smk.
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
from prefixbench import interrupt  # noqa: E402
from prefixbench.chart_specs import BY_NAME as CHART_SPECS, chart_files, chart_names  # noqa: E402
from prefixbench.shapes import KINDS  # noqa: E402

validate(config, "../config/schema/config.schema.yaml")


onstart:
    signal.signal(signal.SIGTERM, interrupt.stop_now)  # stop at once, as Ctrl-C does


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
# Files the shapes read besides the tokenizer (a trace), declared as inputs where they are read.
SHAPE_DATA = {n: KINDS[s.kind].data_files(s) for n, s in SHAPES.items()}
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
# Several replicas behind vLLM's router (targets.*.replicas >= 2): one lifetime starts them all from the same script,
# each with its own cores or GPU (prefixbench.replicas), and a router per pass. The GPUs a lifetime holds are its
# job's `gpu` resource (SLURM: --gpus, on one node); the calibration start and the small-KV lifetimes stay one server.
try:
    REPLICA_SETTINGS = pbconfig.replica_settings(config, TARGET)
except pbconfig.ConfigError as exc:
    raise WorkflowError(f"Invalid configuration: {exc}") from None
LIFETIME_GPUS = REPLICA_SETTINGS.gpus or 1
# With a time budget, a calibration start times the server and plans how many requests each point sends.
TIME_BUDGET_S = config["benchmark"].get("time_budget_s")
PLAN_FILE = "results/calibration.json" if TIME_BUDGET_S and not ENDPOINT_MODE else None
RATES = sorted(config["benchmark"]["request_rates"])


def prompt_file(name):
    """Where a regime's or a shape's prompts are written."""
    return f"results/prompts/shapes/{name}.jsonl" if name in SHAPES else f"results/prompts/{name}.jsonl"


MAIN_PROMPTS = [prompt_file(n) for n in list(REGIMES) + MAIN_SHAPES]
KV_PROMPTS = [prompt_file(n) for n in KV_SHAPES]
REPORT_TEMPLATE = config.get("report_template") or os.path.join(
    SCRIPTS_DIR, "prefixbench", "templates", "prefix_caching_results.md.j2"
)
# prefixbench.chart_specs registers them; a chart of one shape kind (kv_capacity, trace_capacity) only where the run has it
CHART_NAMES = chart_names(
    rates=bool(RATES),
    shapes={s.kind for s in SHAPES.values()},
    router=not ENDPOINT_MODE and REPLICA_SETTINGS.replicated,
)
CHARTS = chart_files(CHART_NAMES)


def chart_output(path):
    """A chart output; the PNGs are filed in Snakemake's report (`--report`)."""
    name = os.path.basename(path).split(".")[0]
    if not path.endswith(".png"):
        return path
    return report(path, caption=f"../{CHART_SPECS[name].caption}", category="Charts", labels={"chart": name.replace("_", " ")})


CHART_OUTPUTS = [chart_output(f) for f in CHARTS]
REGIME_TABLES = [f"results/tables/{r}/{m}.csv" for r in REGIMES for m in MODES]
