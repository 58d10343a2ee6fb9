"""The findings package: one module per job, the claim rule at the bottom of its imports, the old names kept."""

from __future__ import annotations

from helpers import ROOT

from prefixbench import findings
from prefixbench.config import package_imports

FINDINGS = ROOT / "scripts/prefixbench/findings"
JOBS = ["units", "claims", "derived", "controls", "checks", "answers", "models", "conclusion", "lead"]


def test_each_module_does_one_job_and_stays_readable():
    for job in JOBS:
        lines = (FINDINGS / f"{job}.py").read_text().count("\n")
        assert lines <= 400, f"findings/{job}.py has {lines} lines"


def test_imports_point_down_the_list_of_jobs():
    """`claims` is the rule every other part judges by: it imports no sibling but the units it prints in, and no
    module imports one after it."""
    for at, job in enumerate(JOBS):
        imported = package_imports((FINDINGS / f"{job}.py").read_text(), "findings")
        siblings = {m.removeprefix("findings.").split(".")[0] for m in imported if m.startswith("findings.")}
        assert siblings <= set(JOBS[:at]), (job, siblings)


def test_the_package_keeps_every_public_name():
    for name in ["verdict", "judged", "helped", "hurt", "rows_of", "interpolate", "throughput_at_p95", "goodput_rows"]:
        assert callable(getattr(findings, name))
    for name in ["aa_finding", "cross_checks", "ttft_finding", "ideal_finding", "consulting_bullets", "Finding"]:
        assert name in findings.__all__
