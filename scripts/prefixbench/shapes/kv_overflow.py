"""KV overflow: a uniform pool whose working set is a multiple of a deliberately small KV cache, on a server
lifetime of its own (--num-gpu-blocks-override), sent one request at a time. Measures the capacity cliff."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import BuildContext, ReportKit, Shape, ShapeEvidence, ShapeKind
from .prefix_pool import prefix_pool

if TYPE_CHECKING:
    import polars as pl


def overflow_documents(capacity_blocks: int, block_size: int, doc_tokens: int, ratio: float) -> int:
    """Documents whose distinct prefix tokens are `ratio` x the usable KV capacity (vLLM keeps one null block)."""
    return max(1, round(ratio * (capacity_blocks - 1) * block_size / doc_tokens))


def kv_overflow(ctx: BuildContext, shape: Shape) -> list[dict]:
    """A pool drawn uniformly whose working set is `working_set` x the KV capacity (set small on purpose)."""
    p = shape.params
    docs = overflow_documents(p["capacity_blocks"], ctx.block_size, p["doc_tokens"], p["working_set"])
    pool = Shape(shape.name, "prefix_pool", {"doc_tokens": p["doc_tokens"], "documents": docs, "requests": p["requests"]})
    return [
        {**r, "working_set": p["working_set"], "documents": docs}
        for r in prefix_pool(ctx.tok, pool, ctx.questions, ctx.block_size, ctx.seed)
    ]


def overflow_table(check: pl.DataFrame, sp: pl.DataFrame, kit: ReportKit) -> str:
    import polars as pl

    ov = check.filter(pl.col("workload") == KvOverflow.name).sort("working_set")
    if ov.is_empty():
        return ""
    rows = []
    for r in ov.iter_rows(named=True):
        s = sp.filter(pl.col("regime") == r["regime"])
        sr = s.row(0, named=True) if s.height else {}
        rows.append(
            {
                "working set / capacity": f"{r['working_set']:g}",
                "hit rate predicted": kit.fmt_pct(r["predicted_hit_rate"]),
                "measured": kit.fmt_pct(r["measured_hit_rate"]),
                "requests exact": f"{r['exact']}/{r['requests']}",
                "TTFT off → on": f"{kit.fmt_s(sr.get('mean_ttft_s_off'))} → {kit.fmt_s(sr.get('mean_ttft_s_on'))}",
                "verdict": kit.judged(sr) if sr else "n/a",
            }
        )
    return kit.markdown_table(pl.DataFrame(rows), list(rows[0]))


def overflow_words(check: pl.DataFrame, kit: ReportKit) -> str:
    import polars as pl

    ov = check.filter(pl.col("workload") == KvOverflow.name).sort("working_set")
    if ov.height < 2:
        return ""
    lo, hi = ov.row(0, named=True), ov.row(-1, named=True)
    text = (
        f"As the working set grew from {lo['working_set']:g}x to {hi['working_set']:g}x the KV capacity, the measured hit "
        f"rate went from {kit.fmt_pct(lo['measured_hit_rate'])} to {kit.fmt_pct(hi['measured_hit_rate'])} (predicted "
        f"{kit.fmt_pct(lo['predicted_hit_rate'])} → {kit.fmt_pct(hi['predicted_hit_rate'])})"
    )
    if hi["measured_hit_rate"] is not None and lo["measured_hit_rate"] and hi["measured_hit_rate"] < lo["measured_hit_rate"]:
        text += (
            ": past the capacity, least-recently-used prefixes are evicted before they come back, so fewer prompt "
            "tokens are served from the cache (what that does to latency is each working set's verdict in the table)"
        )
    return text + "."


class KvOverflow(ShapeKind):
    name = "kv_overflow"
    record_fields = ("document", "working_set")
    table_fields = ("document", "working_set")
    sections = ("overflow_table", "overflow")

    def expand(self, name: str, params: dict[str, Any], repo_dir: Path) -> dict[str, Shape]:
        """One regime per working set, named `{name}_ws{percent}`."""
        rest = {k: v for k, v in params.items() if k != "working_sets"}
        out = {}
        for ws in params["working_sets"]:
            label = f"{name}_ws{round(ws * 100)}"
            out[label] = Shape(label, self.name, {**rest, "working_set": ws})
        return out

    def check(self, shape: Shape, target: Mapping[str, Any], endpoint: bool) -> list[str]:
        if endpoint:
            return [f"shapes.{shape.name}: kv_overflow sets the server's KV size, so it needs a server prefixbench starts"]
        return []

    def kv_capacity(self, shape: Shape) -> int | None:
        return shape.params["capacity_blocks"]

    def loads(self, shape: Shape, concurrency: Sequence[int], rates: Sequence[float]) -> list[tuple[int, float]]:
        """One request at a time, so the cache model can be exact."""
        return [(1, 0.0)]

    def build(self, shape: Shape, ctx: BuildContext) -> list[dict]:
        return kv_overflow(ctx, shape)

    def traffic(self, prompts: Sequence[dict], request_rate: float) -> None:
        """The point's own closed loop (concurrency 1)."""
        return None

    def describe(self, params: Mapping[str, Any], kv_blocks: int | None) -> str:
        p = params
        cap = f"{p['capacity_blocks']} KV blocks" + (f" (server: {kv_blocks})" if kv_blocks else "")
        return f"working set {p['working_set']:g}x the KV capacity ({cap}), {p['requests']} requests, one at a time"

    def findings(self, ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
        """Hit rate and TTFT against working set / capacity, predicted and measured."""
        has = ev.check.height > 0
        return {
            "overflow_table": overflow_table(ev.check, ev.points, kit) if has else "",
            "overflow": overflow_words(ev.check, kit) if has else "",
        }
