"""A stand-in for vLLM's OpenAI server (test double): /health, /v1/models, /metrics, /reset_prefix_cache, streaming
/v1/completions. FAKE_DIE_AFTER=N makes the process exit abruptly while answering request N+1; FAKE_MODELS_DOWN=1
makes /v1/models answer 503 (a managed server's readiness polls /health)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aiohttp import web

STATE = {"served": 0, "queries": 0, "hits": 0, "cached": set()}
DIE_AFTER = int(os.environ.get("FAKE_DIE_AFTER", "0"))
STALL_EVERY = int(os.environ.get("FAKE_STALL_EVERY", "0"))  # every Nth request stops mid-stream
BROKEN_EVERY = int(os.environ.get("FAKE_BROKEN_EVERY", "0"))  # every Nth request sends a malformed SSE line
MODELS_DOWN = os.environ.get("FAKE_MODELS_DOWN") == "1"


async def health(_):
    return web.Response(status=200)


async def models(_):
    if MODELS_DOWN:
        return web.Response(status=503)
    return web.json_response({"data": [{"id": "fake"}]})


async def metrics(_):
    return web.Response(
        text=(
            "# TYPE vllm:prefix_cache_queries counter\n"
            f'vllm:prefix_cache_queries_total{{model_name="fake"}} {STATE["queries"]}\n'
            "# TYPE vllm:prefix_cache_hits counter\n"
            f'vllm:prefix_cache_hits_total{{model_name="fake"}} {STATE["hits"]}\n'
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.01\n"
        )
    )


async def reset(_):
    STATE["cached"].clear()
    return web.Response(text="ok")


async def completions(request):
    key = os.environ.get("VLLM_API_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        return web.json_response({"error": "Unauthorized"}, status=401)
    body = await request.json()
    STATE["served"] += 1
    if DIE_AFTER and STATE["served"] > DIE_AFTER:
        os._exit(1)
    prompt = body["prompt"]
    # vLLM's cache_salt: a salted request's blocks are keyed by its salt too, so a fresh salt hits nothing.
    prefix = (body.get("cache_salt") or "", prompt.split("\nQ: ")[0])
    n_prompt = len(prompt.split())
    cached = n_prompt // 2 if prefix in STATE["cached"] else 0
    STATE["cached"].add(prefix)
    STATE["queries"] += n_prompt
    STATE["hits"] += cached
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    n = STATE["served"]
    for i in range(body["max_tokens"]):
        await asyncio.sleep(0.005)
        await resp.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': f' t{i}'}]})}\n\n".encode())
        if i == 1 and STALL_EVERY and n % STALL_EVERY == 0:
            await asyncio.sleep(3600)
        if i == 1 and BROKEN_EVERY and n % BROKEN_EVERY == 0:
            await resp.write(b"data: {oops\n\n")
            return resp
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": body["max_tokens"],
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
    return resp


def main() -> None:
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/reset_prefix_cache", reset)
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()
