"""The claim rule: when an off/on ratio may be called an effect of the cache, and the words for it.

An effect is claimed only where its clustered 95% interval excludes 1 and clears the run's A/A floor (see
stats.outside_floor), and a closed-loop gain only where the point's hit rate can explain it (hit_bound_of);
without an interval it is shown, not claimed. Every other part of the findings judges through these functions,
so one rule holds across the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ..formatting import fmt_pct, fmt_x
from ..stats import outside_floor
from .units import fmt_s

NOISE = 0.05  # relative change treated as no change where a rule needs one and no interval exists (hit rates)


KINDS = ("faster", "slower", "no difference", "not claimed", "not measured")  # Verdict.kind, in a table's order
DESIGN_FAILED = "the regime's 0%-reuse control found a difference"  # the reason of a contrast its design failed
# Why a ratio has no interval (interval_gap picks one): the cause and, where a setting removes it, which one.
NO_INTERVAL_ROUNDS = "too few independent rounds"
NO_INTERVAL_LIFETIMES = "one server lifetime per setting; benchmark.instances: 2 or more gives one"
NO_INTERVAL_PASSES = "one measured pass per setting; benchmark.repeats or benchmark.instances: 2 or more gives one"


@dataclass(frozen=True)
class Verdict:
    """The claim rule's answer for one ratio: `kind` a word a table can sort and count by (KINDS; "faster"/"slower"
    whatever words the sentence uses), `reason` a short phrase saying why, `words` the report's sentence. The three
    come from one walk through the rule (judge), so a table and the report cannot disagree."""

    kind: str
    reason: str
    words: str


def judge(
    ratio: float | None,
    better: str = "faster",
    worse: str = "slower",
    ci: tuple[float, float] | None = None,
    floor: tuple[float, float] | None = None,
    hit_bound: tuple[float, float] | None = None,
    mde_pct: float | None = None,
    failed: str | None = None,
    no_interval: str = NO_INTERVAL_ROUNDS,
) -> Verdict:
    """The claim rule for an off/on ratio where >1 means the cache helped.

    An effect is claimed only when its clustered 95% CI excludes 1 and clears the A/A floor (the interval two
    identical setups show on this run); without an interval nothing is claimed. `hit_bound` (hit rate, the most
    speed-up it can explain): a gain whose whole interval lies above it is not the cache's, and is not claimed.
    `mde_pct`: the smallest effect the contrast could detect, which "no difference" always states. `failed`: the
    design's control found a difference where there is none, so nothing is claimed. `no_interval`: why a ratio
    without an interval has none (interval_gap), which the reason and the sentence state."""
    if ratio is None:
        return Verdict("not measured", "no ratio: a setting had no measured window", "not measured")
    if failed:
        return Verdict("not claimed", DESIGN_FAILED, f"not claimed: {fmt_x(ratio)}, but {failed}")
    if not ci or ci[0] is None or ci[1] is None:
        gap = f"no interval: {no_interval}"
        return Verdict("not claimed", gap, f"{fmt_x(ratio)} off/on, not claimed ({gap})")
    lo, hi = ci
    band = f"95% CI {lo:.2f}–{hi:.2f}"
    if lo <= 1 <= hi:
        if mde_pct is not None:
            return Verdict(
                "no difference",
                f"no difference larger than {mde_pct:.0f}%",
                f"no difference larger than {mde_pct:.0f}% ({fmt_x(ratio)}, {band} includes 1; {mde_pct:.0f}% is the "
                "smallest effect this point could detect at 80% power)",
            )
        return Verdict("no difference", "interval includes 1", f"no measurable difference ({fmt_x(ratio)}, {band} includes 1)")
    if not outside_floor((lo, hi), floor):
        assert floor is not None  # without a floor, an interval that excludes 1 is outside it
        return Verdict(
            "not claimed",
            f"not clear of the A/A noise floor ({floor[0]:.2f}–{floor[1]:.2f})",
            f"no difference beyond the A/A noise floor ({fmt_x(ratio)}, {band}; A/A {floor[0]:.2f}–{floor[1]:.2f})",
        )
    if ratio > 1 and beyond_hits((lo, hi), hit_bound):
        assert hit_bound is not None  # beyond_hits is False without a bound
        return Verdict(
            "not claimed",
            f"more than a {fmt_pct(hit_bound[0])} hit rate can explain",
            f"not claimed: {fmt_x(ratio)} ({band}) is more than a {fmt_pct(hit_bound[0])} hit rate can remove "
            f"(at most {fmt_x(hit_bound[1])}): server-lifetime noise, not the cache",
        )
    clears = f"interval {lo:.2f}–{hi:.2f} excludes 1" + (" and clears the A/A floor" if floor else "")
    if ratio > 1:
        return Verdict(
            "faster", clears, f"{fmt_x(ratio)} {better} ({band}" + (f"; MDE {mde_pct:.0f}%)" if mde_pct is not None else ")")
        )
    return Verdict("slower", clears, f"{fmt_x(1 / ratio)} {worse} (95% CI {1 / hi:.2f}–{1 / lo:.2f})")


def verdict(
    ratio: float | None,
    better: str = "faster",
    worse: str = "slower",
    ci: tuple[float, float] | None = None,
    floor: tuple[float, float] | None = None,
    hit_bound: tuple[float, float] | None = None,
    mde_pct: float | None = None,
    failed: str | None = None,
    no_interval: str = NO_INTERVAL_ROUNDS,
) -> str:
    """Words for an off/on ratio where >1 means the cache helped: the sentence of the claim rule (judge)."""
    return judge(ratio, better, worse, ci, floor, hit_bound, mde_pct, failed, no_interval).words


def interval_gap(passes: int | None = None, lifetimes: int | None = None) -> str:
    """Why a ratio has no interval, from what it stands on: `lifetimes`, the server-lifetime pairs of a contrast
    with lifetimes as its unit (the flag cost: a t interval on pairs - 1 degrees of freedom, none from one pair);
    `passes`, the fewer side's measured passes (repeats of each lifetime) behind a throughput ratio, whose interval
    pairs the slowest and fastest pass (none from one). Otherwise the bootstrap had too few independent rounds."""
    if lifetimes is not None and lifetimes < 2:
        return NO_INTERVAL_LIFETIMES
    if passes is not None and passes < 2:
        return NO_INTERVAL_PASSES
    return NO_INTERVAL_ROUNDS


def ci_of(row: dict, name: str) -> tuple[float, float] | None:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return (lo, hi) if lo is not None and hi is not None else None


def floor_of(row: dict, name: str = "ttft_speedup") -> tuple[float, float] | None:
    """The A/A interval that goes with a ratio column (TTFT or E2E) of a speed-up row: the widest of the controls
    (`floor_*`; tables from before instance controls have only `aa_*`)."""
    kind = "e2e" if name.startswith("e2e") else "ttft"
    lo, hi = row.get(f"floor_{kind}_lo", row.get(f"aa_{kind}_lo")), row.get(f"floor_{kind}_hi", row.get(f"aa_{kind}_hi"))
    return (lo, hi) if lo is not None and hi is not None else None


def hit_bound_of(row: dict, name: str = "ttft_speedup") -> tuple[float, float] | None:
    """(hit rate, 1 / (1 - hit rate)) for a closed-loop TTFT or E2E ratio: with a share h of the prompt tokens
    served from cache, the cache can remove at most that share of the prefill work, so off/on is at most
    1 / (1 - h) (fixed costs and decode only lower it; a quadratic attention term lowers it too). Open-loop
    points are left out: there a queue that grows past saturation can make the gain larger than the work saved."""
    h = row.get("window_hit_rate_on", row.get("measured_hit_rate_on"))  # the window's requests, where recorded
    if name not in ("ttft_speedup", "e2e_speedup") or h is None or not 0 <= h < 1 or row.get("request_rate"):
        return None
    return h, 1 / (1 - h)


def beyond_hits(ci: tuple[float, float], bound: tuple[float, float] | None) -> bool:
    """The whole interval lies above what the point's hit rate can explain (hit_bound_of)."""
    return bound is not None and ci[0] > bound[1]


def judgment(row: dict, name: str = "ttft_speedup") -> Verdict:
    """The claim rule on a speed-up row's ratio column (TTFT or E2E): its interval, A/A floor, hit-rate bound, and
    for TTFT its MDE and the design's control."""
    ttft = name == "ttft_speedup"
    return judge(
        row.get(name),
        ci=ci_of(row, name),
        floor=floor_of(row, name),
        hit_bound=hit_bound_of(row, name),
        mde_pct=row.get("mde_ttft_pct") if ttft else None,
        failed=row.get("design_failed") if ttft else None,
    )


def judged(row: dict, name: str = "ttft_speedup") -> str:
    if row.get(name) is None:
        return f"not measured ({why_unmeasured(row)})"
    return judgment(row, name).words


def why_unmeasured(row: dict) -> str:
    """Why a point has no ratio: most often a steady-state window that never opened (too few requests for its
    concurrency: the opening burst and the drain are all there was)."""
    if 0 in (row.get("window_requests_off"), row.get("window_requests_on")):
        return "no steady-state window: too few requests for its concurrency"
    return "no successful request in one of the settings"


def measured(sp: pl.DataFrame, name: str = "ttft_speedup") -> pl.DataFrame:
    """The rows that have the ratio `name`: a finding compares only these, and says which others it could not."""
    return sp.filter(pl.col(name).is_not_null()) if name in sp.columns else sp.clear()


def saved(row: dict) -> str:
    """Mean TTFT saved per request (off minus on), or n/a where either side has no window."""
    off, on = row.get("mean_ttft_s_off"), row.get("mean_ttft_s_on")
    return "n/a" if off is None or on is None else fmt_s(off - on)


def unmeasured_words(sp: pl.DataFrame, name: str = "ttft_speedup") -> str:
    """A sentence naming the points a finding had to leave out, or nothing."""
    missing = [r for r in rows_of(sp) if r.get(name) is None] if name in sp.columns else []
    if not missing:
        return ""
    return (
        f" Left out, not measured: {', '.join(point_name(r) for r in missing)} ({why_unmeasured(missing[0])})."
        if len({why_unmeasured(r) for r in missing}) == 1
        else " Left out, not measured: " + ", ".join(f"{point_name(r)} ({why_unmeasured(r)})" for r in missing) + "."
    )


def span(lo: str, hi: str) -> str:
    """`lo to hi`, or one value where both ends print the same (never "2.47× to 2.47×")."""
    return lo if lo == hi else f"{lo} to {hi}"


def point_name(row: dict) -> str:
    return f"{row['regime']} reuse {row['reuse_pct']}% {load_label(row)}"


def helped(row: dict, name: str = "ttft_speedup") -> bool:
    """The cache helped beyond noise: the claim rule says faster (the CI lies above 1 and above the A/A floor, and
    not wholly above what the point's hit rate can explain)."""
    return judgment(row, name).kind == "faster"


def hurt(row: dict, name: str = "ttft_speedup") -> bool:
    """The cache made it slower beyond noise: the claim rule says slower."""
    return judgment(row, name).kind == "slower"


@dataclass
class Finding:
    answer: str
    details: list[str]


def rows_of(df: pl.DataFrame) -> list[dict]:
    """A table's rows as dicts, the form the claim rule reads."""
    return list(df.iter_rows(named=True))


def load_label(row: dict) -> str:
    return f"open loop {row['request_rate']:g} req/s" if row.get("request_rate") else f"c={row['concurrency']}"
