"""Two runs side by side: for every contrast both measured, how its effect moved, and what changed in the setup.

Reads each run's results.json (prefixbench.results_file; a results/ folder or a published docs/results/<run> folder),
matches contrasts on their `key` (the same contrast in any run: prefixbench.verdicts.key_of), and for each pair
gives the ratio of the two effects A/B with a 95% interval. The runs are independent measurements, so the interval
combines their own on the log scale: each run's standard error is its interval's half-width on the log scale over
1.96 (exact for the paired t and log-normal intervals, an approximation for the bootstrap ones, whose two sides can
differ), the difference's is the root of the sum of squares. The verdict follows the claim rule's idea: the runs
differ only where that interval excludes 1, and where it includes 1 the smallest difference it could have detected
(80% power) is stated. Then every setup field whose value differs, so a reader sees what the two runs changed
(engine version, GPU, model, dtype, ...) beside what moved.

`main` is the `prefixbench compare` command (argparse: RUN_A RUN_B [-o OUT.md]).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .findings.claims import DESIGN_FAILED
from .results_file import ResultsError, read_results
from .stats import outside_floor

Z95, Z80 = 1.959964, 0.841621
FAMILY_TITLES = {
    "cache_effect": "Cache effects (hit against miss)",
    "shape": "Workload shapes",
    "throughput": "Throughput (output tok/s, cache on over off)",
    "flag_cost": "What leaving the cache on costs (0% reuse)",
    "control": "Controls (true ratio 1)",
}


@dataclass(frozen=True)
class Between:
    """The ratio of two runs' effects A/B, its 95% interval, the smallest change it could detect, and the verdict."""

    ratio: float | None
    lo: float | None
    hi: float | None
    mde_pct: float | None
    verdict: str


def log_se(lo: float | None, hi: float | None) -> float | None:
    """A 95% interval's standard error on the log scale (its half-width over 1.96); None without a usable interval."""
    if lo is None or hi is None or lo <= 0 or hi < lo:
        return None
    return (math.log(hi) - math.log(lo)) / (2 * Z95)


def between(a: Mapping[str, Any], b: Mapping[str, Any]) -> Between:
    """A's effect over B's, with an interval that treats the runs as independent (log scale)."""
    ra, rb = a.get("ratio"), b.get("ratio")
    if ra is None or rb is None or ra <= 0 or rb <= 0:
        return Between(None, None, None, None, "not compared: " + ("A" if ra is None else "B") + " has no effect")
    failed = [n for n, c in (("A", a), ("B", b)) if c.get("reason") == DESIGN_FAILED]
    if failed:
        return Between(ra / rb, None, None, None, f"not compared: the paired design failed in {' and '.join(failed)}")
    ratio = ra / rb
    se_a, se_b = log_se(a.get("lo"), a.get("hi")), log_se(b.get("lo"), b.get("hi"))
    if se_a is None or se_b is None:
        which = " and ".join(n for n, s in (("A", se_a), ("B", se_b)) if s is None)
        return Between(ratio, None, None, None, f"not compared: no interval in {which}")
    se = math.hypot(se_a, se_b)
    lo, hi = math.exp(math.log(ratio) - Z95 * se), math.exp(math.log(ratio) + Z95 * se)
    mde = (math.exp((Z95 + Z80) * se) - 1) * 100
    band = floor_between(a, b)
    if lo <= 1 <= hi:
        words = f"no difference larger than {mde:.0f}%"
    elif not outside_floor((lo, hi), band):
        assert band is not None  # without a floor an interval that excludes 1 is outside it
        words = f"no difference beyond the runs' A/A floors ({band[0]:.2f}–{band[1]:.2f})"
    else:
        words = "differs: A's effect larger" if lo > 1 else "differs: B's effect larger"
    return Between(ratio, lo, hi, mde, words)


def floor_between(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float] | None:
    """The band two lifetime contrasts' ratio can reach by noise alone: each run's A/A floor (the band its own claims
    had to clear; none for a paired contrast) at its opposite ends, A's low over B's high and A's high over B's low.
    A difference between runs must clear it, as an effect inside a run must clear its floor (stats.outside_floor)."""

    def band(c: Mapping[str, Any]) -> tuple[float, float] | None:
        lo, hi = c.get("floor_lo"), c.get("floor_hi")
        return (float(lo), float(hi)) if lo is not None and hi is not None else None

    fa, fb = band(a), band(b)
    if fa is None and fb is None:
        return None
    la, ha = fa or (1.0, 1.0)
    lb, hb = fb or (1.0, 1.0)
    return (min(la, 1.0) / max(hb, 1.0), max(ha, 1.0) / min(lb, 1.0))


def effect(c: Mapping[str, Any]) -> str:
    """`1.52× (1.44–1.61) faster`: a run's effect, its interval and its own verdict."""
    if c.get("ratio") is None:
        return "not measured"
    band = f" ({c['lo']:.2f}–{c['hi']:.2f})" if c.get("lo") is not None and c.get("hi") is not None else " (no interval)"
    return f"{c['ratio']:.2f}×{band} {c['verdict']}"


def between_cell(x: Between) -> str:
    if x.ratio is None:
        return "–"
    return f"{x.ratio:.2f}×" + (f" ({x.lo:.2f}–{x.hi:.2f})" if x.lo is not None and x.hi is not None else "")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested setup as dotted keys (`model.name`, `hardware.gpu`); lists stay whole, as JSON."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: value}


def lifetimes_words(setup: Mapping[str, Any]) -> str:
    """The server lifetimes in one cell: how many, and the KV blocks they reported."""
    lives = setup.get("lifetimes") or []
    blocks = sorted({x.get("kv_blocks") for x in lives if x.get("kv_blocks") is not None})
    return f"{len(lives)} lifetime(s)" + (f", KV blocks {', '.join(map(str, blocks))}" if blocks else "")


def setup_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every setup field whose value differs between A and B (lifetimes summarised: their start times always do)."""
    fa = flatten({k: v for k, v in a.items() if k != "lifetimes"})
    fb = flatten({k: v for k, v in b.items() if k != "lifetimes"})
    fa["lifetimes"], fb["lifetimes"] = lifetimes_words(a), lifetimes_words(b)

    def show(v: Any) -> str:
        if v is None:
            return "–"
        return json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    return [(k, show(fa.get(k)), show(fb.get(k))) for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]


def setup_line(setup: Mapping[str, Any]) -> str:
    """What a run measured on, in one line."""
    hw = setup.get("hardware") or {}
    machine = hw.get("gpu") or hw.get("cpu") or hw.get("server") or "unknown hardware"
    engine = setup.get("engine") or {}
    model = setup.get("model") or {}
    weights = "random weights" if model.get("weights") == "random" else "real weights"
    return (
        f"{setup.get('target')} · {machine} · {engine.get('name')} {engine.get('version') or '(version unknown)'} · "
        f"{model.get('name')} ({weights}, {setup.get('dtype') or 'dtype unknown'}) · block {setup.get('block_size')} · "
        f"max_tokens {setup.get('max_tokens')}"
    )


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def compare_results(
    a: Mapping[str, Any], b: Mapping[str, Any], name_a: str = "A", name_b: str = "B", chart: str | None = None
) -> str:
    """The comparison report (markdown) of two results.json documents (`chart`: an image of the effects to show)."""
    ca = {c["key"]: c for c in a["contrasts"]}
    cb = {c["key"]: c for c in b["contrasts"]}
    both = [k for k in ca if k in cb]
    only_a = [k for k in ca if k not in cb]
    only_b = [k for k in cb if k not in ca]
    judged = {k: between(ca[k], cb[k]) for k in both}
    differ_a = [k for k in both if judged[k].verdict.endswith("A's effect larger")]
    differ_b = [k for k in both if judged[k].verdict.endswith("B's effect larger")]
    same = [k for k in both if judged[k].verdict.startswith("no difference")]
    lines = [
        f"# Comparing two prefixbench runs: A = `{name_a}`, B = `{name_b}`",
        "",
        f"- **A**: {setup_line(a['setup'])}",
        f"- **B**: {setup_line(b['setup'])}",
        "",
        f"{len(both)} contrasts measured in both runs: {len(differ_a)} with a larger effect in A, {len(differ_b)} with a "
        f"larger effect in B, {len(same)} without a difference, {len(both) - len(differ_a) - len(differ_b) - len(same)} "
        f"not comparable (an effect without an interval); {len(only_a)} only in A, {len(only_b)} only in B.",
        "",
        "Each effect is > 1 where caching helps (contrasts.csv). `A/B` is the ratio of the two effects: above 1, "
        "caching bought more in A. Its 95% interval treats the runs as independent: each run's interval gives its "
        "standard error on the log scale (half-width / 1.96; an approximation for bootstrap intervals, which need "
        "not be symmetric), and the two combine as the root of the sum of squares. The runs differ only where that "
        "interval excludes 1 and, for contrasts across server lifetimes, clears the band the two runs' A/A floors "
        "allow (A's floor over B's, at opposite ends); where it includes 1, the MDE is the smallest change of effect "
        "(80% power) it could have detected. A contrast without an interval in either run is listed, not compared.",
    ]
    if chart:
        lines += ["", f"![Every contrast measured in both runs, each run's effect with its 95% interval]({chart})"]
    for family, title in FAMILY_TITLES.items():
        keys = [k for k in both if ca[k]["family"] == family]
        if not keys:
            continue
        lines += ["", f"## {title}", "", "| contrast | metric | A | B | A/B (95% CI) | verdict |", "|---|---|---|---|---|---|"]
        for k in keys:
            x = judged[k]
            label = ca[k]["label"] + (f" (B: {cb[k]['label']})" if cb[k]["label"] != ca[k]["label"] else "")
            lines.append(
                f"| {cell(label)} | {ca[k]['metric']} | {cell(effect(ca[k]))} | {cell(effect(cb[k]))} | "
                f"{between_cell(x)} | {cell(x.verdict)} |"
            )
    for name, keys, src in (("A", only_a, ca), ("B", only_b, cb)):
        if keys:
            lines += ["", f"## Measured only in {name}", ""]
            lines += [f"- {src[k]['label']} ({src[k]['family']}, {src[k]['metric']}): {effect(src[k])}" for k in keys]
    changes = setup_changes(a["setup"], b["setup"])
    lines += ["", "## What changed between the runs' setups", ""]
    if changes:
        lines += ["| field | A | B |", "|---|---|---|"]
        lines += [f"| {cell(k)} | {cell(va)} | {cell(vb)} |" for k, va, vb in changes]
    else:
        lines.append("Nothing: the two runs' setups are identical (the same config digest, engine and hardware).")
    ta, tb = a.get("totals") or {}, b.get("totals") or {}
    lines += [
        "",
        f"Requests: A {ta.get('requests')} ({ta.get('failed')} failed) over {ta.get('points')} points; "
        f"B {tb.get('requests')} ({tb.get('failed')} failed) over {tb.get('points')} points.",
    ]
    return "\n".join(lines) + "\n"


def effects_chart(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str) -> Any:
    """Every contrast both runs measured with an effect: each run's effect and its 95% interval side by side, on a log
    axis with 1 (no effect) marked, in the report's order (an altair chart)."""
    import altair as alt

    cb = {c["key"]: c for c in b["contrasts"]}
    rows, order = [], []
    for c in a["contrasts"]:
        if c["key"] not in cb or c.get("ratio") is None or cb[c["key"]].get("ratio") is None:
            continue
        name = f"{c['label']} · {c['metric']}"
        order.append(name)
        for run, x in ((f"A: {name_a}", c), (f"B: {name_b}", cb[c["key"]])):
            rows.append({"contrast": name, "run": run, "effect": x["ratio"], "lo": x.get("lo"), "hi": x.get("hi")})
    base = alt.Chart(alt.Data(values=rows)).encode(
        y=alt.Y("contrast:N", sort=order, title=None, axis=alt.Axis(labelLimit=420)),
        yOffset=alt.YOffset("run:N"),
        color=alt.Color("run:N", title=None, legend=alt.Legend(orient="top")),
    )
    values = [v for r in rows for v in (r["effect"], r["lo"], r["hi"]) if v is not None and v > 0] or [1.0]
    scale = alt.Scale(type="log", domain=[min(*values, 1.0) / 1.1, max(*values, 1.0) * 1.1], nice=False)
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q", scale=scale, title="effect (> 1: caching helps)"), x2="hi:Q")
    dots = base.mark_point(filled=True, size=50).encode(
        x=alt.X("effect:Q", scale=scale), tooltip=["run:N", "effect:Q", "lo:Q", "hi:Q"]
    )
    one = alt.Chart(alt.Data(values=[{"x": 1.0}])).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (one + bars + dots).properties(width=420, height=alt.Step(14), title="Each run's effects with 95% intervals")


def run_name(path: Path) -> str:
    """A run's name for the report: its folder (the run's, where the path is its results/ folder or file)."""
    path = path.resolve()
    if path.is_file():
        path = path.parent
    return path.parent.name if path.name == "results" else path.name


def compare_runs(run_a: Path, run_b: Path) -> str:
    """The comparison report (markdown) of two run folders (or results.json files)."""
    return compare_results(read_results(Path(run_a)), read_results(Path(run_b)), run_name(Path(run_a)), run_name(Path(run_b)))


def main(argv: Sequence[str] | None = None) -> int:
    """`prefixbench compare RUN_A RUN_B [-o OUT.md]`: write the comparison and print its path."""
    parser = argparse.ArgumentParser(
        prog="prefixbench compare",
        description="Compare two prefixbench runs (folders holding results.json): per contrast the ratio of their "
        "effects with a 95%% interval, and what changed between their setups.",
    )
    parser.add_argument(
        "run_a", type=Path, metavar="RUN_A", help="a results/ folder, a docs/results/<run> folder or a results.json"
    )
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="the run to compare it with")
    parser.add_argument("-o", "--output", type=Path, help="where to write the markdown (default: compare-A-vs-B.md here)")
    parser.add_argument("--no-chart", action="store_true", help="write the markdown only (no PNG of the effects beside it)")
    args = parser.parse_args(argv)
    try:
        a, b = read_results(args.run_a), read_results(args.run_b)
    except (FileNotFoundError, ResultsError, json.JSONDecodeError) as exc:
        print(f"prefixbench compare: {exc}", file=sys.stderr)
        return 2
    names = run_name(args.run_a), run_name(args.run_b)
    out = args.output or Path(f"compare-{names[0]}-vs-{names[1]}.md")
    chart = None
    if not args.no_chart:
        png = out.with_suffix(".png")
        effects_chart(a, b, *names).save(str(png), scale_factor=2)
        chart = png.name
    out.write_text(compare_results(a, b, *names, chart=chart))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
