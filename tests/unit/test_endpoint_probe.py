"""endpoint_probe.endpoint_config against a fake vLLM (aiohttp, in a thread): what it reads from a server, the config
it returns (valid, one deployment, the cache off as forced misses), and each way it refuses a server.

The fake keeps a prefix cache keyed by (salt, first block of token ids) and can be told to ignore salts, to cache
nothing, to report caching off, to omit per-request cached tokens, or to want an API key."""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from prefixbench import OFF, ON
from prefixbench.endpoint_probe import ProbeError, endpoint_config

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Fake:
    """How the fake server behaves (each test sets what it needs)."""

    models: list[dict] = field(default_factory=lambda: [{"id": "smol", "max_model_len": 2048, "root": "/nowhere/smol"}])
    block_size: int | None = 16  # None: no cache_config_info gauge
    prefix_caching: str = "True"
    metrics: bool = True
    version: str | None = "0.32.0"
    honours_salt: bool = True
    caches: bool = True
    usage_details: bool = True
    reject_salt: bool = False
    api_key: str | None = None
    cache: set = field(default_factory=set)
    hits: int = 0
    requests: list[dict] = field(default_factory=list)

    def app(self) -> web.Application:
        def authorized(request: web.Request) -> bool:
            return not self.api_key or request.headers.get("Authorization") == f"Bearer {self.api_key}"

        async def models(request: web.Request) -> web.Response:
            if not authorized(request):
                return web.json_response({"error": "Unauthorized"}, status=401)
            return web.json_response({"object": "list", "data": self.models})

        async def metrics(_: web.Request) -> web.Response:
            if not self.metrics:
                return web.Response(status=404)
            text = f'# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{{model_name="smol"}} {self.hits}\n'
            if self.block_size is not None:
                text += (
                    "# TYPE vllm:cache_config_info gauge\n"
                    f'vllm:cache_config_info{{block_size="{self.block_size}",enable_prefix_caching="{self.prefix_caching}",'
                    'engine="0",num_gpu_blocks="364"} 1.0\n'
                )
            return web.Response(text=text)

        async def version(_: web.Request) -> web.Response:
            return web.json_response({"version": self.version}) if self.version else web.Response(status=404)

        async def completions(request: web.Request) -> web.Response:
            if not authorized(request):
                return web.json_response({"error": "Unauthorized"}, status=401)
            body = await request.json()
            self.requests.append(body)
            if self.reject_salt and "cache_salt" in body:
                return web.json_response({"error": "extra fields not permitted: cache_salt"}, status=400)
            block = self.block_size or 16
            prompt = body["prompt"]
            key = (body.get("cache_salt") if self.honours_salt else None, tuple(prompt[:block]))
            cached = block if key in self.cache and self.caches and len(prompt) > block else 0
            self.cache.add(key)
            self.hits += cached
            usage: dict = {"prompt_tokens": len(prompt), "completion_tokens": 1}
            if self.usage_details:
                usage["prompt_tokens_details"] = {"cached_tokens": cached}
            return web.json_response({"choices": [{"text": " x"}], "usage": usage})

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/version", version)
        app.router.add_post("/v1/completions", completions)
        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """Start a Fake in its own thread and event loop (endpoint_config is synchronous); yields (fake, url)."""
    started: list = []

    def start(fake: Fake) -> str:
        loop = asyncio.new_event_loop()
        port = free_port()
        ready = threading.Event()

        async def run() -> web.AppRunner:
            runner = web.AppRunner(fake.app())
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            return runner

        def serve() -> None:
            asyncio.set_event_loop(loop)
            started.append((loop, loop.run_until_complete(run())))
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert ready.wait(10)
        started[-1] += (thread,)
        return f"http://127.0.0.1:{port}"

    yield start
    for loop, runner, thread in started:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def validated(section: dict) -> dict:
    """The section inside the test config, through the schema (defaults filled) and the config checks."""
    from snakemake.utils import validate

    from prefixbench import config as pbconfig

    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cfg.pop("targets", None)
    cfg["target"] = "endpoint"
    cfg["benchmark"].pop("time_budget_s", None)
    cfg["targets"] = {"endpoint": copy.deepcopy(section)}
    validate(cfg, str(ROOT / "config/schema/config.schema.yaml"))
    target = cfg["targets"]["endpoint"]
    pbconfig.check(cfg, target)
    return target


def test_one_server_gives_a_complete_valid_section_with_the_cache_off_as_forced_misses(server, tmp_path):
    fake = Fake(models=[{"id": "smol", "max_model_len": 2048, "root": str(tmp_path)}])
    url = server(fake)
    section = endpoint_config(url + "/v1/")
    assert section["endpoints"][OFF] == {"base_url": url, "model": "smol", "salt_every_request": True}
    assert section["endpoints"][ON] == {"base_url": url, "model": "smol"}
    assert (section["tokenizer"], section["max_model_len"], section["block_size"]) == (str(tmp_path), 2048, 16)
    assert "smol on vLLM 0.32.0" in section["description"]
    assert "hit 16 cached tokens, the same prompt with a fresh salt 0 (per-request usage)" in section["description"]
    target = validated(section)
    assert target["endpoints"][ON]["salt_every_request"] is False  # the schema's default, filled in
    # The probe: one block and a token, twice plain, then once with a salt of its own.
    prompts = [r["prompt"] for r in fake.requests]
    assert len(prompts) == 3 and prompts[0] == prompts[1] == prompts[2] and len(prompts[0]) == 17
    assert [("cache_salt" in r) for r in fake.requests] == [False, False, True]


def test_given_values_win_where_they_agree_with_the_server(server, tmp_path):
    url = server(Fake(models=[{"id": "a"}, {"id": "b", "max_model_len": 4096}], block_size=None, version=None))
    section = endpoint_config(url, model="b", tokenizer=str(tmp_path), max_model_len=1024, block_size=32)
    assert (section["endpoints"][ON]["model"], section["max_model_len"], section["block_size"]) == ("b", 1024, 32)
    assert section["tokenizer"] == str(tmp_path) and "vLLM at" in section["description"]
    validated(section)


def test_an_unreachable_server_is_named():
    with pytest.raises(ProbeError, match=r"server unreachable: http://127\.0\.0\.1:9/v1/models"):
        endpoint_config("http://127.0.0.1:9")


def test_several_models_need_a_choice(server, tmp_path):
    url = server(Fake(models=[{"id": "a", "max_model_len": 2048}, {"id": "b", "max_model_len": 2048}]))
    with pytest.raises(ProbeError, match=r"serves several models \['a', 'b'\]: pick one with --model"):
        endpoint_config(url, tokenizer=str(tmp_path))
    with pytest.raises(ProbeError, match=r"does not serve model 'c'; it serves \['a', 'b'\]"):
        endpoint_config(url, model="c", tokenizer=str(tmp_path))


def test_prefix_caching_reported_off_is_refused(server, tmp_path):
    url = server(Fake(prefix_caching="False"))
    with pytest.raises(ProbeError, match="reports prefix caching off.*enable_prefix_caching=False.*two deployments"):
        endpoint_config(url, tokenizer=str(tmp_path))


def test_a_server_that_never_hits_is_refused(server, tmp_path):
    url = server(Fake(block_size=None, caches=False))  # no gauge to say so: the probe requests tell
    with pytest.raises(ProbeError, match="repeated 17-token prompt hit 0 cached tokens.*does not work"):
        endpoint_config(url, tokenizer=str(tmp_path), block_size=16)


def test_a_server_that_ignores_the_salt_is_refused(server, tmp_path):
    url = server(Fake(honours_salt=False))
    with pytest.raises(ProbeError, match="fresh cache_salt still hit 16 cached tokens.*ignores cache_salt"):
        endpoint_config(url, tokenizer=str(tmp_path))


def test_a_server_that_rejects_the_salt_is_refused(server, tmp_path):
    url = server(Fake(reject_salt=True))
    with pytest.raises(ProbeError, match="salted probe completion .* HTTP 400.*refuses `cache_salt`"):
        endpoint_config(url, tokenizer=str(tmp_path))


def test_without_per_request_cached_tokens_the_hit_counter_tells(server, tmp_path):
    url = server(Fake(usage_details=False))
    section = endpoint_config(url, tokenizer=str(tmp_path))
    assert "fresh salt 0 (the /metrics hit counter)" in section["description"]
    url = server(Fake(usage_details=False, metrics=False, honours_salt=False))  # nothing can tell: said, not refused
    section = endpoint_config(url, tokenizer=str(tmp_path), block_size=16)
    assert "not checked before the run (no per-request cached tokens and no hit counter)" in section["description"]


def test_no_tokenizer_found_asks_for_one(server):
    url = server(Fake())
    with pytest.raises(
        ProbeError, match=r"no tokenizer found for 'smol': its model root '/nowhere/smol' is not a folder.*--tokenizer"
    ):
        endpoint_config(url)


def test_block_size_and_context_must_be_known_and_agree(server, tmp_path):
    url = server(Fake(block_size=None, models=[{"id": "smol"}]))
    with pytest.raises(ProbeError, match="does not report its KV-cache block size.*give --block-size"):
        endpoint_config(url, tokenizer=str(tmp_path), max_model_len=2048)
    with pytest.raises(ProbeError, match=r"does not report its context length.*give --max-model-len"):
        endpoint_config(url, tokenizer=str(tmp_path), block_size=16)
    url = server(Fake())
    with pytest.raises(ProbeError, match="--block-size 128 is unlike the server's KV-cache block size \\(16\\)"):
        endpoint_config(url, tokenizer=str(tmp_path), block_size=128)
    with pytest.raises(ProbeError, match="--max-model-len 4096 is above the server's context length"):
        endpoint_config(url, tokenizer=str(tmp_path), max_model_len=4096)


def test_an_api_key_is_sent_from_the_named_variable_and_never_returned(server, tmp_path, monkeypatch):
    url = server(Fake(api_key="s3cret-key"))
    with pytest.raises(ProbeError, match="HTTP 401: it wants an API key.*--api-key-env"):
        endpoint_config(url, tokenizer=str(tmp_path))
    with pytest.raises(ProbeError, match="PB_PROBE_KEY: that environment variable is not set"):
        endpoint_config(url, tokenizer=str(tmp_path), api_key_env="PB_PROBE_KEY")
    monkeypatch.setenv("PB_PROBE_KEY", "wrong")
    with pytest.raises(ProbeError, match=r"the key in \$PB_PROBE_KEY was refused"):
        endpoint_config(url, tokenizer=str(tmp_path), api_key_env="PB_PROBE_KEY")
    monkeypatch.setenv("PB_PROBE_KEY", "s3cret-key")
    section = endpoint_config(url, tokenizer=str(tmp_path), api_key_env="PB_PROBE_KEY")
    assert section["endpoints"][OFF]["api_key_env"] == section["endpoints"][ON]["api_key_env"] == "PB_PROBE_KEY"
    assert "s3cret-key" not in repr(section)


def test_urls_with_credentials_are_refused():
    with pytest.raises(ProbeError, match="without credentials or query"):
        endpoint_config("http://user:pw@127.0.0.1:9")
    with pytest.raises(ProbeError, match="not an http"):
        endpoint_config("127.0.0.1:8000")
