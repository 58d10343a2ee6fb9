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
