"""The report's section on a second KV tier in CPU memory (issue 24), from prefixbench.offload's tables: every
sentence generated from the run's data and said only where its claim holds; a run that did not measure the tier
says why in one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..formatting import fmt_pct, markdown_table
from .units import fmt_ms

TITLE = "### A second KV tier in CPU memory"
GB = 1e9


@dataclass(frozen=True)
class OffloadRun:
    """What the section reads: the analysis' tables (prefixbench.offload), the tier's configuration and the two
    lifetimes' server.json."""

    requests: pl.DataFrame
    points: pl.DataFrame
    ttft: pl.DataFrame
    crossover: pl.DataFrame
    trace: pl.DataFrame
    cpu_gib: float
    backend: str
    block_size: int
    lifetimes: Sequence[Mapping[str, Any]] = field(default_factory=list)


def not_run_section(reason: str) -> str:
    """The section of a run that did not measure the tier: its title and why."""
    return f"{TITLE}\n\n{reason[0].upper()}{reason[1:]}.\n"


def _first(df: pl.DataFrame, col: str) -> Any:
    vals = df[col].drop_nulls() if col in df.columns else pl.Series([])
    return vals[0] if len(vals) else None


def setup_words(run: OffloadRun) -> str:
    """What ran: the GPU pool, the tier's size in blocks (where the model's KV size per token was known)."""
    pts = run.points
    kv, cpu = _first(pts, "kv_blocks"), _first(pts.filter(pl.col("tier_on")), "cpu_blocks") if pts.height else None
    bpb = _first(pts, "model_bytes_per_block")
    gpu = (
        f"a GPU pool of {kv:,} blocks of {run.block_size} tokens ({(kv - 1) * run.block_size:,} usable tokens)"
        if kv
        else "the small GPU pool"
    )
    tier = f"a {run.cpu_gib:.3g} GiB CPU tier (`--kv-offloading-size {run.cpu_gib:g} --kv-offloading-backend {run.backend}`"
    tier += (
        f": {cpu:,} blocks of {bpb / 2**20:.3g} MiB)"
        if cpu and bpb
        else "; its size in blocks unknown: the model's KV bytes per token were not found)"
    )
    return (
        f"The KV-overflow sweep ran again on {gpu}, once without a CPU tier and once with {tier}, in two lifetimes of "
        "the cache-on server back to back. vLLM's tier is inclusive: it stores every computed prompt block, not the "
        "blocks the GPU evicts, so the pair holds about as many blocks as the larger of the two, not their sum "
        "(docs/offload.md)."
    )


def hit_table(run: OffloadRun) -> str:
    """Per working set and prompt length: hit rate without the tier and with it, measured (GPU + CPU) and predicted
    (the model's mean and 95% range over draws), and the requests predicted exactly."""
    pts = run.points
    if not pts.height:
        return ""
    rows = []
    keys = pts.select("working_set", "doc_tokens").unique(maintain_order=True).sort("doc_tokens", "working_set")
    for ws, doc in keys.iter_rows():
        cell: dict[str, str] = {"prompt (doc tokens)": f"{doc:,}" if doc else "", "working set / GPU": f"{ws:g}x"}
        for tier_on, label in ((False, "without tier"), (True, "with tier")):
            sel = pts.filter((pl.col("working_set") == ws) & (pl.col("doc_tokens") == doc) & (pl.col("tier_on") == tier_on))
            if not sel.height:
                cell[f"{label}: measured"] = cell[f"{label}: predicted"] = "not run"
                continue
            prompt = float(sel["prompt_tokens"].sum())
            cached = float(sel["measured_cached_tokens"].sum())
            measured = fmt_pct(cached / prompt if prompt else None)
            if tier_on and sel["counter_cpu_tokens"].is_not_null().all() and prompt:
                measured += f" ({fmt_pct(float(sel['counter_cpu_tokens'].sum()) / prompt)} CPU)"
            p, lo, hi = (_mean(sel, c) for c in ("predicted_hit_rate", "predicted_lo_hit_rate", "predicted_hi_hit_rate"))
            band = "" if lo is None or fmt_pct(lo) == fmt_pct(hi) else f" ({fmt_pct(lo)}–{fmt_pct(hi)})"
            cell[f"{label}: measured"] = measured
            cell[f"{label}: predicted"] = ("not predicted" if p is None else fmt_pct(p) + band) + (
                f", {int(sel['exact'].sum())}/{int(sel['predicted_requests'].sum())} exact" if p is not None else ""
            )
        rows.append(cell)
    return markdown_table(pl.DataFrame(rows), list(rows[0]))


def _mean(df: pl.DataFrame, col: str) -> float | None:
    vals = df[col].drop_nulls() if col in df.columns else pl.Series([], dtype=pl.Float64)
    return float(vals.mean()) if len(vals) else None  # type: ignore[arg-type]


def cpu_capacity_ws(points: pl.DataFrame) -> float | None:
    """The CPU tier's capacity in units of the GPU pool's usable blocks (the sweep's working-set unit), or None."""
    cap = points.filter(pl.col("tier_on") & pl.col("cpu_blocks").is_not_null() & pl.col("kv_blocks").is_not_null())
    return float(cap["cpu_blocks"][0]) / (float(cap["kv_blocks"][0]) - 1) if cap.height else None


def cliff_words(run: OffloadRun) -> str:
    """The hit rate without and with the tier at the first working set past the GPU pool, and at the largest past the
    CPU tier's capacity: numbers only where both settings measured that working set (over every prompt length)."""
    pts = run.points
    if not pts.height:
        return ""
    by = pts.group_by("working_set", "tier_on").agg(
        (pl.col("measured_cached_tokens").sum() / pl.col("prompt_tokens").sum()).alias("rate"),
        (pl.col("counter_cpu_tokens").sum() / pl.col("prompt_tokens").sum()).alias("cpu_rate"),
        pl.col("counter_cpu_tokens").is_null().any().alias("cpu_unknown"),
    )
    pairs = by.pivot(on="tier_on", index="working_set", values=["rate", "cpu_rate", "cpu_unknown"]).sort("working_set")
    if not {"rate_false", "rate_true"} <= set(pairs.columns):
        return ""
    pairs = pairs.filter(pl.col("rate_false").is_not_null() & pl.col("rate_true").is_not_null())
    cap = cpu_capacity_ws(pts)

    def said(r: dict) -> str:
        cpu = "" if r.get("cpu_unknown_true") in (None, True) else f", {fmt_pct(r['cpu_rate_true'])} from the CPU tier"
        return f"{fmt_pct(r['rate_false'])} of prompt tokens hit without the tier and {fmt_pct(r['rate_true'])} with it{cpu}"

    out = []
    past_gpu = pairs.filter((pl.col("working_set") > 1) & ((pl.col("working_set") <= cap) if cap else pl.lit(True)))
    if past_gpu.height:
        r = past_gpu.row(0, named=True)
        out.append(f"Past the GPU pool, at a working set {r['working_set']:g}x its size, {said(r)}.")
    past_cpu = pairs.filter(pl.col("working_set") > cap) if cap else pairs.clear()
    if past_cpu.height:
        r = past_cpu.row(-1, named=True)
        out.append(f"Past the CPU tier's capacity ({cap:.3g}x the GPU pool), at {r['working_set']:g}x, {said(r)}.")
    return " ".join(out)


def check_words(run: OffloadRun) -> str:
    """The per-request and per-tier checks: exact predictions, the order-decided ones within their range, and the
    counters adding up to cached_tokens."""
    req = run.requests.filter(pl.col("status") == "ok") if run.requests.height else run.requests
    if not req.height or "exact" not in req.columns:
        return ""
    judged = req.filter(pl.col("exact").is_not_null())
    out = []
    decided = judged.filter(pl.col("order_decides").fill_null(False))
    fixed = judged.filter(~pl.col("order_decides").fill_null(False))
    if fixed.height:
        out.append(
            f"The two-tier model predicted {fixed.height:,} requests' GPU and CPU hits without depending on the order vLLM "
            f"makes stored blocks evictable in; {int(fixed['exact'].sum()):,} of them matched exactly"
            + (" (the measured per-tier split included)" if fixed["measured_gpu_tokens"].is_not_null().any() else "")
            + "."
        )
    if decided.height:
        out.append(
            f"For {decided.height:,} requests that order decided (its draws disagreed: a request partly evicted from the "
            f"CPU tier), {int(decided['within_range'].fill_null(False).sum()):,} fell within the draws' range."
        )
    unpredicted = req.filter(pl.col("unpredicted").is_not_null()) if "unpredicted" in req.columns else req.clear()
    if unpredicted.height:
        out.append(f"{unpredicted.height:,} requests could not be placed by the model ({unpredicted['unpredicted'][0]}).")
    pts = run.points
    counted = pts.filter(pl.col("counters_match").is_not_null()) if pts.height else pts
    if counted.height:
        out.append(
            f"In {int(counted['counters_match'].sum())} of {counted.height} passes the requests' cached tokens added up "
            "to the GPU plus CPU hit counters."
        )
    own = req.filter(pl.col("counters_match").is_not_null())
    if own.height:
        out.append(f"Request by request, {int(own['counters_match'].sum()):,} of {own.height:,} did.")
    return " ".join(out)


def ttft_table_md(run: OffloadRun) -> str:
    """TTFT per prompt length and hit class, both settings, mean with its 95% interval."""
    t = run.ttft
    if not t.height:
        return ""
    rows = []
    for r in t.iter_rows(named=True):
        lo, hi = fmt_ms(r["ttft_ci_lo_s"]), fmt_ms(r["ttft_ci_hi_s"])
        ci = (lo if lo == hi else f"{lo}–{hi}") if r["ttft_ci_lo_s"] is not None else "no interval (fewer than 4 requests)"
        rows.append(
            {
                "tier": r["tier"],
                "prompt (doc tokens)": f"{r['doc_tokens']:,}" if r["doc_tokens"] else "",
                "served as": r["hit_class"],
                "requests": str(r["requests"]),
                "cached share": fmt_pct(r["cached_share"]),
                "mean TTFT": fmt_ms(r["mean_ttft_s"]),
                "95% CI": ci,
            }
        )
    return markdown_table(pl.DataFrame(rows), list(rows[0]))


def crossover_words(run: OffloadRun) -> str:
    """Per prompt length, whether a CPU hit beat recomputing the prompt (a miss in the same lifetime): said only where
    the interval of miss/hit TTFT excludes 1; and between which lengths the answer changed."""
    c = run.crossover.filter(pl.col("hit_class") == "CPU hit") if run.crossover.height else run.crossover
    if not c.height:
        return ""
    parts, verdicts = [], []
    for r in c.sort("doc_tokens").iter_rows(named=True):
        lo, hi = r["speedup_ci_lo"], r["speedup_ci_hi"]
        if lo is None:
            continue
        what = "faster" if lo > 1 else "slower" if hi < 1 else None
        verdicts.append((r["doc_tokens"], what))
        if what is None:
            parts.append(
                f"at {r['doc_tokens']:,}-token documents no difference outside {lo:.2f}–{hi:.2f}× "
                f"({fmt_ms(r['hit_ttft_s'])} against {fmt_ms(r['miss_ttft_s'])})"
            )
        else:
            parts.append(
                f"at {r['doc_tokens']:,}-token documents a CPU hit was {what} than recomputing: {fmt_ms(r['hit_ttft_s'])} "
                f"against {fmt_ms(r['miss_ttft_s'])} for a miss ({r['speedup']:.2f}×, 95% CI {lo:.2f}–{hi:.2f})"
            )
    if not parts:
        return ""
    text = "With the tier, " + "; ".join(parts) + "."
    changes = [(a[0], b[0]) for a, b in zip(verdicts, verdicts[1:]) if a[1] == "slower" and b[1] == "faster"]
    if changes:
        text += f" The crossover lies between {changes[0][0]:,} and {changes[0][1]:,} tokens."
    return text


def link_gb_per_s(lifetimes: Sequence[Mapping[str, Any]]) -> tuple[float, str] | None:
    """The host link's nominal bandwidth, where a tier lifetime recorded its GPU's PCIe link."""
    from ..offload import nominal_link_gb_per_s

    for info in lifetimes:
        hw = info.get("hardware") or {}
        if (gb := nominal_link_gb_per_s(hw)) is not None:
            pcie = hw["gpu_pcie"]
            return gb, f"PCIe Gen{pcie['gen']} x{pcie['width']}"
    return None


def bandwidth_words(run: OffloadRun) -> str:
    """What the tier's loads achieved (bytes over transfer time, from vLLM's counters), bytes per loaded block against
    the model's, and the host link's nominal limit only where the machine said what its link is."""
    pts = run.points.filter(pl.col("tier_on")) if run.points.height else run.points
    if not pts.height or pts["load_bytes"].drop_nulls().sum() == 0 or pts["load_time_s"].drop_nulls().sum() == 0:
        return ""
    b, t = float(pts["load_bytes"].drop_nulls().sum()), float(pts["load_time_s"].drop_nulls().sum())
    text = f"The tier loaded {b / GB:.3g} GB back into the GPU in {t:.3g} s of transfers: {b / t / GB:.3g} GB/s."
    cpu_tokens = float(pts["counter_cpu_tokens"].drop_nulls().sum())
    model = _first(pts, "model_bytes_per_block")
    if cpu_tokens and model:
        per = b / (cpu_tokens / run.block_size)
        text += (
            f" That is {per / 2**20:.3g} MiB per CPU-hit block, against {model / 2**20:.3g} MiB a block of this model's "
            "KV cache" + (" (loads beyond the counted hits)" if per > model * 1.01 else "") + "."
        )
    if link := link_gb_per_s(run.lifetimes):
        text += f" The GPU's host link is {link[1]}: {link[0]:.3g} GB/s per direction nominal (read from nvidia-smi)."
    return text


def fmt_gib(x: float) -> str:
    """A memory size in GiB: three significant digits below 100, whole GiB above (`8.5 GiB`, `1,536 GiB`)."""
    return f"{x:,.0f} GiB" if x >= 100 else f"{x:.3g} GiB"


def _tier_size(r: Mapping[str, Any], gib: bool) -> str:
    return fmt_gib(r["cpu_gib"]) if gib else f"{r['cpu_trace_blocks']:,} blocks"


def trace_words(run: OffloadRun) -> str:
    """How much CPU memory buys how much hit rate for the trace, from the model, per GPU pool."""
    t = run.trace
    if not t.height or t["hit_rate"].is_null().all():
        return ""
    gib = t["cpu_gib"].is_not_null().all() if "cpu_gib" in t.columns else False
    parts = []
    for (g,), grp in t.group_by(["gpu_trace_blocks"], maintain_order=True):
        pts = ", ".join(
            f"{_tier_size(r, gib)} {fmt_pct(r['hit_rate'])}" for r in grp.sort("cpu_trace_blocks").iter_rows(named=True)
        )
        size = f"{g:,} trace blocks" + (f" ({fmt_gib(grp['gpu_gib'][0])})" if gib else "")
        left = int(grp["left_out"].max() or 0)  # type: ignore[arg-type]
        out = f" ({left:,} requests larger than that pool left out)" if left else ""
        parts.append(f"with a GPU pool of {size}{out}, a CPU tier of {pts}")
    text = (
        "For the Mooncake trace (every request, one at a time, in its own 512-token blocks; the model, not a "
        "measurement), the hit rate by the CPU tier's size: " + "; ".join(parts) + "."
    )
    base = t.filter(pl.col("cpu_trace_blocks") == 0)
    small = t.filter((pl.col("cpu_trace_blocks") > 0) & (pl.col("cpu_trace_blocks") <= pl.col("gpu_trace_blocks")))
    if base.height and small.height:
        gain = small.join(base.select("gpu_trace_blocks", pl.col("hit_rate").alias("h0")), on="gpu_trace_blocks")
        most = float((gain["hit_rate"] - gain["h0"]).max())  # type: ignore[arg-type]
        if most < 0.01:
            text += (
                " A tier no larger than the GPU pool added less than one point of hit rate: it holds copies of what "
                "the GPU holds."
            )
    return text


def offload_section(run: OffloadRun) -> str:
    """The section: what ran, the hit table, where the cliff moved, the checks, TTFT per tier, crossover, bandwidth,
    and the trace's curve; each part only where the run has its data."""
    parts = [
        TITLE,
        setup_words(run),
        hit_table(run),
        cliff_words(run),
        check_words(run),
        ttft_table_md(run),
        crossover_words(run),
        bandwidth_words(run),
        trace_words(run),
    ]
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def offload_page(run: OffloadRun, *, target: str, model: Mapping[str, Any]) -> str:
    """The section as a page of its own (`snakemake offload_all` runs only the tier's lifetimes), with its charts."""
    info = run.lifetimes[0] if run.lifetimes else {}
    hw = info.get("hardware") or {}
    where = ", ".join(str(x) for x in (hw.get("gpu"), info.get("vllm_version") and f"vLLM {info['vllm_version']}") if x)
    head = f"# A second KV tier: {model.get('served_name', '')} on the {target} target" + (f" ({where})" if where else "")
    charts = "![hit rate](charts/offload_hit_rate.png)\n\n![TTFT](charts/offload_ttft.png)"
    return f"{head}\n\n{offload_section(run)}\n{charts}\n"
