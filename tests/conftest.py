"""Shared fixtures: the package on sys.path, the real SmolLM2 tokenizer (converted once if missing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

MODEL_DIR = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SERVER_PYTHON = ROOT / ".venv-server" / "bin" / "python"


def ensure_smollm2() -> Path:
    """The converted SmolLM2 folder; made with the server environment's converter when missing."""
    if not (MODEL_DIR / "model.safetensors").exists():
        if not SERVER_PYTHON.exists():
            pytest.fail(f"{SERVER_PYTHON} missing: run ./run.sh test, which creates the environments")
        subprocess.run([str(SERVER_PYTHON), str(ROOT / "scripts/prefixbench/convert_smollm2.py"), str(MODEL_DIR)],
                       check=True, capture_output=True)
    return MODEL_DIR


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from prefixbench.tokenizer import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


RELIABILITY_DIR = ROOT / "results" / "reliability"


@pytest.fixture
def reliability():
    """Record what a fault scenario injected and observed; docs/RELIABILITY.md is rendered from these."""
    def record(scenario: str, title: str, injected: str, observed: dict) -> None:
        import json

        RELIABILITY_DIR.mkdir(parents=True, exist_ok=True)
        (RELIABILITY_DIR / f"{scenario}.json").write_text(
            json.dumps({"scenario": scenario, "title": title, "injected": injected, "observed": observed}, indent=2))
    return record


def pytest_sessionstart(session):
    """Observations belong to one session: a partial run must not mix with an older full one."""
    for old in RELIABILITY_DIR.glob("*.json"):
        old.unlink()


def pytest_sessionfinish(session, exitstatus):
    """Render docs/RELIABILITY.md when this session passed and recorded every scenario (a partial run, such as
    `pytest -k`, leaves the document as it was)."""
    from prefixbench.reliability import SCENARIOS, render_reliability

    recorded = {p.stem for p in RELIABILITY_DIR.glob("*.json")}
    if exitstatus == 0 and recorded >= set(SCENARIOS):
        render_reliability(RELIABILITY_DIR, ROOT / "docs" / "RELIABILITY.md")
