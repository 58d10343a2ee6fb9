#!/usr/bin/env python3
"""An A/A run of the paired design on a real server: both arms salted (every request a forced miss), counterbalanced
sub-blocks in one closed loop per concurrency level, exactly as a cache-on lifetime runs its points. Its paired
contrast must claim nothing; its MDE is how small a difference the design resolves there. Records and the server's
info go to --out; `prefixbench.paired.paired_table` on the records gives the verdicts (aggregation needs no GPU).

  python3 scripts/aa_check.py --script results/servers/serve_slm_with_prefix_cache.sh \
      --prompts results/prompts/large.jsonl --concurrency 1 16 --requests 128 --model phi3-mini-dummy --out results/aa
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefixbench import ON  # noqa: E402
from prefixbench.config import default_bench_settings  # noqa: E402
from prefixbench.measure import Point, measure_mode  # noqa: E402
from prefixbench.prompts import read_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", type=Path, default=Path("results/servers/serve_slm_with_prefix_cache.sh"))
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--reuse", type=int, default=100)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1])
    ap.add_argument("--requests", type=int, default=128, help="prompts per point (each sent once per arm)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", required=True, help="served model name")
    ap.add_argument("--python", default=".venv-server/bin/python")
    ap.add_argument("--out", type=Path, default=Path("results/aa"))
    args = ap.parse_args()

    pool = [p["request_index"] for p in read_prompts(args.prompts) if p["reuse_pct"] == args.reuse][: args.requests]
    args.out.mkdir(parents=True, exist_ok=True)
    points = [
        Point(
            args.prompts.stem,
            args.reuse,
            c,
            args.prompts,
            args.out / f"c{c}.jsonl",
            args.out / f"c{c}.meta.json",
            request_indices=tuple(pool),
        )  # fmt: skip
        for c in args.concurrency
    ]
    measure_mode(
        ON,
        script=args.script,
        host="127.0.0.1",
        log_path=args.out / "server.log",
        server_info_path=args.out / "server.json",
        model=args.model,
        points=points,
        settings=default_bench_settings(paired="miss_miss", max_tokens=args.max_tokens, warmup_requests=4, repeats=1),
        ready_timeout_s=900,
        python=args.python,
        engine="vllm",  # the A/A check drives a vLLM server script
        extra_info={"lifetime": "A/A", "design": "miss_miss"},
        journal_path=args.out / "journal.jsonl",
    )


if __name__ == "__main__":
    main()
