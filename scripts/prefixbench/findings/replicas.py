"""The report's "Across replicas" section: per routing policy the three hit rates, latency and throughput with their
intervals and the load per replica, the policies' contrasts by the claim rule, the simulator beside the measurement,
and sentences that appear only where the data say what they claim.

It reads the tables aggregation wrote (prefixbench.replicas_analysis): replica_points.csv, replica_contrasts.csv,
routing_sim.csv, routing_curve.csv; it computes no hit rate itself, so the section re-renders from recorded outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..formatting import fmt_pct, fmt_x, markdown_table
from ..shapes import SHAPES
from .claims import NOISE, point_name, rows_of
from .units import fmt_ms, fmt_ms_value

NOT_RUN = (
    "Not run: this run measured one server. A target with `replicas: 2` or more puts that many identical servers "
    "behind vLLM's router and measures each routing policy of `router.policies` here."
)
NOT_MEASURED = (
    "Not measured: this run's replicas ran behind vLLM's router, but no cache-on pass with a known replica was recorded "
    "(`replica_requests.csv` is empty), so there is no policy to compare."
)
APPROXIMATED = ("cache_aware",)  # the simulator's deterministic policy that is not the router's exact rule
NO_SIMULATOR = "The policy simulator (prefixbench.routing) did not run on this run's passes: nothing is set beside them."


@dataclass(frozen=True)
class ReplicaSection:
    """What the template shows under "Across replicas": `ran` False leaves only `intro` (why it was not run)."""

    ran: bool
    intro: str
    table: str = ""
    load_table: str = ""
    contrasts_table: str = ""
    sim_table: str = ""
    words: list[str] = field(default_factory=list)
    curve: str = ""  # the simulator's curve on the trace in words ("" without one: no chart either)


def pct_ci(lo: float | None, hi: float | None) -> str:
    return "no interval" if lo is None or hi is None else f"{lo:.0%}–{hi:.0%}"


def ms_ci(lo: float | None, hi: float | None) -> str:
    """A time's t interval; one whose low end falls below zero (few passes, a wide spread) gives only its high end."""
    if lo is None or hi is None:
        return "no interval"
    return f"up to {fmt_ms(hi)}" if lo <= 0 else f"{fmt_ms_value(lo * 1000)}–{fmt_ms(hi)}"


def diff_ci(lo: float | None, hi: float | None) -> str:
    return "no interval" if lo is None or hi is None else f"{lo:+.1%} to {hi:+.1%}"


def num_ci(lo: float | None, hi: float | None) -> str:
    return "no interval" if lo is None or hi is None else f"{lo:.3g}–{hi:.3g}"


def where(row: Mapping[str, Any]) -> str:
    """A point's name: the regime or shape, its reuse level (a regime's) and its load."""
    name = point_name(dict(row))
    return name.replace(f" reuse {row['reuse_pct']}%", "") if row.get("workload") in SHAPES else name


def rates_table(points: pl.DataFrame) -> str:
    """Per point and policy: requests, the three hit rates (delivered measured with its interval over the passes),
    the cache model's exact predictions, TTFT and throughput with their intervals."""
    rows = []
    for r in rows_of(points):
        rows.append(
            {
                "point": where(r),
                "policy": f"`{r['policy']}`",
                "requests": f"{r['requests']} ({r['passes']} pass{'' if r['passes'] == 1 else 'es'})",
                "in the traffic": fmt_pct(r["traffic_hit_rate"]),
                "kept by the routing": fmt_pct(r["kept_hit_rate"]),
                "delivered, predicted": fmt_pct(r["predicted_hit_rate"]),
                "delivered, measured (95% CI)": f"{fmt_pct(r['measured_hit_rate'])} ({pct_ci(r['measured_hit_lo'], r['measured_hit_hi'])})",
                "exact": f"{r['exact']}/{r['predicted_requests']}",
                "mean TTFT (95% CI)": f"{fmt_ms(r['ttft_mean_s'])} ({ms_ci(r['ttft_lo_s'], r['ttft_hi_s'])})",
                "p50 / p90 TTFT": f"{fmt_ms(r['ttft_p50_s'])} / {fmt_ms(r['ttft_p90_s'])}",
                "output tok/s (95% CI)": f"{r['tok_s']:.3g} ({num_ci(r['tok_s_lo'], r['tok_s_hi'])})" if r["tok_s"] is not None else "n/a",
            }
        )  # fmt: skip
    df = pl.DataFrame(rows)
    return markdown_table(df, df.columns)


def load_table(points: pl.DataFrame) -> str:
    """Per point and policy: requests per replica, the busiest replica over the mean, peak KV usage per replica."""
    rows = [
        {
            "point": where(r),
            "policy": f"`{r['policy']}`",
            "requests per replica": r["requests_per_replica"],
            "busiest / mean": fmt_x(r["load_imbalance"]),
            "peak KV-cache usage per replica": peak_kv(r),
            "requests without a known replica": str(r["unattributed"]),
        }
        for r in rows_of(points)
    ]
    df = pl.DataFrame(rows)
    return markdown_table(df, df.columns)


def peak_kv(r: Mapping[str, Any]) -> str:
    """Each replica's peak KV-cache usage, or where the run sampled only the highest of any replica, that one."""
    if r.get("peak_kv_per_replica"):  # fractions of each pool, "a/b": shown in percent as the other column is
        return "/".join(f"{float(x) * 100:.2g}%" for x in str(r["peak_kv_per_replica"]).split("/"))
    if r.get("peak_kv_max") is not None:
        return f"not recorded per replica (the highest of any: {float(r['peak_kv_max']) * 100:.2g}%)"
    return "not recorded"


def no_interval(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith("no interval")


def contrast_cell(r: Mapping[str, Any], name: str, better: str) -> str:
    """A pair's contrast as the claim rule judged it (replicas_analysis.pair_row): who was better, by how much, with
    the interval; "no difference larger than" the MDE; or not claimed, and why."""
    ratio, lo, hi, kind = r[f"{name}_ratio"], r[f"{name}_lo"], r[f"{name}_hi"], r[f"{name}_verdict"]
    a, b = f"`{r['policy_a']}`", f"`{r['policy_b']}`"
    if ratio is None:
        return "not measured"
    if kind in ("faster", "slower"):  # claimed: > 1 is a's gain, < 1 b's
        winner, loser, x, band = (a, b, ratio, (lo, hi)) if ratio > 1 else (b, a, 1 / ratio, (1 / hi, 1 / lo))
        return f"{winner} {fmt_x(x)} {better} than {loser} (95% CI {band[0]:.2f}–{band[1]:.2f})"
    if kind == "no difference":
        return f"{fmt_x(ratio)}: {r[f'{name}_reason']}"
    if no_interval(r[f"{name}_reason"]):  # why is said once under the table (contrasts_table)
        return f"{fmt_x(ratio)}, not claimed (no interval)"
    return f"{fmt_x(ratio)}, not claimed ({r[f'{name}_reason']})"


def contrasts_table(contrasts: pl.DataFrame) -> str:
    """The pairs of policies, each contrast by the claim rule; why a contrast has no interval is said once, below."""
    rows = [
        {
            "point": where(r),
            "policies": f"`{r['policy_a']}` vs `{r['policy_b']}`",
            "pass pairs": str(r["pairs"]),
            "mean TTFT": contrast_cell(r, "ttft", "faster"),
            "output throughput": contrast_cell(r, "tok_s", "higher"),
            "delivered hit rate, a − b (95% CI)": (
                f"{r['hit_diff']:+.1%} ({diff_ci(r['hit_diff_lo'], r['hit_diff_hi'])})" if r["hit_diff"] is not None else "n/a"
            ),
        }
        for r in rows_of(contrasts)
    ]
    df = pl.DataFrame(rows)
    reasons = dict.fromkeys(
        str(r[f"{m}_reason"]) for r in rows_of(contrasts) for m in ("ttft", "tok_s") if no_interval(r[f"{m}_reason"])
    )
    notes = "".join(f'\n\n"No interval" above: {why.removeprefix("no interval: ")}.' for why in reasons)
    return markdown_table(df, df.columns) + notes


def more_hits(c: Mapping[str, Any], rate_a: float, rate_b: float) -> int:
    """+1 where policy a delivered more hits than b beyond noise, -1 fewer, 0 neither: the pass pairs' interval of
    the difference excludes 0, or without one, the difference exceeds claims.NOISE of the larger rate."""
    lo, hi, diff = c["hit_diff_lo"], c["hit_diff_hi"], c["hit_diff"]
    if diff is None:
        return 0
    if lo is not None and hi is not None:
        return 1 if lo > 0 else -1 if hi < 0 else 0
    return 1 if diff > NOISE * max(rate_a, rate_b) else -1 if -diff > NOISE * max(rate_a, rate_b) else 0


def slower(c: Mapping[str, Any], policy: str) -> bool | None:
    """Whether `policy` had the slower first token in the pair by the claim rule (True), the faster (False), or
    neither was claimed (None)."""
    kind = c["ttft_verdict"]
    if kind not in ("faster", "slower"):
        return None
    a_slower = kind == "slower"
    return a_slower if c["policy_a"] == policy else not a_slower


def factor(c: Mapping[str, Any], policy: str) -> str:
    """How much slower or faster `policy`'s first token was than the other of the pair, with the interval (ratio =
    TTFT b / TTFT a: above 1, a was faster)."""
    ratio, lo, hi = c["ttft_ratio"], c["ttft_lo"], c["ttft_hi"]
    other = c["policy_b"] if c["policy_a"] == policy else c["policy_a"]
    x, band = (ratio, (lo, hi)) if ratio >= 1 else (1 / ratio, (1 / hi, 1 / lo))
    word = "slower" if slower(c, policy) else "faster"
    return f"{fmt_x(x)} {word} than `{other}`, 95% CI {band[0]:.2f}–{band[1]:.2f}"


def hits_and_speed(point: list[dict], pairs: list[dict]) -> str:
    """The policy with the most delivered hits (beyond noise, against every other) and whether it also had the
    slowest or the fastest first token (claimed against every other): the sentence only where both hold."""
    rate = {r["policy"]: r["measured_hit_rate"] for r in point if r["measured_hit_rate"] is not None}
    if len(rate) < 2 or len(pairs) < len(rate) * (len(rate) - 1) // 2:
        return ""
    for top in rate:
        mine = [c for c in pairs if top in (c["policy_a"], c["policy_b"])]
        beats = [more_hits(c, rate[c["policy_a"]], rate[c["policy_b"]]) * (1 if c["policy_a"] == top else -1) for c in mine]
        if not mine or any(b != 1 for b in beats):
            continue
        verdicts = [slower(c, top) for c in mine]
        if any(v is None for v in verdicts) or len(set(verdicts)) != 1:
            return ""
        ttft = {r["policy"]: r["ttft_mean_s"] for r in point}
        others = ", ".join(f"`{p}` {fmt_ms(ttft[p])}" for p in rate if p != top)
        word = "slowest" if verdicts[0] else "fastest"
        return (
            f"At {where(point[0])}, the policy with the most hits had the {word} first token: `{top}` delivered "
            f"{fmt_pct(rate[top])} of prompt tokens from cache (measured) and its mean TTFT was {fmt_ms(ttft[top])} "
            f"against {others} ({'; '.join(factor(c, top) for c in mine)})."
        )
    return ""


def and_list(items: list[str]) -> str:
    """a, b and c."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def split_words(point: list[dict]) -> list[str]:
    """Where reuse was lost: in the routing (kept below the traffic) and in the KV capacity (predicted delivered
    below kept), each named only where the drop exceeds claims.NOISE of the rate above it."""
    out = []
    lost = [r for r in point if r["traffic_hit_rate"] and r["kept_hit_rate"] is not None
            and r["traffic_hit_rate"] - r["kept_hit_rate"] > NOISE * r["traffic_hit_rate"]]  # fmt: skip
    rest = [r for r in point if r not in lost and r["traffic_hit_rate"]]
    kept_all = [f"`{r['policy']}`" for r in rest if same(r["traffic_hit_rate"], r["kept_hit_rate"])]
    near = [r for r in rest if not same(r["traffic_hit_rate"], r["kept_hit_rate"])]
    kept_most = [f"`{r['policy']}` kept {r['kept_hit_rate']:.1%}" for r in near]
    if lost:
        others = ([f"{and_list(kept_all)} kept it all"] if kept_all else []) + (
            [f"{and_list(kept_most)} (within {NOISE:.0%} of the traffic's {near[0]['traffic_hit_rate']:.1%})"]
            if kept_most
            else []
        )
        out.append(
            f"At {where(point[0])} the traffic offered {fmt_pct(lost[0]['traffic_hit_rate'])} of prompt tokens as hits; "
            + ", ".join(f"`{r['policy']}` kept {fmt_pct(r['kept_hit_rate'])}" for r in lost)
            + " (the rest: repeats of a prefix the router sent to another replica than the one that had cached it)"
            + (f", while {' and '.join(others)}." if others else ".")
        )  # fmt: skip
    evicted = [r for r in point if r["kept_hit_rate"] and r["predicted_hit_rate"] is not None
               and r["kept_hit_rate"] - r["predicted_hit_rate"] > NOISE * r["kept_hit_rate"]]  # fmt: skip
    if evicted:
        out.append(
            f"At {where(point[0])} the replicas' KV capacity cost hits the routing had kept: "
            + "; ".join(f"`{r['policy']}` {fmt_pct(r['kept_hit_rate'])} kept, {fmt_pct(r['predicted_hit_rate'])} predicted delivered" for r in evicted)
            + " (the cache model, replayed per replica with its real KV blocks)."
        )  # fmt: skip
    return out


def prediction_words(points: pl.DataFrame) -> str:
    """How the per-replica cache model did, request by request, and what it could not place."""
    placed, exact, unknown = (
        int(points["predicted_requests"].sum()),
        int(points["exact"].sum()),
        int(points["unattributed"].sum()),
    )
    if not placed:
        return "The cache model placed no request (no replica reported its KV size)."
    head = (
        f"The cache model, replayed per replica over the requests the router sent it, predicted every one of the "
        f"{placed} requests it could place exactly."
        if exact == placed
        else f"The cache model, replayed per replica over the requests the router sent it, predicted {exact} of the "
        f"{placed} requests it could place exactly."
    )
    if exact < placed and {"measured_above", "measured_below", "max_diff_tokens"} <= set(points.columns):
        above, below = int(points["measured_above"].sum()), int(points["measured_below"].sum())
        ways = [
            f"{'all ' if n == placed - exact else ''}{n} measured {way} the prediction"
            for n, way in ((above, "above"), (below, "below"))
            if n
        ]
        head += (
            f" Of the other {placed - exact}, {' and '.join(ways)}, by at most {max(points['max_diff_tokens'].fill_null(0).to_list())} "
            "tokens (the model keys the blocks a request's own output completes as unique: it cannot know what the "
            "server generated)."
        )
    if "attribution_checked_passes" in points.columns and (checked := int(points["attribution_checked_passes"].sum())):
        matching = int(points["attribution_matching_passes"].sum())
        head += (
            f" Which replica served each request (its X-Request-Id in that replica's request log) was checked against "
            f"the replicas' own counters: in {matching} of {checked} passes every replica's prefix-cache hit counter "
            "equalled the cached tokens of the requests attributed to it."
        )
    return head + (f" {unknown} requests had no known replica and are left out of the hit rates." if unknown else "")


def imbalance_words(points: pl.DataFrame) -> str:
    """The most uneven split, where one replica took more than claims.NOISE above its share."""
    uneven = [r for r in rows_of(points) if r["load_imbalance"] is not None and r["load_imbalance"] > 1 + NOISE]
    if not uneven:
        return ""
    r = max(uneven, key=lambda r: r["load_imbalance"])
    return (
        f"The most uneven split: `{r['policy']}` at {where(r)} sent {r['requests_per_replica']} requests to the "
        f"{r['replicas']} replicas, its busiest replica {fmt_x(r['load_imbalance'])} its share."
    )


def sim_table(sim: pl.DataFrame, points: pl.DataFrame) -> str:
    measured = {(r["policy"], where(r)): r for r in rows_of(points)}
    rows = []
    for s in rows_of(sim):
        m = measured.get((s["policy"], where(s)), {})
        rows.append(
            {
                "point": where(s),
                "policy": f"`{s['policy']}`",
                "kept: simulated / measured (95% CI)": f"{fmt_pct(s['sim_kept_hit_rate'])} / {fmt_pct(m.get('kept_hit_rate'))} ({pct_ci(m.get('kept_hit_lo'), m.get('kept_hit_hi'))})",
                "kept within": s["kept_within"],
                "delivered: simulated / measured (95% CI)": f"{fmt_pct(s['sim_predicted_hit_rate'])} / {fmt_pct(m.get('measured_hit_rate'))} ({pct_ci(m.get('measured_hit_lo'), m.get('measured_hit_hi'))})",
                "delivered within": s["predicted_within"],
                "requests per replica, simulated": s["sim_requests_per_replica"],
                "measured": m.get("requests_per_replica"),
            }
        )  # fmt: skip
    df = pl.DataFrame(rows)
    return markdown_table(df, df.columns)


def same(a: float | None, b: float | None) -> bool:
    """Two hit rates equal to the token (both are sums of tokens over the same prompt tokens)."""
    return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9


def sim_words(sim: pl.DataFrame, points: pl.DataFrame, replicas: int) -> str:
    """How the simulator's predictions compare with the measurement: inside the measured 95% intervals where there
    are intervals; where there are none (one pass per policy), whether it predicted the measured hit rates to the
    token; and whether it sent as many requests to each replica as the router did, naming every miss."""
    measured = {(r["policy"], where(r)): r for r in rows_of(points)}
    rows = [(s, measured.get((s["policy"], where(s)), {})) for s in rows_of(sim)]
    said = []
    for col, rate, mine, what in (
        ("predicted_within", "measured_hit_rate", "sim_predicted_hit_rate", "delivered"),
        ("kept_within", "kept_hit_rate", "sim_kept_hit_rate", "kept"),
    ):
        inside = [s for s, _ in rows if s[col] == "yes"]
        outside = [s for s, _ in rows if s[col] == "no"]
        bare = [(s, m) for s, m in rows if s[col] == "no interval"]
        parts = []
        if inside or outside:
            parts.append(f"inside the measured 95% interval for {len(inside)} of {len(inside) + len(outside)}")
            if outside:
                parts[-1] += " (outside: " + ", ".join(f"`{s['policy']}` at {where(s)}" for s in outside) + ")"
        if bare:
            off = [(s, m) for s, m in bare if not same(s[mine], m.get(rate))]
            parts.append(
                (f"equal to the measured one in all {len(bare)}" if not off else f"equal to the measured one in {len(bare) - len(off)} of {len(bare)}")
                + " without a measured interval (one pass per policy)"
                + (
                    " (different: "
                    + ", ".join(f"`{s['policy']}` at {where(s)}: {fmt_pct(s[mine])} simulated, {fmt_pct(m.get(rate))} measured" for s, m in off)
                    + ")"
                    if off
                    else ""
                )
            )  # fmt: skip
        if parts:
            said.append(f"its {what} hit rate was " + " and ".join(parts))
    split = [(s, m) for s, m in rows if s["sim_requests_per_replica"] is not None and m.get("requests_per_replica")]
    moved = [(s, m) for s, m in split if str(s["sim_requests_per_replica"]) != str(m["requests_per_replica"])]
    if split:
        said.append(
            f"it sent as many requests to each replica as the router did for {len(split) - len(moved)} of {len(split)}"
            + (
                " (different: "
                + ", ".join(f"`{s['policy']}` at {where(s)}: {s['sim_requests_per_replica']} simulated, {m['requests_per_replica']} measured" for s, m in moved)
                + ")"
                if moved
                else ""
            )
        )  # fmt: skip
    tail = ""
    if {s["policy"] for s, _ in moved} & set(APPROXIMATED):
        tail += (
            " `cache_aware` is simulated by a stated approximation (docs/routing-simulator.md): request by request only "
            "where requests never overlap; otherwise compare it by its hit rates and load."
        )
    drawn = sorted({s["policy"] for s, _ in rows if (s.get("seeds") or 1) > 1})
    if drawn:
        tail += f" {', '.join(f'`{p}`' for p in drawn)}: the mean over the simulator's draws, not one routing."
    return f"The policy simulator re-routed every measured pass at {replicas} replicas: " + "; ".join(said) + "." + tail


def curve_words(curve: pl.DataFrame) -> str:
    """The simulator's curve on the trace, per policy, from one replica to the most, with the load it takes (a
    simulation, said so)."""
    if curve.is_empty():
        return ""
    lo, hi = int(curve["replicas"].min()), int(curve["replicas"].max())  # type: ignore[arg-type]
    parts: list[str] = []
    caveats: list[str] = []  # an in-flight model that left nothing to balance
    for (policy,), grp in curve.group_by(["policy"], maintain_order=True):
        at = {int(r["replicas"]): r for r in rows_of(grp)}
        seeds = f", mean of {at[hi]['seeds']} draws" if (at[hi].get("seeds") or 1) > 1 else ""
        one = at[hi]["load_imbalance"] is not None and float(at[hi]["load_imbalance"]) > hi - 1e-9  # all on one replica
        parts.append(
            f"`{policy}` {fmt_pct(at[lo]['kept_hit_rate'])} at {lo} → {fmt_pct(at[hi]['kept_hit_rate'])} at {hi} "
            f"(busiest replica {fmt_x(at[hi]['load_imbalance'])} its share{': every request on one replica' if one else ''}{seeds})"
        )
        if one and at[hi].get("in_flight"):
            caveats.append(
                f"`{policy}` balances by the requests in flight, which the trace does not give; simulated as a "
                f"{at[hi]['in_flight']}, it never sees a load to balance and sends every request to the first "
                "replica (a hit to the replica holding its prefix, a miss to the least loaded, a tie to the first): "
                "the router's behaviour when requests never overlap, not a prediction under load"
            )
    first = curve.row(0, named=True)
    return (
        f"By simulation, not measurement: the {first['workload']}, all {first['requests']:,} requests, routed by each "
        f"policy to {lo}–{hi} replicas; the share of prompt tokens each replica's own unlimited cache keeps as hits: "
        + "; ".join(parts)
        + f". The trace itself offers {fmt_pct(first['traffic_hit_rate'])} (one cache)."
        + "".join(f" {c}." for c in caveats)
    )


def intro(points: pl.DataFrame, router: Mapping[str, Any]) -> str:
    policies = list(dict.fromkeys(points["policy"].to_list()))
    replicas = int(points["replicas"][0])
    version = f" (`vllm-router` {router['version']})" if router.get("version") else ""
    return (
        f"{replicas} replicas of the same server behind vLLM's router{version}, each with its own KV cache. Policies "
        f"measured: {', '.join(f'`{p}`' for p in policies)}; the first carries every other section of this report, "
        "and each ran on the same cache-on lifetimes, point by point, from reset caches, in an order rotated every "
        "repeat. Per policy, three hit rates (token-weighted): *in the traffic* (one unlimited cache over every "
        "request), *kept by the routing* (each replica's own unlimited cache over the requests the router sent it), "
        "*delivered*, predicted (each replica replayed by the cache model with its real KV size and the requests' "
        "actual times) and measured (the replicas' `cached_tokens`). Intervals are 95% t intervals over the passes; "
        "the policies are compared pass by pass (same lifetime and repeat), each contrast by the report's claim rule "
        "with its MDE; no A/A floor exists between policies, so a claim needs only an interval that excludes 1."
    )


def replicas_section(
    points: pl.DataFrame, contrasts: pl.DataFrame, sim: pl.DataFrame, curve: pl.DataFrame, router: Mapping[str, Any]
) -> ReplicaSection:
    """The whole section from aggregation's tables (empty tables: the run had no router, or `router`, the lifetime's
    server.json `router`, says it had one and no cache-on pass was measured behind it)."""
    if points.is_empty() and router:
        return ReplicaSection(False, NOT_MEASURED)
    if points.is_empty():
        return ReplicaSection(False, NOT_RUN)
    words: list[str] = [prediction_words(points)]
    pairs = rows_of(contrasts) if contrasts.height else []
    for key, grp in points.group_by(["regime", "reuse_pct", "concurrency", "request_rate"], maintain_order=True):
        here = [c for c in pairs if (c["regime"], c["reuse_pct"], c["concurrency"], c["request_rate"]) == key]
        words += split_words(rows_of(grp))
        words.append(hits_and_speed(rows_of(grp), here))
    words.append(imbalance_words(points))
    words.append(sim_words(sim, points, int(points["replicas"][0])) if sim.height else NO_SIMULATOR)
    return ReplicaSection(
        True,
        intro(points, router),
        rates_table(points),
        load_table(points),
        contrasts_table(contrasts) if contrasts.height else "",
        sim_table(sim, points) if sim.height else "",
        [w for w in words if w],
        curve_words(curve),
    )
