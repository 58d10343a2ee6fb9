"""A tiny stand-in for a vLLM server behind vLLM's router: it answers the paths the router calls and logs every request.

Run: `python tests/router_stub.py --port P --log FILE [--no-render] [--die-after N] [--delay-ms MS]`.

Each request is appended to `--log` as one JSON line: {port, method, path, headers, body, t}. That log is how the
router's behaviour is established by experiment (which worker got which request, which headers and body fields
were forwarded) and how tests/unit/test_router_real_stub.py compares the router's decisions with
prefixbench.routing's. Tokens are words: a prompt's token ids are the CRC32 of each whitespace-separated word, so
two prompts share a token prefix exactly when they share a word prefix (enough for the router's cache_aware tree).

Only the standard library and aiohttp (in .venv-dev through the test dependencies and in any vLLM environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import zlib
from pathlib import Path

from aiohttp import web

MODEL = "stub-model"


def token_ids(prompt: object) -> list[int]:
    """Word tokens: CRC32 of each word modulo a 50k vocabulary (stable across processes, unlike hash())."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return [zlib.crc32(w.encode()) % 50_000 for w in text.split()]


class Stub:
    """The stub's state: its log file, its port, the completions served (for --die-after)."""

    def __init__(self, port: int, log: Path, render: bool, die_after: int | None, delay_s: float, get_load: bool = True) -> None:
        self.port, self.log, self.render, self.die_after, self.delay_s = port, log, render, die_after, delay_s
        self.get_load = get_load
        self.completions = 0

    def record(self, request: web.Request, body: object) -> None:
        line = {
            "port": self.port,
            "method": request.method,
            "path": request.path,
            "headers": dict(request.headers),
            "body": body,
            "t": time.time(),
        }
        with self.log.open("a") as f:
            f.write(json.dumps(line) + "\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.record(request, body)
        path = request.path
        if path in ("/health", "/ping"):
            return web.Response(text="")
        if path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "stub"}]})
        if path == "/load" or (path == "/get_load" and self.get_load):
            return web.json_response({"load": 0, "server_load": 0})
        if path == "/metrics":
            return web.Response(text="# stub\nvllm:num_requests_running 0\n", content_type="text/plain")
        if path == "/v1/completions/render":
            if not self.render:
                return web.json_response({"detail": "Not Found"}, status=404)
            prompt = body.get("prompt", "") if isinstance(body, dict) else ""
            prompts = prompt if isinstance(prompt, list) else [prompt]
            return web.json_response(
                [
                    {"request_id": f"render-{i}", "model": MODEL, "token_ids": token_ids(p), "sampling_params": {}}
                    for i, p in enumerate(prompts)
                ]
            )
        if path in ("/v1/completions", "/v1/chat/completions"):
            return await self.complete(request, body if isinstance(body, dict) else {})
        return web.json_response({"detail": "Not Found"}, status=404)

    async def complete(self, request: web.Request, body: dict) -> web.StreamResponse:
        self.completions += 1
        prompt_tokens = len(token_ids(body.get("prompt", body.get("messages", ""))))
        n_out = int(body.get("max_tokens") or 4)
        rid = request.headers.get("X-Request-Id") or body.get("request_id") or f"cmpl-{self.completions}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_out,
            "total_tokens": prompt_tokens + n_out,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        dying = self.die_after is not None and self.completions >= self.die_after
        if not body.get("stream"):
            if dying:
                os._exit(1)
            await asyncio.sleep(self.delay_s)
            return web.json_response(
                {
                    "id": rid,
                    "object": "text_completion",
                    "model": MODEL,
                    "choices": [{"index": 0, "text": " x" * n_out, "finish_reason": "length"}],
                    "usage": usage,
                    "stub_port": self.port,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n_out):
            await asyncio.sleep(self.delay_s / max(n_out, 1))
            chunk = {
                "id": rid,
                "object": "text_completion",
                "model": MODEL,
                "stub_port": self.port,
                "choices": [{"index": 0, "text": " x", "finish_reason": None if i < n_out - 1 else "length"}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if dying and i == 0:
                os._exit(1)  # a worker dying mid-stream: the connection drops after the first chunk
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {"id": rid, "object": "text_completion", "model": MODEL, "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--no-render", action="store_true", help="answer /v1/completions/render with 404")
    ap.add_argument("--die-after", type=int, default=None, help="exit(1) during the N-th completion")
    ap.add_argument("--no-get-load", action="store_true", help="404 on /get_load, as vLLM (it serves /load)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="time each completion takes")
    args = ap.parse_args()
    stub = Stub(args.port, args.log, not args.no_render, args.die_after, args.delay_ms / 1000, not args.no_get_load)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
