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
