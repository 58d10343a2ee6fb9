#!/usr/bin/env python3
"""How many requests per second prefixbench's client sustains, beside `vllm bench serve`'s client.

The client must never be the bottleneck of a measurement. This starts an instant streaming server
(N processes sharing one port, each answer `max_tokens` chunks with continuous usage, no model and
no sleeps), then alternates the two clients on it, closed loop, at each concurrency: prefixbench's
`run_closed_loop` and `vllm bench serve` (same request count, output length, concurrency). It prints
requests/s of every run, each tool's range, and the ratio of their medians. Run it on an idle machine:
the server's processes share the CPU with the client being measured.

  .venv/bin/python scripts/client_throughput.py --concurrency 64 256 --requests 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefixbench.client import ClientConfig, run_closed_loop  # noqa: E402
from prefixbench.engines import engine_for  # noqa: E402
from prefixbench.host import read_cpu_info  # noqa: E402
from prefixbench.peer import bench_serve_args, run_bench_serve  # noqa: E402

MODEL = "instant"


def serve_instant(port: int, max_tokens: int) -> None:
    """One process of the instant server: /v1/completions streams `max_tokens` chunks at once."""
    from aiohttp import web

    def chunk(i: int) -> bytes:
        usage = {"prompt_tokens": 16, "completion_tokens": i + 1, "total_tokens": 17 + i}
        return f"data: {json.dumps({'choices': [{'index': 0, 'text': ' t'}], 'usage': usage})}\n\n".encode()

    body = b"".join(chunk(i) for i in range(max_tokens))
    tail = json.dumps({"choices": [], "usage": {"prompt_tokens": 16, "completion_tokens": max_tokens}})

    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body + f"data: {tail}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": MODEL}]})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("instant server did not come up")


def prefixbench_req_s(base_url: str, n: int, conc: int, max_tokens: int) -> float:
    ok = []
    cfg = ClientConfig(base_url, MODEL, max_tokens, 60, 60, engine=engine_for("vllm"))
    wall = asyncio.run(run_closed_loop(cfg, [(i, "hello " * 16) for i in range(n)], conc, lambda r: ok.append(r.status == "ok")))
    if not all(ok) or len(ok) != n:
        raise RuntimeError(f"prefixbench: {ok.count(False)} of {n} requests failed")
    return n / wall


def peer_req_s(python: str, tokenizer: str, base_url: str, n: int, conc: int, max_tokens: int, workdir: Path) -> float:
    data = workdir / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": "hello " * 16}) + "\n" for _ in range(n)))
    res = run_bench_serve(python, bench_serve_args(base_url, MODEL, tokenizer, data, n, conc, max_tokens), workdir)
    if res["completed"] != n:
        raise RuntimeError(f"vllm bench serve completed {res['completed']} of {n}")
    return float(res["request_throughput"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--requests", type=int, default=3000, help="requests per run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each tool per concurrency, alternating")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--server-processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--python", default=".venv-server/bin/python", help="an environment with vllm (for bench serve)")
    ap.add_argument("--tokenizer", default="resources/models/SmolLM2-135M-Instruct")
    args = ap.parse_args()

    cpu = read_cpu_info()
    print(f"CPU: {cpu.model}, {os.cpu_count()} cores; instant server: {args.server_processes} process(es)")
    port = free_port()
    procs = [mp.Process(target=serve_instant, args=(port, args.max_tokens), daemon=True) for _ in range(args.server_processes)]
    for p in procs:
        p.start()
    try:
        wait_up(port)
        base = f"http://127.0.0.1:{port}"
        prefixbench_req_s(base, 200, 16, args.max_tokens)  # warm the server processes
        print(f"{'c':>5}  {'tool':<18} {'requests/s per run':<32} median")
        for conc in args.concurrency:
            ours, peer = [], []
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.rounds):
                    ours.append(prefixbench_req_s(base, args.requests, conc, args.max_tokens))
                    peer.append(peer_req_s(args.python, args.tokenizer, base, args.requests, conc, args.max_tokens, Path(tmp)))
            for name, xs in (("prefixbench", ours), ("vllm bench serve", peer)):
                print(f"{conc:>5}  {name:<18} {', '.join(f'{x:.0f}' for x in xs):<32} {statistics.median(xs):.0f}")
            print(f"{conc:>5}  ratio (medians)    {statistics.median(ours) / statistics.median(peer):.2f}x")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)


if __name__ == "__main__":
    main()
