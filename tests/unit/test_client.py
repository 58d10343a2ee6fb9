"""The streaming client's timing and failure accounting, against a local fake SSE server (a test double)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from prefixbench.client import ClientConfig, arrival_offsets, run_closed_loop, run_open_loop
from prefixbench.engines import engine_for

VLLM = engine_for("vllm")

TTFT_DELAY, ITL_DELAY, N_TOKENS = 0.20, 0.05, 5


def sse(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


# What a gateway puts around the data lines: every field the SSE specification allows, and a comment (keep-alive).
GATEWAY_LINES = b": keep-alive\nevent: completion\nid: 7\nretry: 3000\n"


SEEN: list[dict] = []  # what each request carried: its X-Request-Id and X-Session-ID headers and body request_id


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    SEEN.append({"header_id": request.headers.get("X-Request-Id"), "session": request.headers.get("X-Session-ID"),
                 "body_id": body.get("request_id"), "prompt": body["prompt"]})  # fmt: skip
    behaviour = body["prompt"]
    assert body["stream"] is True and body["ignore_eos"] is True
    if behaviour == "http500":
        return web.Response(status=500, text="boom")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await asyncio.sleep(TTFT_DELAY)
    if behaviour == "pairs":  # vLLM with continuous usage: the first chunk 1 token, then 2 tokens a chunk
        for done in (1, 3, N_TOKENS):
            if done > 1:
                await asyncio.sleep(ITL_DELAY)
            await resp.write(
                sse({"choices": [{"index": 0, "text": "tt"}], "usage": {"prompt_tokens": 10, "completion_tokens": done}})
            )
        await resp.write(sse({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": N_TOKENS}}))
        await resp.write(b"data: [DONE]\n\n")
        return resp
    for i in range(N_TOKENS):
        if i:
            await asyncio.sleep(ITL_DELAY if behaviour != "stall" else 1.5)
        if behaviour == "gateway":
            await resp.write(GATEWAY_LINES)
        await resp.write(sse({"choices": [{"index": 0, "text": f"t{i}"}]}))
        if behaviour == "broken" and i == 1:
            await resp.write(b"data: {not json\n\n")
            return resp
    if behaviour != "nousage":
        await resp.write(
            sse(
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 10, "completion_tokens": N_TOKENS, "prompt_tokens_details": {"cached_tokens": 4}},
                }
            )
        )
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture
async def fake_server():
    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def run(base, prompts, concurrency=1, stall=2.0):
    out = []
    cfg = ClientConfig(base, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=stall, engine=VLLM)
    wall = await run_closed_loop(cfg, list(enumerate(prompts)), concurrency, out.append)
    return sorted(out, key=lambda r: r.request_index), wall


async def test_timings_match_server_delays(fake_server):
    (rec,), _ = await run(fake_server, ["ok"])
    assert rec.status == "ok", rec.error
    assert TTFT_DELAY <= rec.ttft_s < TTFT_DELAY + 0.1
    expected_e2e = TTFT_DELAY + (N_TOKENS - 1) * ITL_DELAY
    assert expected_e2e <= rec.e2e_s < expected_e2e + 0.15
    assert len(rec.itl_s) == N_TOKENS - 1 and all(ITL_DELAY * 0.8 <= x < ITL_DELAY + 0.05 for x in rec.itl_s)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens) == (10, N_TOKENS, 4)
    assert rec.tpot_s == pytest.approx((rec.e2e_s - rec.ttft_s) / (N_TOKENS - 1))


async def test_a_gateways_event_id_retry_and_comment_lines_are_skipped(fake_server):
    """The SSE specification allows `event:`, `id:`, `retry:` and comment lines between events; gateways in front
    of an endpoint send them. They are no chunk: the stream is read as if they were not there."""
    (plain,), _ = await run(fake_server, ["ok"])
    (rec,), _ = await run(fake_server, ["gateway"])
    assert rec.status == "ok", rec.error
    assert rec.output_chunks == plain.output_chunks == N_TOKENS and len(rec.itl_s) == N_TOKENS - 1
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens) == (10, N_TOKENS, 4)


def test_sse_lines():
    from prefixbench.client import sse_data

    assert sse_data('data: {"a": 1}') == '{"a": 1}' and sse_data("data:[DONE]") == "[DONE]"
    assert [sse_data(x) for x in ("", ": ping", "event: message", "id: 3", "retry: 100", "data:")] == [None] * 6


async def test_itl_is_per_token_when_chunks_carry_several(fake_server):
    (rec,), _ = await run(fake_server, ["pairs"])
    assert rec.status == "ok", rec.error
    assert rec.output_chunks == 3 and rec.chunk_tokens == [2, 2]
    assert len(rec.chunk_gaps_s) == 2 and all(ITL_DELAY * 0.8 <= g < ITL_DELAY + 0.05 for g in rec.chunk_gaps_s)
    # Each gap spread over the 2 tokens it carried: 4 per-token values, half a chunk gap each.
    assert len(rec.itl_s) == N_TOKENS - 1 and all(ITL_DELAY / 2 * 0.8 <= x < ITL_DELAY / 2 + 0.03 for x in rec.itl_s)
    assert rec.tpot_s == pytest.approx(sum(rec.chunk_gaps_s) / (N_TOKENS - 1), rel=0.05)


async def test_concurrency_overlaps_requests(fake_server):
    recs, wall = await run(fake_server, ["ok"] * 8, concurrency=4)
    assert all(r.status == "ok" for r in recs)
    one = TTFT_DELAY + (N_TOKENS - 1) * ITL_DELAY
    assert 2 * one <= wall < 2 * one + 0.3  # two waves of four


@pytest.mark.parametrize(
    "behaviour, error",
    [
        ("http500", "HTTP 500"),
        ("broken", "JSONDecodeError"),
        ("nousage", "no usage"),
        ("stall", "timeout"),
    ],
)
async def test_failures_are_recorded_not_dropped(fake_server, behaviour, error):
    recs, _ = await run(fake_server, ["ok", behaviour, "ok"], concurrency=2, stall=0.5)
    assert [r.status for r in recs] == ["ok", "failed", "ok"]
    assert error in recs[1].error
    assert recs[1].e2e_s is not None


async def test_connection_refused_is_a_failed_record():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recs, _ = await run(f"http://127.0.0.1:{port}", ["a", "b"])
    assert [r.status for r in recs] == ["failed", "failed"]
    assert all("Connect" in r.error or "connect" in r.error for r in recs)


def test_arrival_schedule_rate_and_burstiness():
    import statistics

    for burst in (0.5, 1.0, 4.0):
        t = arrival_offsets(4000, rate=10.0, burstiness=burst, seed=1)
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.08)
        cv = statistics.pstdev(gaps) / statistics.mean(gaps)
        assert cv == pytest.approx(burst**-0.5, rel=0.1)  # gamma: CV = 1/sqrt(shape)
    assert arrival_offsets(5, 2.0, 1.0, seed=3) == arrival_offsets(5, 2.0, 1.0, seed=3)
    with pytest.raises(ValueError):
        arrival_offsets(3, 0.0, 1.0, 0)


async def test_open_loop_sends_on_schedule_not_on_completion(fake_server):
    out = []
    cfg = ClientConfig(fake_server, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=5, engine=VLLM)
    rate = 20.0  # one request every ~50 ms, each lasting ~400 ms: many in flight at once
    wall = await run_open_loop(cfg, list(enumerate(["ok"] * 10)), rate, 1.0, 0, out.append)
    assert len(out) == 10 and all(r.status == "ok" for r in out)
    starts = sorted(r.start_s for r in out)
    expected = arrival_offsets(10, rate, 1.0, 0)
    assert all(abs(a - b) < 0.05 for a, b in zip(starts, expected))
    one = TTFT_DELAY + (N_TOKENS - 1) * ITL_DELAY
    assert wall < expected[-1] + one + 0.3  # closed loop at c=1 would take 10 x one


async def test_sessions_send_turns_in_order_and_interleave(fake_server):
    from prefixbench.client import run_sessions

    out = []
    cfg = ClientConfig(fake_server, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=2, engine=VLLM)
    sessions = [[(0, "ok"), (2, "ok"), (4, "ok")], [(1, "ok"), (3, "ok"), (5, "ok")]]
    await run_sessions(cfg, sessions, 2, 0.1, out.append)
    by = {r.request_index: r for r in out}
    assert len(out) == 6 and all(r.status == "ok" for r in out)
    for turns in sessions:  # a turn starts after the previous turn of its session ended, plus the think time
        for (a, _), (b, _) in zip(turns, turns[1:]):
            assert by[b].start_s >= by[a].start_s + by[a].e2e_s + 0.1
    assert abs(by[0].start_s - by[1].start_s) < 0.1  # two workers: the sessions run side by side


async def test_a_failed_turn_ends_its_session_and_the_rest_are_recorded_failed(fake_server):
    from prefixbench.client import run_sessions

    out = []
    cfg = ClientConfig(fake_server, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=2, engine=VLLM)
    await run_sessions(cfg, [[(0, "ok"), (1, "http500"), (2, "ok"), (3, "ok")]], 1, 0.0, out.append)
    assert [(r.request_index, r.status) for r in out] == [(0, "ok"), (1, "failed"), (2, "failed"), (3, "failed")]
    assert "not sent" in out[2].error and out[2].http_status is None


async def test_open_loop_follows_given_offsets(fake_server):
    out = []
    cfg = ClientConfig(fake_server, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=2, engine=VLLM)
    await run_open_loop(cfg, [(0, "ok"), (1, "ok"), (2, "ok")], 1.0, 1.0, 0, out.append, offsets=[0.0, 0.3, 0.9])
    starts = sorted(r.start_s for r in out)
    assert starts[1] - starts[0] == pytest.approx(0.3, abs=0.05) and starts[2] - starts[0] == pytest.approx(0.9, abs=0.05)


async def test_every_request_carries_its_id_in_header_and_body_and_its_record(fake_server):
    """Replica attribution matches the id a replica logged against the record's: header, body and record agree, ids
    are unique in the pass, and a session key goes as X-Session-ID only where the pass gave one."""
    from prefixbench.client import run_sessions

    SEEN.clear()
    out = []
    cfg = ClientConfig(fake_server, "m", max_tokens=N_TOKENS, request_timeout_s=10, stall_timeout_s=2, engine=VLLM,
                       id_prefix="pb-x-r0", session_keys={0: "session-000", 1: "session-001"})  # fmt: skip
    await run_sessions(cfg, [[(0, "ok"), (2, "http500"), (4, "ok")], [(1, "ok"), (3, "ok")]], 2, 0.0, out.append)
    by = {r.request_index: r for r in out}
    assert sorted(by) == [0, 1, 2, 3, 4] and [by[i].request_id for i in range(5)] == [f"pb-x-r0-{i}" for i in range(5)]
    assert by[0].session_key == "session-000" and by[3].session_key is None
    sent = {s["header_id"]: s for s in SEEN}
    assert sorted(sent) == [f"pb-x-r0-{i}" for i in (0, 1, 2, 3)]  # request 4 was never sent: its turn 2 failed
    assert all(s["body_id"] == rid for rid, s in sent.items())
    assert sent["pb-x-r0-0"]["session"] == "session-000" and sent["pb-x-r0-3"]["session"] is None
    assert "not sent" in by[4].error and by[4].request_id == "pb-x-r0-4"  # the id it would have carried


async def test_without_a_prefix_each_request_gets_a_random_id(fake_server):
    SEEN.clear()
    recs, _ = await run(fake_server, ["ok", "ok", "ok"])
    ids = [r.request_id for r in recs]
    assert len(set(ids)) == 3 and all(i and i.startswith("pb-") for i in ids)
    assert {s["header_id"] for s in SEEN} == set(ids) and all(s["session"] is None for s in SEEN)
