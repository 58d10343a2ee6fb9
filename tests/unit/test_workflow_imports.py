"""The workflow parses on a machine with only the measuring dependencies: the registry-less GPU host has vLLM's
dependencies and Snakemake (scripts/device_stage.sh), not polars or Altair, and it parses the whole Snakefile before
it runs one measuring job. So whatever the rules import from prefixbench at parse time must not load them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS_ONLY = ("polars", "altair", "vl_convert", "markdown_it")


def workflow_imports() -> list[str]:
    """Every `from prefixbench... import ...` / `import prefixbench...` statement of the Snakefile and rules/*.smk."""
    out = []
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = path.read_text()
        for m in re.finditer(r"^\s*(from prefixbench[\w.]* import \(?[^\n]*(?:\n[^\n]*?)*?\)?|import prefixbench[\w.]*)\s*(?:#.*)?$",
                             text, flags=re.M):  # fmt: skip
            stmt = m.group(1)
            if stmt.count("(") > stmt.count(")"):  # a parenthesised import spanning lines
                stmt = text[m.start(1) : text.index(")", m.start(1)) + 1]
            out.append(" ".join(stmt.split()))
    return out


def test_the_rules_import_prefixbench():
    """The check below has something to check (the rules do import the package)."""
    stmts = workflow_imports()
    assert any("prefixbench.design" in s for s in stmts) and any("offload_plan" in s for s in stmts), stmts


def test_parsing_the_workflow_loads_no_analysis_library():
    code = "\n".join(["import sys", "sys.path.insert(0, 'scripts')", *workflow_imports(),
                      f"print(sorted(m for m in {ANALYSIS_ONLY!r} if m in sys.modules))"])  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the workflow's imports load {out.strip()} at parse time (the GPU host has none of them)"
