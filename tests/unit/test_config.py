"""Bad configuration is rejected before any server starts, with a message naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT  # noqa: E402
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefixbench import config as pbconfig

DEFAULT = yaml.safe_load((ROOT / "config/config.yaml").read_text())
SCHEMA = ROOT / "config/schema/config.schema.yaml"


def validate(cfg):
    """A validated copy of `cfg`, with the schema's defaults filled in (as Snakemake's validate() does)."""
    from snakemake.utils import validate as sm_validate

    checked = copy.deepcopy(cfg)
    sm_validate(checked, str(SCHEMA))
    return checked


def test_default_and_test_configs_are_valid():
    validate(DEFAULT)
    validate(yaml.safe_load((ROOT / "config/test.yaml").read_text()))


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c.update(surprise=1), "surprise"),
        (lambda c: c["benchmark"].update(concurrency=[0]), "concurrency"),
        (lambda c: c["benchmark"].update(concurrency=[-4]), "concurrency"),
        (lambda c: c["benchmark"].update(concurrency=[]), "concurrency"),
        (lambda c: c.update(questions=[]), "questions"),
        (lambda c: c["regimes"]["medium"].update(reuse_pcts=[150]), "reuse_pcts"),
        (lambda c: c["regimes"]["medium"].update(workload="poetry"), "workload"),
        (lambda c: c["targets"]["cpu"]["model"].pop("path"), "path"),
    ],
)
def test_schema_rejects(mutate, needle):
    from snakemake.exceptions import WorkflowError

    cfg = copy.deepcopy(DEFAULT)
    mutate(cfg)
    with pytest.raises(WorkflowError, match=needle):
        validate(cfg)


def test_prefix_longer_than_context_names_key_and_fix():
    cfg = copy.deepcopy(DEFAULT)
    cfg["regimes"]["large"]["prefix_tokens"] = 5000
    cfg = validate(cfg)
    with pytest.raises(pbconfig.ConfigError, match=r"regimes\.large\.prefix_tokens=5000.*max_model_len"):
        pbconfig.check(cfg, cfg["targets"]["cpu"])


def test_missing_model_folder():
    cfg = copy.deepcopy(DEFAULT)
    cfg["targets"]["cpu"]["model"].update(source="path", path="/nonexistent/model")
    cfg = validate(cfg)
    with pytest.raises(pbconfig.ConfigError, match="no such folder"):
        pbconfig.check(cfg, cfg["targets"]["cpu"])


def test_target_selection():
    assert pbconfig.target_name({"target": "auto", "targets": DEFAULT["targets"]}, gpu_present=False) == "cpu"
    assert pbconfig.target_name({"target": "auto", "targets": DEFAULT["targets"]}, gpu_present=True) == "gpu"
    with pytest.raises(pbconfig.ConfigError, match="targets.gpu"):
        pbconfig.target_name({"target": "gpu", "targets": {"cpu": DEFAULT["targets"]["cpu"]}})


def test_snakemake_reports_bad_config_before_running(tmp_path):
    bad = copy.deepcopy(yaml.safe_load((ROOT / "config/test.yaml").read_text()))
    bad["benchmark"]["concurrency"] = [0]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "concurrency" in out.stderr + out.stdout and "Traceback" not in out.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["benchmark", "regimes", "server", "questions", "target", "seed"]), value=json_values)
def test_config_fuzz_gives_clear_errors(key, value):
    """Any value anywhere: accepted, or a WorkflowError/ConfigError — never another exception."""
    from snakemake.exceptions import WorkflowError

    cfg = copy.deepcopy(DEFAULT)
    cfg[key] = value
    try:
        cfg = validate(cfg)
        pbconfig.check(cfg, cfg["targets"][pbconfig.target_name(cfg, gpu_present=False)])
    except (WorkflowError, pbconfig.ConfigError):
        pass


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_workflow_profiles_load(profile):
    """Both profiles parse and plan the whole pipeline (the SLURM one runs for real in test_slurm.py)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--workflow-profile",
            str(ROOT / "profiles" / profile),
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "measure" in out.stdout


def test_endpoint_config_resolves_and_refuses_credentials_in_urls():
    cfg = yaml.safe_load((ROOT / "config/endpoints.yaml").read_text())
    cfg = validate(cfg)  # the steps read a validated config: the schema fills its defaults
    target = cfg["targets"]["endpoint"]
    assert pbconfig.target_name(cfg) == "endpoint" and pbconfig.is_endpoint(target)
    assert pbconfig.tokenizer_source(target) == "microsoft/Phi-3-mini-4k-instruct"
    assert pbconfig.model_of(target)["served_name"] == "phi-3-mini-4k-instruct"
    pbconfig.check(cfg, target)
    bad = copy.deepcopy(cfg)
    bad["targets"]["endpoint"]["endpoints"]["with_prefix_cache"]["base_url"] = "http://me:s3cret@10.0.0.6:8000"
    with pytest.raises(pbconfig.ConfigError, match="api_key_env"):
        pbconfig.check(bad, bad["targets"]["endpoint"])


def test_a_bare_snakemake_uses_the_default_profile():
    """Snakemake 9 loads profiles/default by itself: no --cores, no --resources needed in the repository."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Using workflow specific profile profiles/default" in out.stdout + out.stderr


@pytest.mark.parametrize("script", ["prompts", "calibrate", "measure", "aggregate", "regime_table", "charts", "report"])
def test_a_rules_code_inputs_cover_every_module_its_script_loads(script):
    """The `code` inputs are derived from imports; an import they missed would let an edit go unnoticed."""
    import ast

    closure = set(pbconfig.script_closure(ROOT / "scripts" / f"{script}.py"))
    tree = ast.parse((ROOT / "scripts" / f"{script}.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("prefixbench")]
    probe = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in imported)
        + ("print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('prefixbench') and m.__file__))")
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "scripts", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {str(Path(f).resolve()) for f in out.stdout.split()}
    assert loaded and loaded <= closure, sorted(loaded - closure)


def test_parsing_the_workflow_imports_no_client_or_server_code():
    """The Snakefile imports prefixbench.config: settings types only, no aiohttp, no metrics parser."""
    probe = (
        "import sys, prefixbench.config; print(sorted(m for m in ('aiohttp', 'prometheus_client', 'polars') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "scripts", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_server_lifetimes_run_in_the_interleaved_order(tmp_path):
    """With two lifetimes per setting, the DAG chains the measure jobs in prefixbench.design's order."""
    import re

    from prefixbench.design import slot_order

    cfg = copy.deepcopy(DEFAULT)
    cfg["benchmark"]["instances"] = 2
    path = tmp_path / "k2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    after = {}
    for block in out.stdout.split("rule measure:")[1:]:
        mode, instance = re.search(r"wildcards: mode=(\w+), instance=(\d+)", block).groups()
        inputs = re.search(r"input: (.*)", block).group(1)
        prev = re.search(r"results/raw/(\w+)/i(\d+)/server\.json", inputs)
        after[(mode, int(instance))] = (prev.group(1), int(prev.group(2))) if prev else None
    order = slot_order(2, cfg["seed"])
    assert after == {slot: (order[k - 1] if k else None) for k, slot in enumerate(order)}


# --- replicas behind a router (issue 23) and the KV offload tier (issue 24) -------------------------------------------


def replicated(kind: str = "cpu", **target_keys):
    """The default config with its `kind` target replicated (validated: the schema's defaults filled in)."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["target"] = kind
    cfg["targets"][kind].update(target_keys)
    return validate(cfg)


def test_a_replicated_target_reads_the_router_block_over_the_schemas_defaults():
    cfg = replicated(replicas=2, router={"policies": ["round_robin", "cache_aware"], "cache_threshold": 0.5})
    target = cfg["targets"]["cpu"]
    settings = pbconfig.replica_settings(cfg, target)
    assert settings.count == 2 and settings.kind == "cpu" and settings.replicated and settings.gpus is None
    router = settings.router
    schema = pbconfig.target_schema()["properties"]["router"]["properties"]
    assert router.policies == ("round_robin", "cache_aware") and router.primary == "round_robin"
    assert router.cache_threshold == 0.5  # given
    assert router.balance_abs_threshold == schema["balance_abs_threshold"]["default"]  # the schema's
    assert router.ready_timeout_s == schema["ready_timeout_s"]["default"]
    assert router.binary == str(Path(target["python"]).parent / "vllm-router")
    no_block = replicated(replicas=2)
    assert pbconfig.router_spec(no_block["targets"]["cpu"]).policies == tuple(schema["policies"]["default"])
    plain = validate(DEFAULT)
    one = pbconfig.replica_settings(plain, plain["targets"]["cpu"])
    assert one.count == 1 and one.router is None and not one.replicated


def test_a_cpu_replica_logs_its_requests_and_serves_render_for_cache_aware():
    cfg = replicated(replicas=2, router={"policies": ["round_robin", "cache_aware"]})
    spec = pbconfig.server_spec(cfg, cfg["targets"]["cpu"])
    assert spec.log_requests and spec.scale_out and spec.gpu_memory_fraction is None
    rr = replicated(replicas=2, router={"policies": ["round_robin"]})
    assert not pbconfig.server_spec(rr, rr["targets"]["cpu"]).scale_out
    plain = validate(DEFAULT)
    single = pbconfig.server_spec(plain, plain["targets"]["cpu"])
    assert not single.log_requests and not single.scale_out  # one server's command line is unchanged


def test_gpu_replicas_sharing_a_gpu_split_its_memory():
    """The default GPU target gives --gpu-memory-utilization 0.90 in extra_args: two replicas on one GPU take half each."""
    shared = replicated("gpu", replicas=2, gpus=1)
    s = pbconfig.replica_settings(shared, shared["targets"]["gpu"])
    assert s.gpus == 1 and s.gpu_memory_fraction == pytest.approx(0.45)
    assert pbconfig.server_spec(shared, shared["targets"]["gpu"]).gpu_memory_fraction == pytest.approx(0.45)
    bare = replicated("gpu", replicas=3, gpus=1, extra_args=[])
    assert pbconfig.gpu_memory_fraction(bare["targets"]["gpu"]) == pytest.approx(0.3)  # vLLM's own 0.9, split
    own = replicated("gpu", replicas=2)  # one GPU each: the flag stays extra_args' business
    assert pbconfig.replica_settings(own, own["targets"]["gpu"]).gpu_memory_fraction is None
    given = replicated("gpu", replicas=2, gpus=1, gpu_memory_fraction=0.3)
    assert pbconfig.gpu_memory_fraction(given["targets"]["gpu"]) == 0.3
    assert not pbconfig.server_spec(shared, shared["targets"]["gpu"]).scale_out  # vLLM 0.26 has no such flag


def test_kv_offload_becomes_the_server_flags():
    cfg = replicated("gpu", kv_offload={"cpu_gib": 4})
    offload = pbconfig.kv_offload(cfg["targets"]["gpu"])
    assert offload.cpu_gib == 4 and offload.backend == "native"
    spec = pbconfig.offload_server_spec(pbconfig.server_spec(cfg, cfg["targets"]["gpu"]), offload)
    assert (spec.kv_offload_gib, spec.kv_offload_backend) == (4, "native")
    assert pbconfig.kv_offload(DEFAULT["targets"]["gpu"]) is None


@pytest.mark.parametrize(
    "kind, keys, needle",
    [
        ("cpu", {"router": {"policies": ["round_robin"]}}, r"targets.cpu.router: a router needs replicas of 2 or more"),
        ("cpu", {"kv_offload": {"cpu_gib": 2}}, "vllm-cpu has no KV offload: the OffloadingConnector refuses non-CUDA"),
        ("cpu", {"replicas": 64}, r"targets.cpu.replicas=64: more replicas than the \d+ CPU cores"),
        ("cpu", {"replicas": 2, "gpus": 1}, r"targets.cpu.gpus: a CPU target has no GPU"),
        ("gpu", {"replicas": 2, "gpus": 4}, r"targets.gpu.gpus=4 is more than replicas=2"),
        ("gpu", {"replicas": 2, "env": {"CUDA_VISIBLE_DEVICES": "0"}}, r"env.CUDA_VISIBLE_DEVICES: each replica sets its own"),
        ("cpu", {"replicas": 2, "env": {"VLLM_CPU_OMP_THREADS_BIND": "0"}}, r"env.VLLM_CPU_OMP_THREADS_BIND"),
    ],
)
def test_replica_keys_that_cannot_work_are_rejected_before_anything_starts(kind, keys, needle, monkeypatch):
    monkeypatch.setattr(pbconfig.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    cfg = replicated(kind, **keys)
    with pytest.raises(pbconfig.ConfigError, match=needle):
        pbconfig.check_replicas(cfg, cfg["targets"][kind])


def test_a_cpu_tier_without_a_kv_overflow_sweep_is_rejected():
    cfg = replicated("gpu", kv_offload={"cpu_gib": 4})
    cfg["shapes"] = {**(cfg.get("shapes") or {}), "ovf": {"kind": "kv_overflow", "capacity_blocks": 64}}
    pbconfig.check_replicas(cfg, cfg["targets"]["gpu"])  # a kv_overflow sweep to run the tier on: fine
    del cfg["shapes"]["ovf"]
    with pytest.raises(pbconfig.ConfigError, match="targets.gpu.kv_offload: the CPU tier is measured on the kv_overflow sweep"):
        pbconfig.check_replicas(cfg, cfg["targets"]["gpu"])


def test_two_replicas_fit_two_cores_and_an_endpoint_takes_no_replicas():
    cfg = replicated(replicas=2, router={"policies": ["round_robin"]})
    pbconfig.check_replicas(cfg, cfg["targets"]["cpu"], cores=2)
    with pytest.raises(pbconfig.ConfigError, match="more replicas than the 1 CPU cores"):
        pbconfig.check_replicas(cfg, cfg["targets"]["cpu"], cores=1)
    endpoint = {"endpoints": {}, "tokenizer": "t", "max_model_len": 64, "block_size": 16, "replicas": 2}
    with pytest.raises(pbconfig.ConfigError, match="targets.endpoint.replicas: not supported on an endpoint target"):
        pbconfig.check_replicas({"targets": {"endpoint": endpoint}}, endpoint)


def test_the_schema_rejects_a_policy_the_router_is_not_asked_to_run():
    from snakemake.exceptions import WorkflowError

    cfg = copy.deepcopy(DEFAULT)
    cfg["targets"]["cpu"].update(replicas=2, router={"policies": ["round_robin", "power_of_three"]})
    with pytest.raises(WorkflowError, match="power_of_three"):
        validate(cfg)
