"""The report's workload-shape section: what each shape gained, and how well the cache model called every hit.

"What workload shapes benefit most?" is answered from measurements side by side (hit rates expected,
predicted and measured; the TTFT ratio with its interval, judged against the A/A floor), and the caveat
about memory pressure from the measured capacity cliff and the trace's position on its capacity curve.
What is one kind's own (its description, its sections) each kind writes (shapes.base.ShapeKind); this module
hands it the report's formats and claim rule (a ReportKit the report passes in: findings.KIT, so nothing here
imports the report's side) and puts the pieces together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ..formatting import fmt_pct, fmt_x, markdown_table
from . import KINDS
from .base import ReportKit, ShapeEvidence


def kv_of(check: pl.DataFrame, regime: str) -> int | None:
    """The KV blocks the server that ran a shape reported."""
    if check.is_empty():
        return None
    rows = check.filter(pl.col("regime") == regime)
    return rows["kv_blocks"][0] if rows.height else None


def describe(shape: Mapping[str, Any], kv_blocks: int | None) -> str:
    """One line of what a shape regime sends."""
    kind = KINDS.get(shape["kind"])
    return kind.describe(shape["params"], kv_blocks) if kind else shape["kind"]


def shapes_table(sp: pl.DataFrame, check: pl.DataFrame, shapes: Mapping[str, Mapping[str, Any]], kit: ReportKit) -> str:
    """Shape -> hit rate (expected, predicted, measured) and TTFT off/on with its verdict, per point; shapes in
    the config's order (a sweep's working sets ascending, not as their names sort: ws50 after ws400)."""
    order = {name: i for i, name in enumerate(shapes)}
    points = sp.filter(pl.col("regime").is_in(list(shapes))).sort(
        pl.col("regime").replace_strict(order, return_dtype=pl.Int64), maintain_order=True
    )
    rows = []
    for r in points.iter_rows(named=True):
        c = check.filter(
            (pl.col("regime") == r["regime"])
            & (pl.col("concurrency") == r["concurrency"])
            & (pl.col("request_rate") == r["request_rate"])
        )
        cr = c.row(0, named=True) if c.height else {}
        rows.append(
            {
                "shape": r["regime"],
                "kind": shapes[r["regime"]]["kind"],
                "load": f"{r['request_rate']:g} req/s" if r["request_rate"] else f"c={r['concurrency']}",
                "hit rate: expected": fmt_pct(cr.get("expected_hit_rate")),
                "predicted": fmt_pct(cr.get("predicted_hit_rate")),
                "measured": fmt_pct(cr.get("measured_hit_rate")),
                **point_cells(r, kit),
            }
        )
    return markdown_table(pl.DataFrame(rows), list(rows[0])) if rows else ""


def point_cells(r: Mapping[str, Any], kit: ReportKit) -> dict[str, str]:
    """A shape point's TTFT, verdict and throughput cells. A point with no TTFT ratio (no steady-state window) shows
    no ratio at all, TTFT or throughput (its tok/s is an opening burst, not a level): it says what was not measured."""
    if r.get("ttft_speedup") is None:
        return {"TTFT off → on": "not measured", "verdict": kit.judged(dict(r)), "tok/s on/off": "not measured"}
    return {
        "TTFT off → on": f"{kit.fmt_s(r['mean_ttft_s_off'])} → {kit.fmt_s(r['mean_ttft_s_on'])}",
        "verdict": kit.judged(dict(r)),
        "tok/s on/off": fmt_x(r.get("throughput_gain")),
    }


def prediction_words(check: pl.DataFrame, block_size: int) -> str:
    """How many shape requests the cache model called exactly, and the worst miss."""
    if check.is_empty():
        return "No shape request reported its cached tokens, so the cache model could not be checked."
    n, exact = int(check["requests"].sum()), int(check["exact"].sum())
    off = int(check["off_by_more_than_a_block"].sum())
    worst = check.sort("max_diff_tokens", descending=True).row(0, named=True)
    text = (
        f"The cache model (whole {block_size}-token blocks, vLLM's LRU order, replayed over each pass's actual send and "
        f"end times and the server's KV capacity) predicted the cached tokens of {exact} of {n} shape requests with the "
        f"cache on exactly"
    )
    if "unpredicted" in check.columns and check["unpredicted"].sum():
        lost = check.filter(pl.col("unpredicted") > 0)
        text += (
            f" ({int(check['unpredicted'].sum())} further request(s) it could not place: "
            + "; ".join(
                f"{r['regime']} c={r['concurrency']}: {r['unpredicted']}, {r['unpredicted_reason']}"
                for r in lost.iter_rows(named=True)
            )
            + ")"
        )
    if off:
        return (
            text + f"; {off} differ by more than one block, the largest by {worst['max_diff_tokens']} tokens "
            f"({worst['regime']} at c={worst['concurrency']}). Concurrent admissions are where the model's assumption "
            "(a request is scheduled when it is sent) is weakest."
        )
    return text + (
        f"; none differs by more than one block (largest difference {worst['max_diff_tokens']} tokens)." if exact < n else "."
    )


def kind_sections(ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
    """Every kind's own report sections (the template's keys: each kind's `sections`, "" where the run has none)."""
    out: dict[str, str] = {}
    for kind in KINDS.values():
        found = kind.findings(ev, kit)
        out |= {key: found.get(key, "") for key in kind.sections}
    return out


def shape_section(
    requests: pl.DataFrame,
    check: pl.DataFrame,
    points: pl.DataFrame,
    shapes: Mapping[str, Mapping[str, Any]],
    block_size: int,
    kit: ReportKit,
    trace_curves: Mapping[str, Mapping[int, float]] | None = None,
) -> dict[str, Any]:
    """The template's `shape_section`: the shapes table, one line per shape, the cache model's record, and every
    kind's own sections."""
    return {
        "table": shapes_table(points, check, shapes, kit) if shapes else "",
        "described": [f"`{n}` ({s['kind']}): {describe(s, kv_of(check, n))}" for n, s in shapes.items()],
        "prediction": prediction_words(check, block_size) if shapes else "",
        **kind_sections(ShapeEvidence(requests, check, points, shapes, block_size, trace_curves or {}), kit),
    }
