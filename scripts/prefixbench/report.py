"""Render prefix_caching_results.md from a run's files: read them, compute the findings, fill the Jinja template.

Every figure and every result sentence comes from the data (the findings package); nothing here states a result.
Two typed records cross the seams: `ReportInputs`, what the Snakemake edge read from the rule (paths and config
values), and `ReportContext`, everything the template sees; `build_context` turns one into the other and
`render` fills the template with it.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from . import OFF, ON
from .aggregate import SEED_COLUMNS, closed_loop, single_prefix
from .chart_specs import BY_NAME as CHARTS
from .chart_specs import ChartSpec
from .contrasts import paired_effects, paired_section
from .endpoint import cache_off_forced
from .engine_view import engine_rows, engine_table, engine_words
from .findings import (
    KIT,
    Finding,
    Verdicts,
    aa_finding,
    aa_table,
    cold_warm_table,
    consulting_bullets,
    cross_checks,
    design_note,
    goodput_finding,
    hit_rate_model,
    ideal_finding,
    memory_finding,
    ms_table,
    prefix_length_finding,
    read_contrasts,
    reuse_finding,
    run_line,
    throughput_finding,
    ttft_finding,
    verdicts,
)
from .findings.replicas import ReplicaSection, replicas_section
from .formatting import fmt_ci, fmt_s, fmt_x
from .ideal import cold_samples, load_shape
from .plan import plan_summary
from .replicas_analysis import read_table
from .shapes import SINGLE_PREFIX
from .shapes.findings import shape_section
from .shapes.results import read_shape_table
from .shapes.trace import read_trace_curves

# What names one measured point: summary.csv has a row per point and cache setting.
POINT = ["regime", "reuse_pct", "concurrency", "request_rate"]

# The summary columns of the report's second table, beyond the seed's (`summary.csv` has them all).
EXTRA_COLUMNS = [
    "mode",
    "regime",
    "reuse_pct",
    "concurrency",
    "requests_ok",
    "requests_failed",
    "window_requests",
    "p50_ttft_s",
    "p95_ttft_s",
    "p99_e2e_s",
    "mean_tpot_s",
    "mean_itl_s",
    "measured_hit_rate",
    "expected_hit_rate",
    "peak_server_rss_gib",
    "peak_kv_cache_usage",
]


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads, named at the edge: the run's recorded files and the config values it states."""

    summary_csv: Path
    speedup_csv: Path
    info_paths: Sequence[Path]  # each server lifetime's server.json, in the order they ran
    script_paths: Sequence[Path]  # the server scripts (or endpoint files) of the two settings
    prompt_paths: Sequence[Path]
    model: dict
    target: str
    max_tokens: int
    block_size: int
    slo: dict | None = None
    shape_csv: Path | None = None
    shape_points_csv: Path | None = None  # aggregation's prediction check per shape point
    trace_csv: Path | None = None  # aggregation's capacity curve of each replayed trace
    shapes: dict[str, dict] = field(default_factory=dict)
    calibration_json: Path | None = None
    contrasts_csv: Path | None = None  # the contrasts rule's table: every contrast judged by the claim rule
    # Behind a router (issue 23), aggregation's replica tables (prefixbench.replicas_analysis): per policy and point,
    # the policies' contrasts, the simulator beside the measurement, its curve on the trace; empty files otherwise.
    replica_points_csv: Path | None = None
    replica_contrasts_csv: Path | None = None
    routing_sim_csv: Path | None = None
    routing_curve_csv: Path | None = None
    offload_md: Path | None = None  # issue 24: the second KV tier's section, rendered by its own rule (findings.offload)


@dataclass(frozen=True)
class ControlSection:
    """The A/A section: what the controls are and showed, and one row per regime (and the pooled one)."""

    answer: str
    rows: list[dict]


@dataclass(frozen=True)
class EngineSection:
    """Inside the engine: vLLM's histograms as a table and the sentences they support (empty: not recorded)."""

    table: str
    words: list[str]


@dataclass(frozen=True)
class ReportContext:
    """Everything the template sees: facts of the run, tables in markdown, and the findings (each an answer with
    its details). The template arranges these and computes nothing."""

    # The first screen: the run in one line, and the verdict table (from contrasts.csv)
    run_line: str
    verdicts: Verdicts
    # What was measured, and on what
    info: dict  # the cache-on lifetime's server.json (the first lifetime's where none was on)
    lifetimes: list[dict]
    order: str
    target: str
    model: dict
    dummy: bool
    max_tokens: int
    block_size: int
    strategy: list[dict]
    scripts: dict[str, str]
    endpoints: dict[str, dict]
    forced_off: bool  # the cache-off setting was forced misses (a unique cache_salt each) on the cache-on deployment
    not_measured: list[str]
    budget: str  # what the time budget did to the sweep ("" without a plan)
    n_points: int
    n_requests: int
    n_failed: int
    # Tables and how they were measured
    seed_table: str
    extra_table: str
    design: str
    paired: dict
    checks: Finding
    cold_warm: str
    aa: ControlSection
    engine: EngineSection
    shape_section: dict[str, Any]  # the shapes' section: shapes.findings.shape_section, each kind's own keys
    replicas: ReplicaSection  # Across replicas: the routing policies (findings.replicas), or why it was not run
    offload_section: str  # the second KV tier's section as its rule wrote it ("" without a tier)
    # The answers
    ttft: Finding
    throughput: Finding
    memory: Finding
    shapes: Finding
    length: Finding
    goodput: Finding | None
    ideal: Finding
    hitrate: Finding
    bullets: list[str]
    # The registered charts by name: the Charts section shows those of section "charts", the others sit beside
    # their findings
    charts: dict[str, ChartSpec]

    def variables(self) -> dict[str, Any]:
        """The template's variables: the fields as they are (not copied into dicts, as dataclasses.asdict would)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def prompt_strategy(prompt_paths: Sequence[Path]) -> list[dict]:
    out = []
    for path in prompt_paths:
        recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if recs[0].get("workload") not in SINGLE_PREFIX:
            continue  # a workload shape is described in its own section
        shared = (
            next(r for r in recs if r["prefix_group"] == "shared")
            if any(r["prefix_group"] == "shared" for r in recs)
            else recs[0]
        )
        by_reuse: dict[int, list[dict]] = {}
        for r in recs:
            by_reuse.setdefault(r["reuse_pct"], []).append(r)
        out.append(
            {
                "regime": recs[0]["regime"],
                "workload": recs[0]["workload"],
                "prefix_len_tokens": recs[0]["prefix_len_tokens"],
                "prompt_tokens_min": min(r["prompt_len_tokens"] for r in recs),
                "prompt_tokens_max": max(r["prompt_len_tokens"] for r in recs),
                "reuse": {
                    k: (sum(r["prefix_group"] == "shared" for r in v), len(v)) for k, v in sorted(by_reuse.items(), reverse=True)
                },
                "excerpt": shared["prompt"].split("\nQ: ")[0][:240].replace("\n", " ") + " …",
                "example_question": shared["question"],
            }
        )
    return out


def lifetime_order(lifetimes: Sequence[dict]) -> str:
    """The server lifetimes as they ran, e.g. `off #1, on #1, on #2, off #2`."""
    short = {OFF: "off", ON: "on"}
    return ", ".join(f"{short.get(i['mode'], i['mode'])} {i.get('lifetime', '#' + str(i.get('instance', 1)))}" for i in lifetimes)


def not_measured(endpoints: dict[str, dict]) -> list[str]:
    """What the endpoints kept the run from measuring, each item once, naming the settings it applies to."""
    where: dict[str, list[str]] = {}
    for mode, info in endpoints.items():
        for item in info.get("not_measured", []):
            where.setdefault(item, []).append(mode)
    return [item if len(modes) == len(endpoints) else f"{item} ({', '.join(modes)} only)" for item, modes in where.items()]


def read_tables(summary_csv: Path, speedup_csv: Path) -> tuple[pl.DataFrame, ...]:
    """The recorded tables as the findings read them: every summary row, every off/on row (a paired point judged by
    its paired contrast), and the one-shared-prefix sweep's rows (all, and closed loop) of each."""
    everything = pl.read_csv(summary_csv)
    if "request_rate" not in everything.columns:
        everything = everything.with_columns(pl.lit(0.0).alias("request_rate"))
    sp_all = paired_effects(pl.read_csv(speedup_csv))
    # The seed's questions are about the one-shared-prefix concurrency sweep; the shapes have their own section.
    single, sp = single_prefix(everything, sp_all)
    return everything, sp_all, single, closed_loop(single), closed_loop(sp)


def guarded(analysis: Callable[..., Any], *args: Any, fallback: Callable[[str], Any] | None = None) -> Any:
    """One analysis, run so that its failure costs its own answer and not the report: the error goes to stderr
    (the job's log) and the answer says it was not computed. The tests render every finding without it failing."""
    try:
        return analysis(*args)
    except Exception as exc:  # noqa: BLE001 - any limit of one analysis; the traceback goes to the log
        traceback.print_exc(file=sys.stderr)
        words = f"Not computed: this analysis failed on this run's data ({type(exc).__name__}: {exc}); the rest stands."
        return fallback(words) if fallback else Finding(words, [])


def read_plan(calibration_json: Path | None) -> dict | None:
    """The time budget's recorded plan (calibration.json), or None where the run has none."""
    if calibration_json is not None and Path(calibration_json).is_file():
        plan = json.loads(Path(calibration_json).read_text())
        if "rates" in plan and "estimated_s" in plan:
            return dict(plan)
    return None


def budget_words(calibration_json: Path | None, lifetimes: Sequence[dict]) -> str:
    """What the time budget did: computed again from the recorded plan (so a corrected sentence reaches a re-rendered
    run), else the sentence the measuring step recorded, else nothing."""
    plan = read_plan(calibration_json)
    if plan is not None:
        return plan_summary(plan)
    return next((str(i["plan_summary"]) for i in lifetimes if i.get("plan_summary")), "")


def configured_regimes(everything: pl.DataFrame, plan: dict | None) -> list[str]:
    """Every regime of the run in the config's order: the plan lists each configured point, the ones the time budget
    dropped too (a regime dropped whole has no summary row); regimes measured but absent from the plan follow."""
    planned = [str(p["regime"]) for p in (plan or {}).get("points") or []]
    return list(dict.fromkeys([*planned, *everything["regime"].unique(maintain_order=True).to_list()]))


def build_context(inputs: ReportInputs) -> ReportContext:
    """Read the run's files and compute every finding the template shows; an analysis that fails costs only its own
    answer (guarded)."""
    everything, sp_all, single, summary, sp = read_tables(inputs.summary_csv, inputs.speedup_csv)
    block_size, shapes = inputs.block_size, inputs.shapes
    shape_req = read_shape_table(inputs.shape_csv)
    check = read_shape_table(inputs.shape_points_csv)
    engine = engine_rows(summary)
    aa_rows = aa_table(sp)
    lifetimes = [json.loads(Path(p).read_text()) for p in inputs.info_paths]  # in the order they ran
    endpoints = {i["mode"]: i for i in lifetimes if not i.get("started_by_prefixbench", True)}
    model = inputs.model
    info = next((i for i in lifetimes if i["mode"] == ON), lifetimes[0])
    n_requests = int(everything["requests_sent"].sum()) + (
        int(sp_all["salted_requests"].fill_null(0).sum()) if "salted_requests" in sp_all.columns else 0
    )
    n_failed = int(everything["requests_failed"].sum()) + (
        int(sp_all["salted_failed"].fill_null(0).sum()) if "salted_failed" in sp_all.columns else 0
    )
    shape_words = shape_section(shape_req, check, sp_all, shapes, block_size, KIT, read_trace_curves(inputs.trace_csv))
    strategy = prompt_strategy(inputs.prompt_paths)
    # The prefix length of every regime: measured ones from the summary, one the budget dropped from its prompts.
    prefix_len = {s["regime"]: int(s["prefix_len_tokens"]) for s in strategy if s["prefix_len_tokens"] is not None}
    prefix_len |= {r: int(n) for r, n in everything.select("regime", "prefix_len_tokens").unique().iter_rows() if n is not None}
    plan = read_plan(inputs.calibration_json)
    forced = cache_off_forced(lifetimes)
    return ReportContext(
        run_line=run_line(
            model,
            info,
            endpoints,
            inputs.target,
            (everything.select(POINT).unique().height, n_requests, n_failed),
            len(lifetimes),
            plan,
        ),
        verdicts=guarded(
            verdicts,
            read_contrasts(inputs.contrasts_csv),
            configured_regimes(everything, plan),
            prefix_len,
            shapes,
            shape_words.get("overflow", ""),
            shape_words.get("trace", ""),
            plan,
            forced,
            fallback=lambda w: Verdicts([], "", w),
        ),
        info=info,
        lifetimes=lifetimes,
        order=lifetime_order(lifetimes),
        target=inputs.target,
        model=model,
        dummy=model.get("source") == "dummy",
        max_tokens=inputs.max_tokens,
        block_size=block_size,
        strategy=strategy,
        scripts={Path(p).name: Path(p).read_text() for p in inputs.script_paths},
        endpoints=endpoints,
        forced_off=forced,
        not_measured=not_measured(endpoints),
        budget=budget_words(inputs.calibration_json, lifetimes),
        n_points=everything.select(POINT).unique().height,
        # A paired point's summary row counts its hit arm; its forced misses are counted in the off/on table.
        n_requests=n_requests,
        n_failed=n_failed,
        seed_table=ms_table(everything, SEED_COLUMNS),
        extra_table=ms_table(everything, EXTRA_COLUMNS),
        design=design_note(single),
        paired=guarded(paired_section, sp, fallback=lambda w: {"table": "", "words": w}),
        checks=guarded(cross_checks, single, block_size),
        cold_warm=cold_warm_table(summary),
        aa=ControlSection(answer=aa_finding(sp, aa_rows).answer, rows=aa_rows),
        engine=EngineSection(table=engine_table(engine), words=engine_words(engine)),
        shape_section=shape_words,
        offload_section=Path(inputs.offload_md).read_text().strip() if inputs.offload_md else "",
        replicas=guarded(
            replicas_section,
            read_table(inputs.replica_points_csv),
            read_table(inputs.replica_contrasts_csv),
            read_table(inputs.routing_sim_csv),
            read_table(inputs.routing_curve_csv),
            info.get("router") or {},
            fallback=lambda w: ReplicaSection(False, w),
        ),
        ttft=guarded(ttft_finding, sp),
        throughput=guarded(throughput_finding, summary, sp),
        memory=guarded(memory_finding, summary, sp),
        shapes=guarded(reuse_finding, sp.join(summary.select("regime", "workload").unique(), on="regime", how="left")),
        length=guarded(prefix_length_finding, sp),
        goodput=guarded(goodput_finding, single, inputs.slo),
        ideal=guarded(
            ideal_finding, summary, load_shape(model.get("path", "")), block_size, cold_samples(inputs.calibration_json)
        ),
        hitrate=guarded(hit_rate_model, summary),
        bullets=guarded(consulting_bullets, summary, sp, block_size, forced, fallback=lambda w: [w]),
        charts=dict(CHARTS),
    )


def render(inputs: ReportInputs, template: Path, out: Path) -> None:
    """Fill the template with the run's context and write the report."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(fmt_ci=fmt_ci, fmt_s=fmt_s, fmt_x=fmt_x)
    out.write_text(env.get_template(template.name).render(build_context(inputs).variables()))
