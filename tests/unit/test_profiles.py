"""The SLURM profile sends every job that holds a GPU to the GPU partition (issue 21: `measure_kv` was missed and
would have gone to the CPU partition with a 30-minute, 8 GB limit)."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from helpers import ROOT

PROFILE = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
GPU_PARTITION = PROFILE["set-resources"]["measure"]["slurm_partition"]


def gpu_rules() -> set[str]:
    """Every rule of rules/*.smk that asks for a GPU (`resources: gpu=...`), with those a `use rule` inherits it to."""
    own, parent = set(), {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        name = None
        for line in smk.read_text().splitlines():
            if m := re.match(r"\s*(?:rule|checkpoint) (\w+):", line):
                name = m.group(1)
            elif m := re.match(r"\s*use rule (\w+) as (\w+) with:", line):
                name = m.group(2)
                parent[name] = m.group(1)
            elif name and re.match(r"\s*gpu\s*=", line):
                own.add(name)
    return own | {child for child, base in parent.items() if base in own}


def test_every_gpu_rule_gets_the_gpu_partition():
    rules = gpu_rules()
    assert {"measure", "measure_kv", "calibrate"} <= rules
    for rule in sorted(rules):
        res = PROFILE["set-resources"].get(rule, {})
        assert res.get("slurm_partition") == GPU_PARTITION and res.get("gpu") == 1, rule


def test_a_dry_run_plans_every_gpu_job_on_the_gpu_partition():
    """As Snakemake resolves the profile: every planned job with gpu=1, measure_kv among them (config/cpu-shapes.yaml
    has kv_overflow shapes), is on the GPU partition."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(ROOT / "profiles/slurm"),
         "--configfile", str(ROOT / "config/cpu-shapes.yaml"), "--config", "target=cpu", "-s", str(ROOT / "Snakefile"),
         "-d", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out.stdout, re.M)
    on_gpu = {(rule, "slurm_partition=" + GPU_PARTITION in res) for rule, res in jobs if re.search(r"\bgpu=1\b", res)}
    assert ("measure_kv", True) in on_gpu and ("measure", True) in on_gpu
    assert all(ok for _, ok in on_gpu), sorted(on_gpu)
