"""The real vllm-router against stub workers: the simulator's round_robin and consistent_hash must send every request
where the router did, and its cache_aware must agree with the router at concurrency 1 (where it is exact).

The router binary is .venv-server's (the lock carries vllm-router), else /tmp/routervenv's (a scratch install). CI must
have it: there a missing binary fails the test; locally it skips. Stubs: tests/router_stub.py, which logs every request
it receives, so each request's worker is read from the stubs' logs by its X-Request-Id."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefixbench import routing as R
from prefixbench.kvcache import block_hashes

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "tests" / "router_stub.py"
BINARIES = (ROOT / ".venv-server" / "bin" / "vllm-router", Path("/tmp/routervenv/bin/vllm-router"))
ROUTER = {"cache_threshold": 0.3, "balance_abs_threshold": 64, "balance_rel_threshold": 1.5}  # the router's defaults
MAX_STUBS = 4


def router_binary() -> Path:
    """The router to test against; in CI its absence is a failure, not a skip."""
    for path in BINARIES:
        if path.is_file():
            return path
    msg = f"vllm-router not found at {' or '.join(map(str, BINARIES))} (the server environment's lock should install it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def stub_python(binary: Path) -> str:
    """An interpreter with aiohttp for the stubs: this one, else the router's environment's."""
    if importlib.util.find_spec("aiohttp") is not None:
        return sys.executable
    return str(binary.parent / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except OSError as e:
        return getattr(e, "code", 0) or 0, b""


def wait_ok(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before {url} answered")
        if get(url, 2.0)[0] == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: {url} did not answer 200 within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    """End a process we started, with its process group (it was started in a session of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Iterator[list[tuple[str, Path]]]:
    """MAX_STUBS stub workers: (url, log) each."""
    binary = router_binary()
    folder = tmp_path_factory.mktemp("router_stubs")
    procs, out = [], []
    try:
        for i in range(MAX_STUBS):
            port, log = free_port(), folder / f"stub{i}.jsonl"
            cmd = [stub_python(binary), str(STUB), "--port", str(port), "--log", str(log)]
            procs.append(subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            out.append((f"http://127.0.0.1:{port}", log))
        for (url, _), proc in zip(out, procs):
            wait_ok(url + "/health", proc, f"stub {url}")
        yield out
    finally:
        for proc in procs:
            stop(proc)


@contextlib.contextmanager
def router(policy: str, urls: list[str], log: Path) -> Iterator[tuple[str, str, list[str]]]:
    """A router in front of `urls`: (base url, metrics url, its worker order from GET /workers)."""
    port, prom = free_port(), free_port()
    cmd = [str(router_binary()), "--worker-urls", *urls, "--policy", policy, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ok(base + "/v1/models", proc, f"vllm-router --policy {policy}")
        order = [w["url"] for w in json.loads(get(base + "/workers")[1])["workers"]]
        yield base, f"http://127.0.0.1:{prom}/metrics", order
    finally:
        stop(proc)


def send(base: str, prompt: str, request_id: str, session: str | None) -> None:
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    if session is not None:
        headers["X-Session-ID"] = session
    body = json.dumps({"model": "stub-model", "prompt": prompt, "max_tokens": 2}).encode()
    with urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", data=body, headers=headers), timeout=30) as r:
        assert r.status == 200


def served(stubs: list[tuple[str, Path]]) -> dict[str, int]:
    """Request id -> the stub (index) whose log shows it as a completion."""
    out: dict[str, int] = {}
    for i, (_, log) in enumerate(stubs):
        if log.is_file():
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                rid = {k.lower(): v for k, v in rec["headers"].items()}.get("x-request-id")
                if rec["path"] == "/v1/completions" and rid:
                    assert rid not in out, f"{rid} served twice"
                    out[rid] = i
    return out


def random_key(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(rng.randint(1, 40)))


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize(("policy", "count"), [("round_robin", 90), ("consistent_hash", 300)])
def test_simulator_routes_every_request_where_the_router_did(stubs, tmp_path, policy, count, n):
    rng = random.Random(f"{policy}-{n}")
    workers = stubs[:n]
    urls = [u for u, _ in workers]
    reqs = [
        R.RoutedRequest(f"{policy}-{n}-{i}", (), 3, random_key(rng) if i % 3 else None)  # every 3rd: no X-Session-ID
        for i in range(count)
    ]
    with router(policy, urls, tmp_path / "router.log") as (base, _, order):
        for r in reqs:
            send(base, f"prompt {r.key}", str(r.key), r.session_key)
    where = served(workers)
    actual = [where[str(r.key)] for r in reqs]
    predicted = R.simulate(reqs, n, policy, worker_urls=urls, router_order=R.router_order_of(urls, order))
    assert predicted == actual, f"{sum(a != b for a, b in zip(predicted, actual))} of {count} differ"


def test_cache_aware_at_concurrency_one_matches_the_router(stubs, tmp_path):
    """Sequential requests: no load, so the simulator is exact on the stubs' word tokens (block_size 1): every request
    to the router's first worker, and the router's prefix_hit count equals the simulated one."""
    from router_stub import token_ids  # tests/ is on sys.path (conftest)

    rng = random.Random(7)
    docs = [[f"d{d}w{i}" for i in range(rng.randint(4, 30))] for d in range(6)]
    prompts = [" ".join(rng.choice(docs)[: rng.randint(1, 30)] + [f"q{i}"] * rng.randint(0, 6)) for i in range(60)]
    urls = [u for u, _ in stubs[:3]]
    with router("cache_aware", urls, tmp_path / "router.log") as (base, metrics, order):
        for i, p in enumerate(prompts):
            send(base, p, f"ca-{i}", None)
        page = get(metrics)[1].decode()
    actual = [served(stubs[:3])[f"ca-{i}"] for i in range(len(prompts))]
    reqs = [R.RoutedRequest(f"ca-{i}", tuple(block_hashes(token_ids(p), 1)), len(token_ids(p))) for i, p in enumerate(prompts)]
    predicted = R.simulate(reqs, 3, "cache_aware", router_order=R.router_order_of(urls, order), block_size=1, **ROUTER)
    assert predicted == actual == [R.router_order_of(urls, order)[0]] * len(prompts)
    # every request went to one worker, so its match is the longest common prefix with any earlier request
    rates = [max((_common(reqs[j].hashes, r.hashes) for j in range(i)), default=0) / r.prompt_len for i, r in enumerate(reqs)]
    hits = sum(rate > ROUTER["cache_threshold"] for rate in rates)
    router_hits = sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("vllm_router_prefix_routing_decisions_total") and 'outcome="prefix_hit"' in line
    )
    assert 0 < hits < len(reqs)
    assert router_hits == hits


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Blocks two chained hash lists share from the start."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
