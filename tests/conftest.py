"""Shared fixtures: the package on sys.path, the real SmolLM2 tokenizer (converted once if missing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from helpers import MODEL_DIR, PIPELINE_CPU_ISA, ROOT, SERVER_PYTHON, run_snakemake, write_test_config  # noqa: E402


def ensure_smollm2() -> Path:
    """The converted SmolLM2 folder; made with the server environment's converter when missing."""
    if not (MODEL_DIR / "model.safetensors").exists():
        if not SERVER_PYTHON.exists():
            pytest.fail(f"{SERVER_PYTHON} missing: run ./run.sh test, which creates the environments")
        subprocess.run(
            [str(SERVER_PYTHON), str(ROOT / "scripts/prefixbench/convert_smollm2.py"), str(MODEL_DIR)],
            check=True,
            capture_output=True,
        )
    return MODEL_DIR


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2_tokenizer(tmp_path_factory):
    """SmolLM2's real tokenizer from the copy shipped in resources/tokenizers/: no vLLM, no model conversion."""
    import gzip
    import shutil

    from prefixbench.tokenizer import load_tokenizer

    shipped = ROOT / "resources" / "tokenizers" / "SmolLM2-135M-Instruct"
    folder = tmp_path_factory.mktemp("tokenizer")
    for f in shipped.iterdir():
        if f.name.endswith(".gz"):
            (folder / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, folder / f.name)
    return load_tokenizer(str(folder))


RELIABILITY_DIR = ROOT / "results" / "reliability"


@pytest.fixture
def reliability():
    """Record what a fault scenario injected and observed; docs/RELIABILITY.md is rendered from these."""

    def record(scenario: str, title: str, injected: str, observed: dict) -> None:
        import json

        RELIABILITY_DIR.mkdir(parents=True, exist_ok=True)
        (RELIABILITY_DIR / f"{scenario}.json").write_text(
            json.dumps({"scenario": scenario, "title": title, "injected": injected, "observed": observed}, indent=2)
        )

    return record


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """config/test.yaml run locally in a scratch folder, once per session (the SLURM test compares against it)."""
    if not SERVER_PYTHON.exists():
        pytest.fail(f"{SERVER_PYTHON} missing: run the tests with ./run.sh test, which creates it")
    work = tmp_path_factory.mktemp("pipeline")
    configfile = write_test_config(work, cpu_isa=PIPELINE_CPU_ISA)
    proc = run_snakemake(work, configfile)
    (work / "console.txt").write_text(proc.stdout + proc.stderr)  # what a user would have seen
    assert proc.returncode == 0, f"pipeline failed:\n{proc.stderr[-6000:]}"
    return work, configfile, yaml.safe_load(configfile.read_text())


@pytest.fixture
def fake_vllm_port():
    """A running fake_vllm.py (the SSE test double) on a free loopback port; killed afterwards."""
    import socket
    import time

    from prefixbench.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fake_vllm.py"), str(port)], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield port
    proc.kill()
    proc.wait()


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    """The folder is the tier: tests/integration holds every test that starts real vLLM, tests/unit the rest. The
    `integration` mark (what `-m` selects) follows the folder, and a test marked for one tier but filed in the other
    stops the run, so `./run.sh test` (unit, then integration by folder) and `-m "not integration"` pick the same."""
    for item in items:
        inside = INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents
        marked = item.get_closest_marker("integration") is not None
        if marked and not inside:
            raise pytest.UsageError(f"{item.nodeid} is marked integration but filed outside tests/integration")
        if inside and not marked:
            item.add_marker(pytest.mark.integration)
