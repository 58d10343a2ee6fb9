"""The engine seam: one registry, vLLM its one entry, and every vLLM-specific name asked of it."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from prefixbench import config as pbconfig
from prefixbench.engines import ENGINES, Engine, MetricNames, engine_for
from prefixbench.settings import ServerSpec

VLLM = engine_for("vllm")
SPEC = ServerSpec(
    python="py", model="m", served_model_name="s", host="127.0.0.1", max_model_len=4096, dtype="auto", engine="vllm"
)


def test_the_registry_names_every_engine_the_schema_allows():
    schema = yaml.safe_load((ROOT / "config/schema/config.schema.yaml").read_text())["definitions"]
    for kind in ("target", "endpoint_target"):
        prop = schema[kind]["properties"]["engine"]
        assert sorted(prop["enum"]) == sorted(ENGINES) and prop["default"] in ENGINES
    with pytest.raises(ValueError, match="not one of"):
        engine_for("sglang")


def test_vllm_has_everything_the_protocol_asks():
    """A second engine is checked the same way: every attribute and method of the Protocol."""
    wanted = {n for n in Engine.__annotations__} | {n for n, v in vars(Engine).items() if callable(v) and not n.startswith("_")}
    assert wanted <= set(dir(VLLM)), sorted(wanted - set(dir(VLLM)))
    assert isinstance(VLLM.metrics, MetricNames)


def test_the_cache_flags_and_capacity_flag_come_from_the_engine():
    off, on = VLLM.server_argv(SPEC, "no_prefix_cache", "1"), VLLM.server_argv(SPEC, "with_prefix_cache", "1")
    assert off[-1] == VLLM.cache_flags["no_prefix_cache"] and on[-1] == VLLM.cache_flags["with_prefix_cache"]
    small = pbconfig.kv_server_spec(SPEC, 40, 16)
    assert small.extra_args[-2:] == ("--num-gpu-blocks-override", "40") and small.max_model_len == 39 * 16


def test_kv_capacity_and_cached_tokens_are_read_the_engines_way():
    page = '# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size="16",num_gpu_blocks="2048"} 1.0\n'
    assert VLLM.kv_blocks(page) == 2048 and VLLM.kv_blocks("# nothing\n") is None
    assert VLLM.cached_tokens({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 8}}) == 8
    assert VLLM.cached_tokens({"prompt_tokens": 9}) is None


def test_a_dummy_model_and_a_tokenizer_get_the_engines_flags():
    assert VLLM.model_args("dummy", "tok", []) == ["--load-format", "dummy", "--tokenizer", "tok"]
    assert VLLM.model_args("dummy", None, ["--load-format", "auto"]) == []


def test_a_validated_config_names_its_engine():
    from snakemake.utils import validate

    cfg = copy.deepcopy(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    validate(cfg, str(ROOT / "config/schema/config.schema.yaml"))
    for name, target in cfg["targets"].items():
        assert target["engine"] == "vllm", name
    if "endpoint" not in cfg["targets"]:
        name = next(iter(cfg["targets"]))
        assert pbconfig.server_spec(cfg, cfg["targets"][name]).engine == "vllm"


def test_old_point_files_read_as_vllm(tmp_path):
    """Points written before the engine field name no engine: they were all vLLM's."""
    import json

    from prefixbench.point_meta import PointMeta

    raw = {"mode": "with_prefix_cache", "regime": "r", "reuse_pct": 100, "concurrency": 1, "repeats": 1,
           "requests_sent": 1, "requests_ok": 1, "requests_failed": 0, "wall_s": 1.0, "cache_reset": "ok",
           "counters_delta": {}, "measured_hit_rate": None}  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(raw))
    assert PointMeta.read(tmp_path / "m.json").engine == "vllm"


def test_a_subpackage_is_in_the_code_inputs_of_what_imports_it():
    files = pbconfig.package_closure("measure")
    assert any(f.endswith("engines/vllm.py") for f in files) and any(f.endswith("target.py") for f in files)


def test_no_vllm_name_outside_the_engine():
    """The strings the seam moved stay in engines/ (prose in findings, the template and docstrings aside)."""
    moved = ['"vllm:', "reset_prefix_cache\"", '"/version"', "num-gpu-blocks", "cache_config_info", '"cache_salt"',
             "enable-prefix-caching", '"cached_tokens" in']  # fmt: skip
    mods = ["server", "metrics", "endpoint", "measure", "config", "sampling", "client", "target"]  # kvcache: vLLM's model
    for mod in mods:
        text = (ROOT / "scripts" / "prefixbench" / f"{mod}.py").read_text()
        assert not [s for s in moved if s in text], mod


def test_the_workflow_still_imports_no_metrics_parser():
    probe = "import sys, prefixbench.engines; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "scripts", capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_a_replicas_flags_come_after_extra_args_and_before_the_cache_flag():
    import dataclasses

    spec = dataclasses.replace(
        SPEC, extra_args=("--gpu-memory-utilization", "0.90"), log_requests=True, scale_out=True, gpu_memory_fraction=0.45
    )
    argv = VLLM.server_argv(spec, "with_prefix_cache", "1")
    tail = argv[argv.index("0.90") + 1 :]
    assert tail == ["--enable-log-requests", "--max-log-len", "0", "--enable-scale-out", "--gpu-memory-utilization", "0.45",
                    "--enable-prefix-caching"]  # fmt: skip
    offload = dataclasses.replace(SPEC, kv_offload_gib=4.0, kv_offload_backend="native")
    assert VLLM.replica_args(offload) == ["--kv-offloading-size", "4", "--kv-offloading-backend", "native"]
    assert VLLM.replica_args(SPEC) == []  # one server: its command line as before


def test_the_request_line_names_the_clients_id():
    line = b"(APIServer pid=1) INFO 12-02 13:18:48 [request_logger.py:65] Received request cmpl-pb-3-0-0: params: X"
    assert VLLM.logged_request_id(line) == "pb-3-0"  # vLLM's prompt index removed, the id's own "-0" kept
    assert VLLM.logged_request_id(b"Received request chatcmpl-pb-9: params: X") == "pb-9"
    assert VLLM.logged_request_id(b"Added request cmpl-pb-3-0-8c75d0ab.") is None


def test_a_cache_reset_that_vllm_refused_is_not_taken_for_done():
    assert VLLM.cache_reset_ok(200, '{"success": true}') and VLLM.cache_reset_ok(200, "")
    assert not VLLM.cache_reset_ok(200, '{"success": false}')  # blocks still held: retry
    assert not VLLM.cache_reset_ok(404, "")
    assert dict(VLLM.cache_reset_params) == {"reset_external": "true"}  # the CPU tier is cleared too


def test_the_second_tiers_counters_are_kept_when_a_server_exports_them():
    from prefixbench.metrics import counter_delta

    assert VLLM.metrics.external_prefix_hits in VLLM.metrics.counters
    before = {VLLM.metrics.prefix_hits: 10.0}
    after = {VLLM.metrics.prefix_hits: 30.0, VLLM.metrics.external_prefix_hits: 64.0}
    delta = counter_delta(before, after, VLLM.metrics)
    assert delta[VLLM.metrics.external_prefix_hits] == 64 and delta[VLLM.metrics.prefix_hits] == 20
    assert VLLM.metrics.offload_store_bytes not in counter_delta(before, after, VLLM.metrics)  # not exported: absent
