"""Endpoint mode without a real server: URL redaction, what an endpoint lacks, and the probe against the fake server.

The real servers' tests are in tests/integration/test_endpoint_real.py."""

from __future__ import annotations

import pytest

from prefixbench.endpoint import Capabilities, redact_url
from prefixbench.engines import engine_for

VLLM = engine_for("vllm")
KEY_ENV = "PREFIXBENCH_TEST_ENDPOINT_KEY"
KEY = "pb-test-key-3f9a1c7e5d"  # a planted secret: it must not appear in any file the run writes


def test_redact_url_drops_credentials_and_query():
    assert redact_url("https://user:s3cret@example.com:8443/v1/?token=abc") == "https://example.com:8443/v1"
    assert redact_url("http://10.0.0.5:8000") == "http://10.0.0.5:8000"


def test_not_measured_names_what_an_endpoint_lacks():
    bare = Capabilities(cache_reset="HTTP 404").not_measured(VLLM)
    assert any("server start time" in s for s in bare)
    assert any("/metrics" in s for s in bare) and any("HTTP 404" in s for s in bare)
    full = Capabilities.everything(version="0.32.0").not_measured(VLLM)
    assert not any("/metrics" in s or "reset" in s or "version" in s for s in full)


@pytest.fixture
def fake_endpoint(fake_vllm_port):
    return f"http://127.0.0.1:{fake_vllm_port}"


async def test_probe_records_what_the_endpoint_offers(fake_endpoint):
    from prefixbench.endpoint import Endpoint, probe

    caps = await probe(Endpoint(fake_endpoint + "/v1/", "fake", engine=VLLM), None, try_reset=True)
    assert caps.models == ["fake"] and caps.metrics and caps.prefix_cache_counters and caps.idle_gauges
    assert caps.cache_reset == "ok"
    assert not caps.latency_histograms and caps.version is None  # the stand-in exports neither
    said = " ".join(caps.not_measured(VLLM))
    assert "histograms" in said and "/version" in said and "reset" not in said


async def test_probe_names_the_models_an_endpoint_serves(fake_endpoint):
    from prefixbench.endpoint import Endpoint, probe
    from prefixbench.server import ServerError

    with pytest.raises(ServerError, match=r"does not serve model 'llama'.*\['fake'\]"):
        await probe(Endpoint(fake_endpoint, "llama", engine=VLLM), None, try_reset=False)
    with pytest.raises(ServerError, match="not an OpenAI-compatible server we can reach"):
        await probe(Endpoint("http://127.0.0.1:9", "fake", engine=VLLM), None, try_reset=False)


# --- One deployment with caching on as both settings: the cache off as forced misses (salt_every_request). ---


def one_deployment(off_url: str = "http://10.0.0.5:8000/v1/", **off) -> dict:
    return {
        "endpoints": {
            "no_prefix_cache": {"base_url": off_url, "model": "m", "salt_every_request": True, **off},
            "with_prefix_cache": {"base_url": "http://10.0.0.5:8000", "model": "m", "salt_every_request": False},
        }
    }


def test_salt_every_request_only_on_the_cache_off_setting_of_the_same_deployment():
    from prefixbench.config import ConfigError, check_forced_misses

    check_forced_misses(one_deployment()["endpoints"])  # the same URL, written with /v1 and a slash
    salted_on = one_deployment()["endpoints"]
    salted_on["with_prefix_cache"]["salt_every_request"] = True
    with pytest.raises(ConfigError, match=r"with_prefix_cache\.salt_every_request: only the cache-off setting"):
        check_forced_misses(salted_on)
    with pytest.raises(ConfigError, match="base_url and model must be with_prefix_cache's"):
        check_forced_misses(one_deployment("http://10.0.0.6:8000")["endpoints"])
    with pytest.raises(ConfigError, match="base_url and model must be with_prefix_cache's"):
        check_forced_misses(one_deployment(model="other")["endpoints"])
    two = one_deployment("http://10.0.0.6:8000", salt_every_request=False)["endpoints"]
    check_forced_misses(two)  # two deployments, nothing salted: as before


def test_the_config_check_refuses_a_salted_cache_on_setting():
    """Through config.check, as the workflow calls it (the schema filled the default)."""
    import copy

    import yaml
    from snakemake.utils import validate

    from prefixbench.config import REPO_DIR as ROOT
    from prefixbench.config import ConfigError, check

    cfg = yaml.safe_load((ROOT / "config/endpoints.yaml").read_text())
    validate(cfg, str(ROOT / "config/schema/config.schema.yaml"))
    target = cfg["targets"]["endpoint"]
    assert target["endpoints"]["no_prefix_cache"]["salt_every_request"] is False  # the default: two deployments
    check(cfg, target)
    bad = copy.deepcopy(cfg)
    bad["targets"]["endpoint"]["endpoints"]["with_prefix_cache"]["salt_every_request"] = True
    with pytest.raises(ConfigError, match="only the cache-off setting"):
        check(bad, bad["targets"]["endpoint"])


async def test_a_salted_target_sends_every_request_as_a_forced_miss(fake_endpoint):
    """The same prompt four times: with salt_every_request each carries its own cache_salt and hits nothing; without,
    the repeats hit (the fake keys its cache by salt and prefix, as vLLM does). A request's own salt (a paired miss
    arm) is kept."""
    from prefixbench.client import ClientConfig, completion_payload, run_closed_loop
    from prefixbench.config import default_bench_settings
    from prefixbench.endpoint import Endpoint
    from prefixbench.measure import client_config
    from prefixbench.target import MeasuredTarget

    settings = default_bench_settings(max_tokens=4, request_timeout_s=30, stall_timeout_s=30, paired="none")
    prompt = "shared prefix words here and more\nQ: why?\nA:"

    async def cached(salted: bool) -> list[int]:
        target = MeasuredTarget.of_endpoint(Endpoint(fake_endpoint, "fake", engine=VLLM, salt_every_request=salted))
        cfg = client_config(target, "fake", settings)
        assert cfg.salt_every_request is salted
        recs: list = []
        await run_closed_loop(cfg, [(i, prompt) for i in range(4)], 1, recs.append)
        assert all(r.status == "ok" for r in recs)
        return [r.cached_tokens for r in sorted(recs, key=lambda r: r.request_index)]

    assert await cached(True) == [0, 0, 0, 0]
    plain = await cached(False)
    assert plain[0] == 0 and all(c > 0 for c in plain[1:])
    cfg = ClientConfig(fake_endpoint, "fake", 4, 30, 30, engine=VLLM, salt_every_request=True)
    assert completion_payload(cfg, prompt, "own-salt")["cache_salt"] == "own-salt"


def test_one_deployment_is_said_by_both_settings_so_the_report_lists_it_once():
    from prefixbench.endpoint import Endpoint
    from prefixbench.report import not_measured

    def info(ep: Endpoint) -> dict:
        return {"not_measured": Capabilities.everything("0.32.0").not_measured(VLLM) + ep.forced_miss_notes()}

    url = "http://user:pw@10.0.0.5:8000/v1"
    off = Endpoint(url, "m", engine=VLLM, salt_every_request=True, cache_off_forced=True)
    on = Endpoint(url, "m", engine=VLLM, cache_off_forced=True)
    items = not_measured({"no_prefix_cache": info(off), "with_prefix_cache": info(on)})
    flag = [s for s in items if s.startswith("what the prefix-caching flag itself costs (cache on vs off at 0% reuse)")]
    assert len(flag) == 1 and "one deployment, `http://10.0.0.5:8000` (model `m`)" in flag[0] and "pw" not in flag[0]
    assert any('"cache off" (no_prefix_cache) means forced misses on that deployment' in s for s in items)
    assert not any(s.endswith("only)") for s in items)
    two = Endpoint(url, "m", engine=VLLM)
    assert two.forced_miss_notes() == []


def test_a_run_says_from_its_records_whether_its_cache_off_was_forced_misses():
    from prefixbench.endpoint import cache_off_forced

    def info(mode: str, salted: bool | None) -> dict:
        return {"mode": mode} | ({"endpoint": {"salt_every_request": salted}} if salted is not None else {})

    assert cache_off_forced([info("with_prefix_cache", False), info("no_prefix_cache", True)])
    assert not cache_off_forced([info("no_prefix_cache", False), info("with_prefix_cache", False)])
    assert not cache_off_forced([info("no_prefix_cache", None), info("with_prefix_cache", None)])  # servers it started
