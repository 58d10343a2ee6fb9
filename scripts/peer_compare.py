#!/usr/bin/env python3
"""Cross-check prefixbench's client against vLLM's own `vllm bench serve` on the same server and prompts.

Starts one server from a generated script (cache on by default), then, each from a reset prefix cache:
prefixbench's closed-loop client, and `vllm bench serve` with the same prompts (its custom JSONL
dataset, no chat template, fixed output length, same concurrency). Prints both tools' mean/p95 TTFT
and E2E, each tool's runs interleaved (AB, BA, ...) so neither always runs on the warmer server; writes
each tool's median and min-max over its runs (the run-to-run spread) as JSON and as a Markdown table.

  .venv/bin/python scripts/peer_compare.py --prompts results/prompts/large.jsonl --concurrency 1 16 64 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402

from prefixbench.client import ClientConfig, run_closed_loop  # noqa: E402
from prefixbench.config import default_bench_settings  # noqa: E402
from prefixbench.measure import reset_prefix_cache, wait_idle, warmup_prompt  # noqa: E402
from prefixbench.peer import bench_serve_args, peer_table, run_bench_serve, spread  # noqa: E402
from prefixbench.prompts import read_prompts  # noqa: E402
from prefixbench.server import ManagedServer  # noqa: E402

DEFAULTS = default_bench_settings()  # timeouts as the schema sets them


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[94]


async def reset(base_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        await wait_idle(s, base_url)
        status = await reset_prefix_cache(s, base_url)
        if status != "ok":
            raise RuntimeError(f"prefix cache reset failed: {status}")


async def prefixbench_run(base_url: str, model: str, prompts: list[str], conc: int, max_tokens: int) -> dict:
    await reset(base_url)
    recs = []
    await run_closed_loop(
        ClientConfig(base_url, model, max_tokens, DEFAULTS.request_timeout_s, DEFAULTS.stall_timeout_s),
        list(enumerate(prompts)),
        conc,
        recs.append,
    )
    ok = [r for r in recs if r.status == "ok"]
    if len(ok) != len(recs):
        raise RuntimeError(f"{len(recs) - len(ok)} prefixbench requests failed: {recs[0].error}")
    ttft, e2e = [r.ttft_s for r in ok], [r.e2e_s for r in ok]
    return {
        "mean_ttft_s": statistics.mean(ttft),
        "p95_ttft_s": p95(ttft),
        "mean_e2e_s": statistics.mean(e2e),
        "p95_e2e_s": p95(e2e),
        "requests": len(ok),
    }


def peer_run(
    python: str, base_url: str, model: str, tokenizer: str, prompts: list[str], conc: int, max_tokens: int, workdir: Path
) -> dict:
    asyncio.run(reset(base_url))
    data = workdir / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    args = bench_serve_args(base_url, model, tokenizer, data, len(prompts), conc, max_tokens)
    res = run_bench_serve(python, [*args, "--percentile-metrics", "ttft,e2el", "--metric-percentiles", "95"], workdir)
    return {
        "mean_ttft_s": res["mean_ttft_ms"] / 1000,
        "p95_ttft_s": res["p95_ttft_ms"] / 1000,
        "mean_e2e_s": res["mean_e2el_ms"] / 1000,
        "p95_e2e_s": res["p95_e2el_ms"] / 1000,
        "requests": res["completed"],
    }


async def served_version(base_url: str) -> str:
    """The engine's version, as the server reports it (`GET /version`)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base_url}/version") as r:
            return (await r.json()).get("version", "unknown") if r.status == 200 else "unknown"
    except (aiohttp.ClientError, ValueError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", default="results/servers/serve_slm_with_prefix_cache.sh")
    ap.add_argument("--prompts", required=True, type=Path)
    ap.add_argument("--reuse", type=int, default=100)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=1, help="runs of each tool per level, alternating which goes first")
    ap.add_argument("--rounds", type=int, default=8, help="requests per level = rounds x concurrency (at least 32)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="served model name")
    ap.add_argument("--tokenizer", default="resources/models/SmolLM2-135M-Instruct")
    ap.add_argument("--python", default=".venv-server/bin/python", help="the server environment (has vllm)")
    ap.add_argument("--out", type=Path, default=Path("results/peer_compare.json"))
    args = ap.parse_args()

    pool = [p["prompt"] for p in read_prompts(args.prompts) if p["reuse_pct"] == args.reuse]
    levels = []
    version = "unknown"
    with (
        tempfile.TemporaryDirectory() as tmp,
        ManagedServer(Path(args.script), "127.0.0.1", Path(tmp) / "server.log", 900) as server,
    ):
        asyncio.run(
            run_closed_loop(
                ClientConfig(server.base_url, args.model, args.max_tokens, DEFAULTS.request_timeout_s, DEFAULTS.stall_timeout_s),
                [(0, warmup_prompt(0, 1024)), (1, warmup_prompt(1, 1024))],
                1,
                lambda r: None,
            )
        )
        version = asyncio.run(served_version(server.base_url))
        for conc in args.concurrency:
            n = max(32, args.rounds * conc)
            prompts = (pool * (n // len(pool) + 1))[:n]
            runs: dict[str, list[dict]] = {"prefixbench": [], "vllm_bench_serve": []}
            for run in range(args.runs):
                order = ["prefixbench", "vllm_bench_serve"][:: 1 if run % 2 == 0 else -1]  # interleaved: AB, BA, ...
                for tool in order:
                    if tool == "prefixbench":
                        res = asyncio.run(prefixbench_run(server.base_url, args.model, prompts, conc, args.max_tokens))
                    else:
                        res = peer_run(
                            args.python, server.base_url, args.model, args.tokenizer, prompts, conc, args.max_tokens, Path(tmp)
                        )
                    runs[tool].append(res)
                    print(
                        f"c={conc} run {run + 1} {tool}: mean TTFT {res['mean_ttft_s'] * 1e3:.1f} ms, "
                        f"mean E2E {res['mean_e2e_s'] * 1e3:.1f} ms",
                        flush=True,
                    )
            level = {"concurrency": conc, "requests": n}
            for tool, rs in runs.items():
                level[tool] = {k: spread([r[k] for r in rs]) for k in ("mean_ttft_s", "p95_ttft_s", "mean_e2e_s", "p95_e2e_s")}
            levels.append(level)
    result = {
        "server": {"script": str(args.script), "version": version, "model": args.model},
        "prompts": str(args.prompts),
        "reuse_pct": args.reuse,
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "levels": levels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = peer_table(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
