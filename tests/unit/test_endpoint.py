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
