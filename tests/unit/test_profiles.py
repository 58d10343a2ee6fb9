"""The SLURM profile sends every job that holds a GPU to the GPU partition (issue 21: `measure_kv` was missed and
would have gone to the CPU partition with a 30-minute, 8 GB limit), and a replicated lifetime holds all its GPUs on
one node (issue 23)."""

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
        assert res.get("slurm_partition") == GPU_PARTITION, rule
        # measure's GPU count is the rule's (the GPUs its lifetime holds): a profile value would override it
        assert res.get("gpu") == (None if rule == "measure" else 1), rule
    assert PROFILE["set-resources"]["measure"]["nodes"] == 1  # a replicated lifetime's replicas talk over loopback


def dry_run(configfile, *config):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(ROOT / "profiles/slurm"),
         "--configfile", str(configfile), "--config", *config, "-s", str(ROOT / "Snakefile"), "-d", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_replicated_gpu_lifetime_asks_for_its_gpus_on_one_node(tmp_path):
    """config/gpu-replicas.yaml without `gpus` (one GPU per replica): every measure job asks for 2 GPUs on one node of
    the GPU partition; with `gpus: 1` (the preset: both on one GPU) for 1."""
    cfg = yaml.safe_load((ROOT / "config/gpu-replicas.yaml").read_text())
    for gpus, want in ((None, 2), (1, 1)):
        target = cfg["targets"]["gpu"]
        target.pop("gpus", None)
        if gpus:
            target["gpus"] = gpus
        path = tmp_path / f"gpus{gpus}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = dry_run(path, "target=gpu")
        assert out.returncode == 0, out.stderr[-2000:]
        jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out.stdout, re.M)
        measure = [res for rule, res in jobs if rule == "measure"]
        assert len(measure) == 2, jobs  # cache off and cache on, one lifetime each
        for res in measure:
            assert f"gpu={want}" in res and "nodes=1" in res and f"slurm_partition={GPU_PARTITION}" in res, res


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
