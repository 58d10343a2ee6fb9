#!/usr/bin/env python3
"""Where a run's time went: environments, model conversion, calibration, server starts, each point, report.

A benchmark that prints figures (not a test): run it after `./run.sh` in the same folder.

    .venv/bin/python scripts/where_the_time_goes.py [--root .]

It reads what the run left behind: `.venv*/.prefixbench-build-seconds` (written by run.sh when it
creates an environment), Snakemake's `results/benchmarks/*.tsv`, `results/calibration.json`,
`results/raw/{mode}/i{k}/server.json` and every point's `meta.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefixbench.host import SHOWN_FLAGS, read_cpu_info  # noqa: E402


def bench_s(path: Path) -> float | None:
    """Wall seconds from a Snakemake benchmark file (its `s` column)."""
    try:
        with path.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return sum(float(r["s"]) for r in rows)
    except (OSError, KeyError, ValueError):
        return None


def rows(root: Path) -> list[tuple[str, float | None, str]]:
    res = root / "results"
    out: list[tuple[str, float | None, str]] = []
    for env in (".venv", ".venv-server"):
        f = root / env / ".prefixbench-build-seconds"
        out.append(
            (
                f"environment {env}",
                float(f.read_text()) if f.exists() else None,
                "created by run.sh" if f.exists() else "not created in this run (or before this was recorded)",
            )
        )
    out.append(("model conversion", bench_s(res / "benchmarks/convert_smollm2.tsv"), "SmolLM2 GGUF -> safetensors"))
    prompts = [bench_s(p) for p in sorted((res / "benchmarks").glob("prompts_*.tsv"))]
    out.append(("prompts", sum(p for p in prompts if p) if prompts else None, f"{len(prompts)} regime(s)"))
    plan_path = res / "calibration.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        out.append(
            (
                "calibration",
                bench_s(res / "benchmarks/calibrate.tsv"),
                f"server ready after {plan['calibration']['startup_s']:.0f} s; {plan['summary']}",
            )
        )
    for info_path in sorted(res.glob("raw/*/i*/server.json"), key=lambda p: p.stat().st_mtime):
        mode, lifetime = info_path.parent.parent.name, info_path.parent.name
        total = bench_s(res / f"benchmarks/measure_{mode}_{lifetime}.tsv")
        info = json.loads(info_path.read_text())
        out.append((f"measure {mode} {lifetime}", total, f"server ready after {info.get('startup_s') or 0:.0f} s"))
        for meta_path in sorted(info_path.parent.glob("*/*.meta.json")):
            meta = json.loads(meta_path.read_text())
            label = f"  {meta['regime']} reuse {meta['reuse_pct']}% " + (
                f"rate {meta['request_rate']:g}/s" if meta.get("request_rate") else f"c{meta['concurrency']}"
            )
            out.append((label, meta["wall_s"], f"{meta['requests_ok']}/{meta['requests_sent']} requests ok"))
    for step in ("aggregate", "charts", "report"):
        out.append((step, bench_s(res / f"benchmarks/{step}.tsv"), ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository folder the run happened in")
    args = ap.parse_args()
    cpu = read_cpu_info()
    flags = ", ".join(f for f in SHOWN_FLAGS if f in cpu.flags) or "none of " + ", ".join(SHOWN_FLAGS)
    dtype = ""
    info_path = args.root / "results/raw/no_prefix_cache/i1/server.json"
    if info_path.exists():
        choice = json.loads(info_path.read_text()).get("dtype_choice")
        dtype = f"; dtype {choice['dtype']} ({choice['reason']})" if choice else ""
    print(f"CPU: {cpu.model} ({flags}){dtype}")
    table = rows(args.root)
    width = max(len(r[0]) for r in table)
    top = [s for name, s, _ in table if s is not None and not name.startswith("  ")]
    for name, seconds, note in table:
        shown = f"{seconds:8.1f} s" if seconds is not None else "       - "
        print(f"{name:<{width}}  {shown}  {note}")
    print(f"{'total of the steps above':<{width}}  {sum(top):8.1f} s  (measure includes its server start)")


if __name__ == "__main__":
    main()
