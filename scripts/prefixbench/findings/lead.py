"""The report's first screen: the run in one line, and the verdict table a newcomer reads the answer from.

The table only arranges `results/contrasts.csv` (prefixbench.verdicts.contrast_rows, which judges every contrast by
the one claim rule in claims.py): this module decides nothing, it picks the contrasts that answer the SRE's
questions (what caching bought at the lowest and the highest load at the highest reuse, what leaving it on costs at
0% reuse, where the KV capacity cliff sits) and words each as a cell, verdict first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from ..plan import fmt_duration
from .units import fmt_ms_value

# contrasts.csv's numeric columns (the interface in CONTRASTS.md): typed on reading, as a column that is empty in
# every row (request_rate in a closed-loop run) would otherwise be read as text.
NUMBERS = {
    **dict.fromkeys(("reuse_pct", "concurrency", "n"), pl.Int64),
    **dict.fromkeys(("request_rate", "baseline", "treated", "ratio", "lo", "hi", "mde_pct"), pl.Float64),
}
# The flag-cost cell of a run whose cache off was forced misses on the cache-on deployment (never caching off).
FORCED_OFF = (
    "not measured: cache off was forced misses (a unique `cache_salt` per request) on the same cache-on deployment, "
    "so the flag's own cost is not in this run"
)
# A shape kind that sweeps the KV capacity: its points are the capacity cliff, not rows of their own.
CLIFF_KIND = "kv_overflow"


def fmt_value(x: float | None, unit: str) -> str:
    """A contrast's mean in its unit (contrasts.csv: ms for latency, tok/s for throughput)."""
    if x is None:
        return "n/a"
    # Three significant digits in every unit: a CPU's 0.5 → 3.0 tok/s read "1 tok/s → 3 tok/s" beside 5.99×.
    return f"{fmt_ms_value(x)} {unit}"


def read_contrasts(path: Any) -> pl.DataFrame | None:
    """contrasts.csv as written by the `contrasts` rule; None where the run has none (the table then says so)."""
    from pathlib import Path

    if path is None or not Path(path).is_file():
        return None
    df = pl.read_csv(path, schema_overrides=NUMBERS)
    for name in ("shape", "reason", "label"):
        if name in df.columns:
            df = df.with_columns(pl.col(name).cast(pl.Utf8).fill_null(""))
    return df


def load_of(row: Mapping[str, Any]) -> str:
    """c=16, or 4 req/s for an open-loop point; empty where the contrast pools loads."""
    if row.get("request_rate"):
        return f"{row['request_rate']:g} req/s"
    if row.get("concurrency") is not None:
        return f"c={row['concurrency']}"
    return ""


def cell(row: Mapping[str, Any] | None, with_load: bool = True) -> str:
    """One contrast in a table cell, its verdict first: `c=16: **2.21× faster** 212 → 96.0 ms (95% CI 1.90–2.56,
    MDE 21%)`. Every word comes from the row (its verdict and reason are contrast_rows'); a row with no measurement
    shows no ratio, only what was not measured and why."""
    if row is None:
        return "not run"
    load = f"{load_of(row)}: " if with_load and load_of(row) else ""
    verdict, reason = row.get("verdict") or "", (row.get("reason") or "").strip()
    ratio, lo, hi = row.get("ratio"), row.get("lo"), row.get("hi")
    if verdict == "not measured" or ratio is None:
        return f"{load}not measured" + (f" ({reason})" if reason else "")
    unit = row.get("unit") or "ms"
    base, treated = row.get("baseline"), row.get("treated")
    # The means, where both were measured (a contrast may rest on its interval alone: never "n/a → n/a").
    means = f" {fmt_value(base, unit)} → {fmt_value(treated, unit)}" if base is not None and treated is not None else ""
    mde = row.get("mde_pct")
    slower = ratio < 1
    shown = 1 / ratio if slower else ratio
    band = ""
    if lo is not None and hi is not None:
        band = f"95% CI {1 / hi:.2f}–{1 / lo:.2f}" if slower and verdict == "slower" else f"95% CI {lo:.2f}–{hi:.2f}"
    extras = ", ".join(x for x in (band, f"MDE {mde:.0f}%" if mde is not None else "") if x)
    better, worse = ("more tok/s", "fewer tok/s") if row.get("metric") == "throughput" else ("faster", "slower")
    if verdict in ("faster", "slower"):
        word = better if verdict == "faster" else worse
        return f"{load}**{shown:.2f}× {word}**{means}" + (f" ({extras})" if extras else "")
    if verdict == "no difference":
        head = f"no difference > {mde:.0f}%" if mde is not None else "no difference"
        inner = ", ".join(x for x in (f"{ratio:.2f}×", band) if x)
        return f"{load}{head}{':' if means else ''}{means} ({inner})"
    # not claimed (and any verdict this table does not know): the ratio, and why it is not a claim
    inner = "; ".join(x for x in (band, reason or ("" if band else "no interval")) if x)
    return f"{load}{ratio:.2f}×, not claimed{':' if means else ''}{means} ({inner})"


def cells(rows: Sequence[Mapping[str, Any] | None]) -> str:
    """Several contrasts in one cell (the flag cost at each load). Where none is claimed for one reason, the reason
    is said once: `not claimed (no interval: ...): c=1 511 ms → 512 ms (1.00×); c=4 ...`."""
    real = [r for r in rows if r is not None]
    reasons = {(r.get("verdict"), r.get("reason") or "") for r in real}
    whole = all(r.get(k) is not None for r in real for k in ("ratio", "baseline", "treated"))
    if len(real) > 1 and len(reasons) == 1 and real[0].get("verdict") == "not claimed" and whole:
        unit = real[0].get("unit") or "ms"
        each = "; ".join(
            f"{load_of(r)} {fmt_value(r.get('baseline'), unit)} → {fmt_value(r.get('treated'), unit)} ({r['ratio']:.2f}×)"
            for r in real
        )
        reason = real[0].get("reason")
        return f"not claimed{f' ({reason})' if reason else ''}: {each}"
    return "; ".join(cell(r) for r in rows)


@dataclass(frozen=True)
class VerdictRow:
    """One line of the verdict table: a regime or a workload shape, and the cells that answer for it."""

    traffic: str
    ttft_low: str
    ttft_high: str
    throughput: str
    flag_cost: str


@dataclass(frozen=True)
class Verdicts:
    """The first screen's table and the lines under it (empty rows: the run has no contrasts to show)."""

    rows: list[VerdictRow]
    cliff: str
    missing: str  # why there is no table ("" where there is one)

    def table(self) -> str:
        if not self.rows:
            return ""
        head = (
            "| traffic | TTFT, lowest load | TTFT, highest load | output tok/s, highest load | "
            "leaving it on at 0% reuse |\n|---|---|---|---|---|\n"
        )
        return head + "".join(
            f"| {r.traffic} | {r.ttft_low} | {r.ttft_high} | {r.throughput} | {r.flag_cost} |\n" for r in self.rows
        )


@dataclass(frozen=True)
class Dropped:
    """The points the time budget's plan did not send (calibration.json's `points` with a `dropped` reason), so a
    verdict cell can say what was not run and why instead of reading as if the run had no such point."""

    points: list[dict]  # regime, reuse_pct, concurrency, request_rate, dropped (the reason)
    regimes: dict[str, list[str]]  # every point the plan lists per regime or shape, each's reason ("" kept)
    budget_s: float | None

    @classmethod
    def of(cls, plan: Mapping[str, Any] | None) -> Dropped:
        points = list((plan or {}).get("points") or [])
        regimes: dict[str, list[str]] = {}
        for p in points:
            regimes.setdefault(str(p["regime"]), []).append(str(p.get("dropped") or ""))
        return cls([p for p in points if p.get("dropped")], regimes, (plan or {}).get("budget_s"))

    def why(self, reasons: Sequence[str]) -> str:
        """Why the plan dropped these points: `the 6 min 00 s time budget dropped it` where the budget did (the
        plan's own reason says so), else the plan's reasons."""
        unique = list(dict.fromkeys(reasons))
        budget = f"the {fmt_duration(self.budget_s)} time budget" if self.budget_s is not None else None
        if budget and all(r.startswith(budget) for r in unique):
            return f"{budget} dropped it"
        return "; ".join(unique)

    def whole(self, name: str) -> str:
        """Why a regime or shape was not run at all ("" where the plan kept any of its points, or has none)."""
        reasons = self.regimes.get(name, [])
        return self.why(reasons) if reasons and all(reasons) else ""

    def above(self, regime: str, reuse: int | None, concurrency: int | None) -> str:
        """The closed-loop loads above `concurrency` that the plan dropped at this regime's reuse level, said as a
        cell part (`c=4 not run: the 6 min 00 s time budget dropped it`), or ""."""
        gone = [
            p
            for p in self.points
            if p["regime"] == regime
            and (reuse is None or p.get("reuse_pct") == reuse)
            and not p.get("request_rate")
            and p.get("concurrency") is not None
            and (concurrency is None or p["concurrency"] > concurrency)
        ]
        loads = sorted({int(p["concurrency"]) for p in gone})
        if not loads:
            return ""
        return f"{', '.join(f'c={c}' for c in loads)} not run: {self.why([p['dropped'] for p in gone])}"


def _with_dropped(shown: str, gap: str) -> str:
    return f"{shown}; {gap}" if gap else shown


def _closed(df: pl.DataFrame) -> pl.DataFrame:
    """Closed-loop rows (no request rate), where a concurrency names the load."""
    if "request_rate" not in df.columns:
        return df
    return df.filter(pl.col("request_rate").is_null() | (pl.col("request_rate") == 0))


def _ends(df: pl.DataFrame) -> tuple[dict | None, dict | None]:
    """The contrasts at the lowest and the highest load: concurrency where closed-loop rows exist, else request rate."""
    closed = _closed(df).filter(pl.col("concurrency").is_not_null()) if "concurrency" in df.columns else df.clear()
    if closed.height:
        ordered = closed.sort("concurrency")
    elif "request_rate" in df.columns and df.filter(pl.col("request_rate").is_not_null()).height:
        ordered = df.filter(pl.col("request_rate").is_not_null()).sort("request_rate")
    else:
        ordered = df
    if ordered.is_empty():
        return None, None
    return ordered.row(0, named=True), ordered.row(-1, named=True)


def _of(df: pl.DataFrame, family: str, metric: str, name: str, is_shape: bool) -> pl.DataFrame:
    """One family's rows of one regime or shape (contrasts.csv names both in `regime`; a shape's row also carries
    its kind in `shape`, a single-prefix regime's leaves it empty)."""
    out = df.filter((pl.col("family") == family) & (pl.col("metric") == metric) & (pl.col("regime") == name))
    return out.filter(pl.col("shape") != "") if is_shape else out.filter(pl.col("shape") == "")


def _top_reuse(df: pl.DataFrame) -> pl.DataFrame:
    """The rows at the highest reuse level (all rows where the contrasts carry none, as a shape's)."""
    if "reuse_pct" not in df.columns or df["reuse_pct"].is_null().all():
        return df
    return df.filter(pl.col("reuse_pct") == df["reuse_pct"].max())


def _regime_row(df: pl.DataFrame, regime: str, prefix_len: Mapping[str, int], dropped: Dropped) -> VerdictRow:
    tokens = f"{prefix_len[regime]}-token prefix" if regime in prefix_len else "shared prefix"
    whole = dropped.whole(regime)
    if whole:  # the plan sent none of its points: every column says so, the first one why
        return VerdictRow(f"`{regime}` ({tokens})", f"not run: {whole}", "not run", "not run", "not run")
    effect = _top_reuse(_of(df, "cache_effect", "ttft", regime, False))
    low, high = _ends(effect)
    reuse = low.get("reuse_pct") if low else None
    tput = _top_reuse(_of(df, "throughput", "throughput", regime, False))
    _, tput_high = _ends(tput)
    cost = _of(df, "flag_cost", "ttft", regime, False)
    cost = cost.filter(pl.col("reuse_pct") == 0) if "reuse_pct" in cost.columns else cost
    c_low, c_high = _ends(cost)
    costs = [c_low] if c_low is None or c_high is None or c_low == c_high else [c_low, c_high]
    label = f"`{regime}` ({tokens}" + (f", {reuse}% reuse)" if reuse is not None else ")")
    # A load the plan dropped is named where the table would show it: the highest load's cell, and beside the
    # throughput and the flag cost measured at a lower one.
    gap = dropped.above(regime, reuse, low.get("concurrency") if low else None)
    if high is not None and high != low:
        ttft_high = cell(high)
    else:
        ttft_high = gap or "(the only load run)"
    tput_cell = cell(tput_high) if tput_high is not None else "not measured"
    top = tput_high.get("concurrency") if tput_high else None
    cost_top = costs[-1].get("concurrency") if costs[-1] is not None else None
    return VerdictRow(
        traffic=label,
        ttft_low=cell(low),
        ttft_high=ttft_high,
        throughput=_with_dropped(tput_cell, dropped.above(regime, reuse, top) if tput_high is not None else ""),
        flag_cost=_with_dropped(cells(costs), dropped.above(regime, 0, cost_top))
        if costs != [None]
        else "not measured (no 0%-reuse point)",
    )


def _shape_row(df: pl.DataFrame, name: str, kind: str, dropped: Dropped) -> VerdictRow:
    effect = _of(df, "shape", "ttft", name, True)
    low, high = _ends(effect)
    _, tput_high = _ends(_of(df, "throughput", "throughput", name, True))
    label, no_cost = f"`{name}` ({kind} shape)", "— (a shape has no 0%-reuse point)"
    whole = dropped.whole(name)
    if whole or low is None:
        return VerdictRow(label, f"not run: {whole}" if whole else "not run", "not run", "not run", no_cost)
    gap = dropped.above(name, None, low.get("concurrency"))
    return VerdictRow(
        traffic=label,
        ttft_low=cell(low),
        ttft_high=cell(high) if high is not None and high != low else gap or "(the only load run)",
        throughput=cell(tput_high) if tput_high is not None else "not measured",
        flag_cost=no_cost,
    )


def cliff_words(df: pl.DataFrame | None, shapes: Mapping[str, Mapping[str, Any]], overflow: str, trace: str) -> str:
    """Where the KV capacity cliff sits: the kv_overflow sweep's hit rate and TTFT verdict at each working set, else
    the trace's place on its capacity curve, else that it was not measured and how to measure it."""
    sweep = [n for n, s in shapes.items() if s.get("kind") == CLIFF_KIND]
    if sweep:
        parts = []
        for name in sweep:
            ws = shapes[name].get("params", {}).get("working_set")
            row = None
            if df is not None:
                rows = _of(df, "shape", "ttft", name, True)
                row = rows.row(0, named=True) if rows.height else None
            at = f"working set {ws:g}× the KV capacity" if isinstance(ws, (int, float)) else f"`{name}`"
            parts.append(f"{at}: {cell(row, with_load=False) if row else 'not run'}")
        head = "**KV capacity cliff (kv_overflow sweep, TTFT off → on):** " + "; ".join(parts) + "."
        return head + (f" {overflow}" if overflow else "")
    if trace:
        return f"**KV capacity (production trace):** {trace}"
    return (
        "**KV capacity cliff:** not measured: this run has no `kv_overflow` shape and no trace replay, so it does not "
        "say how hits fall once the working set outgrows the KV cache (config/cpu-shapes.yaml runs both)."
    )


def verdicts(
    df: pl.DataFrame | None,
    regimes: Sequence[str],
    prefix_len: Mapping[str, int],
    shapes: Mapping[str, Mapping[str, Any]],
    overflow: str = "",
    trace: str = "",
    plan: Mapping[str, Any] | None = None,
    forced_off: bool = False,
) -> Verdicts:
    """The verdict table: one row per configured regime (in the config's order) and per workload shape (the
    kv_overflow sweep is the cliff line instead); `df` is contrasts.csv (None: not written by this run). `plan`
    (calibration.json): what the time budget dropped, so a regime or a load that was never sent still has its row
    or cell, saying it was not run and why. `forced_off` (endpoint.cache_off_forced): cache off was forced misses on
    the cache-on deployment, so caching was never off and the last column, what the flag costs, was not measured."""
    cliff = cliff_words(df, shapes, overflow, trace)
    if df is None:
        return Verdicts([], cliff, "Not computed: this run has no `results/contrasts.csv` (the `contrasts` rule).")
    if df.is_empty():
        return Verdicts([], cliff, "No contrast was measured in this run (`results/contrasts.csv` is empty).")
    dropped = Dropped.of(plan)
    rows = [_regime_row(df, r, prefix_len, dropped) for r in regimes if r not in shapes]
    if forced_off:  # both settings were one cache-on deployment: on vs off at 0% reuse is misses against misses
        rows = [replace(r, flag_cost=FORCED_OFF) if not r.flag_cost.startswith("not run") else r for r in rows]
    rows += [_shape_row(df, n, s.get("kind", ""), dropped) for n, s in shapes.items() if s.get("kind") != CLIFF_KIND]
    return Verdicts(rows, cliff, "")


def run_line(
    model: Mapping[str, Any],
    info: Mapping[str, Any],
    endpoints: Mapping[str, Mapping[str, Any]],
    target: str,
    counts: tuple[int, int, int],
    lifetimes: int,
    plan: Mapping[str, Any] | None = None,
) -> str:
    """What was run, in one line: model and weights, engine and version, hardware, points and requests. (No run time:
    the summary's wall times leave out a paired point's forced-miss arm and the server starts, so they would
    understate it; the time budget's plan is in Appendix A.) `counts`: the points (each measured off and on),
    requests and failed requests; `plan`: where the time budget dropped points, how many of the configured ones ran."""
    points, requests, failed = counts
    gone = Dropped.of(plan).points
    of_planned = ""
    if gone:
        why = Dropped.of(plan).why([p["dropped"] for p in gone])
        who = why.removesuffix(" dropped it") if why.endswith(" dropped it") else "the plan"
        of_planned = f" of {points + len(gone)} configured ({who} dropped {len(gone)}, Appendix A)"
    hw = info.get("hardware", {})
    if endpoints:
        urls = dict.fromkeys(f"`{i['endpoint']['base_url']}`" for i in endpoints.values())  # one deployment: once
        where = ("existing endpoints " if len(urls) > 1 else "existing endpoint ") + ", ".join(urls)
        versions = dict.fromkeys(str(i.get("vllm_version") or "version not exposed") for i in endpoints.values())
        engine = "vLLM " + " / ".join(versions)
        name = next(iter(endpoints.values()))["endpoint"]["model"]
        weights = ""
    else:
        gpu = hw.get("gpu")
        where = gpu.split(",")[0] if gpu else f"{hw.get('cpu', 'CPU')} ({hw.get('cpu_count', '?')} cores)"
        build = "CUDA" if target == "gpu" else "CPU build"
        engine = f"vLLM {info.get('vllm_version', '?')} ({build})"
        name = model.get("served_name") or model.get("path", "?")
        weights = ", **random weights**" if model.get("source") == "dummy" else ", real weights"
    each = f"{points} point{'s' if points != 1 else ''}{of_planned}, each with the cache off and on"
    router = info.get("router") or {}
    if info.get("replicas") and router.get("primary"):  # the verdicts went through the router's first policy
        where += (
            f" · {len(info['replicas'])} replicas behind `vllm-router` {router.get('version', '')}".rstrip()
            + f", `{router['primary']}` policy (the others: Across replicas)"
        )
    return f"**Run:** `{name}`{weights} · {engine} · {where} · {each} · {requests} requests ({failed} failed), " + (
        f"{lifetimes} passes over the endpoint{'s' if len(urls) > 1 else ''}"
        if endpoints
        else f"{lifetimes} server lifetime{'s' if lifetimes != 1 else ''}"
    )
