#!/usr/bin/env python3
"""Cross-check prefixbench's client against vLLM's own `vllm bench serve`: a comparison that can fail.

Starts one server from a generated script (cache on), then per concurrency level runs both tools in balanced pairs
(AB, BA, BA, AB, ...) on the same warm server: before every run the prefix cache is reset and the shared prefix
warmed with a request of its own, so every run does the same work; each run's mean TTFT covers its steady-state
window from that tool's own per-request output (`vllm bench serve --save-detailed`). The paired log-ratios give an
equivalence verdict against a stated margin (prefixbench.peer.equivalence: equivalent, differs, inconclusive), the
order effect, and each tool against the server's own TTFT histogram. Writes JSON and a Markdown table.

  .venv/bin/python scripts/peer_compare.py --prompts results/prompts/large.jsonl --concurrency 1 16 --pairs 10
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
from prefixbench.endpoint import Capabilities  # noqa: E402
from prefixbench.engines import engine_for  # noqa: E402
from prefixbench.measure import wait_idle, warmup_prompt  # noqa: E402
from prefixbench.peer import MARGIN, TOOLS, bench_serve_args, level_verdict, peer_table, run_bench_serve, window_mean_ttft  # noqa: E402
from prefixbench.prompts import read_prompts  # noqa: E402
from prefixbench.server import ManagedServer  # noqa: E402
from prefixbench.target import MeasuredTarget, Replica  # noqa: E402

DEFAULTS = default_bench_settings()  # timeouts as the schema sets them


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[94]


VLLM = engine_for("vllm")  # the peer is vLLM's own client, so the server is vLLM
TTFT = VLLM.metrics.ttft


def target_at(base_url: str) -> MeasuredTarget:
    """The one server this tool starts, as the measuring code sees it."""
    return MeasuredTarget(base_url, (Replica(base_url, Path("server.log")),), VLLM, Capabilities.everything())


async def prepare(cfg: ClientConfig, warm_prompt: str) -> dict[str, float]:
    """Idle server, reset prefix cache, the shared prefix warmed by a request of its own; the counters before the run."""
    target = target_at(cfg.base_url)
    async with aiohttp.ClientSession() as s:
        await wait_idle(s, target)
        status = await target.reset_cache(s)
        if status != "ok":
            raise RuntimeError(f"prefix cache reset failed: {status}")
    await run_closed_loop(cfg, [(0, warm_prompt)], 1, lambda r: None)
    async with aiohttp.ClientSession() as s:
        await wait_idle(s, target)
        return await target.read_metrics(s)


async def server_mean_ttft(base_url: str, before: dict[str, float]) -> float | None:
    target = target_at(base_url)
    async with aiohttp.ClientSession() as s:
        await wait_idle(s, target)
        after = await target.read_metrics(s)
    n = after.get(f"{TTFT}_count", 0.0) - before.get(f"{TTFT}_count", 0.0)
    return (after.get(f"{TTFT}_sum", 0.0) - before.get(f"{TTFT}_sum", 0.0)) / n if n > 0 else None


def summarize_run(start: list[float], ttft: list[float], e2e: list[float], conc: int, server: float | None) -> dict:
    ok = [t for t in ttft if t is not None]
    return window_mean_ttft(start, ttft, e2e, conc) | {
        "all_mean_ttft_s": statistics.mean(ok) if ok else None,
        "server_mean_ttft_s": server,
        "requests": len(ttft),
        "failed": len(ttft) - len(ok),
    }


async def prefixbench_run(cfg: ClientConfig, warm: str, prompts: list[str], conc: int) -> dict:
    before = await prepare(cfg, warm)
    recs = []
    await run_closed_loop(cfg, list(enumerate(prompts)), conc, recs.append)
    recs.sort(key=lambda r: r.start_s)
    ok = [r for r in recs if r.status == "ok"]
    if len(ok) != len(recs):
        raise RuntimeError(f"{len(recs) - len(ok)} prefixbench requests failed: {recs[0].error}")
    return summarize_run([r.start_s for r in ok], [r.ttft_s for r in ok], [r.e2e_s for r in ok], conc,
                         await server_mean_ttft(cfg.base_url, before))  # fmt: skip


def peer_run(python: str, cfg: ClientConfig, tokenizer: str, warm: str, prompts: list[str], conc: int, workdir: Path) -> dict:
    before = asyncio.run(prepare(cfg, warm))
    data = workdir / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    args = bench_serve_args(cfg.base_url, cfg.model, tokenizer, data, len(prompts), conc, cfg.max_tokens)
    res = run_bench_serve(python, [*args, "--save-detailed", "--percentile-metrics", "ttft,e2el"], workdir)
    ttft = res["ttfts"]
    # vLLM 0.26 saves no per-request latency: it is the TTFT plus the inter-token gaps (as newer vLLM computes it).
    lat = res.get("latencies") or [(t or 0.0) + sum(i or []) for t, i in zip(ttft, res["itls"])]
    # Per-request send times where this vLLM saves them; else request order stands in (closed loop: round i // c).
    start = res.get("start_times") or [float(i // conc) for i in range(len(ttft))]
    keep = [i for i, t in enumerate(ttft) if t and (not res.get("errors") or not res["errors"][i])]
    if len(keep) != len(ttft):  # as for prefixbench's own run: a failed request makes the run useless
        raise RuntimeError(f"{len(ttft) - len(keep)} vllm bench serve requests failed: {res.get('errors', ['?'])[:1]}")
    return summarize_run([start[i] for i in keep], [ttft[i] for i in keep], [lat[i] for i in keep], conc,
                         asyncio.run(server_mean_ttft(cfg.base_url, before)))  # fmt: skip


ORDERS = (TOOLS, TOOLS[::-1], TOOLS[::-1], TOOLS)  # AB, BA, BA, AB: balanced over every four pairs


async def served_version(base_url: str) -> str:
    """The engine's version, as the server reports it (`GET /version`)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base_url}{VLLM.version_path}") as r:
            return (await r.json()).get("version", "unknown") if r.status == 200 else "unknown"
    except (aiohttp.ClientError, ValueError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", default="results/servers/serve_slm_with_prefix_cache.sh")
    ap.add_argument("--prompts", required=True, type=Path)
    ap.add_argument("--reuse", type=int, default=100)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1])
    ap.add_argument("--pairs", type=int, default=10, help="balanced pairs of runs (one run of each tool) per level")
    ap.add_argument("--rounds", type=int, default=6, help="requests per run = rounds x concurrency (at least 16)")
    ap.add_argument("--margin", type=float, default=MARGIN, help="equivalence margin (0.10: +-10 %%)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="served model name")
    ap.add_argument("--tokenizer", default="resources/models/SmolLM2-135M-Instruct")
    ap.add_argument("--python", default=".venv-server/bin/python", help="the server environment (has vllm)")
    ap.add_argument("--out", type=Path, default=Path("results/peer_compare.json"))
    args = ap.parse_args()

    pool = [p["prompt"] for p in read_prompts(args.prompts) if p["reuse_pct"] == args.reuse]
    warm, pool = pool[-1], pool[:-1]  # the warm-up prompt shares the prefix and is never measured
    levels = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        ManagedServer(Path(args.script), "127.0.0.1", Path(tmp) / "server.log", 900, engine=VLLM) as server,
    ):
        cfg = ClientConfig(
            server.base_url, args.model, args.max_tokens, DEFAULTS.request_timeout_s, DEFAULTS.stall_timeout_s, engine=VLLM
        )
        asyncio.run(run_closed_loop(cfg, [(0, warmup_prompt(0, 1024)), (1, warmup_prompt(1, 1024))], 1, lambda r: None))
        version = asyncio.run(served_version(server.base_url))
        for conc in args.concurrency:
            n = min(max(16, args.rounds * conc), len(pool))
            prompts = pool[:n]
            pairs = []
            for k in range(args.pairs):
                order = ORDERS[k % len(ORDERS)]
                pair: dict = {"order": list(order)}
                for tool in order:
                    if tool == "prefixbench":
                        pair[tool] = asyncio.run(prefixbench_run(cfg, warm, prompts, conc))
                    else:
                        pair[tool] = peer_run(args.python, cfg, args.tokenizer, warm, prompts, conc, Path(tmp))
                pairs.append(pair)
                print(
                    f"c={conc} pair {k + 1} ({'-'.join(t[0] for t in order)}): "
                    + ", ".join(f"{t} {pair[t]['mean_ttft_s'] * 1e3:.2f} ms" for t in TOOLS if pair[t]["mean_ttft_s"]),
                    flush=True,
                )
                pair_level = {"concurrency": conc, "requests": n, "pairs": pairs}
                # Written after every pair: a deadline that stops the command keeps every pair it finished.
                write(args, version, [*levels, pair_level | {"verdict": level_verdict(pair_level, args.margin)}])
            level = {"concurrency": conc, "requests": n, "pairs": pairs}
            level["verdict"] = level_verdict(level, args.margin)
            levels.append(level)
    print(write(args, version, levels))


def write(args: argparse.Namespace, version: str, levels: list[dict]) -> str:
    """The result so far as JSON and as the Markdown table; returns the table."""
    result = {
        "server": {"script": str(args.script), "version": version, "model": args.model},
        "prompts": str(args.prompts),
        "reuse_pct": args.reuse,
        "max_tokens": args.max_tokens,
        "pairs": args.pairs,
        "margin": args.margin,
        "levels": levels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = peer_table(result)
    args.out.with_suffix(".md").write_text(table)
    return table


if __name__ == "__main__":
    main()
