"""KV overflow: a uniform pool whose working set is a multiple of a deliberately small KV cache, on a server
lifetime of its own (--num-gpu-blocks-override), sent one request at a time. Measures the capacity cliff; where the
target sets `kv_offload`, the same sweep runs again without and with a second KV tier in CPU memory (rules/offload.smk,
prefixbench.offload), and each request's own counter deltas split its hits by tier (`per_request_counters`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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


def _pct(kit: ReportKit, x: float | None) -> str:
    """A hit rate, or what was not measured (never "n/a")."""
    return "not measured" if x is None else kit.fmt_pct(x)


def _point(sp: pl.DataFrame, regime: str) -> dict:
    """The working set's off/on row ({} where the point has none: it was not run in both settings)."""
    import polars as pl

    s = sp.filter(pl.col("regime") == regime) if "regime" in sp.columns else sp.clear()
    return s.row(0, named=True) if s.height else {}


def overflow_table(check: pl.DataFrame, sp: pl.DataFrame, kit: ReportKit) -> str:
    """Each working set's hit rate, predicted and measured, and its TTFT off → on with the claim rule's verdict; a
    missing measurement says what was not measured and shows no ratio."""
    import polars as pl

    ov = check.filter(pl.col("workload") == KvOverflow.name).sort("working_set")
    if ov.is_empty():
        return ""
    rows = []
    for r in ov.iter_rows(named=True):
        sr = _point(sp, r["regime"])
        off, on = sr.get("mean_ttft_s_off"), sr.get("mean_ttft_s_on")
        if not sr:
            ttft, verdict = "not measured", "not measured: no off/on pair for this working set"
        else:
            ttft = f"{kit.fmt_s(off)} → {kit.fmt_s(on)}" if off is not None and on is not None else "not measured"
            verdict = kit.judged(sr)
        rows.append(
            {
                "working set / capacity": f"{r['working_set']:g}",
                "hit rate predicted": _pct(kit, r["predicted_hit_rate"]),
                "measured": _pct(kit, r["measured_hit_rate"]),
                "requests exact": f"{r['exact']}/{r['requests']}",
                "TTFT off → on": ttft,
                "verdict": verdict,
            }
        )
    return kit.markdown_table(pl.DataFrame(rows), list(rows[0]))


def moved(a: str, b: str) -> str:
    """`went from a to b`, or `stayed at a` where both print the same (never "from 25 ms to 25 ms")."""
    return f"stayed at {a}" if a == b else f"went from {a} to {b}"


def overflow_words(check: pl.DataFrame, kit: ReportKit, sp: pl.DataFrame | None = None) -> str:
    """How the hit rate, and the cache-on TTFT where both ends have it, moved from the smallest working set to the
    largest; only what was measured is said (the verdict's cliff line and the conclusion quote it)."""
    import polars as pl

    ov = check.filter(pl.col("workload") == KvOverflow.name).sort("working_set")
    if ov.height < 2:
        return ""
    lo, hi = ov.row(0, named=True), ov.row(-1, named=True)
    span = f"from {lo['working_set']:g}x to {hi['working_set']:g}x the KV capacity"
    m_lo, m_hi = lo["measured_hit_rate"], hi["measured_hit_rate"]
    if m_lo is None or m_hi is None:
        missing = ", ".join(f"{r['working_set']:g}x" for r in (lo, hi) if r["measured_hit_rate"] is None)
        return f"The hit rate was not measured at working set {missing}, so how hits moved {span} is not known."
    text = (
        f"As the working set grew {span}, the measured hit rate {moved(kit.fmt_pct(m_lo), kit.fmt_pct(m_hi))} "
        f"(predicted {_pct(kit, lo['predicted_hit_rate'])} → {_pct(kit, hi['predicted_hit_rate'])})"
    )
    if m_hi < m_lo:
        text += (
            ": past the capacity, least-recently-used prefixes are evicted before they come back, so fewer prompt "
            "tokens are served from the cache"
        )
    p_lo, p_hi = (_point(sp, r["regime"]) if sp is not None else {} for r in (lo, hi))
    on_lo, on_hi = p_lo.get("mean_ttft_s_on"), p_hi.get("mean_ttft_s_on")
    if on_lo is not None and on_hi is not None:
        text += f"; mean TTFT with the cache on {moved(kit.fmt_s(on_lo), kit.fmt_s(on_hi))}"
    return text + "."


class KvOverflow(ShapeKind):
    name = "kv_overflow"
    record_fields = ("document", "working_set")
    table_fields = ("document", "working_set")
    sections = ("overflow_table", "overflow")
    # Sent one at a time, so the server's counters read around each request are that request's own: with a CPU tier
    # they split its cached tokens into GPU and CPU hits (measure.per_request_counters; prefixbench.offload).
    per_request_counters: ClassVar[bool] = True

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
            "overflow": overflow_words(ev.check, kit, ev.points) if has else "",
        }
