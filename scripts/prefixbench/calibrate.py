"""Calibration: one server start before the measured ones, timing cold requests to size the sweep.

It serves two ends: the plan (see plan.py) and a warm-up start, so that compile caches on disk are
already warm when the measured servers start and neither cache setting gets them cold.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .client import ClientConfig, record_dict, run_closed_loop
from .corpus import text_of_at_least
from .engines import engine_for
from .plan import fit_rates, make_plan, plan_summary
from .prompts import read_prompts
from .server import ManagedServer, ServerError
from .settings import BenchSettings, api_key

SHORT_PROMPT_TOKENS = 16


def calibration_prompt(i: int, approx_tokens: int) -> str:
    """Cold text of about `approx_tokens` tokens, sharing no block with any measured or other calibration prompt."""
    return f"Calibration {i}. " + text_of_at_least("rag_document", f"calibration:{i}", approx_tokens * 4)


async def time_cold_requests(cfg: ClientConfig, lengths: Sequence[int], per_length: int = 2) -> list[dict]:
    """Cold requests of each approximate length, one at a time; every record, ok or failed."""
    items = [(i, calibration_prompt(i, n)) for i, n in enumerate(x for x in lengths for _ in range(per_length))]
    out: list[dict] = []
    await run_closed_loop(cfg, items, 1, lambda r: out.append(record_dict(r)))
    return out


def calibrate(
    script: Path,
    host: str,
    log_path: Path,
    ready_timeout_s: float,
    model: str,
    settings: BenchSettings,
    prompt_paths: Sequence[Path],
    points: Sequence[tuple[str, int, int, float]],
    budget_s: float | None,
    engine: str,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Start the cache-off server, time cold requests of the regimes' lengths, and plan the sweep. A replicated target
    calibrates one server with the first replica's `env` (its cores or GPU): the plan sizes each pass as one replica
    would serve it, and a cache-on lifetime runs a pass per routing policy, so it takes up to that many times the plan's
    estimate (the plan does not know the router)."""
    prompts = {p.stem: read_prompts(p) for p in prompt_paths}
    lengths = sorted({SHORT_PROMPT_TOKENS} | {max(r["prompt_len_tokens"] for r in rs) for rs in prompts.values()})
    eng = engine_for(engine)
    with ManagedServer(script, host, log_path, ready_timeout_s, api_key=api_key(settings), engine=eng, env=env) as server:
        cfg = ClientConfig.of(server.base_url, model, settings, eng)
        asyncio.run(time_cold_requests(cfg, [SHORT_PROMPT_TOKENS], per_length=1))  # first request: lazy init
        records = asyncio.run(time_cold_requests(cfg, lengths))
        startup_s = server.startup_s
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise ServerError(f"calibration request failed: {bad[0]['error']}")
    rates = fit_rates([(r["prompt_tokens"], r["ttft_s"], r["e2e_s"], r["completion_tokens"]) for r in records])
    plan = make_plan(
        rates,
        points,
        prompts,
        budget_s,
        settings.max_tokens,
        settings.repeats,
        min_rounds=settings.min_rounds,
        instances=settings.instances,
        paired=settings.paired != "none",
    )
    plan["summary"] = plan_summary(plan)
    plan["calibration"] = {
        "startup_s": startup_s,
        "requests": [{k: r[k] for k in ("prompt_tokens", "ttft_s", "e2e_s", "completion_tokens")} for r in records],
    }
    return plan


def write_plan(plan: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=2))


def read_plan(path: Path | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None
